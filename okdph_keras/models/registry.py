"""Architectures by name."""

from okdph_keras.models.small_cnn import small_cnn

MODELS = {"small_cnn": small_cnn}


def get_model(name, num_classes, input_shape, **kwargs):
    """Builds a fresh classifier by name.

    Args:
        name: one of `MODELS`.
        num_classes: number of output logits.
        input_shape: `(H, W, C)` of the images.
        **kwargs: architecture options.

    Returns:
        A built `keras.Model` mapping images to logits.

    Example:
        >>> builder = lambda: get_model("small_cnn", 10, (8, 8, 1))
        >>> okdph_keras.OKDPH(builder, num_students=2)
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; known models: {sorted(MODELS)}.")
    return MODELS[name](input_shape=input_shape, num_classes=num_classes, **kwargs)
