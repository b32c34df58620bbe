"""ResNet-18/34/50 for ImageNet-sized images, torchvision's layout, no pretrained weights."""

import keras

from okdph_keras.models.builders import documented_builder
from okdph_keras.models.layers import conv_bn, pooled_classifier
from okdph_keras.models.resnet_blocks import basic_block, bottleneck_block, residual_stages

IMAGENET_INPUT_SHAPE = (224, 224, 3)


def imagenet_resnet(block, blocks_per_stage, *, num_classes, input_shape, name):
    """7x7/2 conv+BN+ReLU (64), 3x3/2 max pool, four stages, average pool, dense.

    Args:
        block: `basic_block` or `bottleneck_block`.
        blocks_per_stage: blocks in each of the four stages (64, 128, 256 and
            512 planes; stride 1, 2, 2, 2).
        num_classes: number of output logits.
        input_shape: `(H, W, C)` of the images (at least 32x32).
        name: the model's name.

    Returns:
        A built functional `keras.Model` mapping images to logits.

    Example:
        >>> model = imagenet_resnet(
        ...     basic_block, (2, 2, 2, 2), num_classes=1000, input_shape=(224, 224, 3), name="resnet18"
        ... )
    """
    inputs = keras.Input(shape=input_shape)
    x = conv_bn(inputs, 64, 7, strides=2, name="stem")
    # Zero padding equals torch's -inf padding here: the inputs are post-ReLU.
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    x = residual_stages(x, block, (64, 128, 256, 512), blocks_per_stage)
    return pooled_classifier(inputs, x, num_classes=num_classes, name=name)


@documented_builder
def resnet18(num_classes=1000, input_shape=IMAGENET_INPUT_SHAPE, name="resnet18"):
    """ResNet-18: basic blocks [2, 2, 2, 2]. 11,689,512 trainable parameters (1000 classes)."""
    return imagenet_resnet(
        basic_block, (2, 2, 2, 2), num_classes=num_classes, input_shape=input_shape, name=name
    )


@documented_builder
def resnet34(num_classes=1000, input_shape=IMAGENET_INPUT_SHAPE, name="resnet34"):
    """ResNet-34: basic blocks [3, 4, 6, 3]. 21,797,672 trainable parameters (1000 classes)."""
    return imagenet_resnet(
        basic_block, (3, 4, 6, 3), num_classes=num_classes, input_shape=input_shape, name=name
    )


@documented_builder
def resnet50(num_classes=1000, input_shape=IMAGENET_INPUT_SHAPE, name="resnet50"):
    """ResNet-50 (v1.5, stride on the 3x3 conv): bottleneck blocks [3, 4, 6, 3].

    25,557,032 trainable parameters (1000 classes).
    """
    return imagenet_resnet(
        bottleneck_block, (3, 4, 6, 3), num_classes=num_classes, input_shape=input_shape, name=name
    )
