"""Convex combinations of variable lists and the coefficients that weight them.

Both the hybrid-weight model (HWM) and fusion are convex combinations of
homogeneous variable lists; this module is the one place that computes them.
"""

import keras
import tensorflow as tf

from okdph_keras import stateless_random
from okdph_keras.validation import check_choice, fail

HYBRID_MODES = ("mean", "dirichlet")


def is_interpolable(value):
    """Whether a variable or tensor may be interpolated (floating dtypes only).

    Integer state such as a random layer's seed or a step counter is never
    interpolated: a convex combination of seeds is meaningless and would also
    silently change the dtype.
    """
    return tf.as_dtype(keras.backend.standardize_dtype(value.dtype)).is_floating


def convex_combination(value_lists, coefficients):
    """Combines K homogeneous lists of values position by position.

    Args:
        value_lists: a sequence of K lists, each holding the values (tensors or
            variables) of one network in the same order, shapes and dtypes.
        coefficients: a 1-D tensor or sequence of K weights. They are expected to
            be non-negative and to sum to 1; this is not checked here.

    Returns:
        A list with, at position j, `sum_k coefficients[k] * value_lists[k][j]`
        for floating values, and `value_lists[0][j]` unchanged for integer ones.

    Example:
        >>> convex_combination([[tf.ones(2)], [tf.zeros(2)]], [0.25, 0.75])
        [<tf.Tensor: ... numpy=array([0.25, 0.25], dtype=float32)>]
    """
    coefficients = tf.convert_to_tensor(coefficients)
    combined = []
    for values in zip(*value_lists):
        first = values[0]
        if not is_interpolable(first):
            combined.append(tf.convert_to_tensor(first))
            continue
        dtype = tf.as_dtype(keras.backend.standardize_dtype(first.dtype))
        weights = tf.cast(coefficients, dtype)
        combined.append(
            tf.add_n([weights[k] * tf.convert_to_tensor(v) for k, v in enumerate(values)])
        )
    return combined


def sample_coefficients(mode, num_networks, seed=None, *, samples=None, stream=0):
    """Draws the hybridization coefficients r for one batch.

    Args:
        mode: `"mean"` for r_m = 1/M, or `"dirichlet"` for r ~ Dir(1, ..., 1),
            the uniform distribution on the simplex.
        num_networks: M, the number of students.
        seed: for `"dirichlet"`, a stateless seed: an integer tensor of shape
            `[2]`, such as `[run_seed, step]`. The same seed gives the same
            coefficients, on every replica and after a resume.
        samples: None for one vector `[M]`, or K >= 1 for K independent
            vectors `[K, M]` (several hybrid models per batch).
        stream: other streams draw independently from the same seed (one per
            group of students).

    Returns:
        A float32 tensor of shape `[M]` (or `[K, M]`) on the simplex.

    Example:
        >>> sample_coefficients("dirichlet", 3, seed=[42, 7])  # differs per step
    """
    check_choice("mode", mode, HYBRID_MODES)
    shape = [num_networks] if samples is None else [samples, num_networks]
    if mode == "mean":
        return tf.fill(shape, 1.0 / num_networks)
    if seed is None:
        fail("seed", seed, "a stateless seed (an integer tensor of shape [2]) for mode='dirichlet'")
    # Dir(1, ..., 1) is a vector of Gamma(1) = Exponential(1) draws normalised to sum
    # to 1; -log(1 - U) is Exponential(1), drawn the same with XLA and without.
    draws = -tf.math.log1p(-stateless_random.uniform(shape, seed, stream=stream))
    total = tf.reduce_sum(draws, axis=-1, keepdims=True)
    # Every U = 0 (probability 2**-24 per draw) would give 0 / 0: then the mean.
    return tf.where(total > 0, draws / tf.maximum(total, 1e-30), 1.0 / num_networks)
