"""Conv / BatchNorm building blocks shared by the architectures here.

BatchNormalization uses momentum 0.9 and epsilon 1e-5 (torch's momentum 0.1 and
eps 1e-5) and trains in TensorFlow's fused kernel (`FusedBatchNormalization`);
convolutions are He-normal initialised. Strided convolutions pad
symmetrically by `kernel_size // 2`, as torch does, rather than Keras's
asymmetric "same" padding, so feature maps line up with the PyTorch models.
"""

import keras
import tensorflow as tf

from okdph_keras.models.fused_batchnorm import FusedBatchNormalization
from okdph_keras.validation import check_number

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def batch_norm(name=None):
    """A BatchNormalization layer with torch's defaults.

    Args:
        name: the layer's name.

    Returns:
        A `FusedBatchNormalization` (a `keras.layers.BatchNormalization`;
        momentum 0.9, epsilon 1e-5).

    Example:
        >>> x = batch_norm(name="bn")(x)
    """
    return FusedBatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def conv(x, filters, kernel_size, *, strides=1, use_bias=False, name=None):
    """A He-normal 2-D convolution with torch's symmetric zero padding.

    Args:
        x: input tensor `[B, H, W, C]`.
        filters: output channels.
        kernel_size: odd square kernel size.
        strides: stride of the convolution.
        use_bias: whether the convolution has a bias.
        name: the convolution's name; its padding layer, if any, gets `_pad`
            appended.

    Returns:
        The output tensor; its size is torch's,
        `(H + 2 * (kernel_size // 2) - kernel_size) // strides + 1`.

    Example:
        >>> y = conv(x, 64, 7, strides=2, name="stem_conv")
    """
    padding = "same"
    if strides > 1:
        padding = "valid"
        if kernel_size > 1:
            x = keras.layers.ZeroPadding2D(kernel_size // 2, name=_suffix(name, "pad"))(x)
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        kernel_initializer="he_normal",
        name=name,
    )(x)


def conv_bn(x, filters, kernel_size, *, strides=1, relu=True, use_bias=False, name=None):
    """Conv -> BatchNorm [-> ReLU] (post-activation, as in ResNet and VGG).

    Args:
        x: input tensor `[B, H, W, C]`.
        filters, kernel_size, strides: those of the convolution (see `conv`).
        relu: whether to end with a ReLU.
        use_bias: whether the convolution has a bias (redundant before BN, but
            some reference models keep it).
        name: prefix of the layers' names (`_conv`, `_bn`, `_relu`).

    Returns:
        The output tensor.

    Example:
        >>> y = conv_bn(x, 16, 3, name="stem")
    """
    x = conv(
        x, filters, kernel_size, strides=strides, use_bias=use_bias, name=_suffix(name, "conv")
    )
    x = batch_norm(name=_suffix(name, "bn"))(x)
    if relu:
        x = keras.layers.ReLU(name=_suffix(name, "relu"))(x)
    return x


def bn_relu(x, name=None):
    """BatchNorm -> ReLU.

    Args:
        x: input tensor `[B, H, W, C]`.
        name: prefix of the layers' names (`_bn`, `_relu`).

    Returns:
        The output tensor.

    Example:
        >>> y = bn_relu(x, name="final")
    """
    x = batch_norm(name=_suffix(name, "bn"))(x)
    return keras.layers.ReLU(name=_suffix(name, "relu"))(x)


def bn_relu_conv(x, filters, kernel_size, *, name=None):
    """BatchNorm -> ReLU -> bias-free conv (pre-activation, as in DenseNet).

    Args:
        x: input tensor `[B, H, W, C]`.
        filters: output channels.
        kernel_size: odd square kernel size (stride 1).
        name: prefix of the layers' names (`_bn`, `_relu`, `_conv`).

    Returns:
        The output tensor.

    Example:
        >>> y = bn_relu_conv(x, 48, 1, name="block1_layer1_1x1")
    """
    return conv(bn_relu(x, name), filters, kernel_size, name=_suffix(name, "conv"))


def _suffix(name, suffix):
    return f"{name}_{suffix}" if name else None


def scale_gradient(x, scale):
    """Identity forward, gradient times `scale` backward (CL-ILR's 1/m at the split).

    Args:
        x: a float tensor.
        scale: a number or scalar tensor.

    Returns:
        A tensor equal to `x`.

    Example:
        >>> shared = scale_gradient(trunk(images), 1.0 / num_branches)
    """

    @tf.custom_gradient
    def identity(value):
        def grad(upstream):
            return upstream * tf.cast(scale, upstream.dtype)

        return tf.identity(value), grad

    return identity(x)


@keras.saving.register_keras_serializable(package="okdph_keras")
class GradientScale(keras.layers.Layer):
    """Identity forward, gradient times `scale` backward: CL-ILR's 1/m at the trunk's split.

    Args:
        scale: the factor, a number.

    Example:
        >>> maps = GradientScale(1 / num_branches)(trunk_maps)
    """

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = check_number("scale", scale)

    def call(self, inputs):
        return scale_gradient(inputs, self.scale)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
