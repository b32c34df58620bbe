"""Seeded, class-balanced samples of raw uint8 images, from a `Source` or arrays.

Used for int8 calibration (representative data), choosing the student (selection data)
and verification (held-out data).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from okdph_keras.data import sources as sources_lib
from okdph_keras.data.pipeline import eval_dataset
from okdph_keras.data.views import eval_transform

REPRESENTATIVE_EXAMPLES = 200
SELECTION_EXAMPLES = 1000
BATCH_SIZE = 256


@dataclasses.dataclass
class Images:
    """Raw uint8 images `[b, S, S, C]` (and int labels) in batches, from arrays or a Source."""

    batches: object  # () -> iterator of (images, labels or None)
    count: int
    description: str


def _to_uint8(images):
    return tf.cast(tf.round(tf.clip_by_value(images, 0.0, 255.0)), tf.uint8)


def _from_source(source, settings, *, limit, seed, description):
    sample = ""
    if limit is not None and source.num_examples > limit:
        source = sources_lib.limit_per_class(source, limit / source.num_examples, seed=seed)
        sample = f" (a class-balanced sample, seed {seed})"
    transform = eval_transform(settings.style or "cifar", settings.image_size)
    dataset = eval_dataset(source, BATCH_SIZE, transform=lambda image: _to_uint8(transform(image)))

    def batches():
        for images, labels in dataset.as_numpy_iterator():
            yield images.astype(np.uint8), labels.astype(np.int64)

    return Images(
        batches, source.num_examples, f"{description}: {source.num_examples} images{sample}"
    )


def _from_arrays(value, settings, *, what, need_labels, limit, seed):
    labels = None
    if isinstance(value, tuple) and len(value) == 2:
        images, labels = value
    elif need_labels:
        raise ValueError(
            f"{what} must be (images, labels) or an okdph_keras.data.Source; got {type(value).__name__}."
        )
    else:
        images = value
    images = np.asarray(images)
    expected = (settings.image_size, settings.image_size, settings.channels)
    if images.ndim != 4 or images.shape[1:] != expected or len(images) == 0:
        raise ValueError(
            f"{what} must be raw images of shape [N, {', '.join(map(str, expected))}] (pixel "
            f"values in [0, 255] at the model's input size, N >= 1); got shape {list(images.shape)}."
        )
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise ValueError(f"{what} must hold pixel values in [0, 255]; got dtype {images.dtype}.")
    if images.dtype != np.uint8:
        low, high = float(images.min()), float(images.max())
        if not (np.isfinite(low) and np.isfinite(high) and low >= 0 and high <= 255):
            raise ValueError(
                f"{what} must hold pixel values in [0, 255]; got values in [{low}, {high}]."
            )
        images = np.rint(images).astype(np.uint8)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"{what}: labels must be {len(images)} integers (one per image); got "
                f"{labels.dtype} {list(labels.shape)}."
            )
        if labels.min() < 0 or labels.max() >= settings.num_classes:
            raise ValueError(f"{what}: labels must lie in [0, {settings.num_classes}).")
        labels = labels.astype(np.int64)
    sample = ""
    if limit is not None and len(images) > limit:
        keep = np.sort(np.random.default_rng(seed).permutation(len(images))[:limit])
        images, labels = images[keep], None if labels is None else labels[keep]
        sample = f" (a random sample, seed {seed})"

    def batches():
        for start in range(0, len(images), BATCH_SIZE):
            stop = start + BATCH_SIZE
            yield images[start:stop], None if labels is None else labels[start:stop]

    return Images(batches, len(images), f"arrays passed as {what}: {len(images)} images{sample}")


def draw(value, settings, *, what, need_labels, limit, seed, label=None):
    """`Images` from a `Source` (test-time transform) or arrays, at most `limit` of them.

    Args:
        value: a `Source`, `(images, labels)`, or (unless `need_labels`) images alone.
        settings: the export's `Settings` (input size, channels, classes, style).
        what: the argument's name, for error messages.
        need_labels: labels are required.
        limit: at most this many images (a seeded sample); None: all of them.
        seed: the sample's seed.
        label: how a `Source` is described; default: its origin.
    """
    if isinstance(value, sources_lib.Source):
        description = label or value.origin
        return _from_source(value, settings, limit=limit, seed=seed, description=description)
    return _from_arrays(value, settings, what=what, need_labels=need_labels, limit=limit, seed=seed)
