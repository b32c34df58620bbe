"""Recomputes BatchNormalization statistics for weights that were never trained.

Averaged weights (SWA, EMA) did not produce the moving statistics their
BatchNorm layers hold; the statistics must be measured again on training data.
"""

import itertools

import keras
import numpy as np
import tensorflow as tf

from okdph_keras import hybrid
from okdph_keras.validation import fail, is_integer


def batchnorm_layers(model):
    """Every `keras.layers.BatchNormalization` in `model`, nested ones included.

    Args:
        model: a `keras.Model` (or layer); sub-models, layers held in lists
            (such as `OKDPH.students`) and custom blocks are searched.

    Returns:
        A list of layers, each once, in tracking order.
    """
    # `_flatten_layers` is Keras' own recursive, deduplicated walk of tracked
    # sublayers; the public `Model.layers` stops at the first level.
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def batchnorm_statistics(model):
    """The moving means and variances of `batchnorm_layers(model)`, as a list."""
    return [
        variable
        for layer in batchnorm_layers(model)
        for variable in (layer.moving_mean, layer.moving_variance)
    ]


def recompute_batchnorm(model, data, steps=None):
    """Replaces BatchNorm moving statistics by exact averages over `data`.

    Every trainable BatchNormalization layer's moving mean and variance are
    reset and then set to the equal-weight mean, over the batches, of the
    per-batch statistics (torch `swa_utils.update_bn`, i.e. BN momentum
    `None`). Keras' batch variance is the biased one (divided by the number of
    values, not minus one), so the result is the mean of the biased per-batch
    variances. The model runs in training mode (dropout active, as in torch);
    no trainable weight changes, integer state (dropout seeds) advances, and
    each layer's `momentum` is restored afterwards. Frozen layers
    (`trainable=False`) normalise with their moving statistics even in
    training mode and are left alone.

    For an `OKDPH` model, `data` yields its inputs (views `[B, M+1, ...]`):
    each student's statistics are measured on its own view. The HWM runs
    through a stateless call and writes nothing; its statistics stay the
    convex combination of the students'.

    Under a `tf.distribute` strategy, call it in the cross-replica context
    (outside `strategy.run`): every replica's copy is then assigned the same
    values.

    Args:
        model: a `keras.Model`.
        data: an iterable of batches (a `tf.data.Dataset`, a list, a
            generator), each the model's input or, as in `fit`, a tuple
            `(x,)`, `(x, y)` or `(x, y, sample_weight)` of which `x` is used.
        steps: the number of batches to use; all of them when None.
            Batches without examples are skipped and not counted.

    Returns:
        The number of batches used; 0 if the model has no trainable
        BatchNormalization layer (nothing is changed then).

    Example:
        >>> recompute_batchnorm(model, train_images.batch(256), steps=50)
    """
    check_steps("steps", steps)
    return recompute_statistics(model, data, steps)


def recompute_statistics(model, data, steps):
    """`recompute_batchnorm` for callers that checked `steps` where the user gave it."""
    if isinstance(data, (np.ndarray, tf.Tensor)):
        raise ValueError(
            "recompute_batchnorm takes an iterable of batches, not one array; "
            "wrap it, e.g. tf.data.Dataset.from_tensor_slices(x).batch(128)."
        )
    layers = [layer for layer in batchnorm_layers(model) if layer.trainable]
    if not layers:
        return 0
    for layer in layers:
        if layer.renorm:
            raise ValueError(
                f"recompute_batchnorm does not support batch renormalization ({layer.path})."
            )
    batches = iter(data)
    first = next(batches, None)
    if first is None:
        raise ValueError("recompute_batchnorm got no batches: `data` is empty.")
    momenta = [layer.momentum for layer in layers]
    try:
        for layer in layers:
            # With momentum 0 a training-mode call leaves the batch's own
            # statistics in the moving variables; `accumulate` averages them.
            layer.momentum = 0.0
            layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
            layer.moving_variance.assign(tf.ones_like(layer.moving_variance))
        accumulate = tf.function(_accumulator(model, layers), reduce_retracing=True)
        count = 0
        for batch in itertools.chain([first], batches):
            if steps is not None and count >= steps:
                break
            x, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
            if not _num_examples(x):  # no statistics of no examples (NaN, or a crash)
                continue
            accumulate(x, tf.constant(count, tf.float32))
            count += 1
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if not count:
        raise ValueError("recompute_batchnorm got only batches without examples.")
    return count


def _num_examples(x):
    return int(tf.shape(tf.nest.flatten(x)[0])[0])


def check_steps(name, steps):
    """Raises unless `steps` is None or an integer >= 1."""
    if steps is not None and not (is_integer(steps) and steps >= 1):
        fail(name, steps, "None or an integer >= 1")


def _accumulator(model, layers):
    """A function of (x, k) that folds batch k (0-based) into the running mean."""
    statistics = [v for layer in layers for v in (layer.moving_mean, layer.moving_variance)]

    def accumulate(x, k):
        previous = [tf.convert_to_tensor(v) for v in statistics]
        model(x, training=True)
        weights = tf.stack([k / (k + 1.0), 1.0 / (k + 1.0)])
        for variable, value in zip(
            statistics, hybrid.convex_combination([previous, statistics], weights)
        ):
            variable.assign(value)

    return accumulate
