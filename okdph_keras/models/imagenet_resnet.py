"""ResNet-18/34/50 for ImageNet-sized images, torchvision's layout, no pretrained weights."""

import keras

from okdph_keras.models.builders import documented_builder
from okdph_keras.models.layers import conv_bn
from okdph_keras.models.resnet_blocks import basic_block, bottleneck_block, residual_split
from okdph_keras.models.split import single_network

IMAGENET_INPUT_SHAPE = (224, 224, 3)
IMAGENET_STAGE_FILTERS = (64, 128, 256, 512)


def imagenet_resnet_split(block, blocks_per_stage, *, num_classes):
    """An ImageNet ResNet as trunk (stem, stages 1-3) and branch (stage 4, pooling, dense).

    Args:
        block: `basic_block` or `bottleneck_block`.
        blocks_per_stage: blocks in each of the four stages (64, 128, 256 and
            512 planes; stride 1, 2, 2, 2).
        num_classes: number of output logits.

    Returns:
        A `Split`: the trunk is the 7x7/2 conv+BN+ReLU (64) stem, the 3x3/2
        max pool and stages 1-3 (images of at least 32x32); a branch is stage
        4, global average pooling and the dense logits.

    Example:
        >>> split = imagenet_resnet_split(basic_block, (2, 2, 2, 2), num_classes=1000)
    """
    return residual_split(
        stem=_stem,
        block=block,
        stage_filters=IMAGENET_STAGE_FILTERS,
        blocks_per_stage=blocks_per_stage,
        num_classes=num_classes,
    )


def resnet18_split(num_classes=1000):
    """ResNet-18 (see `resnet18`) as a `Split` (see `imagenet_resnet_split`)."""
    return imagenet_resnet_split(basic_block, (2, 2, 2, 2), num_classes=num_classes)


def resnet34_split(num_classes=1000):
    """ResNet-34 (see `resnet34`) as a `Split` (see `imagenet_resnet_split`)."""
    return imagenet_resnet_split(basic_block, (3, 4, 6, 3), num_classes=num_classes)


def resnet50_split(num_classes=1000):
    """ResNet-50 (see `resnet50`) as a `Split` (see `imagenet_resnet_split`)."""
    return imagenet_resnet_split(bottleneck_block, (3, 4, 6, 3), num_classes=num_classes)


@documented_builder
def resnet18(num_classes=1000, input_shape=IMAGENET_INPUT_SHAPE, name="resnet18"):
    """ResNet-18: basic blocks [2, 2, 2, 2]. 11,689,512 trainable parameters (1000 classes)."""
    return single_network(resnet18_split(num_classes), input_shape=input_shape, name=name)


@documented_builder
def resnet34(num_classes=1000, input_shape=IMAGENET_INPUT_SHAPE, name="resnet34"):
    """ResNet-34: basic blocks [3, 4, 6, 3]. 21,797,672 trainable parameters (1000 classes)."""
    return single_network(resnet34_split(num_classes), input_shape=input_shape, name=name)


@documented_builder
def resnet50(num_classes=1000, input_shape=IMAGENET_INPUT_SHAPE, name="resnet50"):
    """ResNet-50 (v1.5, stride on the 3x3 conv): bottleneck blocks [3, 4, 6, 3].

    25,557,032 trainable parameters (1000 classes).
    """
    return single_network(resnet50_split(num_classes), input_shape=input_shape, name=name)


def _stem(images):
    x = conv_bn(images, 64, 7, strides=2, name="stem")
    # Zero padding equals torch's -inf padding here: the inputs are post-ReLU.
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    return keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
