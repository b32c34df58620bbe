"""Multi-branch networks (ONE, CL-ILR, OKDDip, FFL, PCL): a shared trunk, a last stage per branch.

Each architecture of `MODELS` is cut where the reference cuts it (`SPLITS`):

- CIFAR ResNets (resnet32, resnet110, wrn_20_8): the stem and stages 1-2 are
  shared; stage 3, the pooling and the dense layer are per branch.
- ImageNet ResNets (resnet18/34/50): the stem and stages 1-3 are shared; stage
  4 onwards per branch.
- vgg16: conv1-10 and pools 1-4 are shared; the last 512x3 group, pool5 and
  the MLP are per branch.
- densenet_40_12: the stem, dense blocks 1-2 and their transitions are shared;
  dense block 3, the final BN-ReLU, the pooling and the dense layer are per
  branch.
- small_cnn: conv blocks 1-2 and the max pool are shared; conv block 3, the
  pooling and the dense layer are per branch.

A branch is built by the same functions as the single network's last part;
branch k's named layers are the single network's names prefixed `branch{k}_`.
"""

import inspect

import keras

from okdph_keras.models.cifar_resnet import resnet32_split, resnet110_split
from okdph_keras.models.densenet import densenet_40_12_split
from okdph_keras.models.imagenet_resnet import resnet18_split, resnet34_split, resnet50_split
from okdph_keras.models.layers import GradientScale
from okdph_keras.models.registry import MODELS
from okdph_keras.models.small_cnn import small_cnn_split
from okdph_keras.models.vgg import vgg16_split
from okdph_keras.models.wide_resnet import wrn_20_8_split
from okdph_keras.validation import check_bool, check_choice, check_integer

SPLITS = {
    "small_cnn": small_cnn_split,
    "resnet32": resnet32_split,
    "resnet110": resnet110_split,
    "wrn_20_8": wrn_20_8_split,
    "vgg16": vgg16_split,
    "densenet_40_12": densenet_40_12_split,
    "resnet18": resnet18_split,
    "resnet34": resnet34_split,
    "resnet50": resnet50_split,
}


def multi_branch(
    name,
    /,
    num_classes,
    input_shape=None,
    *,
    branches,
    per_branch_inputs=False,
    split_gradient_scale=None,
    **options,
):
    """A network of one shared trunk and `branches` branches, each with its own layers.

    Args:
        name: one of `SPLITS` (the architectures of `MODELS`).
        num_classes: number of logits of each branch.
        input_shape: `(H, W, C)` of the images; None keeps the architecture's
            default (see `get_model`).
        branches: number of branches m, at least 2.
        per_branch_inputs: False: one image batch, shared by all branches (ONE,
            CL-ILR, OKDDip, FFL). True: a list of m batches, branch k's view
            first going through the trunk on its own (PCL); the trunk's layers
            (one set of weights) then run m times, with each view's own batch
            statistics in training.
        split_gradient_scale: None, or a factor on the gradient each branch
            sends into the trunk (CL-ILR's 1/m), applied by a `GradientScale`
            layer at the start of every branch (an identity in the exported
            branch).
        **options: the architecture's options (`dropout` for vgg16, `width`
            and `batch_norm` for small_cnn).

    Returns:
        A functional `keras.Model` (named `{name}_multi_branch`) whose output
        is a dict:
        - `logits`: `[B, m, C]`, branch k's logits at `[:, k]`;
        - `features`: `[B, m, F]`, each branch's classifier input (pooled
          last-stage features; for vgg16 the last hidden dense layer's output);
        - `maps`: `[B, m, H, W, Ch]`, each branch's last feature map (before
          the pooling; for vgg16 pool5's output, 1x1x512 on 32x32 images);
        - `trunk`: the trunk's feature map, global-average pooled: `[B, Ft]`,
          or with per-branch inputs `[B, m, Ft]` (that of each view).

    Raises:
        ValueError: for an unknown `name`, `branches` < 2 or a non-bool
            `per_branch_inputs`.

    Example:
        >>> network = multi_branch("resnet32", 100, branches=2)
        >>> network(keras.ops.zeros((4, 32, 32, 3)))["logits"].shape
        TensorShape([4, 2, 100])
    """
    check_choice("name", name, sorted(SPLITS))
    check_integer("branches", branches, low=2)
    check_bool("per_branch_inputs", per_branch_inputs)
    if input_shape is None:
        input_shape = inspect.signature(MODELS[name]).parameters["input_shape"].default
    split = SPLITS[name](num_classes, **options)
    if per_branch_inputs:
        inputs = [keras.Input(shape=input_shape, name=f"view{k}") for k in range(branches)]
        trunk_maps = _shared_trunk(split.trunk, inputs)
        pooled = [
            keras.layers.GlobalAveragePooling2D(name=f"trunk_pool{k}")(maps)
            for k, maps in enumerate(trunk_maps)
        ]
        trunk = _stack(pooled, name="trunk")
    else:
        inputs = keras.Input(shape=input_shape, name="images")
        trunk_maps = [split.trunk(inputs)] * branches
        trunk = keras.layers.GlobalAveragePooling2D(name="trunk")(trunk_maps[0])
    if split_gradient_scale is not None:
        trunk_maps = [
            GradientScale(split_gradient_scale, name=f"branch{k}_split")(maps)
            for k, maps in enumerate(trunk_maps)
        ]
    heads = [split.branch(maps, f"branch{k}_") for k, maps in enumerate(trunk_maps)]
    outputs = {
        field: _stack([getattr(head, field) for head in heads], name=field)
        for field in ("logits", "features", "maps")
    }
    outputs["trunk"] = trunk
    return keras.Model(inputs, outputs, name=f"{name}_multi_branch")


def export_branch(network, branch, *, name=None):
    """Branch `branch` of a multi-branch network with the trunk, as a plain Keras model.

    Args:
        network: a model built by `multi_branch` (or loaded from its save).
        branch: the branch's index, from 0.
        name: the model's name; None: `{network.name}_branch{branch}`.

    Returns:
        A functional `keras.Model` mapping images to that branch's logits:
        layer for layer the single network of the architecture (its layers
        named as the single network's), holding a copy of the network's
        current weights (with per-branch inputs, the trunk's and the branch's,
        the branch fed its own view). It saves as `.keras` and converts to
        TFLite like any single network.

    Raises:
        ValueError: if `branch` is not an index of the network's branches.

    Example:
        >>> student = export_branch(network, 0)
        >>> student.save("student.keras")
    """
    branches = network.get_layer("logits").output.shape[1]
    check_integer("branch", branch, low=0, high=branches - 1)
    images = network.inputs[branch] if len(network.inputs) > 1 else network.inputs[0]
    source = keras.Model(images, network.get_layer(f"logits_stack{branch}").input)
    prefix = f"branch{branch}_"
    copy = keras.models.clone_model(
        source,
        input_tensors=keras.Input(shape=images.shape[1:]),
        clone_function=lambda layer: _renamed(layer, prefix),
    )
    for layer in source.layers:
        if layer.weights:
            copy.get_layer(layer.name.removeprefix(prefix)).set_weights(layer.get_weights())
    if name is None:
        name = f"{network.name}_branch{branch}"
    return keras.Model(copy.input, copy.output, name=name)


def _shared_trunk(trunk, views):
    """The trunk's maps of each view: one set of trunk layers, called on every view."""
    first = trunk(views[0])
    model = keras.Model(views[0], first)
    return [first] + [
        keras.models.clone_model(model, input_tensors=view, clone_function=_same).output
        for view in views[1:]
    ]


def _stack(tensors, *, name):
    """`[B, ...]` tensors stacked into `[B, len(tensors), ...]` (layer `name`)."""
    expanded = [
        keras.layers.Reshape((1, *tensor.shape[1:]), name=f"{name}_stack{k}")(tensor)
        for k, tensor in enumerate(tensors)
    ]
    return keras.layers.Concatenate(axis=1, name=name)(expanded)


def _same(layer):
    """`clone_model`'s clone function that calls the model's own layers on the new inputs."""
    return layer


def _renamed(layer, prefix):
    if isinstance(layer, GradientScale):  # training-only: the exported branch is plain
        return keras.layers.Identity(name=layer.name.removeprefix(prefix))
    config = layer.get_config()
    config["name"] = layer.name.removeprefix(prefix)
    return layer.__class__.from_config(config)
