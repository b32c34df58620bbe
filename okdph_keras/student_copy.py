"""A trained student as it ships: float32, plain Keras layers, the same weights."""

import keras

from okdph_keras import sync_batchnorm
from okdph_keras.models.fused_batchnorm import FusedBatchNormalization


def plain_student(model):
    """A copy of `model` that computes in float32 with plain Keras BatchNormalization.

    A student trained under mixed precision computes in bfloat16 or float16, which
    neither TFLite nor many CPUs run (TFLite refuses bfloat16 ops); one trained with
    `SynchronizedBatchNormalization` or `FusedBatchNormalization` (this library's
    architectures) would need this library to load. The copy has neither; its
    variables (float32 under every policy) are copied unchanged.

    Args:
        model: a functional or sequential `keras.Model` (nested ones included).

    Returns:
        A new `keras.Model`, or `model` itself if it already is float32 and plain.

    Example:
        >>> plain_student(trained_mixed_bfloat16_student).layers[1].compute_dtype
        'float32'
    """
    ours = (sync_batchnorm.SynchronizedBatchNormalization, FusedBatchNormalization)
    layers = list(sync_batchnorm.nested_layers(model))
    if all(layer.compute_dtype == "float32" and not isinstance(layer, ours) for layer in layers):
        return model

    def clone(layer):
        config = {**layer.get_config(), "dtype": "float32"}
        if isinstance(layer, ours):
            return keras.layers.BatchNormalization.from_config({**config, "synchronized": False})
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy
