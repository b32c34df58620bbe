"""Subsets of a `Source`: a fraction of every class, or a held-out split.

Examples are picked before their images are decoded: from the arrays of paths or
images, or by position in a TFDS stream, or as ranges of TFDS records.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from okdph_keras.data.source import make_source, parts_of
from okdph_keras.validation import check_number


def limit_per_class(source, fraction, seed):
    """Keeps `ceil(fraction * n_c)` (at least 1) examples of every class c.

    For the limited-data experiments (1%, 10% of the training set). The examples are
    the first ones of each class in a seeded permutation; they keep their order.
    Labels are read once (TFDS: without decoding images); examples are picked before
    their images are decoded. A TFDS subset is filtered from its records' stream, so
    every epoch reads all of the source's records.

    Args:
        source: a `Source`.
        fraction: in (0, 1].
        seed: integer seed of the permutation; the same seed picks the same subset.

    Returns:
        A `Source` over the subset.

    Example:
        >>> train_1pct = limit_per_class(load_source("cifar10", "train"), 0.01, seed=0)
    """
    check_number("fraction", fraction, low=0, high=1, low_open=True)
    return _split_by_class(source, parts_of(source), fraction=fraction, seed=seed)[0]


def split_per_class(source, fraction, seed):
    """Splits `source` in two: a held-out part of about `fraction` of it, and the rest.

    This is how a run holds out its validation split. Both parts keep the source's
    order, are disjoint, cover the source and are the same for the same seed.

    - Arrays and image folders: exactly `ceil(fraction * n_c)` (at least 1) examples
      of every class c, the first ones of the class in a seeded permutation.
    - TFDS: `ceil(fraction * N)` consecutive records starting at a seeded position
      (TFDS split slicing, e.g. `train[8123:13123]` and `train[:8123]+train[13123:]`),
      so no label is read and no part reads the other's records, except records a
      TFRecord file holds before a part's first record in that file (skipped, one
      file per range). The size is exact; class counts are only as balanced as the
      records TFDS shuffled when preparing the dataset.

    Args:
        source: a `Source`.
        fraction: in (0, 1].
        seed: integer seed of the choice; the same seed gives the same parts.

    Returns:
        `(part, rest)`, two `Source`s; `rest` is None when it would be empty.

    Example:
        >>> validation, train = split_per_class(load_source("cifar10", "train"), 0.1, seed=0)
    """
    check_number("fraction", fraction, low=0, high=1, low_open=True)
    parts = parts_of(source)
    if parts.records is None:
        return _split_by_class(source, parts, fraction=fraction, seed=seed)
    total = parts.records.num_examples
    count = min(total, max(1, math.ceil(fraction * total - 1e-9)))
    start = int(np.random.default_rng(seed).integers(0, total - count + 1))
    description = f"{count} of {total} records from {start} (seed {seed})"
    part = _tfds_part(
        source, parts, records=parts.records.take(start, start + count), description=description
    )
    if count == total:
        return part, None
    rest = parts.records.take(0, start)
    rest = dataclasses.replace(
        rest, ranges=rest.ranges + parts.records.take(start + count, total).ranges
    )
    return part, _tfds_part(source, parts, records=rest, description=f"all but {description}")


def _tfds_part(source, parts, *, records, description):
    return make_source(
        records.stream(),
        parts.decode,
        records=records,
        num_examples=records.num_examples,
        num_classes=source.num_classes,
        class_names=source.class_names,
        image_shape=source.image_shape,
        origin=f"{source.origin}, {description}",
    )


def _read_labels(examples):
    """int64 numpy array of the labels of a dataset of (anything, label)."""
    batches = examples.map(lambda _, label: label).batch(65536).as_numpy_iterator()
    return np.concatenate([np.zeros(0, np.int64), *batches]).astype(np.int64)


def _split_by_class(source, parts, *, fraction, seed):
    """`(part, rest)`: the first `ceil(fraction * n_c)` of every class c in a seeded permutation."""
    in_memory = isinstance(parts.encoded, tuple)
    labels = parts.encoded[1] if in_memory else _read_labels(parts.encoded)  # not decoding
    order = np.random.default_rng(seed).permutation(len(labels))
    keep = np.zeros(len(labels), bool)
    for label in range(source.num_classes):
        members = order[labels[order] == label]
        count = max(1, math.ceil(fraction * len(members) - 1e-9))  # 0.1 * 30 is 3.0000000000000004
        keep[members[:count]] = True
    part = _select(
        source, parts, mask=keep, description=f"{fraction:g} of each class (seed {seed})"
    )
    rest = None
    if not keep.all():
        rest = _select(
            source,
            parts,
            mask=~keep,
            description=f"all but {fraction:g} of each class (seed {seed})",
        )
    return part, rest


def _select(source, parts, *, mask, description):
    """A `Source` over the examples of `source` where the boolean `mask` is True."""
    if isinstance(parts.encoded, tuple):
        encoded = tuple(array[mask] for array in parts.encoded)
    else:  # a stream: filter by position
        mask_tensor = tf.constant(mask)
        encoded = (
            parts.encoded.enumerate()
            .filter(lambda index, example: tf.gather(mask_tensor, index))
            .map(lambda index, example: example)
        )
    return make_source(
        encoded,
        parts.decode,
        num_examples=int(mask.sum()),
        num_classes=source.num_classes,
        class_names=source.class_names,
        image_shape=source.image_shape,
        origin=f"{source.origin}, {description}",
    )
