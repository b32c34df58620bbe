"""Where images come from: TFDS datasets, class-per-folder image trees, in-memory arrays.

Every loader returns a `Source` whose `dataset` yields unbatched
`(image uint8 [H, W, C], label int64 scalar)` in a deterministic order; file-backed
sources decode lazily, when the dataset is iterated.

Offline: before TFDS downloads anything, `load_source` tries one TCP connection to
each download host of the dataset (or to the configured proxy), all at once, for at
most 3 s. If none answers, it fails then, instead of TFDS retrying for minutes.

Image folders: a file that cannot be read or decoded stops the iteration with an
error naming the file. `image_shape` is the shape shared by 16 images spread over the
files (None if they differ); then every image is checked against it when decoded.
"""

import dataclasses
import math
import os
import queue
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import tensorflow as tf

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
KNOWN_TFDS_NAMES = (
    "cifar10",
    "cifar100",
    "imagenet2012",
    "imagenette",
    "mnist",
    "fashion_mnist",
    "svhn_cropped",
    "stl10",
    "oxford_flowers102",
    "food101",
)
CONNECT_TIMEOUT_S = 3.0
RECORD_BUFFER_BYTES = 1 << 30  # TFDS: encoded records held by an epoch's shuffle buffer
SHAPE_PROBES = 16  # image folders: images decoded at load time to find a common shape
FOLDER_LAYOUT = (
    "expected layout: <root>/train/<class>/*.jpg (or .jpeg .png .bmp .gif) and "
    "<root>/test/<class>/... or <root>/val/<class>/..., one folder per class"
)


class _Parts(NamedTuple):
    """How a source's `dataset` was made, so `limit_per_class` can pick before decoding."""

    dataset: tf.data.Dataset  # the dataset built from the parts below
    encoded: tuple | tf.data.Dataset  # arrays (paths or images, labels), or TFDS's
    # stream of (encoded image, label)
    decode: Callable  # dataset of encoded pairs -> dataset of (image, label)
    records: "_TfdsRecords | None" = None  # TFDS: the record ranges `encoded` reads


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


def _make_source(encoded, decode, records=None, **info):
    pairs = tf.data.Dataset.from_tensor_slices(encoded) if isinstance(encoded, tuple) else encoded
    dataset = decode(pairs)
    return Source(dataset=dataset, _parts=_Parts(dataset, encoded, decode, records), **info)


def load_source(dataset, split, data_dir=None, download=True):
    """Loads one split of a TFDS image-classification dataset or of an image folder.

    Args:
        dataset: a TFDS name ("cifar10", "cifar100", "imagenet2012", or any TFDS
            dataset with an "image" and a ClassLabel "label" feature), or
            "image_folder" for a class-per-folder tree under `data_dir`.
        split: "train" or "test". TFDS: "test" reads the "test" split, or
            "validation" when there is none (imagenet2012). Image folder:
            `data_dir/test/`, else `val/`, else `validation/`.
        data_dir: TFDS data directory (None: TFDS's default, ~/tensorflow_datasets),
            or the image folder's root.
        download: TFDS only: download and prepare the dataset when it is absent.

    Returns:
        A `Source`. Its dataset reads TFDS files in a fixed order; `multi_view_dataset`
        shuffles a TFDS split's files per epoch (see `_TfdsRecords.shuffled`).

    Raises:
        ValueError: unknown dataset or split, not an image-classification dataset,
            bad image folder.
        FileNotFoundError: data absent and not downloadable (download=False, or a
            manual download such as imagenet2012), missing image folder.
        ConnectionError: data absent and no download host reachable.

    Example:
        >>> train = load_source("cifar10", "train", data_dir="/data/tfds")
        >>> val = load_source("image_folder", "test", data_dir="/data/imagenet")
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}.")
    if dataset == "image_folder":
        return _load_image_folder(data_dir, split)
    return _load_tfds(dataset, split, data_dir, download)


# --- TFDS -------------------------------------------------------------------------------


def _load_tfds(name, split, data_dir, download):
    import tensorflow_datasets as tfds  # noqa: PLC0415 (slow to import; only needed here)

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        raise ValueError(
            f"Unknown dataset {name!r}: not a TFDS dataset name. Image-classification "
            f"names include {', '.join(KNOWN_TFDS_NAMES)}; for images in class folders "
            f"use dataset='image_folder' with data_dir=<root> ({FOLDER_LAYOUT})."
        ) from None
    features = dict(builder.info.features.items())
    if not (
        isinstance(features.get("image"), tfds.features.Image)
        and isinstance(features.get("label"), tfds.features.ClassLabel)
    ):
        raise ValueError(
            f"TFDS dataset {name!r} is not an image-classification dataset: load_source "
            f"needs an 'image' (Image) and a 'label' (ClassLabel) feature; it has "
            f"{ {key: type(feature).__name__ for key, feature in features.items()} }."
        )
    if not builder.is_prepared():
        _prepare(builder, download)

    splits = builder.info.splits
    tfds_split = split if split == "train" or "test" in splits else "validation"
    if tfds_split not in splits:
        raise ValueError(
            f"TFDS dataset {name!r} has no {tfds_split!r} split; it has {list(splits)}."
        )
    image_feature = features["image"]
    records = _TfdsRecords(builder, tfds_split, ((0, splits[tfds_split].num_examples),))

    def decode(examples):
        return examples.map(
            lambda image, label: (image_feature.decode_example(image), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    shape = tuple(image_feature.shape)
    return _make_source(
        records.stream(),
        decode,
        records=records,
        num_examples=records.num_examples,
        num_classes=features["label"].num_classes,
        class_names=tuple(features["label"].names),
        image_shape=None if None in shape else shape,
        origin=f"tfds:{builder.name} ({tfds_split}) in {builder.data_dir}",
    )


@dataclasses.dataclass(frozen=True)
class _TfdsRecords:
    """Ranges `[start, stop)` of the records of one TFDS split, read without scanning the rest.

    TFRecord files cannot be read by index, so an epoch is shuffled at file level: the
    files (shard pieces) in a seeded order, 16 read at a time, then a buffer of encoded
    records bounded to `RECORD_BUFFER_BYTES` (the whole split when it fits, e.g.
    CIFAR; about 9,000 records for ImageNet). That is uniform only when the buffer
    holds the whole split; TFDS shuffles records when it prepares a dataset, so a
    file's records are already mixed across classes.
    """

    builder: object
    split: str  # "train", "test", "validation"
    ranges: tuple  # ((start, stop), ...) in record order

    @property
    def num_examples(self):
        return sum(stop - start for start, stop in self.ranges)

    def spec(self):
        """The TFDS split string of the ranges, e.g. "train[0:500]+train[1000:50000]"."""
        return "+".join(f"{self.split}[{start}:{stop}]" for start, stop in self.ranges)

    def take(self, start, stop):
        """The records at positions `[start, stop)` of these ranges."""
        ranges, offset = [], 0
        for first, last in self.ranges:
            low, high = max(first, first + start - offset), min(last, first + stop - offset)
            if low < high:
                ranges.append((low, high))
            offset += last - first
        return _TfdsRecords(self.builder, self.split, tuple(ranges))

    def stream(self, shuffle_seed=None):
        """Encoded `(image bytes, label)` records; files in a seeded order if `shuffle_seed`.

        `shuffle_seed` may be a tensor. Formats other than TFRecord are read by TFDS,
        in a fixed file order.
        """
        import tensorflow_datasets as tfds  # noqa: PLC0415 (slow to import)

        info = self.builder.info
        skip_decoding = {"image": tfds.decode.SkipDecoding()}
        if info.file_format != tfds.core.FileFormat.TFRECORD:
            return self.builder.as_dataset(
                self.spec(), as_supervised=True, shuffle_files=False, decoders=skip_decoding
            )
        instructions = info.splits[self.spec()].file_instructions
        files = tf.data.Dataset.from_tensor_slices(
            (
                [i.filename for i in instructions],
                tf.constant([i.skip for i in instructions], tf.int64),
                tf.constant([i.take for i in instructions], tf.int64),
            )
        )
        if shuffle_seed is not None:
            files = files.shuffle(
                len(instructions), seed=shuffle_seed, reshuffle_each_iteration=False
            )
        records = files.interleave(
            lambda name, skip, take: tf.data.TFRecordDataset(name).skip(skip).take(take),
            cycle_length=min(16, len(instructions)),
            block_length=16,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

        def parse(record):
            example = info.features.deserialize_example(record, decoders=skip_decoding)
            return example["image"], example["label"]

        return records.map(parse, num_parallel_calls=tf.data.AUTOTUNE)

    def shuffled(self, shuffle_seed):
        """One epoch's encoded records: files shuffled, then a bounded record buffer."""
        split_info = self.builder.info.splits[self.split]
        record_bytes = max(1, int(split_info.num_bytes) // max(1, split_info.num_examples))
        buffer = min(self.num_examples, max(1, RECORD_BUFFER_BYTES // record_bytes))
        return self.stream(shuffle_seed).shuffle(
            buffer, seed=shuffle_seed, reshuffle_each_iteration=False
        )


def _prepare(builder, download):
    """Downloads and prepares `builder`'s data, or says at once why it cannot."""
    how_to = (
        f"Looked for prepared TFDS data in {builder.data_dir}. To provide it, point "
        f"data_dir (--data_dir) at a TFDS data directory holding {builder.name}/"
        f"{builder.version}/ (prepared, e.g., on a machine with internet by "
        f"tfds.builder({builder.name!r}, data_dir=...).download_and_prepare()), or use "
        f"dataset='image_folder' with data_dir=<root> ({FOLDER_LAYOUT})."
    )
    if not download:
        raise FileNotFoundError(
            f"TFDS dataset {builder.name!r} is not prepared and download=False. {how_to}"
        )
    instructions = builder.MANUAL_DOWNLOAD_INSTRUCTIONS
    if instructions:  # TFDS prepares from manual_dir, offline
        manual_dir = os.path.join(builder.data_dir_root, "downloads", "manual")
        if not (os.path.isdir(manual_dir) and os.listdir(manual_dir)):
            raise FileNotFoundError(
                f"TFDS dataset {builder.name!r} needs a manual download (TFDS cannot fetch "
                f"it): put the files into {manual_dir} and call again; preparing then runs "
                f"offline. TFDS's instructions: {' '.join(instructions.split())} {how_to}"
            )
        builder.download_and_prepare()
        return
    hosts = _download_hosts(builder)
    if hosts and not _can_connect(hosts):  # no hosts: no known downloads, nothing to test
        raise ConnectionError(
            f"TFDS dataset {builder.name!r} is not prepared and cannot be downloaded: could "
            f"not connect to {', '.join(f'{host}:{port}' for host, port in sorted(hosts))} "
            f"(waited up to {CONNECT_TIMEOUT_S:g} s; offline?). {how_to}"
        )
    builder.download_and_prepare()


def _download_hosts(builder):
    """(host, port) pairs TFDS would connect to: the dataset's URLs, or a proxy."""
    proxies = urllib.request.getproxies()
    hosts = set()
    for url in builder.url_infos or ():
        target = urllib.parse.urlsplit(proxies.get(urllib.parse.urlsplit(url).scheme, url))
        if target.hostname:
            hosts.add((target.hostname, target.port or (443 if target.scheme == "https" else 80)))
    return hosts


def _can_connect(hosts, timeout=CONNECT_TIMEOUT_S):
    """True if a TCP connection to any of `hosts` opens within `timeout` seconds.

    The attempts run at once in daemon threads, so a hanging DNS lookup (which the
    socket timeout does not cover) cannot stall the caller either.
    """
    results = queue.Queue()

    def attempt(address):
        try:
            socket.create_connection(address, timeout=timeout).close()
            results.put(True)
        except OSError:
            results.put(False)

    for address in hosts:
        threading.Thread(target=attempt, args=(address,), daemon=True).start()
    deadline = time.monotonic() + timeout
    for _ in hosts:
        try:
            if results.get(timeout=max(0.0, deadline - time.monotonic())):
                return True
        except queue.Empty:
            return False
    return False


def _read_labels(examples):
    """int64 numpy array of the labels of a dataset of (anything, label)."""
    batches = examples.map(lambda _, label: label).batch(65536).as_numpy_iterator()
    return np.concatenate([np.zeros(0, np.int64), *batches]).astype(np.int64)


# --- image folders ----------------------------------------------------------------------


def _load_image_folder(data_dir, split):
    if data_dir is None:
        raise ValueError(f"dataset='image_folder' needs data_dir=<root>; {FOLDER_LAYOUT}.")
    root = os.path.abspath(os.fspath(data_dir))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Image folder root {root} does not exist; {FOLDER_LAYOUT}.")
    train_dir = os.path.join(root, "train")
    test_dir = next(
        (
            os.path.join(root, name)
            for name in ("test", "val", "validation")
            if os.path.isdir(os.path.join(root, name))
        ),
        None,
    )
    split_dir, other_dir = (train_dir, test_dir) if split == "train" else (test_dir, train_dir)
    if split_dir is None or not os.path.isdir(split_dir):
        wanted = "train/" if split == "train" else "test/, val/ or validation/"
        raise FileNotFoundError(f"Image folder {root} has no {wanted} folder; {FOLDER_LAYOUT}.")

    class_names = _class_folders(split_dir)
    if not class_names:
        raise ValueError(f"No class folders in {split_dir}; {FOLDER_LAYOUT}.")
    if other_dir is not None and os.path.isdir(other_dir):
        other_names = _class_folders(other_dir)
        if other_names != class_names:
            raise ValueError(
                f"Class folders differ between {split_dir} and {other_dir}: only in the "
                f"first: {sorted(set(class_names) - set(other_names))}; only in the second: "
                f"{sorted(set(other_names) - set(class_names))}."
            )
    paths, labels = [], []
    for label, name in enumerate(class_names):
        with os.scandir(os.path.join(split_dir, name)) as entries:
            files = sorted(
                entry.path
                for entry in entries
                if entry.is_file()
                and not entry.name.startswith(".")
                and entry.name.lower().endswith(IMAGE_EXTENSIONS)
            )
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise ValueError(
            f"No images in class folders under {split_dir} (class folders: {class_names}; "
            f"image files end in {', '.join(IMAGE_EXTENSIONS)}, in any case); {FOLDER_LAYOUT}."
        )

    image_shape = _probe_shape(paths)
    labels = np.array(labels, np.int64)

    def decode(examples):
        return _decode_files(examples, image_shape)

    return _make_source(
        (np.array(paths), labels),
        decode,
        num_examples=len(paths),
        num_classes=len(class_names),
        class_names=tuple(class_names),
        image_shape=image_shape,
        origin=f"image folder {split_dir}",
    )


def _class_folders(split_dir):
    """Sorted names of the visible subfolders of `split_dir`."""
    with os.scandir(split_dir) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _decode_file(path):
    return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)


def _probe_shape(paths):
    """The shape shared by `SHAPE_PROBES` images spread over `paths`, or None if they differ."""
    shapes = set()
    for index in np.linspace(0, len(paths) - 1, min(len(paths), SHAPE_PROBES)).astype(int):
        try:
            shapes.add(tuple(_decode_file(paths[index]).shape))
        except tf.errors.OpError as error:
            raise ValueError(
                f"Could not read or decode image file {paths[index]}: {error.message}"
            ) from None
    return shapes.pop() if len(shapes) == 1 else None


def _decode_files(examples, image_shape):
    """Decodes a dataset of (path, label); a file that fails to decode is named in the error.

    A decoding error inside tf.data does not say which file failed, so failed elements
    are dropped (`ignore_errors`) and the decoded paths are zipped with the expected
    ones (the decoded stream closed by an end marker, so that a missing last file
    shows too): the first mismatch is the bad file, and an assertion names it.
    """
    decoded = examples.map(
        lambda path, label: (path, _decode_file(path), label), num_parallel_calls=tf.data.AUTOTUNE
    ).ignore_errors()
    end = tf.data.Dataset.from_tensors(  # zipped only when a file is missing from `decoded`
        ("", tf.zeros([0, 0, 3], tf.uint8), tf.zeros([], tf.int64))
    )

    def check(expected_path, example):
        path, image, label = example
        found = tf.debugging.Assert(
            tf.equal(path, expected_path),
            [
                "Could not read or decode image file",
                expected_path,
                "(missing, unreadable, corrupt, or not JPEG/PNG/BMP/GIF).",
            ],
        )
        with tf.control_dependencies([found]):
            if image_shape is None:
                return tf.identity(image), label
            same = tf.debugging.Assert(
                tf.reduce_all(tf.equal(tf.shape(image), image_shape)),
                [
                    "Image file",
                    path,
                    "has shape",
                    tf.shape(image),
                    "but this image folder's "
                    f"image_shape is {image_shape} (the shape shared by the images probed "
                    "when it was loaded): give all images one size.",
                ],
            )
        with tf.control_dependencies([same]):
            return tf.ensure_shape(image, image_shape), label

    expected = examples.map(lambda path, label: path)
    return tf.data.Dataset.zip(expected, decoded.concatenate(end)).map(
        check, num_parallel_calls=tf.data.AUTOTUNE
    )


# --- arrays and subsets -----------------------------------------------------------------


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
    return _make_source(
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
    _check_fraction(fraction)
    return _split_by_class(source, parts_of(source), fraction, seed)[0]


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
    _check_fraction(fraction)
    parts = parts_of(source)
    if parts.records is None:
        return _split_by_class(source, parts, fraction, seed)
    total = parts.records.num_examples
    count = min(total, max(1, math.ceil(fraction * total - 1e-9)))
    start = int(np.random.default_rng(seed).integers(0, total - count + 1))
    description = f"{count} of {total} records from {start} (seed {seed})"
    part = _tfds_part(source, parts, parts.records.take(start, start + count), description)
    if count == total:
        return part, None
    rest = parts.records.take(0, start)
    rest = dataclasses.replace(
        rest, ranges=rest.ranges + parts.records.take(start + count, total).ranges
    )
    return part, _tfds_part(source, parts, rest, f"all but {description}")


def _check_fraction(fraction):
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not 0 < fraction <= 1
    ):
        raise ValueError(f"fraction must be in (0, 1]; got {fraction!r}.")


def parts_of(source):
    """How `source` was built (encoded items, decoder), or its dataset as is when replaced."""
    parts = source._parts
    if parts is None or parts.dataset is not source.dataset:  # built elsewhere, or replaced
        parts = _Parts(source.dataset, source.dataset, lambda examples: examples)
    return parts


def _tfds_part(source, parts, records, description):
    return _make_source(
        records.stream(),
        parts.decode,
        records=records,
        num_examples=records.num_examples,
        num_classes=source.num_classes,
        class_names=source.class_names,
        image_shape=source.image_shape,
        origin=f"{source.origin}, {description}",
    )


def _split_by_class(source, parts, fraction, seed):
    """`(part, rest)`: the first `ceil(fraction * n_c)` of every class c in a seeded permutation."""
    in_memory = isinstance(parts.encoded, tuple)
    labels = parts.encoded[1] if in_memory else _read_labels(parts.encoded)  # not decoding
    order = np.random.default_rng(seed).permutation(len(labels))
    keep = np.zeros(len(labels), bool)
    for label in range(source.num_classes):
        members = order[labels[order] == label]
        count = max(1, math.ceil(fraction * len(members) - 1e-9))  # 0.1 * 30 is 3.0000000000000004
        keep[members[:count]] = True
    part = _select(source, parts, keep, f"{fraction:g} of each class (seed {seed})")
    rest = None
    if not keep.all():
        rest = _select(source, parts, ~keep, f"all but {fraction:g} of each class (seed {seed})")
    return part, rest


def _select(source, parts, mask, description):
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
    return _make_source(
        encoded,
        parts.decode,
        num_examples=int(mask.sum()),
        num_classes=source.num_classes,
        class_names=source.class_names,
        image_shape=source.image_shape,
        origin=f"{source.origin}, {description}",
    )
