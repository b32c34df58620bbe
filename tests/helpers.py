"""Helpers shared by the tests: tiny students and independent numpy references."""

import keras
import numpy as np

NUM_CLASSES = 5
IMAGE_SHAPE = (8, 8, 1)


def tiny_student(batch_norm=True, dropout=0.0, width=4, dtype=None, num_classes=NUM_CLASSES):
    """Conv -> [BN] -> ReLU -> GAP -> [Dropout] -> Dense: a few hundred weights."""
    inputs = keras.Input(IMAGE_SHAPE, dtype=dtype)
    x = keras.layers.Conv2D(width, 3, padding="same", dtype=dtype)(inputs)
    if batch_norm:
        x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype=dtype)(x)
    x = keras.layers.ReLU(dtype=dtype)(x)
    x = keras.layers.Conv2D(2 * width, 3, strides=2, padding="same", dtype=dtype)(x)
    x = keras.layers.GlobalAveragePooling2D(dtype=dtype)(x)
    if dropout:
        x = keras.layers.Dropout(dropout, dtype=dtype)(x)
    outputs = keras.layers.Dense(num_classes, dtype=dtype)(x)
    return keras.Model(inputs, outputs)


def randomize(model, rng):
    """Gives every float variable random values (BN variances stay positive)."""
    for variable in model.variables:
        if "int" in str(variable.dtype):
            continue
        values = rng.normal(0.0, 0.5, size=variable.shape)
        if "variance" in variable.path:
            values = rng.uniform(0.5, 2.0, size=variable.shape)
        variable.assign(values.astype(variable.dtype))


def combine(weight_lists, coefficients):
    """numpy: sum_m r_m * w_m for every position (float arrays only)."""
    return [
        sum(r * np.asarray(w, np.float64) for r, w in zip(coefficients, ws)).astype(ws[0].dtype)
        for ws in zip(*weight_lists)
    ]


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_cross_entropy(labels, logits):
    return -np.mean(log_softmax(logits)[np.arange(len(labels)), labels])


def np_distillation(teacher, student, tau):
    log_p, log_q = log_softmax(teacher / tau), log_softmax(student / tau)
    return tau**2 * np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=-1))


def splitmix64_uniform(size, seed0, seed1, stream=0):
    """numpy/Python-int SplitMix64 (Steele et al. 2014): `stateless_random.uniform`'s
    specification, written independently of it."""
    mask, golden = 2**64 - 1, 0x9E3779B97F4A7C15

    def mix(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    state = mix(mix(mix((seed0 + golden) & mask) ^ (seed1 & mask)) ^ stream)
    bits = [mix((state + i * golden) & mask) >> 40 for i in range(1, size + 1)]
    return np.array(bits, np.float64) / 2**24
