"""VGG-16 with BatchNorm for 32x32 images (CIFAR)."""

import keras

from okdph_keras.models.layers import conv_bn

VGG16_LAYOUT = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


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
    inputs = keras.Input(shape=input_shape)
    x = inputs
    conv_index, pool_index = 0, 0
    for entry in VGG16_LAYOUT:
        if entry == "M":
            pool_index += 1
            x = keras.layers.MaxPooling2D(name=f"pool{pool_index}")(x)
        else:
            conv_index += 1
            x = conv_bn(x, entry, 3, use_bias=True, name=f"conv{conv_index}")
    x = keras.layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        x = keras.layers.Dense(512, activation="relu", name=f"fc{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
