"""Class-per-folder image trees: `<root>/train/<class>/*.jpg` and a test split.

A file that cannot be read or decoded stops the iteration with an error naming the
file. `image_shape` is the shape shared by `SHAPE_PROBES` images spread over the
files (None if they differ); then every image is checked against it when decoded.
"""

import os

import numpy as np
import tensorflow as tf

from okdph_keras.data.source import make_source

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
SHAPE_PROBES = 16  # images decoded at load time to find a common shape
FOLDER_LAYOUT = (
    "expected layout: <root>/train/<class>/*.jpg (or .jpeg .png .bmp .gif) and "
    "<root>/test/<class>/... or <root>/val/<class>/..., one folder per class"
)


def load_image_folder(data_dir, split):
    """One split ("train" or "test") of the tree under `data_dir` as a `Source`.

    See `sources.load_source`; files are decoded when the dataset is iterated.
    """
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

    return make_source(
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
