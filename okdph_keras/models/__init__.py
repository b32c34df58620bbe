"""Architectures. Nothing here knows of OKDPH: any classifier can be a student.

`multi_branch` builds an architecture as one shared trunk and several branches
(ONE, CL-ILR, OKDDip, FFL, PCL); `export_branch` makes one branch a plain model.
"""

from okdph_keras.models.cifar_resnet import resnet32, resnet110
from okdph_keras.models.densenet import densenet_40_12
from okdph_keras.models.imagenet_resnet import resnet18, resnet34, resnet50
from okdph_keras.models.multi_branch import export_branch, multi_branch
from okdph_keras.models.registry import MODELS, get_model
from okdph_keras.models.small_cnn import small_cnn
from okdph_keras.models.vgg import vgg16
from okdph_keras.models.wide_resnet import wrn_20_8

__all__ = [
    "MODELS",
    "densenet_40_12",
    "export_branch",
    "get_model",
    "multi_branch",
    "resnet18",
    "resnet32",
    "resnet34",
    "resnet50",
    "resnet110",
    "small_cnn",
    "vgg16",
    "wrn_20_8",
]
