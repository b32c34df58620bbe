"""BatchNormalization over the global batch that a padded replica batch does not affect.

Keras' `BatchNormalization(synchronized=True)` all-reduces its statistics inside
the layer, so every replica must run the network at every step, even one whose
share of a ragged last batch is empty. Such a replica cannot skip the step (a
collective inside `tf.cond` cannot be traced) and must not run it on an empty
batch (kernels disagree on empty inputs), so it runs it on one zero example
that counts for nothing: inside `example_weight(0.0)`, this layer leaves the
replica's examples out of the global sums. With no example on any replica it
normalises with, and keeps, its moving statistics.
"""

import contextlib
import threading

import keras
import tensorflow as tf

# MirroredStrategy traces each replica's step in its own thread.
_replica = threading.local()


@contextlib.contextmanager
def example_weight(weight):
    """Layers of `SynchronizedBatchNormalization` count this replica's examples `weight` times.

    Args:
        weight: a float scalar tensor, 1.0 for real examples and 0.0 for padding.

    Example:
        >>> with example_weight(tf.constant(0.0)):
        ...     logits = student(padding, training=True)
    """
    previous = getattr(_replica, "weight", None)
    _replica.weight = weight
    try:
        yield
    finally:
        _replica.weight = previous


@keras.saving.register_keras_serializable(package="okdph_keras")
class SynchronizedBatchNormalization(keras.layers.BatchNormalization):
    """`BatchNormalization(synchronized=True)` whose replicas' examples can be weighted.

    Statistics are sums over every replica's examples, each replica's scaled by
    the weight `example_weight` sets (1 outside it). Build models with
    `okdph_keras.with_synchronized_batchnorm` rather than by hand.

    Example:
        >>> x = SynchronizedBatchNormalization(momentum=0.9)(x)
    """

    def __init__(self, **kwargs):
        kwargs["synchronized"] = True
        super().__init__(**kwargs)

    def _moments(self, inputs, mask):
        context = tf.distribute.get_replica_context()
        if mask is not None or context is None:
            return super()._moments(inputs, mask)
        weight = getattr(_replica, "weight", None)
        weight = tf.ones([], inputs.dtype) if weight is None else tf.cast(weight, inputs.dtype)
        axes = self._reduction_axes
        shape = tf.shape(inputs)
        count = tf.cast(tf.reduce_prod(tf.gather(shape, axes)), inputs.dtype) * weight
        total = tf.reduce_sum(inputs, axis=axes) * weight
        squares = tf.reduce_sum(tf.square(inputs), axis=axes) * weight
        # One all-reduce each, as Keras does (NCCL needs the same order everywhere).
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, total)
        squares = context.all_reduce(tf.distribute.ReduceOp.SUM, squares)
        count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
        mean = tf.math.divide_no_nan(total, count)
        variance = tf.maximum(tf.math.divide_no_nan(squares, count) - tf.square(mean), 0.0)
        no_examples = count <= 0.0
        mean = tf.where(no_examples, tf.cast(self.moving_mean, inputs.dtype), mean)
        variance = tf.where(no_examples, tf.cast(self.moving_variance, inputs.dtype), variance)
        return mean, variance


def uses_synchronized_batchnorm(models):
    """Whether any of `models` normalises over the global batch.

    Args:
        models: `keras.Model`s (nested models are searched).

    Returns:
        True if a layer is a `SynchronizedBatchNormalization`.

    Raises:
        ValueError: for Keras' own `BatchNormalization(synchronized=True)`,
            which cannot leave a padded replica batch out of its statistics.
    """
    found = False
    for model in models:
        for layer in nested_layers(model):
            if not isinstance(layer, keras.layers.BatchNormalization) or not layer.synchronized:
                continue
            if not isinstance(layer, SynchronizedBatchNormalization):
                raise ValueError(
                    f"Layer {layer.name!r} of {model.name!r} is a BatchNormalization with "
                    "synchronized=True, which a replica without examples would corrupt; build "
                    "the model with okdph_keras.with_synchronized_batchnorm(model) instead "
                    "(the same global statistics)."
                )
            found = True
    return found


def nested_layers(model):
    """Every layer inside `model` (a model or a layer), those of nested ones included."""
    yield from model._flatten_layers(include_self=False, recursive=True)
