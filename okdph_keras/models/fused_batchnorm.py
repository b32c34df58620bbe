"""BatchNormalization whose training step is TensorFlow's fused kernel.

Keras 3's `BatchNormalization` trains through `ops.moments` and
`ops.batch_normalization`: a dozen element-wise ops forward and more backward,
about a quarter of a CIFAR ResNet-32 step on CPU (`benchmarks/profile_step.py`).
`FusedBatchNormV3` computes the statistics, the normalisation and its gradient in
one kernel each way (oneDNN on CPU, cuDNN on GPU, and it compiles under XLA).

The layer is Keras' in every other respect: the same weights, configuration and
moving-statistics rule (Keras' biased batch variance, not the unbiased one the
kernel returns), and Keras' own path for inference, masks, renormalisation,
synchronised statistics and inputs that are not `[B, H, W, C]`. A shipped student
is a copy with plain `keras.layers.BatchNormalization` (`okdph_keras.plain_student`).
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="okdph_keras")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` that trains `[B, H, W, C]` inputs in one fused kernel.

    Takes Keras' arguments. A batch with no element runs no kernel: its output is
    the (empty) input and the moving statistics stay as they are.

    Example:
        >>> x = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    """

    def call(self, inputs, training=None, mask=None):
        fused = (
            training
            and self.trainable
            and mask is None
            and not self.renorm
            and not self.synchronized
            and len(inputs.shape) == 4
            and list(self._reduction_axes) == [0, 1, 2]
        )
        if not fused:
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, "float32")
        channels = self.moving_mean.shape
        gamma = keras.ops.cast(self.gamma, "float32") if self.scale else tf.ones(channels)
        beta = keras.ops.cast(self.beta, "float32") if self.center else tf.zeros(channels)
        moving_mean = keras.ops.cast(self.moving_mean, "float32")
        moving_variance = keras.ops.cast(self.moving_variance, "float32")

        def normalise():
            y, mean, unbiased, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x,
                scale=gamma,
                offset=beta,
                mean=tf.zeros([0]),
                variance=tf.zeros([0]),
                epsilon=self.epsilon,
                is_training=True,
            )
            count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), "float32")  # >= 1 here
            variance = unbiased * ((count - 1.0) / count)  # the kernel returns 0 for one element
            return (
                y,
                moving_mean * self.momentum + mean * (1.0 - self.momentum),
                moving_variance * self.momentum + variance * (1.0 - self.momentum),
            )

        def keep():  # no element: nothing to normalise, no statistics to learn
            return x, moving_mean, moving_variance

        # Kernels disagree on empty inputs; tf.cond runs none on them. The assignments
        # stay outside it, so that `stateless_call` can collect them.
        outputs, new_mean, new_variance = tf.cond(tf.reduce_all(tf.shape(x) > 0), normalise, keep)
        self.moving_mean.assign(new_mean)
        self.moving_variance.assign(new_variance)
        return tf.cast(outputs, self.compute_dtype)
