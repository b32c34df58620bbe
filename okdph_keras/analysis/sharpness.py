"""Flatness as the loss increase under random weight perturbations of relative size rho."""

import dataclasses

import numpy as np

from okdph_keras.analysis import directions as directions_lib
from okdph_keras.analysis import evaluation
from okdph_keras.validation import check_integer, check_number


@dataclasses.dataclass(frozen=True)
class Sharpness:
    """Loss increases under `samples` random perturbations of relative size `radius`.

    Attributes:
        radius: rho.
        base_loss: the unperturbed loss L(theta).
        increases: `[samples]`, `L(theta + eps_s) - L(theta)`.
        mean_increase: their mean.
        max_increase: their maximum (the worst perturbation drawn).
        seed: the seed of the perturbations.
    """

    radius: float
    base_loss: float
    increases: np.ndarray
    mean_increase: float
    max_increase: float
    seed: int


def perturbation_sharpness(
    model,
    data,
    radius,
    samples=10,
    seed=0,
    *,
    loss_fn=None,
    batch_size=evaluation.DEFAULT_BATCH_SIZE,
    verbose=False,
):
    """Mean and worst loss increase under random perturbations of relative size rho.

    Perturbation s is `eps_s = radius * filter_normalized_direction(model, rng,
    ignore_biasbn=False)` with `rng = numpy.random.default_rng(seed)`: every
    filter `w_j` (the slice along the last axis of a trainable variable of two
    or more dimensions) moves by a Gaussian vector rescaled to the norm
    `radius * ||w_j||` exactly, i.e. uniformly on that sphere, and every
    other trainable float variable `w` (biases, BatchNorm scale and offset) by
    one of norm `radius * ||w||`. BatchNorm moving statistics and integer
    state are not perturbed. The increases `L(theta + eps_s) - L(theta)` are
    measured on `data` in inference mode.

    Args:
        model: a `keras.Model` mapping images to logits.
        data: a `tf.data.Dataset` of `(images, labels)` batches, or arrays.
        radius: rho > 0, the perturbation's size relative to the weights.
        samples: number of perturbations N >= 1.
        seed: integer seed of the perturbations.
        loss_fn, batch_size: see `evaluate` (default: cross-entropy, 256 per batch of arrays).
        verbose: print one line per perturbation.

    Returns:
        A `Sharpness`.

    Example:
        >>> perturbation_sharpness(student, (x, y), radius=0.05, samples=20).mean_increase
    """
    radius = check_number("radius", radius, low=0, low_open=True)
    samples = check_integer("samples", samples, low=1)
    seed = check_integer("seed", seed, low=0)
    rng = np.random.default_rng(seed)
    trainable, non_trainable = evaluation.model_values(model)
    evaluator = evaluation.Evaluator(model, data, loss_fn, batch_size)
    base_loss = evaluator(trainable, non_trainable).loss
    increases = np.empty(samples)
    for s in range(samples):
        direction = directions_lib.filter_normalized_direction(model, rng, ignore_biasbn=False)
        perturbed = directions_lib.shift(trainable, [direction], [radius])
        increases[s] = evaluator(perturbed, non_trainable).loss - base_loss
        if verbose:
            print(
                f"radius {radius:g}, perturbation {s + 1}/{samples}: loss increase {increases[s]:.5f}"
            )
    return Sharpness(
        radius=radius,
        base_loss=base_loss,
        increases=increases,
        mean_increase=float(increases.mean()),
        max_increase=float(increases.max()),
        seed=seed,
    )
