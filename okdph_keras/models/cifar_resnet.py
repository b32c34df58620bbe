"""ResNets for 32x32 images (CIFAR): 3x3 stem, three stages of 16/32/64 planes."""

from okdph_keras.models.builders import documented_builder
from okdph_keras.models.layers import conv_bn
from okdph_keras.models.resnet_blocks import basic_block, bottleneck_block, residual_split
from okdph_keras.models.split import single_network

CIFAR_INPUT_SHAPE = (32, 32, 3)
CIFAR_STAGE_FILTERS = (16, 32, 64)


def cifar_resnet_split(block, blocks_per_stage, *, num_classes, **block_kwargs):
    """A CIFAR ResNet as trunk (stem, stages 1-2) and branch (stage 3, pooling, dense).

    Args:
        block: `basic_block` or `bottleneck_block`.
        blocks_per_stage: blocks in each of the three stages (16, 32 and 64
            planes; stride 1, 2, 2).
        num_classes: number of output logits.
        **block_kwargs: passed to every block (e.g. `width_multiplier`).

    Returns:
        A `Split`: the trunk is the 3x3 conv+BN+ReLU (16) stem and stages 1-2;
        a branch is stage 3, global average pooling and the dense logits.

    Example:
        >>> split = cifar_resnet_split(basic_block, (3, 3, 3), num_classes=10)
    """
    return residual_split(
        stem=_stem,
        block=block,
        stage_filters=CIFAR_STAGE_FILTERS,
        blocks_per_stage=blocks_per_stage,
        num_classes=num_classes,
        **block_kwargs,
    )


def resnet32_split(num_classes=10):
    """ResNet-32 (see `resnet32`) as a `Split` (see `cifar_resnet_split`)."""
    return cifar_resnet_split(basic_block, (5, 5, 5), num_classes=num_classes)


def resnet110_split(num_classes=10):
    """ResNet-110 (see `resnet110`) as a `Split` (see `cifar_resnet_split`)."""
    return cifar_resnet_split(bottleneck_block, (12, 12, 12), num_classes=num_classes)


@documented_builder
def resnet32(num_classes=10, input_shape=CIFAR_INPUT_SHAPE, name="resnet32"):
    """ResNet-32: basic blocks [5, 5, 5], widths 16/32/64.

    Trainable parameters: 466,906 (10 classes) / 472,756 (100 classes).
    """
    return single_network(resnet32_split(num_classes), input_shape=input_shape, name=name)


@documented_builder
def resnet110(num_classes=10, input_shape=CIFAR_INPUT_SHAPE, name="resnet110"):
    """ResNet-110 of the reference: bottleneck blocks [12, 12, 12], outputs 64/128/256.

    Not the 1.7M-parameter basic-block ResNet-110 of He et al.
    Trainable parameters: 1,147,738 (10 classes) / 1,170,868 (100 classes).
    """
    return single_network(resnet110_split(num_classes), input_shape=input_shape, name=name)


def _stem(images):
    return conv_bn(images, 16, 3, name="stem")
