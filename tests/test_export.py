"""okdph_keras.export: a tiny OKDPH run exported to SavedModel and TFLite, checked against Keras.

The run trains on learnable synthetic images (a patch of the class's colour on a dark,
noisy background, 16x16x3, 3 classes) so that quantised models can be compared by top-1
agreement meaningfully.
"""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from okdph_keras import checkpointing, export, train
from okdph_keras.config import Config
from okdph_keras.data.views import NORMALIZATION

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("a_red", "b_green", "c_blue")  # sorted, as class folders are read
SIZE = 16
MEAN, STD = NORMALIZATION["cifar10"]


def colour_patches(count, seed):
    """`count` images per class: a 6x6 patch of the class's colour on dark noise."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(len(CLASSES)):
        for _ in range(count):
            image = rng.integers(0, 90, size=(SIZE, SIZE, 3))
            row, column = rng.integers(0, SIZE - 6, size=2)
            colour = rng.integers(0, 60, size=3)
            colour[label] = rng.integers(190, 256)
            image[row : row + 6, column : column + 6] = colour
            images.append(image.astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.array(labels)


def write_image_tree(root, splits):
    """root/<split>/<class>/<n>.png from {split: (images, labels)}."""
    for split, (images, labels) in splits.items():
        for index, (image, label) in enumerate(zip(images, labels)):
            folder = os.path.join(root, split, CLASSES[label])
            os.makedirs(folder, exist_ok=True)
            tf.io.write_file(os.path.join(folder, f"{index:04d}.png"), tf.io.encode_png(image))


def normalized(images):
    return (images.astype(np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished OKDPH run (2 small_cnn students) on a class-per-folder tree."""
    root = tmp_path_factory.mktemp("export_run")
    train_data, test_data = colour_patches(40, seed=0), colour_patches(20, seed=1)
    write_image_tree(root / "data", {"train": train_data, "test": test_data})
    config = Config(
        dataset="image_folder",
        data_dir=str(root / "data"),
        model="small_cnn",
        views=("hflip", "hflip", "none"),
        style="cifar",
        image_size=SIZE,
        normalization=(MEAN, STD),
        epochs=5,
        batch_size=16,
        learning_rate=0.05,
        weight_decay=1e-4,
        seed=1,
        output_dir=str(root / "runs"),
        run_name="tiny",
        saved_models_dir=str(root / "saved"),
    )
    keras.utils.set_random_seed(1)
    train.run(config)
    return root / "runs" / "tiny"


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    """The run exported with every variant, int8 with float outputs."""
    output = tmp_path_factory.mktemp("exports") / "tiny"
    metadata = export.export_student(run_dir, output)
    return output, metadata


def load_student(run_dir, index):
    state = checkpointing.load_state(run_dir)
    model = keras.saving.load_model(os.path.join(run_dir, state["checkpoint"]), compile=False)
    return model.students[index]


def run_tflite(path, images):
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 (only this test)

    runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    outputs = runner(images=images)
    details = runner.get_output_details()["logits"]
    scale, zero_point = details["quantization"]
    logits = outputs["logits"]
    return (logits.astype(np.float32) - zero_point) * scale if scale else logits


def test_every_variant_matches_the_keras_student(exported, run_dir):
    output, metadata = exported
    images, labels = colour_patches(20, seed=1)  # the run's test split
    student = load_student(run_dir, metadata["source"]["student"])
    expected = student(normalized(images), training=False).numpy()
    assert np.mean(expected.argmax(-1) == labels) >= 0.9, "the tiny run did not learn its task"

    saved = tf.saved_model.load(str(output / "saved_model")).signatures["serving_default"]
    outputs = saved(images=tf.constant(images))
    np.testing.assert_allclose(outputs["logits"].numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(
        outputs["probabilities"].numpy(), tf.nn.softmax(expected).numpy(), atol=1e-5
    )
    np.testing.assert_allclose(
        run_tflite(output / "model_float32.tflite", images), expected, atol=1e-4
    )
    for variant in ("float16", "dynamic_range", "int8"):
        top1 = run_tflite(output / f"model_{variant}.tflite", images).argmax(-1)
        agreement = np.mean(top1 == expected.argmax(-1))
        assert agreement >= 0.9, f"{variant}: top-1 agreement {agreement} with Keras"
        assert metadata["variants"][variant]["agreement"] == pytest.approx(agreement)


def test_metadata_describes_the_export(exported, run_dir):
    output, metadata = exported
    assert json.loads((output / "metadata.json").read_text()) == json.loads(json.dumps(metadata))
    assert metadata["class_names"] == list(CLASSES)
    assert (
        metadata["image_size"] == SIZE
        and metadata["channels"] == 3
        and metadata["style"] == "cifar"
    )
    assert metadata["input"]["dtype"] == "uint8" and metadata["input"]["shape"] == [
        None,
        SIZE,
        SIZE,
        3,
    ]
    assert metadata["normalization"]["mean"] == list(MEAN)
    assert metadata["normalization"]["std"] == list(STD)
    source = metadata["source"]
    results = json.loads((run_dir / "results.json").read_text())
    assert source["kind"] == "run" and source["run_name"] == "tiny" and source["num_students"] == 2
    assert source["test_accuracy"] == results["final_test_accuracy"][f"student_{source['student']}"]
    selection = metadata["selection"]
    assert len(selection["accuracies"]) == 2
    assert source["student"] == int(np.argmax(selection["accuracies"]))
    assert "validation split" in selection["data"] and "all but" not in selection["data"]
    assert source["student"] == results["best_student"]
    assert metadata["held_out"]["examples"] == 60
    assert "108 images" in metadata["representative_data"]  # 120 less 4 per class held out
    assert set(metadata["variants"]) == {
        "saved_model",
        "float32",
        "float16",
        "dynamic_range",
        "int8",
    }
    for entry in metadata["variants"].values():
        path = output / entry["path"]
        assert path.exists()
        if path.is_file():
            assert entry["size_bytes"] == path.stat().st_size
        assert 0.0 <= entry["agreement"] <= 1.0 and 0.0 <= entry["accuracy"] <= 1.0
    for name in ("saved_model", "float32"):
        assert metadata["variants"][name]["max_abs_logit_difference"] < 1e-4
        assert metadata["variants"][name]["agreement"] == 1.0
    sizes = {name: metadata["variants"][name]["size_bytes"] for name in export.VARIANTS}
    assert sizes["float16"] < sizes["float32"] and sizes["int8"] < sizes["float16"]
    assert metadata["variants"]["int8"]["outputs"]["logits"]["dtype"] == "float32"
    assert sorted(p.name for p in output.parent.iterdir()) == ["tiny"], "temporary directories left"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(output).st_mode) == 0o777 & ~umask
    assert stat.S_IMODE(os.stat(output / "model_int8.tflite").st_mode) == 0o666 & ~umask


def test_chosen_student_int8_outputs_and_overwrite(run_dir, exported, tmp_path):
    output = exported[0].parent / "tiny"
    with pytest.raises(FileExistsError, match="overwrite"):
        export.export_student(run_dir, output, variants=["float32"])

    target = tmp_path / "student1"
    metadata = export.export_student(run_dir, target, student=1, variants=["int8"], int8_io=True)
    assert metadata["source"]["student"] == 1 and metadata["selection"]["by"].startswith("index")
    assert sorted(metadata["variants"]) == ["int8", "saved_model"]
    outputs = metadata["variants"]["int8"]["outputs"]
    assert outputs["logits"]["dtype"] == "int8" and outputs["logits"]["scale"] > 0
    assert metadata["variants"]["int8"]["agreement"] >= 0.9

    again = export.export_student(run_dir, target, student=0, variants="float16", overwrite=True)
    assert again["source"]["student"] == 0
    assert sorted(p.name for p in target.iterdir()) == [
        "metadata.json",
        "model_float16.tflite",
        "saved_model",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student1"]


def test_best_student_of_an_okdph_file_is_picked_on_the_selection_data(run_dir, tmp_path):
    state = checkpointing.load_state(run_dir)
    model = keras.saving.load_model(os.path.join(run_dir, state["checkpoint"]), compile=False)
    dense = model.students[0].layers[-1]
    dense.set_weights(
        [np.zeros_like(w) for w in dense.get_weights()]
    )  # student 0 always says "red"
    path = str(tmp_path / "okdph.keras")
    model.save(path)
    images, labels = colour_patches(10, seed=5)
    metadata = export.export_student(
        path,
        tmp_path / "out",
        variants=["float32"],
        normalization="cifar10",
        selection_data=(images, labels),
        held_out=(images, labels),
        class_names=CLASSES,
    )
    assert metadata["source"]["kind"] == "okdph_model" and metadata["source"]["student"] == 1
    assert metadata["selection"]["accuracies"][0] == pytest.approx(1 / 3)
    assert metadata["source"]["test_accuracy"] is None and metadata["style"] is None
    with pytest.raises(ValueError, match="student= .* or selection_data="):
        export.export_student(
            path,
            tmp_path / "out2",
            variants=["float32"],
            normalization="cifar10",
            held_out=(images, labels),
        )


def test_a_run_without_validation_split_exports_student_zero(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "validation_fraction": 0.0}))
    metadata = export.export_student(copy, tmp_path / "out", variants=["float32"])
    assert metadata["source"]["student"] == 0
    assert "no validation split" in metadata["selection"]["by"]


def test_an_interrupted_export_leaves_nothing_behind(run_dir, exported, tmp_path, monkeypatch):
    calls = []

    def fail_on_second(path, content):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption while writing a model")
        original(path, content)

    original = export.convert.write_bytes
    monkeypatch.setattr(export.convert, "write_bytes", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        export.export_student(run_dir, tmp_path / "new", student=0, variants=["float32", "float16"])
    assert list(tmp_path.iterdir()) == [], "a partial export or a temporary directory was left"

    # Replacing an existing export: the old one stays intact when the new one fails.
    output = exported[0]
    before = (output / "metadata.json").read_text()
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        export.export_student(
            run_dir, output, student=0, variants=["float32", "float16"], overwrite=True
        )
    assert (output / "metadata.json").read_text() == before
    assert sorted(p.name for p in output.parent.iterdir()) == ["tiny"]


def test_a_killed_export_is_cleaned_up_by_the_next_one(run_dir, tmp_path):
    student = tmp_path / "student.keras"
    load_student(run_dir, 0).save(str(student))
    images, labels = colour_patches(4, seed=3)
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    output = tmp_path / "exports" / "killed"
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from okdph_keras import export
        original = export.convert.write_bytes
        def write_then_die(path, content):
            original(path, content)
            os.kill(os.getpid(), signal.SIGKILL)
        export.convert.write_bytes = write_then_die
        data = np.load({str(tmp_path / "data.npz")!r})
        export.export_student({str(student)!r}, {str(output)!r}, variants=["float32"],
                              normalization="cifar10", held_out=(data["images"], data["labels"]))
    """)
    process = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, timeout=300
    )
    assert process.returncode == -signal.SIGKILL, process.stderr.decode()[-3000:]
    assert not output.exists()
    leftovers = list(output.parent.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".killed.partial-")

    export.export_student(
        student, output, variants=["float32"], normalization="cifar10", held_out=(images, labels)
    )
    assert [p.name for p in output.parent.iterdir()] == ["killed"]
    assert (output / "metadata.json").exists() and (output / "model_float32.tflite").exists()


def test_an_export_renamed_aside_by_a_killed_replacement_is_put_back(run_dir, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = tmp_path / f".model.old-{dead.pid}-abc123"
    old.mkdir()
    (old / "metadata.json").write_text("{}")
    (tmp_path / f".model.partial-{dead.pid}-xyz789").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        export.export_student(run_dir, tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert (tmp_path / "model" / "metadata.json").read_text() == "{}"


def test_bad_inputs_give_clear_errors(run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export.export_student(tmp_path / "nothing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no run"):
        export.export_student(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "junk.keras").write_text("not a model")
    with pytest.raises(ValueError, match="Could not load a Keras model from .*junk.keras"):
        export.export_student(tmp_path / "junk.keras", tmp_path / "out")
    with pytest.raises(
        ValueError,
        match=r"variants=\['int4'\] is not allowed; it must be one or more of the TFLite "
        r"variants \['float32'",
    ):
        export.export_student(run_dir, tmp_path / "out", variants=["float32", "int4"])
    with pytest.raises(
        ValueError,
        match=r"student=2 is not allowed; it must be an integer in \[0, 1\]: .* holds 2 students",
    ):
        export.export_student(run_dir, tmp_path / "out", student=2)
    with pytest.raises(
        ValueError,
        match=r"representative_data must be raw images of shape \[N, 16, 16, 3\].*\[10, 32, 32, 3\]",
    ):
        export.export_student(
            run_dir,
            tmp_path / "out",
            student=0,
            representative_data=np.zeros((10, 32, 32, 3), np.uint8),
        )
    with pytest.raises(ValueError, match=r"must not hold the source"):
        export.export_student(run_dir, run_dir / "export", student=0)

    student = tmp_path / "student.keras"
    load_student(run_dir, 0).save(str(student))
    with pytest.raises(ValueError, match="normalization="):
        export.export_student(student, tmp_path / "out")
    with pytest.raises(ValueError, match="representative_data"):
        export.export_student(student, tmp_path / "out", normalization="cifar10")
    with pytest.raises(ValueError, match="held_out="):
        export.export_student(
            student, tmp_path / "out", normalization="cifar10", variants=["float32"]
        )
    images, labels = colour_patches(2, seed=0)
    with pytest.raises(ValueError, match="labels must lie in"):
        export.export_student(
            student,
            tmp_path / "out",
            normalization="cifar10",
            variants=["float32"],
            held_out=(images, labels + 5),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "junk.keras", "student.keras"]


def test_command_line(run_dir, exported, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export.main([str(run_dir), "--output", str(exported[0]), "--variants", "float32"])
    assert exit_info.value.code == 1
    assert "already exists" in capsys.readouterr().err
    output = tmp_path / "cli"
    with pytest.raises(SystemExit):
        export.main([str(run_dir), "--output", str(output), "--variants", "float32,int3"])
    assert "variants=['int3'] is not allowed; it must be one or more of" in capsys.readouterr().err

    export.main(
        [
            str(run_dir),
            "--output",
            str(output),
            "--student",
            "1",
            "--variants",
            "float32",
            "dynamic_range",
        ]
    )
    printed = capsys.readouterr().out
    assert (
        "Exported student 1" in printed
        and "dynamic_range" in printed
        and "Source test accuracy" in printed
    )
    metadata = json.loads((output / "metadata.json").read_text())
    assert sorted(metadata["variants"]) == ["dynamic_range", "float32", "saved_model"]

    process = subprocess.run(  # python -m okdph_keras.export: the same command line
        [sys.executable, "-m", "okdph_keras.export", str(run_dir), "--output", str(output)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 1 and "already exists" in process.stderr, process.stderr[-3000:]
    assert "RuntimeWarning" not in process.stderr  # runpy's, were __main__ imported by the package
