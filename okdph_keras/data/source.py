"""The `Source` type every loader returns, and sources over in-memory arrays.

A `Source` keeps how its dataset was made (`parts_of`): the encoded items (file
paths, arrays or TFDS's encoded records) and the decoder, so that subsets and
shuffles can pick examples before their images are decoded.
"""

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import tensorflow as tf

if TYPE_CHECKING:
    from okdph_keras.data.tfds_source import TfdsRecords


class _Parts(NamedTuple):
    """How a source's `dataset` was made, so `limit_per_class` can pick before decoding."""

    dataset: tf.data.Dataset  # the dataset built from the parts below
    encoded: tuple | tf.data.Dataset  # arrays (paths or images, labels), or TFDS's
    # stream of (encoded image, label)
    decode: Callable  # dataset of encoded pairs -> dataset of (image, label)
    records: "TfdsRecords | None" = None  # TFDS: the record ranges `encoded` reads


@dataclasses.dataclass(frozen=True)
class Source:
    """A labelled image dataset and what is known about it.

    Attributes:
        dataset: unbatched `tf.data.Dataset` of `(image uint8 [H, W, C], label int64)`.
        num_examples: number of examples in `dataset`.
        num_classes: number of classes; labels lie in `[0, num_classes)`.
        class_names: tuple of `num_classes` str.
        image_shape: `(H, W, C)` when every image has it, None when sizes vary.
        origin: where the examples come from, for logs.
    """

    dataset: tf.data.Dataset
    num_examples: int
    num_classes: int
    class_names: tuple
    image_shape: tuple | None
    origin: str
    _parts: _Parts | None = dataclasses.field(default=None, repr=False, compare=False)


def make_source(encoded, decode, *, records=None, **info):
    """A `Source` decoding `encoded` (arrays, or a dataset of encoded pairs) with `decode`.

    Args:
        encoded: a tuple of arrays `(items, labels)`, or a dataset of encoded pairs.
        decode: a function from a dataset of encoded pairs to one of `(image, label)`.
        records: TFDS only: the `TfdsRecords` that `encoded` streams.
        **info: the other `Source` fields (`num_examples`, `num_classes`, ...).

    Returns:
        A `Source` that remembers its parts (see `parts_of`).
    """
    pairs = tf.data.Dataset.from_tensor_slices(encoded) if isinstance(encoded, tuple) else encoded
    dataset = decode(pairs)
    return Source(dataset=dataset, _parts=_Parts(dataset, encoded, decode, records), **info)


def parts_of(source):
    """How `source` was built (encoded items, decoder), or its dataset as is when replaced."""
    parts = source._parts
    if parts is None or parts.dataset is not source.dataset:  # built elsewhere, or replaced
        parts = _Parts(source.dataset, source.dataset, lambda examples: examples)
    return parts


def from_arrays(images, labels, class_names=None):
    """A `Source` over in-memory images.

    Args:
        images: `[N, H, W, C]` uint8, or integers / floats in [0, 255] (rounded to uint8).
        labels: `[N]` integers in `[0, num_classes)`.
        class_names: names of the classes; default `("0", "1", ...)` up to the
            largest label.

    Returns:
        A `Source` with `image_shape = (H, W, C)`.

    Example:
        >>> source = from_arrays(x_train, y_train, class_names=["cat", "dog"])
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(
            f"images must be a non-empty array [N, H, W, C]; got shape {images.shape}."
        )
    if labels.shape != (len(images),):
        raise ValueError(
            f"labels must have shape ({len(images)},) to match images {images.shape}; "
            f"got {labels.shape}."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers; got dtype {labels.dtype}.")
    images = _to_uint8(images)
    num_classes = int(labels.max()) + 1 if class_names is None else len(class_names)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise ValueError(
            f"labels must lie in [0, {num_classes}) ({num_classes} class names); "
            f"labels[{bad[0]}] = {labels[bad[0]]}."
        )
    if class_names is None:
        class_names = range(num_classes)
    return make_source(
        (images, labels.astype(np.int64)),
        lambda examples: examples,
        num_examples=len(images),
        num_classes=num_classes,
        class_names=tuple(str(name) for name in class_names),
        image_shape=images.shape[1:],
        origin=f"arrays: {len(images)} images of shape {images.shape[1:]}",
    )


def _to_uint8(images):
    if images.dtype == np.uint8:
        return images
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise ValueError(f"images must be uint8, or numbers in [0, 255]; got dtype {images.dtype}.")
    low, high = images.min(), images.max()
    if not (np.isfinite(low) and np.isfinite(high) and 0 <= low and high <= 255):
        raise ValueError(f"images must hold values in [0, 255]; got values in [{low}, {high}].")
    if np.issubdtype(images.dtype, np.floating) and high <= 1:
        raise ValueError(
            f"images look scaled to [0, 1] (largest value {high}): pass pixel values in "
            "[0, 255], e.g. images * 255."
        )
    return np.rint(images).astype(np.uint8)
