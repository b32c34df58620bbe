"""okdph_keras.predict: top-k classes of image files with an exported student."""

import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from okdph_keras import export, predict
from okdph_keras.models import small_cnn
from test_export import CLASSES, REPO_ROOT, colour_patches, normalized


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
        root / "student.keras", root / "export", variants=["float32", "int8"], normalization="cifar10",
        style="cifar", representative_data=images, held_out=test, class_names=CLASSES,
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
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )


def test_cli_prints_the_expected_classes(exported, image_files, capsys):
    paths, expected = image_files
    result = run_cli(exported, *paths, "--top_k", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert top1_lines(result.stdout, paths) == expected
    first = result.stdout.splitlines()
    block = first[first.index(paths[0]) + 1:first.index(paths[0]) + 3]
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
        assert model.class_names == CLASSES and model.style == "cifar" and model.image_size == 16, name
        results = predict.predict_files(model, paths, top_k=3)
        assert [pairs[0][0] for pairs in results] == expected, name
        assert all(sum(p for _, p in pairs) == pytest.approx(1.0, abs=0.02) for pairs in results), name

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
    assert f"Image file {tmp_path / 'missing.png'} does not exist" in fails(exported, tmp_path / "missing.png")
    assert "does not exist" in fails(tmp_path / "no_model", paths[0])
    (tmp_path / "empty").mkdir()
    assert "holds no model" in fails(tmp_path / "empty", paths[0])
    assert "holds no model" in fails(broken, paths[0])
    assert "has no variant 'float16'" in fails(exported, paths[0], "--variant", "float16")
    assert "top_k must be an integer >= 1" in fails(exported, paths[0], "--top_k", "0")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer")
    assert "Could not load the TFLite model" in fails(junk, paths[0])
