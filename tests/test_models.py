"""Architectures: the reference's parameter counts, torch-like BN and init, logits, registry."""

import functools
import inspect

import keras
import numpy as np
import pytest

from okdph_keras import models
from okdph_keras.models import MODELS, get_model

# Trainable parameters, in millions, of the reference's CIFAR models (10 / 100 classes).
CIFAR_PARAMS = {
    "resnet32": (0.467, 0.473),
    "resnet110": (1.148, 1.171),
    "wrn_20_8": (6.848, 6.871),
    "vgg16": (15.254, 15.300),
    "densenet_40_12": (0.176, 0.188),
}
# Trainable parameters of torchvision's models (1000 classes).
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}


@functools.cache
def cifar_model(name, num_classes):
    """Each CIFAR model is built once for the whole module (resnet110 takes seconds)."""
    return get_model(name, num_classes)


def trainable_parameters(model):
    return sum(int(np.prod(variable.shape)) for variable in model.trainable_variables)


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name", sorted(CIFAR_PARAMS))
def test_cifar_trainable_parameters_within_one_percent(name, num_classes):
    expected = 1e6 * CIFAR_PARAMS[name][(10, 100).index(num_classes)]
    count = trainable_parameters(cifar_model(name, num_classes))
    assert abs(count - expected) <= 0.01 * expected, (name, num_classes, count)


@pytest.mark.parametrize("name", sorted(CIFAR_PARAMS))
def test_cifar_logits(name, rng):
    model = cifar_model(name, 10)
    assert model.input_shape == (None, 32, 32, 3)
    logits = model(rng.uniform(0, 1, size=(2, 32, 32, 3)).astype("float32"), training=False)
    assert tuple(logits.shape) == (2, 10)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(logits)))


@pytest.mark.parametrize("name", sorted(CIFAR_PARAMS))
def test_batch_norm_and_init_follow_torch(name):
    layers = cifar_model(name, 10).layers
    batch_norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    convs = [layer for layer in layers if isinstance(layer, keras.layers.Conv2D)]
    assert batch_norms and convs
    for layer in batch_norms:
        assert (layer.momentum, layer.epsilon) == (0.9, 1e-5), layer.name
    for layer in convs:
        assert isinstance(layer.kernel_initializer, keras.initializers.HeNormal), layer.name
    assert layers[-1].activation is keras.activations.linear  # logits, no softmax


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_imagenet_resnets_match_torchvision(name, rng):
    assert inspect.signature(MODELS[name]).parameters["input_shape"].default == (224, 224, 3)
    model = get_model(name, 1000, (64, 64, 3))  # the parameters do not depend on the input size
    assert trainable_parameters(model) == TORCHVISION_PARAMS[name]
    # torchvision's geometry: the 7x7/2 stem and the 3x3/2 max pool each halve the size.
    assert model.get_layer("stem_pool").output.shape == (None, 16, 16, 64)
    logits = model(rng.uniform(0, 1, size=(2, 64, 64, 3)).astype("float32"), training=False)
    assert tuple(logits.shape) == (2, 1000)


def test_get_model_shapes_and_options():
    assert get_model("small_cnn", 3).input_shape == (None, 8, 8, 1)
    model = get_model("resnet32", 5, (16, 16, 3), name="student")
    assert model.input_shape == (None, 16, 16, 3)
    assert (model.output_shape, model.name) == ((None, 5), "student")


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="name='resnet33' is not allowed") as error:
        get_model("resnet33", 10)
    assert str(tuple(sorted(MODELS))) in str(error.value)


def test_every_builder_is_exported():
    assert {"small_cnn", *CIFAR_PARAMS, *TORCHVISION_PARAMS} == set(MODELS)
    for name, builder in MODELS.items():
        assert getattr(models, name) is builder


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_builder_documents_its_arguments(name):
    builder = MODELS[name]
    doc = inspect.getdoc(builder)
    assert doc.index("Args:") < doc.index("Returns:") < doc.index("Example:"), name
    for parameter in inspect.signature(builder).parameters:
        assert f"    {parameter}: " in doc, (name, parameter)
    assert f">>> {name}" in doc or f">>> model = {name}" in doc, name
