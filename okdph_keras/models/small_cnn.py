"""A small convolutional classifier for tiny images (quickstart, tests)."""

import keras

from okdph_keras.models import layers


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
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for block, channels in enumerate((width, 2 * width, 4 * width)):
        x = layers.conv(x, channels, 3, use_bias=not batch_norm)
        if batch_norm:
            x = layers.batch_norm()(x)
        x = keras.layers.ReLU()(x)
        if block == 1:
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name=name)
