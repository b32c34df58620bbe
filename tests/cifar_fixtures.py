"""Fake CIFAR-10 / CIFAR-100 prepared as real TFDS data, offline.

The test writes the raw binary files the TFDS builders read (same layout as the
original archives), points `DownloadManager.download_and_extract` at them and runs
the real `download_and_prepare`, so everything after the download is TFDS's own code.
"""

import pathlib
from unittest import mock

import numpy as np
import tensorflow_datasets as tfds

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_LAYOUT = {
    # name: (folder in the archive, train files, test file, label-name files -> names)
    "cifar10": (
        "cifar-10-batches-bin",
        [f"data_batch_{i}.bin" for i in range(1, 6)],
        "test_batch.bin",
        {"batches.meta.txt": CIFAR10_CLASSES},
    ),
    "cifar100": (
        "cifar-100-binary",
        ["train.bin"],
        "test.bin",
        {
            "fine_label_names.txt": tuple(f"fine_{i}" for i in range(100)),
            "coarse_label_names.txt": tuple(f"coarse_{i}" for i in range(20)),
        },
    ),
}


def _binary(images, labels, coarse):
    """CIFAR binary records: [coarse label byte,] label byte, then 3072 CHW pixel bytes."""
    label_bytes = labels.astype(np.uint8)[:, None]
    if coarse:  # any coarse label will do: load_source reads the fine label
        label_bytes = np.concatenate([label_bytes // 5, label_bytes], axis=1)
    pixels = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    return np.concatenate([label_bytes, pixels], axis=1).tobytes()


def write_fake_cifar(directory, name="cifar10", num_train=12, num_test=6, seed=0):
    """Writes the raw files of a tiny fake CIFAR-10 or CIFAR-100 into `directory`.

    Args:
        directory: where the archive's folder (`cifar-10-batches-bin/` or
            `cifar-100-binary/`) is created; what `download_and_extract` returns.
        name: "cifar10" or "cifar100".
        num_train: training records (CIFAR-10: spread over the five batch files).
        num_test: test records.
        seed: seed of the random pixels and labels.

    Returns:
        `{"train": (images, labels), "test": (images, labels), "class_names": tuple}`:
        images `[N, 32, 32, 3]` uint8 (HWC) and labels `[N]` int64, as written.
    """
    folder, train_files, test_file, label_files = _LAYOUT[name]
    class_names = next(iter(label_files.values()))  # the first file names the labels
    rng = np.random.default_rng(seed)
    target = pathlib.Path(directory) / folder
    target.mkdir(parents=True)
    for file_name, names in label_files.items():
        (target / file_name).write_text("\n".join(names) + "\n")

    written = {"class_names": class_names}
    for split, files, count in (("train", train_files, num_train), ("test", [test_file], num_test)):
        images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, len(class_names), size=count).astype(np.int64)
        written[split] = (images, labels)
        for part, rows in zip(files, np.array_split(np.arange(count), len(files))):
            (target / part).write_bytes(_binary(images[rows], labels[rows], name == "cifar100"))
    return written


def fake_download(directory):
    """Context manager: TFDS "downloads and extracts" any URL to `directory`."""
    return mock.patch.object(
        tfds.download.DownloadManager, "download_and_extract", return_value=str(directory)
    )


def prepare_fake_cifar(data_dir, name="cifar10", num_train=12, num_test=6, seed=0):
    """Prepares a tiny fake CIFAR-10 or CIFAR-100 as real TFDS data in `data_dir`, offline.

    Args:
        data_dir: TFDS data directory; the raw files go to `data_dir/raw_<name>/`.
        name, num_train, num_test, seed: as for `write_fake_cifar`.

    Returns:
        The written examples, as `write_fake_cifar` returns them.

    Example:
        >>> written = prepare_fake_cifar(tmp_path, "cifar10", num_train=10, num_test=5)
        >>> source = load_source("cifar10", "train", data_dir=tmp_path)
    """
    raw = pathlib.Path(data_dir) / f"raw_{name}"
    written = write_fake_cifar(raw, name, num_train, num_test, seed)
    with fake_download(raw):
        tfds.builder(name, data_dir=str(data_dir)).download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    return written
