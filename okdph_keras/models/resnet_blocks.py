"""Residual blocks and stages shared by the CIFAR and ImageNet ResNets.

The layout is torchvision's (post-activation, "ResNet v1.5"): bias-free convs
each followed by BatchNorm, the stride on the 3x3 conv, and a 1x1 conv + BN
projection shortcut whenever the block changes the shape.
"""

import keras

from okdph_keras.models.layers import conv_bn
from okdph_keras.models.split import Split, pooled_branch

BOTTLENECK_EXPANSION = 4


def basic_block(x, filters, strides=1, *, name):
    """Two 3x3 conv+BN, added to the shortcut, then ReLU.

    Args:
        x: input tensor `[B, H, W, C]`.
        filters: channels of both convs and of the output.
        strides: stride of the first conv (and of the projection).
        name: prefix of the layers' names.

    Returns:
        The output tensor, `filters` channels.

    Example:
        >>> y = basic_block(x, 32, strides=2, name="stage2_block1")
    """
    shortcut = _shortcut(x, filters, strides, name)
    y = conv_bn(x, filters, 3, strides=strides, name=f"{name}_1")
    y = conv_bn(y, filters, 3, relu=False, name=f"{name}_2")
    return _merge(shortcut, y, name)


def bottleneck_block(x, filters, strides=1, *, width_multiplier=1, name):
    """1x1 -> 3x3 -> 1x1 conv+BN (expansion 4), added to the shortcut, then ReLU.

    Args:
        x: input tensor `[B, H, W, C]`.
        filters: "planes": the output has `4 * filters` channels.
        strides: stride of the 3x3 conv (and of the projection).
        width_multiplier: the inner 1x1 and 3x3 convs have
            `filters * width_multiplier` channels (wide ResNets use > 1).
        name: prefix of the layers' names.

    Returns:
        The output tensor, `4 * filters` channels.

    Example:
        >>> y = bottleneck_block(x, 16, width_multiplier=8, name="stage1_block1")
    """
    width = filters * width_multiplier
    shortcut = _shortcut(x, BOTTLENECK_EXPANSION * filters, strides, name)
    y = conv_bn(x, width, 1, name=f"{name}_1")
    y = conv_bn(y, width, 3, strides=strides, name=f"{name}_2")
    y = conv_bn(y, BOTTLENECK_EXPANSION * filters, 1, relu=False, name=f"{name}_3")
    return _merge(shortcut, y, name)


def residual_stages(
    x, block, stage_filters, blocks_per_stage, *, first_stage=1, prefix="", **block_kwargs
):
    """Stages of residual blocks; each stage after the first of the network halves the size.

    Args:
        x: input tensor `[B, H, W, C]`.
        block: `basic_block` or `bottleneck_block`.
        stage_filters: the blocks' `filters`, one per stage.
        blocks_per_stage: number of blocks, one per stage.
        first_stage: the network's number of the first stage built here (1
            for a whole network, 3 for a CIFAR ResNet's branch).
        prefix: start of the layers' names.
        **block_kwargs: passed to every block (e.g. `width_multiplier`).

    Returns:
        The output tensor. Block `j` of stage `i` is named
        `{prefix}stage{i}_block{j}`; only the first block of stages 2, 3, ...
        strides (2).

    Example:
        >>> y = residual_stages(x, basic_block, (16, 32, 64), (5, 5, 5))
    """
    stages = enumerate(zip(stage_filters, blocks_per_stage), start=first_stage)
    for stage, (filters, num_blocks) in stages:
        for index in range(1, num_blocks + 1):
            strides = 2 if stage > 1 and index == 1 else 1
            name = f"{prefix}stage{stage}_block{index}"
            x = block(x, filters, strides, name=name, **block_kwargs)
    return x


def residual_split(*, stem, block, stage_filters, blocks_per_stage, num_classes, **block_kwargs):
    """A ResNet as trunk (stem, stages but the last) and branch (last stage, pooling, dense).

    Args:
        stem: `stem(images)`: creates the stem's layers, returns its output.
        block: `basic_block` or `bottleneck_block`.
        stage_filters, blocks_per_stage: see `residual_stages`.
        num_classes: number of output logits.
        **block_kwargs: passed to every block (e.g. `width_multiplier`).

    Returns:
        A `Split`; a branch's last stage keeps the network's stage number.

    Example:
        >>> split = residual_split(
        ...     stem=stem, block=basic_block, stage_filters=(16, 32, 64),
        ...     blocks_per_stage=(5, 5, 5), num_classes=10,
        ... )
    """

    def trunk(images):
        x = stem(images)
        return residual_stages(x, block, stage_filters[:-1], blocks_per_stage[:-1], **block_kwargs)

    def branch(x, prefix):
        x = residual_stages(
            x,
            block,
            stage_filters[-1:],
            blocks_per_stage[-1:],
            first_stage=len(stage_filters),
            prefix=prefix,
            **block_kwargs,
        )
        return pooled_branch(x, num_classes=num_classes, prefix=prefix)

    return Split(trunk, branch)


def _shortcut(x, channels, strides, name):
    if strides == 1 and x.shape[-1] == channels:
        return x
    return conv_bn(x, channels, 1, strides=strides, relu=False, name=f"{name}_proj")


def _merge(shortcut, residual, name):
    x = keras.layers.Add(name=f"{name}_add")([shortcut, residual])
    return keras.layers.ReLU(name=f"{name}_out")(x)
