"""Loss and accuracy along straight lines between networks in weight space.

A point between networks a and b is `theta(alpha) = (1 - alpha) theta_a + alpha theta_b`,
computed by `okdph_keras.hybrid.convex_combination` for every float variable,
BatchNorm moving statistics included; integer state is taken from a unchanged.
"""

import dataclasses

import numpy as np

from okdph_keras import hybrid
from okdph_keras.analysis import evaluation
from okdph_keras.validation import check_integer, fail


@dataclasses.dataclass(frozen=True)
class Curve:
    """Loss and accuracy at points along a path.

    Attributes:
        positions: `[P]` float64. For `interpolate`, the alphas; for
            `interpolate_through`, `k + alpha` on the segment from network k
            to network k + 1, so network k sits at position k.
        loss: `[P]` mean loss at each point.
        accuracy: `[P]` accuracy at each point (NaN if labels are not class indices).
    """

    positions: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray


def interpolate(
    model_a,
    model_b,
    data,
    alphas=None,
    *,
    loss_fn=None,
    batch_size=evaluation.DEFAULT_BATCH_SIZE,
    verbose=False,
):
    """Loss and accuracy on the line `(1 - alpha) theta_a + alpha theta_b`.

    Args:
        model_a, model_b: `keras.Model`s of one architecture (logits out).
        data: a `tf.data.Dataset` of `(images, labels)` batches, or arrays
            `(images, labels)`.
        alphas: 1-D positions on the line; default 11 points from 0 to 1.
            Values outside [0, 1] extrapolate.
        loss_fn: `loss_fn(labels, logits)` -> mean loss; default sparse softmax
            cross-entropy from logits.
        batch_size: batch size for array data.
        verbose: print one line per point.

    Returns:
        A `Curve` whose positions are the alphas.

    Example:
        >>> curve = interpolate(okdph.students[0], okdph.students[1], (x, y))
        >>> curve.loss[0], curve.loss[-1]  # each student's own loss
    """
    alphas = _check_alphas(np.linspace(0.0, 1.0, 11) if alphas is None else alphas)
    evaluation.check_homogeneous([model_a, model_b])
    evaluator = evaluation.Evaluator(model_a, data, loss_fn, batch_size)
    start, end = evaluation.model_values(model_a), evaluation.model_values(model_b)
    return _evaluate(evaluator, [(alpha, (start, end), alpha) for alpha in alphas], verbose)


def interpolate_through(
    models,
    data,
    points_per_segment=10,
    *,
    loss_fn=None,
    batch_size=evaluation.DEFAULT_BATCH_SIZE,
    verbose=False,
):
    """Loss and accuracy along the piecewise-linear path through `models` in order.

    For OKDPH, `interpolate_through([students[0], okdph.hybrid_model(), students[1]], data)`
    goes from student 0 to the HWM (position 1) and on to student 1 (position 2).

    Args:
        models: K >= 2 `keras.Model`s of one architecture.
        data, loss_fn, batch_size, verbose: as in `interpolate`.
        points_per_segment: points per segment, its start included; the path's
            last point is added, so there are `(K - 1) * points_per_segment + 1`.

    Returns:
        A `Curve` with positions `k + j / points_per_segment`.

    Example:
        >>> path = interpolate_through([okdph.students[0], okdph.hybrid_model(), okdph.students[1]], (x, y))
        >>> path.loss[len(path.loss) // 2]  # the HWM's loss
    """
    models = list(models)
    if len(models) < 2:
        raise ValueError(f"interpolate_through needs at least 2 models; got {len(models)}.")
    points_per_segment = check_integer("points_per_segment", points_per_segment, low=1)
    evaluation.check_homogeneous(models)
    evaluator = evaluation.Evaluator(models[0], data, loss_fn, batch_size)
    values = [evaluation.model_values(model) for model in models]
    points = []
    for k in range(len(models) - 1):
        last = k == len(models) - 2
        for j in range(points_per_segment + last):
            alpha = j / points_per_segment
            points.append((k + alpha, (values[k], values[k + 1]), alpha))
    return _evaluate(evaluator, points, verbose)


def _evaluate(evaluator, points, verbose):
    """The `Curve` of `points`: `(position, (start, end), alpha)`, evaluated at
    `(1 - alpha) * start + alpha * end`, each end a (trainable, non_trainable) pair."""
    positions, losses, accuracies = [], [], []
    for position, ((start, start_state), (end, end_state)), alpha in points:
        coefficients = [1.0 - alpha, alpha]
        result = evaluator(
            hybrid.convex_combination([start, end], coefficients),
            hybrid.convex_combination([start_state, end_state], coefficients),
        )
        if verbose:
            print(
                f"position {position:.3f}: loss {result.loss:.4f}, accuracy {result.accuracy:.4f}"
            )
        positions.append(position)
        losses.append(result.loss)
        accuracies.append(result.accuracy)
    return Curve(np.asarray(positions, np.float64), np.array(losses), np.array(accuracies))


def _check_alphas(alphas):
    values = np.asarray(alphas, np.float64)
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
        fail("alphas", alphas, "a non-empty 1-D sequence of finite numbers")
    return values


def loss_barrier(curve):
    """Largest excess of the loss over the straight line between the curve's end losses.

    `max_t [L(t) - ((1 - s) L(start) + s L(end))]` with `s` the fraction of the
    way from the first position to the last: 0 when the loss never rises above
    that chord (no barrier: linear mode connectivity), positive when it does.

    Example:
        >>> loss_barrier(interpolate(student_a, student_b, (x, y)))
    """
    if len(curve.positions) < 2 or curve.positions[-1] == curve.positions[0]:
        raise ValueError("loss_barrier needs a curve with distinct first and last positions.")
    s = (curve.positions - curve.positions[0]) / (curve.positions[-1] - curve.positions[0])
    chord = (1.0 - s) * curve.loss[0] + s * curve.loss[-1]
    return float(np.max(curve.loss - chord))
