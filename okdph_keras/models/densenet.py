"""DenseNet-BC-40 (growth rate 12) for 32x32 images (CIFAR)."""

import keras

from okdph_keras.models.builders import documented_builder
from okdph_keras.models.layers import bn_relu, bn_relu_conv, conv
from okdph_keras.models.split import Split, pooled_branch, single_network

GROWTH_RATE = 12
LAYERS_PER_BLOCK = 6
COMPRESSION = 0.5
BOTTLENECK_FACTOR = 4


def densenet_40_12_split(num_classes=10):
    """DenseNet-BC-40 (see `densenet_40_12`) as trunk (to transition 2) and branch (block 3 on).

    Args:
        num_classes: number of output logits.

    Returns:
        A `Split`: the trunk is the stem, dense blocks 1-2 and their
        transitions (60 channels); a branch is dense block 3 (132 channels),
        the final BN-ReLU, global average pooling and the dense logits.

    Example:
        >>> split = densenet_40_12_split(100)
    """

    def trunk(images):
        x = conv(images, 2 * GROWTH_RATE, 3, name="stem_conv")
        for block in (1, 2):
            x = _dense_block(x, block, prefix="")
            x = bn_relu_conv(x, int(x.shape[-1] * COMPRESSION), 1, name=f"transition{block}")
            x = keras.layers.AveragePooling2D(2, name=f"transition{block}_pool")(x)
        return x

    def branch(x, prefix):
        x = bn_relu(_dense_block(x, 3, prefix=prefix), name=f"{prefix}final")
        return pooled_branch(x, num_classes=num_classes, prefix=prefix)

    return Split(trunk, branch)


@documented_builder
def densenet_40_12(num_classes=10, input_shape=(32, 32, 3), name="densenet_40_12"):
    """DenseNet-BC: 3x3 conv (24), three dense blocks of 6 bottleneck layers, 0.5 compression.

    Each dense layer is BN-ReLU-1x1 conv (48) - BN-ReLU-3x3 conv (12) and its
    output is concatenated to its input; transitions are BN-ReLU-1x1 conv
    halving the channels, then 2x2 average pooling. Channels: 24 -> 96 -> 48
    -> 120 -> 60 -> 132, then BN, ReLU, global average pool, dense. Convs have
    no bias. Trainable parameters: 176,122 (10 classes) / 188,092 (100 classes).
    """
    return single_network(densenet_40_12_split(num_classes), input_shape=input_shape, name=name)


def _dense_block(x, block, *, prefix):
    for layer in range(1, LAYERS_PER_BLOCK + 1):
        name = f"{prefix}block{block}_layer{layer}"
        y = bn_relu_conv(x, BOTTLENECK_FACTOR * GROWTH_RATE, 1, name=f"{name}_1x1")
        y = bn_relu_conv(y, GROWTH_RATE, 3, name=f"{name}_3x3")
        x = keras.layers.Concatenate(name=f"{name}_concat")([x, y])
    return x
