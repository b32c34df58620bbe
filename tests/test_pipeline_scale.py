"""The input pipeline at scale: uniform shuffles of whole splits, decoding after the shuffle."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from cifar_fixtures import fake_download, write_fake_cifar
from PIL import Image

from okdph_keras.data import image_folder, multi_view_dataset, subsets, tfds_source
from okdph_keras.data.sources import from_arrays, load_source, split_per_class


def write_sorted_tree(root, classes, per_class):
    for c in range(classes):
        folder = root / "train" / f"c{c:02d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((4, 4, 3), c, np.uint8)).save(folder / f"{i:03d}.png")


def expected_distinct(classes, per_class, batch):
    """E[distinct classes] of `batch` drawn without replacement, computed by simulation."""
    rng = np.random.default_rng(123)
    labels = np.repeat(np.arange(classes), per_class)
    return np.mean([len(np.unique(rng.permutation(labels)[:batch])) for _ in range(4000)])


def labels_of(dataset):
    return [y.numpy() for _, y in dataset]


def test_class_sorted_folder_batches_hold_as_many_classes_as_a_uniform_shuffle(tmp_path):
    write_sorted_tree(tmp_path, classes=20, per_class=10)
    source = load_source("image_folder", "train", data_dir=tmp_path)
    data = multi_view_dataset(source, [None], 20, seed=3, epochs=5, drop_remainder=True)
    distinct = [len(np.unique(y)) for y in labels_of(data)]
    expected = expected_distinct(20, 10, 20)  # about 12.9; a 10-image post-decode buffer gives ~3
    assert len(distinct) == 50
    assert abs(np.mean(distinct) - expected) < 0.08 * expected, (np.mean(distinct), expected)


def test_every_example_once_per_epoch_and_epochs_differ():
    images = np.arange(300, dtype=np.int64).reshape(300, 1, 1, 1) % 256
    ids = np.arange(300)
    source = from_arrays(images.astype(np.uint8), ids, class_names=[str(i) for i in ids])
    epoch0, epoch1 = [
        np.concatenate(
            labels_of(multi_view_dataset(source, [None], 32, seed=5, epochs=e + 1, initial_epoch=e))
        )
        for e in (0, 1)
    ]
    np.testing.assert_array_equal(np.sort(epoch0), ids)
    np.testing.assert_array_equal(np.sort(epoch1), ids)
    assert not np.array_equal(epoch0, epoch1) and not np.array_equal(epoch0, ids)


def test_images_are_decoded_after_the_shuffle(tmp_path, monkeypatch):
    write_sorted_tree(tmp_path, classes=10, per_class=30)
    decoded = []
    plain = image_folder._decode_file

    def counting(path):
        def record(p):
            decoded.append(p)
            return 0

        with tf.control_dependencies([tf.py_function(record, [path], tf.int32)]):
            return tf.identity(plain(path))

    monkeypatch.setattr(image_folder, "_decode_file", counting)
    source = load_source("image_folder", "train", data_dir=tmp_path)
    decoded.clear()  # the shape probes
    iterator = iter(multi_view_dataset(source, [None], 4, seed=0))
    first = next(iterator)[1].numpy()
    # A full shuffle of decoded images would decode all 300 files before the first batch.
    assert len(first) == 4 and len(decoded) < 100, len(decoded)


def test_holdout_of_an_image_folder_is_disjoint_sized_and_stable(tmp_path, monkeypatch):
    write_sorted_tree(tmp_path, classes=4, per_class=10)
    source = load_source("image_folder", "train", data_dir=tmp_path)
    held, train = split_per_class(source, 0.2, seed=1)
    held_paths = set(held._parts.encoded[0])
    train_paths = set(train._parts.encoded[0])
    assert len(held_paths) == held.num_examples == 8 and train.num_examples == 32
    assert not held_paths & train_paths
    # Chosen once, from the listing: the parts are path arrays, no stream filtered per epoch.
    assert isinstance(held._parts.encoded, tuple) and isinstance(train._parts.encoded, tuple)
    first, second = (
        sorted(labels_of(multi_view_dataset(held, [None], 8, seed=s))[0]) for s in (0, 1)
    )
    assert first == second == [0, 0, 1, 1, 2, 2, 3, 3]


def test_keras_layer_view_output_equals_numpy():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 5, 5, 3), dtype=np.uint8)
    layer = keras.layers.Rescaling(1 / 127.5, offset=-1.0)
    data = multi_view_dataset((images, np.arange(12)), [layer, None], 12, shuffle=False)
    (scaled, raw), labels = next(iter(data))
    np.testing.assert_array_equal(labels.numpy(), np.arange(12))
    np.testing.assert_allclose(
        scaled.numpy(), images.astype(np.float32) / 127.5 - 1.0, rtol=1e-6, atol=1e-6
    )
    np.testing.assert_array_equal(raw.numpy(), images.astype(np.float32))


# --- TFDS: 40 fake CIFAR-10 records in 8 TFRecord files of 5 -------------------------------


@pytest.fixture(scope="module")
def sharded_cifar(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds_sharded")
    written = write_fake_cifar(data_dir / "raw", "cifar10", num_train=40, num_test=8, seed=7)
    with fake_download(data_dir / "raw"):
        tfds.builder("cifar10", data_dir=str(data_dir)).download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False, num_shards=8)
        )
    assert tfds.builder("cifar10", data_dir=str(data_dir)).info.splits["train"].num_shards == 8
    return data_dir, written["train"]


@pytest.fixture
def records_read(monkeypatch):
    """Counts the TFRecords read from files (skipped ones included)."""
    count = []
    plain = tf.data.TFRecordDataset

    def counting(*args, **kwargs):
        def record(serialized):
            count.append(1)
            return serialized

        return plain(*args, **kwargs).map(lambda r: tf.py_function(record, [r], tf.string))

    monkeypatch.setattr(tf.data, "TFRecordDataset", counting)
    return count


def image_keys(images):
    return [np.asarray(image, np.uint8).tobytes() for image in images]


def test_tfds_holdout_is_disjoint_sized_stable_and_reads_only_its_records(
    sharded_cifar, records_read, monkeypatch
):
    data_dir, (images, _) = sharded_cifar

    def no_label_scan(examples):
        raise AssertionError("the hold-out must be chosen without reading the labels")

    monkeypatch.setattr(subsets, "_read_labels", no_label_scan)
    source = load_source("cifar10", "train", data_dir=data_dir, download=False)
    held, train = split_per_class(source, 0.25, seed=2)
    assert held.num_examples == 10 and train.num_examples == 30
    epochs = [
        image_keys(
            image
            for x, _ in multi_view_dataset(held, [None], 4, seed=0, epochs=e + 1, initial_epoch=e)
            for image in x[0].numpy()
        )
        for e in (0, 1)
    ]
    # 10 consecutive records span at most 3 files: at most 4 skipped records before them.
    assert len(records_read) <= 2 * (10 + 4), len(records_read)  # a scan of train reads 80
    assert len(epochs[0]) == 10 and sorted(epochs[0]) == sorted(epochs[1])
    train_keys = image_keys(image for image, _ in train.dataset.as_numpy_iterator())
    assert len(train_keys) == 30 and not set(train_keys) & set(epochs[0])
    assert sorted(train_keys + epochs[0]) == sorted(image_keys(images))


def test_tfds_epochs_shuffle_files_and_give_every_record_once(sharded_cifar, monkeypatch):
    data_dir, (images, _) = sharded_cifar
    monkeypatch.setattr(tfds_source, "RECORD_BUFFER_BYTES", 1)  # a 1-record buffer: files alone
    source = load_source("cifar10", "train", data_dir=data_dir, download=False)
    fixed = image_keys(image for image, _ in source.dataset.as_numpy_iterator())
    data = multi_view_dataset(source, [None], 40, seed=4, epochs=2)
    epoch0, epoch1 = (image_keys(x[0].numpy()) for x, _ in data)
    assert sorted(epoch0) == sorted(epoch1) == sorted(image_keys(images))
    assert epoch0 != epoch1 and epoch0 != fixed and epoch1 != fixed
