"""A small convolutional classifier for tiny images (quickstart, tests)."""

import keras

from okdph_keras.models import layers
from okdph_keras.models.split import Split, pooled_branch, single_network


def small_cnn_split(num_classes=10, width=16, batch_norm=True):
    """`small_cnn` as trunk (conv blocks 1-2 and the max pool) and branch (the rest).

    Args:
        num_classes: number of output logits.
        width: channels of the first block; the next two have 2x and 4x.
        batch_norm: whether each conv is followed by BatchNormalization.

    Returns:
        A `Split`: a branch is conv block 3 (4x `width`), global average
        pooling and the dense logits. The layers keep Keras's automatic names,
        as in `small_cnn` (a branch ignores its prefix).

    Example:
        >>> split = small_cnn_split(10, width=8)
    """

    def trunk(images):
        x = _conv_block(images, width, batch_norm)
        x = _conv_block(x, 2 * width, batch_norm)
        return keras.layers.MaxPooling2D()(x)

    def branch(x, prefix):
        del prefix
        x = _conv_block(x, 4 * width, batch_norm)
        return pooled_branch(x, num_classes=num_classes, prefix=None)

    return Split(trunk, branch)


def small_cnn(input_shape=(8, 8, 1), num_classes=10, width=16, batch_norm=True, name="small_cnn"):
    """Three 3x3 conv blocks, global average pooling and a dense logits layer.

    Args:
        input_shape: `(H, W, C)` of the images.
        num_classes: number of output logits.
        width: channels of the first block; the next two have 2x and 4x.
        batch_norm: whether each conv is followed by BatchNormalization
            (momentum 0.9, epsilon 1e-5, as torch's defaults).
        name: the model's name.

    Returns:
        A built functional `keras.Model` mapping images to logits.

    Example:
        >>> model = small_cnn((8, 8, 1), num_classes=10)
        >>> model(keras.ops.zeros((2, 8, 8, 1))).shape
        TensorShape([2, 10])
    """
    split = small_cnn_split(num_classes, width, batch_norm)
    return single_network(split, input_shape=input_shape, name=name)


def _conv_block(x, channels, batch_norm):
    x = layers.conv(x, channels, 3, use_bias=not batch_norm)
    if batch_norm:
        x = layers.batch_norm()(x)
    return keras.layers.ReLU()(x)
