"""An architecture cut in two: the trunk and a branch (last stage, pooling, classifier).

A single network is one trunk followed by one branch (`single_network`); a
multi-branch network (`multi_branch.multi_branch`) is one trunk followed by
several branches, each with its own layers. Both are built by the same
functions, so a branch of a multi-branch network is layer for layer the
single network's last part.
"""

from collections.abc import Callable
from typing import NamedTuple

import keras


class Branch(NamedTuple):
    """The tensors of one branch.

    Attributes:
        maps: its last feature map `[B, H, W, Ch]` (the pooling's input).
        features: the classifier's input `[B, F]` (the pooled features; for
            VGG the last hidden dense layer's output).
        logits: `[B, C]`.
    """

    maps: keras.KerasTensor
    features: keras.KerasTensor
    logits: keras.KerasTensor


class Split(NamedTuple):
    """An architecture as a trunk and a branch.

    Attributes:
        trunk: `trunk(images)`: creates the trunk's layers on the images and
            returns the trunk's feature map.
        branch: `branch(maps, prefix)`: creates a new set of branch layers on
            the trunk's map and returns its `Branch`. Named layers get names
            starting with `prefix` ("" in a single network).
    """

    trunk: Callable[[keras.KerasTensor], keras.KerasTensor]
    branch: Callable[[keras.KerasTensor, str], Branch]


def single_network(split, *, input_shape, name):
    """The single network of a split architecture: its trunk, then one branch.

    Args:
        split: a `Split`.
        input_shape: `(H, W, C)` of the images.
        name: the model's name.

    Returns:
        A built functional `keras.Model` mapping images to logits.

    Example:
        >>> model = single_network(resnet32_split(10), input_shape=(32, 32, 3), name="resnet32")
    """
    inputs = keras.Input(shape=input_shape)
    branch = split.branch(split.trunk(inputs), "")
    return keras.Model(inputs, branch.logits, name=name)


def pooled_branch(maps, *, num_classes, prefix):
    """Global average pooling (`avg_pool`) and a dense logits layer (`logits`).

    Args:
        maps: the branch's last feature map `[B, H, W, Ch]`.
        num_classes: number of output logits.
        prefix: start of the two layers' names; None leaves them unnamed
            (Keras's automatic names).

    Returns:
        The `Branch` (`features` are the pooled maps).

    Example:
        >>> branch = pooled_branch(x, num_classes=10, prefix="branch0_")
    """
    pool_name, logits_name = (
        (None, None) if prefix is None else (f"{prefix}avg_pool", f"{prefix}logits")
    )
    features = keras.layers.GlobalAveragePooling2D(name=pool_name)(maps)
    logits = keras.layers.Dense(num_classes, name=logits_name)(features)
    return Branch(maps, features, logits)
