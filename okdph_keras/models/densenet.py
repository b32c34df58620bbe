"""DenseNet-BC-40 (growth rate 12) for 32x32 images (CIFAR)."""

import keras

from okdph_keras.models.builders import documented_builder
from okdph_keras.models.layers import bn_relu, bn_relu_conv, conv, pooled_classifier


@documented_builder
def densenet_40_12(num_classes=10, input_shape=(32, 32, 3), name="densenet_40_12"):
    """DenseNet-BC: 3x3 conv (24), three dense blocks of 6 bottleneck layers, 0.5 compression.

    Each dense layer is BN-ReLU-1x1 conv (48) - BN-ReLU-3x3 conv (12) and its
    output is concatenated to its input; transitions are BN-ReLU-1x1 conv
    halving the channels, then 2x2 average pooling. Channels: 24 -> 96 -> 48
    -> 120 -> 60 -> 132, then BN, ReLU, global average pool, dense. Convs have
    no bias. Trainable parameters: 176,122 (10 classes) / 188,092 (100 classes).
    """
    growth_rate, layers_per_block, compression, bottleneck_factor = 12, 6, 0.5, 4
    inputs = keras.Input(shape=input_shape)
    x = conv(inputs, 2 * growth_rate, 3, name="stem_conv")
    for block in range(1, 4):
        for layer in range(1, layers_per_block + 1):
            prefix = f"block{block}_layer{layer}"
            y = bn_relu_conv(x, bottleneck_factor * growth_rate, 1, name=f"{prefix}_1x1")
            y = bn_relu_conv(y, growth_rate, 3, name=f"{prefix}_3x3")
            x = keras.layers.Concatenate(name=f"{prefix}_concat")([x, y])
        if block < 3:
            x = bn_relu_conv(x, int(x.shape[-1] * compression), 1, name=f"transition{block}")
            x = keras.layers.AveragePooling2D(2, name=f"transition{block}_pool")(x)
    x = bn_relu(x, name="final")
    return pooled_classifier(inputs, x, num_classes=num_classes, name=name)
