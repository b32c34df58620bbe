"""The Args, Returns and Example every architecture builder's docstring shares."""

import inspect

_SECTIONS = """

Args:
    num_classes: number of output logits.
    input_shape: `(H, W, C)` of the images.
    name: the model's name.

Returns:
    A built functional `keras.Model` mapping images to logits.

Example:
    >>> {name}()(keras.ops.zeros((2, {height}, {width}, {channels}))).shape
    TensorShape([2, {num_classes}])
"""


def documented_builder(builder):
    """Completes an architecture builder's docstring with the sections all builders share.

    Args:
        builder: a function `builder(num_classes=..., input_shape=..., name=...)`
            whose docstring says what the model is.

    Returns:
        `builder` itself; its docstring gets the Args, Returns and an Example
        built from its defaults.

    Example:
        >>> @documented_builder
        ... def resnet20(num_classes=10, input_shape=(32, 32, 3), name="resnet20"):
        ...     '''ResNet-20: basic blocks [3, 3, 3].'''
    """
    defaults = {
        parameter.name: parameter.default
        for parameter in inspect.signature(builder).parameters.values()
    }
    height, width, channels = defaults["input_shape"]
    builder.__doc__ = inspect.cleandoc(builder.__doc__) + _SECTIONS.format(
        name=builder.__name__,
        height=height,
        width=width,
        channels=channels,
        num_classes=defaults["num_classes"],
    )
    return builder
