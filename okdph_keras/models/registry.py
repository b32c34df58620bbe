"""Architectures by name."""

from okdph_keras.models.cifar_resnet import resnet32, resnet110
from okdph_keras.models.densenet import densenet_40_12
from okdph_keras.models.imagenet_resnet import resnet18, resnet34, resnet50
from okdph_keras.models.small_cnn import small_cnn
from okdph_keras.models.vgg import vgg16
from okdph_keras.models.wide_resnet import wrn_20_8
from okdph_keras.validation import check_choice

MODELS = {
    "small_cnn": small_cnn,
    "resnet32": resnet32,
    "resnet110": resnet110,
    "wrn_20_8": wrn_20_8,
    "vgg16": vgg16,
    "densenet_40_12": densenet_40_12,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
}


def get_model(name, /, num_classes, input_shape=None, **kwargs):
    """Builds a fresh classifier by name.

    Args:
        name: one of `MODELS` (positional-only, so that `name=` in
            `kwargs` names the model).
        num_classes: number of output logits.
        input_shape: `(H, W, C)` of the images; None keeps the architecture's
            default ((32, 32, 3) for the CIFAR models, (224, 224, 3) for the
            ImageNet ResNets, (8, 8, 1) for `small_cnn`).
        **kwargs: passed to the builder (e.g. `name`, `dropout` for `vgg16`).

    Returns:
        A built `keras.Model` mapping images to logits.

    Raises:
        ValueError: if `name` is not in `MODELS`.

    Example:
        >>> builder = lambda: get_model("resnet32", 100)
        >>> okdph_keras.OKDPH(builder, num_students=2)
    """
    check_choice("name", name, sorted(MODELS))
    if input_shape is not None:
        kwargs["input_shape"] = input_shape
    return MODELS[name](num_classes=num_classes, **kwargs)
