"""ResNets for 32x32 images (CIFAR): 3x3 stem, three stages of 16/32/64 planes."""

import keras

from okdph_keras.models.builders import documented_builder
from okdph_keras.models.layers import conv_bn, pooled_classifier
from okdph_keras.models.resnet_blocks import basic_block, bottleneck_block, residual_stages

CIFAR_INPUT_SHAPE = (32, 32, 3)


def cifar_resnet(block, blocks_per_stage, *, num_classes, input_shape, name, **block_kwargs):
    """A CIFAR ResNet: 3x3 conv+BN+ReLU (16), three stages, average pool, dense.

    Args:
        block: `basic_block` or `bottleneck_block`.
        blocks_per_stage: blocks in each of the three stages (16, 32 and 64
            planes; stride 1, 2, 2).
        num_classes: number of output logits.
        input_shape: `(H, W, C)` of the images.
        name: the model's name.
        **block_kwargs: passed to every block (e.g. `width_multiplier`).

    Returns:
        A built functional `keras.Model` mapping images to logits.

    Example:
        >>> model = cifar_resnet(
        ...     basic_block, (3, 3, 3), num_classes=10, input_shape=(32, 32, 3), name="resnet20"
        ... )
    """
    inputs = keras.Input(shape=input_shape)
    x = conv_bn(inputs, 16, 3, name="stem")
    x = residual_stages(x, block, (16, 32, 64), blocks_per_stage, **block_kwargs)
    return pooled_classifier(inputs, x, num_classes=num_classes, name=name)


@documented_builder
def resnet32(num_classes=10, input_shape=CIFAR_INPUT_SHAPE, name="resnet32"):
    """ResNet-32: basic blocks [5, 5, 5], widths 16/32/64.

    Trainable parameters: 466,906 (10 classes) / 472,756 (100 classes).
    """
    return cifar_resnet(
        basic_block, (5, 5, 5), num_classes=num_classes, input_shape=input_shape, name=name
    )


@documented_builder
def resnet110(num_classes=10, input_shape=CIFAR_INPUT_SHAPE, name="resnet110"):
    """ResNet-110 of the reference: bottleneck blocks [12, 12, 12], outputs 64/128/256.

    Not the 1.7M-parameter basic-block ResNet-110 of He et al.
    Trainable parameters: 1,147,738 (10 classes) / 1,170,868 (100 classes).
    """
    return cifar_resnet(
        bottleneck_block, (12, 12, 12), num_classes=num_classes, input_shape=input_shape, name=name
    )
