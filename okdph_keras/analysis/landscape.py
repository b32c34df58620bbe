"""The 2-D loss landscape around a network along two filter-normalised directions."""

import dataclasses

import numpy as np

from okdph_keras.analysis import directions as directions_lib
from okdph_keras.analysis import evaluation
from okdph_keras.validation import check_integer, check_number


@dataclasses.dataclass(frozen=True)
class Landscape:
    """Loss and accuracy on a grid `theta + alphas[i] * d1 + betas[j] * d2`.

    Attributes:
        alphas: `[R]` steps along the first direction d1.
        betas: `[R]` steps along the second direction d2.
        loss: `[R, R]`, `loss[i, j]` at `(alphas[i], betas[j])`.
        accuracy: `[R, R]`, likewise (NaN if labels are not class indices).
        seed: the seed of the two directions.
    """

    alphas: np.ndarray
    betas: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    seed: int


def landscape_2d(
    model,
    data,
    span=1.0,
    resolution=21,
    seed=0,
    *,
    loss_fn=None,
    batch_size=evaluation.DEFAULT_BATCH_SIZE,
    verbose=False,
):
    """Loss and accuracy on a square grid around `model`'s weights (Li et al., 2018).

    The directions are `d1, d2 = filter_normalized_direction(model, rng)`
    drawn one after the other from `rng = numpy.random.default_rng(seed)`:
    Gaussian, each filter rescaled to the norm of the weights' filter, zero
    for biases and BatchNorm parameters. BatchNorm moving statistics stay as
    they are; the network runs in inference mode.

    Args:
        model: a `keras.Model` mapping images to logits.
        data: a `tf.data.Dataset` of `(images, labels)` batches, or arrays.
        span: the grid covers `[-span, span]` on both axes; > 0.
        resolution: points per axis, >= 2 (odd puts the model itself on the grid).
        seed: integer seed of the directions.
        loss_fn, batch_size: see `evaluate` (default: cross-entropy, 256 per batch of arrays).
        verbose: print one line per grid row.

    Returns:
        A `Landscape`.

    Example:
        >>> grid = landscape_2d(okdph.students[0], (x, y), span=1.0, resolution=21, seed=0)
        >>> plot_landscape(grid, "landscape.png")
    """
    span = check_number("span", span, low=0, low_open=True)
    resolution = check_integer("resolution", resolution, low=2)
    seed = check_integer("seed", seed, low=0)
    rng = np.random.default_rng(seed)
    d1 = directions_lib.filter_normalized_direction(model, rng)
    d2 = directions_lib.filter_normalized_direction(model, rng)
    trainable, non_trainable = evaluation.model_values(model)
    evaluator = evaluation.Evaluator(model, data, loss_fn, batch_size)
    steps = np.linspace(-span, span, resolution)
    loss = np.empty((resolution, resolution))
    accuracy = np.empty((resolution, resolution))
    for i, alpha in enumerate(steps):
        for j, beta in enumerate(steps):
            shifted = directions_lib.shift(trainable, [d1, d2], [alpha, beta])
            loss[i, j], accuracy[i, j] = evaluator(shifted, non_trainable)
        if verbose:
            print(
                f"landscape row {i + 1}/{resolution} (alpha {alpha:+.3f}): loss "
                f"{loss[i].min():.4f} to {loss[i].max():.4f}"
            )
    return Landscape(steps, steps.copy(), loss, accuracy, seed)
