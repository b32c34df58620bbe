"""Image sources: TFDS (fake CIFAR prepared offline), image folders, arrays, subsets.

No test touches the network: connections are mocked wherever the code would open one.
"""

import dataclasses
import re
import socket
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from cifar_fixtures import CIFAR10_CLASSES, fake_download, prepare_fake_cifar, write_fake_cifar

from okdph_keras.data import image_folder
from okdph_keras.data.sources import Source, from_arrays, limit_per_class, load_source


def examples(source):
    """(images, labels) of a source, as numpy, in dataset order."""
    pairs = list(source.dataset.as_numpy_iterator())
    return [image for image, _ in pairs], np.array([label for _, label in pairs], np.int64)


def as_multiset(images, labels):
    return sorted((np.asarray(image).tobytes(), int(label)) for image, label in zip(images, labels))


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A TFDS data_dir with fake CIFAR-10 and CIFAR-100 prepared in it."""
    data_dir = tmp_path_factory.mktemp("tfds")
    written = {
        name: prepare_fake_cifar(data_dir, name, num_train=12, num_test=6, seed=i)
        for i, name in enumerate(["cifar10", "cifar100"])
    }
    return data_dir, written


@pytest.fixture
def no_download(monkeypatch):
    """Fails the test if TFDS starts downloading."""

    def forbidden(*args, **kwargs):
        raise AssertionError("download_and_prepare must not be called")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", forbidden)


# --- TFDS ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_tfds_cifar_gives_the_written_pixels_and_labels(tfds_dir, name, split):
    data_dir, written = tfds_dir
    images, labels = written[name][split]
    source = load_source(name, split, data_dir=data_dir)

    assert source.num_examples == len(labels)
    assert (
        source.num_classes
        == len(written[name]["class_names"])
        == (10 if name == "cifar10" else 100)
    )
    assert source.class_names == written[name]["class_names"]
    assert source.image_shape == (32, 32, 3)
    assert source.origin == f"tfds:{name} ({split}) in {data_dir / name / '3.0.2'}"
    assert source.dataset.element_spec == (
        tf.TensorSpec((32, 32, 3), tf.uint8),
        tf.TensorSpec((), tf.int64),
    )
    got_images, got_labels = examples(source)
    assert as_multiset(got_images, got_labels) == as_multiset(images, labels)
    again_images, again_labels = examples(source)  # fixed order
    np.testing.assert_array_equal(np.stack(again_images), np.stack(got_images))
    np.testing.assert_array_equal(again_labels, got_labels)


class FakeValidationOnly(tfds.core.GeneratorBasedBuilder):
    """Images of varying sizes; train and validation splits; nothing to download."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.ClassLabel(names=["x", "y"]),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(3), "validation": self._generate_examples(2)}

    def _generate_examples(self, count):
        for i in range(count):
            yield i, {"image": np.full((2 + i, 3, 3), i, np.uint8), "label": i % 2}


def test_tfds_test_split_falls_back_to_validation(tmp_path, monkeypatch):
    def no_connection(*args, **kwargs):
        raise AssertionError("no download URL, so no connection test")

    monkeypatch.setattr(socket, "create_connection", no_connection)
    source = load_source("fake_validation_only", "test", data_dir=tmp_path)
    assert source.origin.startswith("tfds:fake_validation_only (validation) in ")
    assert source.image_shape is None and source.class_names == ("x", "y")
    images, labels = examples(source)
    assert [image.shape for image in images] == [(2, 3, 3), (3, 3, 3)]
    np.testing.assert_array_equal(labels, [0, 1])


def test_cifar10_class_names(tfds_dir):
    data_dir, _ = tfds_dir
    assert load_source("cifar10", "train", data_dir=data_dir).class_names == CIFAR10_CLASSES


def test_tfds_limit_per_class_picks_written_examples(tfds_dir):
    data_dir, written = tfds_dir
    images, labels = written["cifar10"]["train"]
    subset = limit_per_class(load_source("cifar10", "train", data_dir=data_dir), 0.5, seed=3)
    got_images, got_labels = examples(subset)
    counts = np.bincount(labels, minlength=10)
    np.testing.assert_array_equal(np.bincount(got_labels, minlength=10), np.ceil(counts / 2))
    assert set(as_multiset(got_images, got_labels)) <= set(as_multiset(images, labels))
    assert subset.num_examples == len(got_labels)


def test_absent_dataset_is_downloaded_when_a_host_answers(tmp_path, monkeypatch):
    written = write_fake_cifar(tmp_path / "raw", "cifar10", num_train=5, num_test=3)
    connected = []
    monkeypatch.setattr(
        socket,
        "create_connection",
        lambda address, timeout: connected.append(address) or socket.socket(),
    )
    with fake_download(tmp_path / "raw"):
        source = load_source("cifar10", "test", data_dir=tmp_path / "tfds")
    assert ("www.cs.toronto.edu", 443) in connected
    assert as_multiset(*examples(source)) == as_multiset(*written["test"])


@pytest.mark.parametrize("network", ["refused", "hangs"])
def test_absent_dataset_offline_fails_fast_naming_data_dir(
    tmp_path, monkeypatch, no_download, network
):
    def offline(address, timeout):
        if network == "hangs":  # like a DNS lookup that never returns
            time.sleep(60)
        raise socket.gaierror("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", offline)
    start = time.monotonic()
    with pytest.raises(ConnectionError) as error:
        load_source("cifar10", "train", data_dir=tmp_path)
    assert time.monotonic() - start < (1 if network == "refused" else 10)
    message = str(error.value)
    for part in [
        str(tmp_path / "cifar10" / "3.0.2"),
        "www.cs.toronto.edu",
        "--data_dir",
        "image_folder",
    ]:
        assert part in message


def test_absent_dataset_without_download_fails_naming_data_dir(tmp_path, no_download):
    with pytest.raises(FileNotFoundError, match="download=False") as error:
        load_source("cifar100", "test", data_dir=tmp_path, download=False)
    assert str(tmp_path / "cifar100" / "3.0.2") in str(error.value)


def test_imagenet_asks_for_manual_download(tmp_path, no_download):
    with pytest.raises(FileNotFoundError, match="manual download") as error:
        load_source("imagenet2012", "train", data_dir=tmp_path)
    message = str(error.value)
    for part in [
        str(tmp_path / "downloads" / "manual"),
        "ILSVRC2012_img_train.tar",
        str(tmp_path / "imagenet2012"),
        "image_folder",
    ]:
        assert part in message


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="Unknown dataset 'cifar_ten'") as error:
        load_source("cifar_ten", "train")
    assert "cifar10" in str(error.value) and "image_folder" in str(error.value)


@pytest.mark.parametrize("name", ["iris", "coco"])
def test_dataset_without_image_and_label_fails(tmp_path, name, no_download):
    with pytest.raises(ValueError, match="not an image-classification dataset"):
        load_source(name, "train", data_dir=tmp_path)


def test_bad_split_fails():
    with pytest.raises(
        ValueError,
        match=r"split='validation' is not allowed; it must be one of \('train', 'test'\)",
    ):
        load_source("cifar10", "validation")


# --- image folders ------------------------------------------------------------------------


def write_image(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    encode = tf.io.encode_png if path.suffix.lower() == ".png" else tf.io.encode_jpeg
    path.write_bytes(encode(image).numpy())


def write_tree(root, split, files, shape=(8, 8, 3), seed=0):
    """Writes {"class/name.ext": value} as images; returns {path: pixels}."""
    rng = np.random.default_rng(seed)
    written = {}
    for name in files:
        image = rng.integers(0, 256, size=shape, dtype=np.uint8)
        write_image(root / split / name, image)
        written[str(root / split / name)] = image
    return written


def test_image_folder_loads_sorted_classes_and_files(tmp_path):
    pngs = write_tree(tmp_path, "train", ["dog/b.png", "dog/a.PNG", "cat/z.png", "emu/c.png"])
    write_tree(tmp_path, "train", ["cat/y.jpg", "cat/x.JPEG"])  # lossy: only labels checked
    write_tree(tmp_path, "test", ["cat/t.png", "dog/t.png", "emu/t.png"])
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "dog" / ".hidden.png").write_bytes(b"macOS metadata")
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()

    source = load_source("image_folder", "train", data_dir=tmp_path)
    assert source.class_names == ("cat", "dog", "emu")
    assert source.num_classes == 3 and source.num_examples == 6
    assert source.image_shape == (8, 8, 3)
    assert source.origin == f"image folder {tmp_path / 'train'}"
    assert source.dataset.element_spec == (
        tf.TensorSpec((8, 8, 3), tf.uint8),
        tf.TensorSpec((), tf.int64),
    )
    images, labels = examples(source)
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 2])
    # sorted by class, then file name: cat/x.JPEG cat/y.jpg cat/z.png dog/a.PNG dog/b.png emu/c.png
    for image, name in zip(images[2:], ["cat/z.png", "dog/a.PNG", "dog/b.png", "emu/c.png"]):
        np.testing.assert_array_equal(image, pngs[str(tmp_path / "train" / name)])


@pytest.mark.parametrize("folder", ["val", "validation"])
def test_image_folder_test_split_falls_back_to_val(tmp_path, folder):
    write_tree(tmp_path, "train", ["a/1.png", "b/1.png"])
    written = write_tree(tmp_path, folder, ["a/1.png", "b/1.png", "b/2.png"])
    source = load_source("image_folder", "test", data_dir=tmp_path)
    assert source.origin == f"image folder {tmp_path / folder}"
    images, labels = examples(source)
    np.testing.assert_array_equal(labels, [0, 1, 1])
    np.testing.assert_array_equal(np.stack(images), np.stack(list(written.values())))


def test_image_folder_of_mixed_sizes_has_no_image_shape(tmp_path):
    write_tree(tmp_path, "train", ["a/1.png"], shape=(5, 7, 3))
    write_tree(tmp_path, "train", ["b/1.png"], shape=(6, 4, 1))  # grey: decoded to RGB
    source = load_source("image_folder", "train", data_dir=tmp_path)
    assert source.image_shape is None
    assert source.dataset.element_spec[0] == tf.TensorSpec((None, None, 3), tf.uint8)
    assert [image.shape for image in examples(source)[0]] == [(5, 7, 3), (6, 4, 3)]


def test_image_folder_class_mismatch_names_the_difference(tmp_path):
    write_tree(tmp_path, "train", ["cat/1.png", "dog/1.png"])
    write_tree(tmp_path, "test", ["cat/1.png", "cow/1.png"])
    for split in ["train", "test"]:
        with pytest.raises(ValueError, match="Class folders differ") as error:
            load_source("image_folder", split, data_dir=tmp_path)
        assert "['dog']" in str(error.value) and "['cow']" in str(error.value)


def test_image_folder_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*expected layout"):
        load_source("image_folder", "train", data_dir=tmp_path / "missing")
    with pytest.raises(ValueError, match="needs data_dir"):
        load_source("image_folder", "train")
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=f"No images in class folders under {tmp_path / 'train'}"):
        load_source("image_folder", "train", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no test/, val/ or validation/ folder"):
        load_source("image_folder", "test", data_dir=tmp_path)


def corrupt_tree(tmp_path, bad_name, bad_bytes):
    write_tree(tmp_path, "train", [f"a/{i}.png" for i in range(4)] + ["b/0.png"])
    (tmp_path / "train" / bad_name).write_bytes(bad_bytes)
    return str(tmp_path / "train" / bad_name)


@pytest.mark.parametrize("bad_name", ["a/2.png", "b/0.png"])  # middle, last
@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty"])
def test_corrupt_image_is_named_when_decoded(tmp_path, monkeypatch, bad_name, kind):
    monkeypatch.setattr(image_folder, "SHAPE_PROBES", 1)  # probe a/0.png only
    good = tmp_path / "ok.png"
    write_image(good, np.zeros((8, 8, 3), np.uint8))
    bad_bytes = {"garbage": b"<html>404</html>", "truncated": good.read_bytes()[:40], "empty": b""}
    path = corrupt_tree(tmp_path, bad_name, bad_bytes[kind])
    source = load_source("image_folder", "train", data_dir=tmp_path)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="Could not read or decode image file"
    ) as error:
        examples(source)
    assert path in str(error.value)


def test_corrupt_probed_image_fails_at_load(tmp_path):
    path = corrupt_tree(tmp_path, "a/0.png", b"not an image")
    with pytest.raises(ValueError, match=f"Could not read or decode image file {path}"):
        load_source("image_folder", "train", data_dir=tmp_path)


def test_image_of_another_size_is_named_when_decoded(tmp_path, monkeypatch):
    monkeypatch.setattr(image_folder, "SHAPE_PROBES", 1)
    write_tree(tmp_path, "train", ["a/0.png", "a/1.png"])
    write_tree(tmp_path, "train", ["a/2.png"], shape=(9, 8, 3))
    source = load_source("image_folder", "train", data_dir=tmp_path)
    assert source.image_shape == (8, 8, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="has shape") as error:
        examples(source)
    assert str(tmp_path / "train" / "a" / "2.png") in str(error.value)


# --- arrays -------------------------------------------------------------------------------


def test_from_arrays_converts_to_uint8():
    images = np.arange(2 * 2 * 2 * 3, dtype=np.float32).reshape(2, 2, 2, 3) * 10.0 + 0.4
    source = from_arrays(images, [1, 0])
    assert (source.num_examples, source.num_classes, source.class_names) == (2, 2, ("0", "1"))
    assert source.image_shape == (2, 2, 3)
    assert source.origin == "arrays: 2 images of shape (2, 2, 3)"
    got, labels = examples(source)
    np.testing.assert_array_equal(np.stack(got), np.rint(images).astype(np.uint8))
    np.testing.assert_array_equal(labels, [1, 0])
    assert from_arrays(np.zeros((1, 4, 4, 1), np.int64), [2], ["x", "y", "z"]).class_names == (
        "x",
        "y",
        "z",
    )


@pytest.mark.parametrize(
    "images, labels, class_names, message",
    [
        (np.zeros((2, 4, 4), np.uint8), [0, 1], None, r"\[N, H, W, C\]; got shape \(2, 4, 4\)"),
        (np.zeros((0, 4, 4, 3), np.uint8), [], None, "non-empty"),
        (np.zeros((2, 4, 4, 3), np.uint8), [0, 1, 1], None, r"shape \(2,\) to match .* got \(3,\)"),
        (np.zeros((2, 4, 4, 3), np.uint8), [0.0, 1.0], None, "labels must be integers"),
        (np.zeros((2, 4, 4, 3), np.uint8), [0, 2], ["a", "b"], r"\[0, 2\).*labels\[1\] = 2"),
        (np.zeros((2, 4, 4, 3), np.uint8), [0, -1], None, r"labels\[1\] = -1"),
        (np.full((2, 4, 4, 3), 256.0), [0, 1], None, r"\[0, 255\]; got values in \[256.0, 256.0\]"),
        (np.full((2, 4, 4, 3), np.nan), [0, 1], None, "values in"),
        (np.full((2, 4, 4, 3), 0.5), [0, 1], None, "scaled to"),
        (np.zeros((2, 4, 4, 3), bool), [0, 1], None, "dtype bool"),
    ],
)
def test_from_arrays_rejects_bad_input(images, labels, class_names, message):
    with pytest.raises(ValueError, match=message):
        from_arrays(images, labels, class_names)


# --- limit_per_class ----------------------------------------------------------------------


def indexed_arrays(counts):
    """Images whose first pixel is their index, labels with `counts[c]` examples of class c."""
    labels = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(0).shuffle(labels)
    images = np.zeros((len(labels), 1, 1, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(len(labels))
    return images, labels


def kept_indices(source):
    images, labels = examples(source)
    return np.array([image[0, 0, 0] for image in images]), labels


def test_limit_per_class_counts_seed_and_order():
    images, labels = indexed_arrays([30, 30, 30, 1, 0])
    source = from_arrays(images, labels, class_names="abcde")
    subset = limit_per_class(source, 0.1, seed=0)
    indices, kept_labels = kept_indices(subset)
    np.testing.assert_array_equal(np.bincount(kept_labels, minlength=5), [3, 3, 3, 1, 0])
    np.testing.assert_array_equal(labels[indices], kept_labels)
    assert np.all(np.diff(indices) > 0)  # original order
    assert subset.num_examples == 10 and subset.num_classes == 5
    assert subset.origin == f"{source.origin}, 0.1 of each class (seed 0)"
    assert np.array_equal(kept_indices(limit_per_class(source, 0.1, seed=0))[0], indices)
    assert not np.array_equal(kept_indices(limit_per_class(source, 0.1, seed=1))[0], indices)
    np.testing.assert_array_equal(  # a subset of a subset
        np.bincount(kept_indices(limit_per_class(subset, 0.5, seed=0))[1], minlength=5),
        [2, 2, 2, 1, 0],
    )
    assert limit_per_class(source, 1.0, seed=0).num_examples == 91


def test_limit_per_class_reads_a_replaced_dataset():
    images, labels = indexed_arrays([4, 4])
    source = from_arrays(images, labels)
    flipped = dataclasses.replace(source, dataset=source.dataset.map(lambda x, y: (255 - x, 1 - y)))
    indices, kept_labels = kept_indices(limit_per_class(flipped, 0.5, seed=0))
    np.testing.assert_array_equal(labels[255 - indices], 1 - kept_labels)
    plain = Source(source.dataset, 8, 2, ("0", "1"), (1, 1, 1), "made by hand")
    assert limit_per_class(plain, 0.5, seed=0).num_examples == 4


def test_limit_per_class_on_image_folder_decodes_picked_files_only(tmp_path, monkeypatch):
    monkeypatch.setattr(image_folder, "SHAPE_PROBES", 1)
    written = write_tree(tmp_path, "train", [f"{c}/{i}.png" for c in "ab" for i in range(4)])
    bad = tmp_path / "train" / "b" / "9.png"
    bad.write_bytes(b"corrupt")
    source = load_source("image_folder", "train", data_dir=tmp_path)
    outcomes = set()
    for seed in range(5):  # ceil(0.2 * 4) = 1 of class a, ceil(0.2 * 5) = 1 of class b
        try:
            images, labels = examples(limit_per_class(source, 0.2, seed=seed))
        except tf.errors.InvalidArgumentError as error:
            assert str(bad) in str(error)
            outcomes.add("picked the corrupt file")
            continue
        outcomes.add("decoded")
        np.testing.assert_array_equal(labels, [0, 1])
        for image, folder in zip(images, "ab"):
            assert any(
                np.array_equal(image, pixels)
                for path, pixels in written.items()
                if f"/train/{folder}/" in path
            )
    assert outcomes == {"decoded", "picked the corrupt file"}


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5])
def test_limit_per_class_rejects_bad_fraction(fraction):
    with pytest.raises(
        ValueError,
        match=rf"fraction={re.escape(repr(fraction))} is not allowed; it must be a number in \(0, 1\]",
    ):
        limit_per_class(from_arrays(np.zeros((2, 1, 1, 1), np.uint8), [0, 1]), fraction, seed=0)
