"""Wide ResNet-20-8 for 32x32 images: the CIFAR bottleneck ResNet, 8x wider inside."""

from okdph_keras.models.builders import documented_builder
from okdph_keras.models.cifar_resnet import CIFAR_INPUT_SHAPE, cifar_resnet_split
from okdph_keras.models.resnet_blocks import bottleneck_block
from okdph_keras.models.split import single_network


def wrn_20_8_split(num_classes=10):
    """WRN-20-8 (see `wrn_20_8`) as a `Split` (see `cifar_resnet_split`)."""
    return cifar_resnet_split(
        bottleneck_block, (2, 2, 2), num_classes=num_classes, width_multiplier=8
    )


@documented_builder
def wrn_20_8(num_classes=10, input_shape=CIFAR_INPUT_SHAPE, name="wrn_20_8"):
    """WRN-20-8: bottleneck blocks [2, 2, 2], inner width 128/256/512, outputs 64/128/256.

    Trainable parameters: 6,848,090 (10 classes) / 6,871,220 (100 classes).
    """
    return single_network(wrn_20_8_split(num_classes), input_shape=input_shape, name=name)
