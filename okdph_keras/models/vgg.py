"""VGG-16 with BatchNorm for 32x32 images (CIFAR)."""

import keras

from okdph_keras.models.layers import conv_bn
from okdph_keras.models.split import Branch, Split, single_network

# Conv widths and max pools ("M"): the trunk's four groups, then the branch's last 512x3 group.
VGG16_TRUNK_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M")
VGG16_BRANCH_LAYOUT = (512, 512, 512, "M")
# (pools, convs) of the trunk: a branch's layers are numbered on from pool5 and conv11.
_TRUNK_COUNTS = (
    VGG16_TRUNK_LAYOUT.count("M"),
    len(VGG16_TRUNK_LAYOUT) - VGG16_TRUNK_LAYOUT.count("M"),
)


def vgg16_split(num_classes=10, dropout=0.0):
    """VGG-16 (see `vgg16`) as trunk (conv1-10, pools 1-4) and branch (the rest).

    Args:
        num_classes: number of output logits.
        dropout: dropout rate after each hidden dense layer (none when 0).

    Returns:
        A `Split`: a branch is the last 512x3 group (conv11-13, pool5), the
        flatten and the MLP (fc1, fc2, logits). Its `maps` are pool5's output
        (1x1x512 for 32x32 images), its `features` the logits layer's input.

    Example:
        >>> split = vgg16_split(100)
    """

    def trunk(images):
        return _convs(images, VGG16_TRUNK_LAYOUT, prefix="", start=(0, 0))

    def branch(x, prefix):
        maps = _convs(x, VGG16_BRANCH_LAYOUT, prefix=prefix, start=_TRUNK_COUNTS)
        x = keras.layers.Flatten(name=f"{prefix}flatten")(maps)
        for i in (1, 2):
            x = keras.layers.Dense(512, activation="relu", name=f"{prefix}fc{i}")(x)
            if dropout:
                x = keras.layers.Dropout(dropout, name=f"{prefix}fc{i}_dropout")(x)
        return Branch(maps, x, keras.layers.Dense(num_classes, name=f"{prefix}logits")(x))

    return Split(trunk, branch)


def vgg16(num_classes=10, input_shape=(32, 32, 3), dropout=0.0, name="vgg16"):
    """13 3x3 conv+BN+ReLU with 5 max pools, then dense 512, 512 and the logits.

    As in the reference, the convs keep their bias and the two hidden dense
    layers (ReLU) are followed by dropout of rate `dropout`, 0 by default.
    Trainable parameters: 15,253,578 (10 classes) / 15,299,748 (100 classes).

    Args:
        num_classes: number of output logits.
        input_shape: `(H, W, C)` of the images; 32x32 pools down to 1x1x512.
        dropout: dropout rate after each hidden dense layer (none when 0).
        name: the model's name.

    Returns:
        A built functional `keras.Model` mapping images to logits.

    Example:
        >>> vgg16(100)(keras.ops.zeros((2, 32, 32, 3))).shape
        TensorShape([2, 100])
    """
    return single_network(vgg16_split(num_classes, dropout), input_shape=input_shape, name=name)


def _convs(x, layout, *, prefix, start):
    """The conv+BN+ReLU and max pools of `layout`, numbered on from `start` (pools, convs)."""
    pool_index, conv_index = start
    for entry in layout:
        if entry == "M":
            pool_index += 1
            x = keras.layers.MaxPooling2D(name=f"{prefix}pool{pool_index}")(x)
        else:
            conv_index += 1
            x = conv_bn(x, entry, 3, use_bias=True, name=f"{prefix}conv{conv_index}")
    return x
