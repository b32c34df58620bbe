"""Filter-normalised random directions in weight space (Li et al., 2018).

"Visualizing the loss landscape of neural nets" draws a Gaussian direction
and rescales each of its filters to the norm of the matching filter of the
weights, so that a step of size 1 moves every filter by its own scale and
landscapes of networks with different weight scales become comparable.
"""

import numpy as np
import tensorflow as tf

from okdph_keras import hybrid


def filter_normalized_direction(model, seed=None, ignore_biasbn=True):
    """A random direction over `model`'s trainable weights, normalised filter by filter.

    Every trainable float variable `w` with two or more dimensions gets a
    standard Gaussian draw `d`, and each of its filters, the slice along the
    last axis (an output unit or channel in Keras layouts: Dense `[in, out]`,
    Conv2D `[kh, kw, in, out]`), is rescaled so that
    `||d[..., j]|| = ||w[..., j]||`. Variables of fewer dimensions (biases,
    BatchNorm scale and offset) get a zero direction when `ignore_biasbn`,
    the paper's default; otherwise a Gaussian draw rescaled to `||w||` as a
    whole. Integer variables get zero; non-trainable variables (BatchNorm
    moving statistics) are never part of a direction.

    Args:
        model: a built `keras.Model`.
        seed: an integer, or a `numpy.random.Generator` to draw from (in the
            order of `model.trainable_variables`, one draw per variable with a
            non-zero direction).
        ignore_biasbn: zero direction for variables of fewer than 2 dimensions.

    Returns:
        A list of numpy arrays, one per trainable variable, of its shape and dtype.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> d1, d2 = (filter_normalized_direction(model, rng) for _ in range(2))
    """
    rng = np.random.default_rng(seed)
    directions = []
    for variable in model.trainable_variables:
        weights = np.asarray(variable, np.float64)
        dtype = tf.as_dtype(variable.dtype).as_numpy_dtype
        if not hybrid.is_interpolable(variable) or (ignore_biasbn and weights.ndim < 2):
            directions.append(np.zeros(weights.shape, dtype))
            continue
        draw = rng.standard_normal(weights.shape)
        axes = tuple(range(weights.ndim - 1)) if weights.ndim >= 2 else None
        weight_norms = np.sqrt(np.sum(weights**2, axis=axes, keepdims=True))
        draw_norms = np.sqrt(np.sum(draw**2, axis=axes, keepdims=True))
        directions.append((draw * weight_norms / np.maximum(draw_norms, 1e-300)).astype(dtype))
    return directions


def shift(values, directions, scales):
    """`values + sum_i scales[i] * directions[i]`, variable by variable.

    Args:
        values: list of tensors (a model's trainable values).
        directions: list of directions, each a list aligned with `values`.
        scales: one number per direction.

    Returns:
        A list of tensors of the values' dtypes; integer values are unchanged.
    """
    shifted = []
    for position, value in enumerate(values):
        value = tf.convert_to_tensor(value)
        if not hybrid.is_interpolable(value):
            shifted.append(value)
            continue
        step = sum(scale * direction[position] for scale, direction in zip(scales, directions))
        shifted.append(value + tf.constant(step, value.dtype))
    return shifted
