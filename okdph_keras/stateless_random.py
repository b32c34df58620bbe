"""Uniform draws from a seed that are the same bits with XLA and without, on any device.

TensorFlow's stateless random ops promise the same numbers only for one device and
compiler: under XLA (`jit_compile=True`) `tf.random.stateless_uniform` gives others,
even with `alg="philox"` and an explicit key. The hybridization coefficients must not
depend on how the step is compiled (a run resumed with XLA, replicas on mixed
devices), so they come from SplitMix64 (Steele, Lea and Flood, 2014), written in
integer ops that every backend computes exactly.
"""

import numpy as np
import tensorflow as tf

_GOLDEN = 0x9E3779B97F4A7C15  # SplitMix64's increment, 2**64 / the golden ratio


def uniform(shape, seed, *, stream=0):
    """Floats in `[0, 1)` (24 random bits each) determined by `seed` and `stream`.

    Args:
        shape: the static shape of the draw.
        seed: an integer tensor of shape `[2]`, such as `[run_seed, step]`.
        stream: a Python int; other streams give independent draws from one seed.

    Returns:
        A float32 tensor of `shape`: element i is the (i+1)-th output of
        SplitMix64 started at `mix(mix(mix(seed[0] + G) ^ seed[1]) ^ stream)`.

    Example:
        >>> uniform([3], tf.constant([42, 7]))  # the same with XLA and without
    """
    seed = tf.cast(tf.cast(seed, tf.int64), tf.uint64)  # keeps the bits of negative seeds
    state = _mix(_mix(seed[0] + _u64(_GOLDEN)) ^ seed[1])
    state = _mix(state ^ _u64(stream))
    size = int(np.prod(shape, dtype=np.int64))
    counters = tf.cast(tf.range(1, size + 1, dtype=tf.int64), tf.uint64)
    bits = _mix(state + counters * _u64(_GOLDEN))
    values = tf.cast(tf.bitwise.right_shift(bits, _u64(40)), tf.float32) * 2.0**-24
    return tf.reshape(values, shape)


def _u64(value):
    return tf.constant(value, tf.uint64)


def _mix(z):
    """SplitMix64's finaliser (multiplications wrap modulo 2**64)."""
    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, _u64(30))) * _u64(0xBF58476D1CE4E5B9)
    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, _u64(27))) * _u64(0x94D049BB133111EB)
    return tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, _u64(31)))
