"""TFDS image-classification datasets: loading, offline checks, record ranges.

Offline: before TFDS downloads anything, `load_tfds` tries one TCP connection to
each download host of the dataset (or to the configured proxy), all at once, for at
most 3 s. If none answers, it fails then, instead of TFDS retrying for minutes.
"""

import dataclasses
import os
import queue
import socket
import threading
import time
import urllib.parse
import urllib.request

import tensorflow as tf

from okdph_keras.data.image_folder import FOLDER_LAYOUT
from okdph_keras.data.source import make_source

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


def load_tfds(name, split, *, data_dir, download):
    """One split of a TFDS dataset as a `Source`; see `sources.load_source`."""
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
    records = TfdsRecords(builder, tfds_split, ((0, splits[tfds_split].num_examples),))

    def decode(examples):
        return examples.map(
            lambda image, label: (image_feature.decode_example(image), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    shape = tuple(image_feature.shape)
    return make_source(
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
class TfdsRecords:
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
        return TfdsRecords(self.builder, self.split, tuple(ranges))

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
