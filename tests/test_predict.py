"""okdph_keras.predict: top-k classes of image files with an exported student."""

import importlib
import shutil
import subprocess
import sys

import keras
import numpy as np
import PIL.Image
import pytest
import tensorflow as tf
from test_export import CLASSES, REPO_ROOT, colour_patches, normalized

import okdph_keras
from okdph_keras import export, predict
from okdph_keras.data.views import eval_transform
from okdph_keras.models import small_cnn

# What `okdph_keras` exported when its __init__ imported everything (before it became lazy).
PACKAGE_NAMES = (
    "callbacks",
    "data",
    "hybrid",
    "losses",
    "models",
    "step",
    "train",
    "Fusion",
    "Config",
    "default_views",
    "reference_config",
    "load_source",
    "make_view",
    "multi_view_dataset",
    "convex_combination",
    "sample_coefficients",
    "OKDPH",
    "get_model",
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A plain student trained on colour patches, exported from its .keras file."""
    root = tmp_path_factory.mktemp("predict")
    keras.utils.set_random_seed(2)
    images, labels = colour_patches(60, seed=10)
    student = small_cnn((16, 16, 3), num_classes=3, width=8)
    student.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    student.fit(normalized(images), labels, batch_size=30, epochs=8, shuffle=True, verbose=0)
    student.save(str(root / "student.keras"))
    test = colour_patches(10, seed=11)
    metadata = export.export_student(
        root / "student.keras",
        root / "export",
        variants=["float32", "int8"],
        normalization="cifar10",
        style="cifar",
        representative_data=images,
        held_out=test,
        class_names=CLASSES,
    )
    assert metadata["held_out"]["keras_accuracy"] >= 0.9, "the tiny student did not learn its task"
    return root / "export"


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """One PNG or JPEG per class (one twice the model's size), and the expected classes."""
    folder = tmp_path_factory.mktemp("images")
    images, labels = colour_patches(1, seed=20)
    paths = []
    for image, label in zip(images, labels):
        if label == 0:
            path, data = folder / "first.png", tf.io.encode_png(image)
        elif label == 1:
            path, data = folder / "second.jpg", tf.io.encode_jpeg(image, quality=95)
        else:  # 32x32: resized to 16x16 by the cifar test-time transform
            large = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
            path, data = folder / "third_large.png", tf.io.encode_png(large)
        tf.io.write_file(str(path), data)
        paths.append(str(path))
    return paths, [CLASSES[label] for label in labels]


def top1_lines(output, paths):
    """The first-ranked class printed under each image path."""
    lines = output.splitlines()
    return [lines[lines.index(path) + 1].split()[1] for path in paths]


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "okdph_keras.predict", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_prints_the_expected_classes(exported, image_files, capsys):
    paths, expected = image_files
    result = run_cli(exported, *paths, "--top_k", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert top1_lines(result.stdout, paths) == expected
    first = result.stdout.splitlines()
    block = first[first.index(paths[0]) + 1 : first.index(paths[0]) + 3]
    assert len(block) == 2 and block[1].strip().startswith("2.")
    probabilities = [float(line.split()[-1]) for line in block]
    assert probabilities[0] >= probabilities[1] and 0.0 <= sum(probabilities) <= 1.0 + 1e-6

    assert predict.main([str(exported / "model_int8.tflite"), *paths, "--top_k", "1"]) == 0
    printed = capsys.readouterr().out
    assert "tflite" in printed and top1_lines(printed, paths) == expected


def test_every_model_form_predicts_alike(exported, image_files, tmp_path):
    paths, expected = image_files
    forms = {
        "export": predict.load(exported),
        "export int8": predict.load(exported, variant="int8"),
        "saved model": predict.load(exported / "saved_model"),
        "tflite": predict.load(exported / "model_float32.tflite"),
    }
    reference = predict.predict_files(forms["export"], paths, top_k=3)
    assert [pairs[0][0] for pairs in reference] == expected
    for name, model in forms.items():
        assert model.class_names == CLASSES and model.style == "cifar" and model.image_size == 16, (
            name
        )
        results = predict.predict_files(model, paths, top_k=3)
        assert [pairs[0][0] for pairs in results] == expected, name
        assert all(sum(p for _, p in pairs) == pytest.approx(1.0, abs=0.02) for pairs in results), (
            name
        )

    lone = tmp_path / "lone.tflite"  # no metadata.json beside it: numbered classes, plain resize
    shutil.copy(exported / "model_float32.tflite", lone)
    model = predict.load(lone)
    assert model.class_names == ("0", "1", "2") and model.style is None
    results = predict.predict_files(model, paths, top_k=1)
    assert [CLASSES[int(pairs[0][0])] for pairs in results] == expected


def test_bad_inputs_give_clear_errors(exported, image_files, tmp_path, capsys):
    paths, _ = image_files
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not an image")

    def fails(*argv):
        with pytest.raises(SystemExit) as exit_info:
            predict.main([str(a) for a in argv])
        assert exit_info.value.code == 1
        return capsys.readouterr().err

    assert f"Could not decode image file {broken}" in fails(exported, paths[0], broken)
    assert f"Image file {tmp_path / 'missing.png'} does not exist" in fails(
        exported, tmp_path / "missing.png"
    )
    assert "does not exist" in fails(tmp_path / "no_model", paths[0])
    (tmp_path / "empty").mkdir()
    assert "holds no model" in fails(tmp_path / "empty", paths[0])
    assert "holds no model" in fails(broken, paths[0])
    assert "variant='float16' is not allowed; it must be one of the variants export" in fails(
        exported, paths[0], "--variant", "float16"
    )
    assert "top_k=0 is not allowed; it must be an integer >= 1" in fails(
        exported, paths[0], "--top_k", "0"
    )
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer")
    assert "Could not load the TFLite model" in fails(junk, paths[0])


def test_every_name_of_the_package_imports_lazily():
    assert set(PACKAGE_NAMES) <= set(okdph_keras.__all__)
    for name in okdph_keras.__all__:
        namespace = {}
        exec(f"from okdph_keras import {name}", namespace)  # noqa: S102
        if name in okdph_keras._NAMES:
            defined_in = importlib.import_module(f"okdph_keras.{okdph_keras._NAMES[name]}")
            assert namespace[name] is getattr(defined_in, name), name
        else:
            assert namespace[name] is importlib.import_module(f"okdph_keras.{name}"), name
        assert getattr(okdph_keras, name) is namespace[name], name
    namespace = {}
    exec("from okdph_keras import *", namespace)  # noqa: S102
    assert set(okdph_keras.__all__) <= set(namespace) and set(okdph_keras.__all__) <= set(
        dir(okdph_keras)
    )
    assert okdph_keras.config.Config is okdph_keras.Config and okdph_keras.export.VARIANTS
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        okdph_keras.no_such_name  # noqa: B018


def test_predicting_a_png_with_tflite_imports_neither_keras_nor_tensorflow(exported, image_files):
    paths, expected = image_files
    pngs = [path for path in paths if path.endswith(".png")]
    script = f"""
import sys
heavy = lambda: [m for m in ("keras", "tensorflow", "okdph_keras.train", "okdph_keras.data") if m in sys.modules]
from okdph_keras import predict
assert heavy() == [], f"import okdph_keras.predict loaded {{heavy()}}"
predict.main([{str(exported / "model_float32.tflite")!r}, *{pngs!r}])
assert heavy() == [], f"predicting PNGs with a .tflite model loaded {{heavy()}}"
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert top1_lines(result.stdout, pngs) == [expected[paths.index(path)] for path in pngs]


def tensorflow_transform(image, size, style):
    """The training-time reference: `eval_transform` (None: a plain antialiased resize), uint8."""
    if style is None:
        image = tf.image.resize(tf.cast(image, tf.float32), [size, size], antialias=True)
    else:
        image = eval_transform(style, size)(tf.constant(image))
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8).numpy()


@pytest.mark.parametrize("style", ["cifar", "imagenet", None])
def test_the_numpy_transform_matches_eval_transform(style):
    rng = np.random.default_rng(0)
    differing = total = 0
    for shape, size in [
        ((16, 16, 3), 16),
        ((32, 32, 3), 16),
        ((17, 23, 3), 16),
        ((7, 9, 1), 16),
        ((61, 40, 3), 32),
        ((300, 200, 3), 224),
        ((250, 333, 1), 56),
        ((1, 5, 3), 4),
    ]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        expected = tensorflow_transform(image, size, style)
        actual = predict.transform_image(image, size, style)
        assert actual.dtype == np.uint8 and actual.shape == expected.shape == (
            size,
            size,
            shape[-1],
        )
        difference = np.abs(actual.astype(int) - expected)
        assert difference.max() <= 1, f"{shape} -> {size}, style {style}: off by {difference.max()}"
        differing += np.count_nonzero(difference)
        total += difference.size
    assert differing / total < 1e-3, "off by one only where a float32 sum lands next to .5"


def image_file(folder, kind, rng):
    """A square image file of `kind` and its path."""
    if kind == "png16_grey":  # Pillow cannot write 16-bit PNGs from numpy
        path = folder / "grey16.png"
        tf.io.write_file(
            str(path), tf.io.encode_png(rng.integers(0, 65536, (24, 24, 1), dtype=np.uint16))
        )
        return path
    mode, file_format = {
        "png": ("RGB", "PNG"),
        "png_grey": ("L", "PNG"),
        "png_rgba": ("RGBA", "PNG"),
        "png_palette": ("P", "PNG"),
        "jpeg": ("RGB", "JPEG"),
        "bmp": ("RGB", "BMP"),
        "gif": ("RGB", "GIF"),
    }[kind]
    channels = {"L": 1, "RGBA": 4}.get(mode, 3)
    pixels = rng.integers(0, 256, (24, 24, channels), dtype=np.uint8)
    image = PIL.Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels)
    if mode == "P":
        image = image.quantize(64)
    path = folder / f"{kind}.{file_format.lower()}"
    image.save(path, format=file_format)
    return path


@pytest.mark.parametrize(
    "kind", ["png", "png_grey", "png_rgba", "png_palette", "png16_grey", "jpeg", "bmp", "gif"]
)
def test_image_files_give_the_pixels_tensorflow_decodes(kind, tmp_path):
    path = str(image_file(tmp_path, kind, np.random.default_rng(1)))
    for channels in (
        (3, 1) if kind.startswith(("png", "jpeg")) else (3,)
    ):  # TF reads BMP, GIF in colour only
        decoded = tf.io.decode_image(
            tf.io.read_file(path), channels=channels, expand_animations=False
        ).numpy()
        # At the image's own size, the cifar transform only converts: the decoded pixels.
        np.testing.assert_array_equal(predict.load_image(path, 24, channels, "cifar"), decoded)
        difference = predict.load_image(path, 16, channels, "imagenet").astype(
            int
        ) - tensorflow_transform(decoded, 16, "imagenet")
        assert np.abs(difference).max() <= 1, kind
