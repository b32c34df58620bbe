"""Every recipe end to end with --smoke, offline, and resuming after a kill."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from cifar_fixtures import prepare_fake_cifar

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 400


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    prepare_fake_cifar(data_dir, "cifar10", num_train=40, num_test=20)
    prepare_fake_cifar(data_dir, "cifar100", num_train=40, num_test=20)
    return data_dir


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    """train/ and val/ class folders of PNG and JPEG images of different sizes."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 3)):
        for name in ("cat", "dog", "fish"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 256, size=(40 + 4 * i, 48, 3), dtype=np.uint8)
                encoded = tf.io.encode_png(image) if i % 2 else tf.io.encode_jpeg(image)
                (folder / f"{i}.{'png' if i % 2 else 'jpg'}").write_bytes(encoded.numpy())
    return root


def recipe_command(recipe, tmp_path, *flags):
    return [
        sys.executable,
        "-m",
        f"recipes.{recipe}",
        "--smoke",
        f"--output_dir={tmp_path / 'runs'}",
        f"--saved_models_dir={tmp_path / 'saved'}",
        *flags,
    ]


def run_recipe(recipe, tmp_path, *flags, env=None):
    completed = subprocess.run(
        recipe_command(recipe, tmp_path, *flags),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=env,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    return completed.stdout


def check_run_directory(tmp_path, run_name, num_students, epochs=2):
    run_dir = tmp_path / "runs" / run_name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["smoke"] is True and config["epochs"] == epochs
    assert len(config["views"]) == num_students + 1

    history = (run_dir / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,") and len(history) == epochs + 1
    columns = history[0].split(",")
    assert "val_student_0_accuracy" in columns and "test_student_0_accuracy" in columns
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == [f"epoch_{epochs:04d}.keras"]
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    results = json.loads((run_dir / "results.json").read_text())
    networks = {f"student_{m}" for m in range(num_students)} | {"hwm", "ensemble"}
    assert set(results["final_test_accuracy"]) == networks
    assert all(0.0 <= v <= 1.0 for v in results["final_test_accuracy"].values())
    assert results["epochs"] == epochs
    validation = results["final_validation_accuracy"]
    assert results["best_student"] == max(
        range(num_students), key=lambda m: validation[f"student_{m}"]
    )

    student = tmp_path / "saved" / run_name / "student.keras"
    import keras  # noqa: PLC0415

    model = keras.saving.load_model(student)
    assert model.output_shape[-1] == config_classes(config)
    assert not list(tmp_path.rglob("*.tmp*")), "a temporary file was left behind"
    return results


def config_classes(config):
    return {"cifar10": 10, "cifar100": 100}.get(config["dataset"], 3)


def test_cifar10_recipe_smoke(tmp_path, tfds_dir):
    # small_cnn: resnet32 is built and checked in test_models, and costs a minute here.
    out = run_recipe("cifar10", tmp_path, f"--data_dir={tfds_dir}", "--model=small_cnn")
    assert "Final-epoch test accuracy" in out
    results = check_run_directory(tmp_path, "cifar10_small_cnn_m2_seed42_smoke", 2)
    check_hwm_test_figures(results, tmp_path / "runs/cifar10_small_cnn_m2_seed42_smoke", 20)
    # The same command again reports the finished run instead of training.
    again = run_recipe("cifar10", tmp_path, f"--data_dir={tfds_dir}", "--model=small_cnn")
    assert "has already finished" in again and "Epoch 1/2" not in again


def test_cifar100_recipe_smoke_four_students(tmp_path, tfds_dir):
    run_recipe("cifar100", tmp_path, f"--data_dir={tfds_dir}", "--model=small_cnn", "--students=4")
    check_run_directory(tmp_path, "cifar100_small_cnn_m4_seed42_smoke", 4)
    config = json.loads(
        (tmp_path / "runs/cifar100_small_cnn_m4_seed42_smoke/config.json").read_text()
    )
    assert config["views"] == ["hflip", "cutout", "randaugment", "autoaugment", "none"]
    # The reference table for CIFAR-100: omega 1.0 for resnet32 only; small_cnn gets the paper's defaults.
    assert (config["omega"], config["fusion_unit"]) == (0.8, "epoch")


def test_imagenet_recipe_smoke_on_an_image_tree(tmp_path, image_tree):
    # small_cnn: resnet18 is built and checked in test_models.
    run_recipe(
        "imagenet", tmp_path, f"--data_dir={image_tree}", "--image_size=32", "--model=small_cnn"
    )
    check_run_directory(tmp_path, "imagenet2012_small_cnn_m2_seed42_smoke", 2)


def test_image_folder_recipe_smoke_mirrored_on_two_cpu_replicas(tmp_path, image_tree):
    out = run_recipe(
        "image_folder",
        tmp_path,
        f"--data_dir={image_tree}",
        "--model=small_cnn",
        "--style=cifar",
        "--image_size=16",
        "--hybrid=dirichlet",
        "--strategy=mirrored",
        "--cpu_replicas=2",
        "--sync_bn",
    )
    assert "Strategy: MirroredStrategy, 2 replica(s)." in out
    results = check_run_directory(tmp_path, "image_folder_small_cnn_m2_seed42_smoke", 2)
    # Over 2 replicas the 9 test images split into batches of 8 and 1 (one replica empty).
    check_hwm_test_figures(results, tmp_path / "runs/image_folder_small_cnn_m2_seed42_smoke", 9)
    config = json.loads(
        (tmp_path / "runs/image_folder_small_cnn_m2_seed42_smoke/config.json").read_text()
    )
    assert config["sync_bn"] is True
    # The exported student is plain Keras: it loads without okdph_keras and gives the trained logits.
    images = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    student = tmp_path / "saved/image_folder_small_cnn_m2_seed42_smoke/student.keras"
    load = (
        "import sys, keras, numpy as np; "
        f"model = keras.saving.load_model({str(student)!r}); "
        "assert not [m for m in sys.modules if m.startswith('okdph_keras')]; "
        f"np.save({str(tmp_path / 'logits.npy')!r}, "
        f"model.predict(np.load({str(tmp_path / 'images.npy')!r}), verbose=0))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", load],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    trained = checkpoint_model(tmp_path / "runs/image_folder_small_cnn_m2_seed42_smoke").students[
        results["best_student"]
    ]
    expected = np.asarray(trained(images, training=False))
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, rtol=1e-5, atol=1e-5)


def check_hwm_test_figures(results, run_dir, num_test):
    """The HWM's reported final test accuracy and CE are those counted here from its checkpoint.

    (On these tiny smoke sets the accuracy is often the same every epoch; the CE is not.)
    """
    import keras  # noqa: PLC0415

    from okdph_keras import run_data  # noqa: PLC0415
    from okdph_keras.config import Config  # noqa: PLC0415

    config = Config.from_json_dict(json.loads((run_dir / "config.json").read_text()))
    model = checkpoint_model(run_dir)
    _, _, test = run_data.make_datasets(config, run_data.load_sources(config))
    correct = total = 0
    losses = []
    for images, labels in test:
        hwm_logits = keras.ops.convert_to_numpy(model(images, training=False))[:, -1].astype(
            np.float64
        )
        labels = labels.numpy()
        correct += int(np.sum(np.argmax(hwm_logits, axis=-1) == labels))
        total += len(labels)
        shifted = hwm_logits - hwm_logits.max(-1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        losses.extend(-log_softmax[np.arange(len(labels)), labels])
    assert total == num_test
    assert results["final_test_accuracy"]["hwm"] == pytest.approx(correct / total)
    assert results["final_test_ce"]["hwm"] == pytest.approx(np.mean(losses), rel=1e-5)


def checkpoint_model(run_dir):
    """The run's last checkpoint (an `OKDPH`)."""
    import keras  # noqa: PLC0415

    # Registers OKDPH and synchronised BatchNorm (`import okdph_keras` alone is lazy).
    import okdph_keras.model  # noqa: F401, PLC0415
    import okdph_keras.sync_batchnorm  # noqa: F401, PLC0415

    state = json.loads((run_dir / "state.json").read_text())
    return keras.saving.load_model(run_dir / state["checkpoint"])


def final_weights(run_root, run_name):
    model = checkpoint_model(run_root / "runs" / run_name)
    return [v.numpy() for v in model.variables + model.optimizer.variables]


def test_a_killed_run_resumes_from_its_last_epoch(tmp_path, tfds_dir):
    # Enough epochs that the kill lands mid-run however fast the machine is.
    flags = (
        f"--data_dir={tfds_dir}",
        "--model=small_cnn",
        "--epochs=6",
        "--views=hflip,cutout,none",
        "--deterministic",
    )
    # --deterministic runs TensorFlow on one thread, which made repeated runs bit-identical
    # here; oneDNN's kernels are off besides, as the README advises should runs differ.
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}
    process = subprocess.Popen(
        recipe_command("cifar10", tmp_path, *flags),
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state_path = tmp_path / "runs/cifar10_small_cnn_m2_seed42_smoke/state.json"
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            if state_path.exists() and json.loads(state_path.read_text())["epochs_done"] >= 1:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be interrupted"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    done = json.loads(state_path.read_text())["epochs_done"]
    assert 1 <= done < 6

    out = run_recipe("cifar10", tmp_path, *flags, env=env)
    assert f"Resuming {state_path.parent} after epoch {done} of 6" in out
    assert f"Epoch {done + 1}/6" in out and "Epoch 1/6" not in out
    check_run_directory(tmp_path, "cifar10_small_cnn_m2_seed42_smoke", 2, epochs=6)

    # The same command never interrupted: the same weights and optimizer state. The check
    # allows a few float32 ulps (rtol 1e-5): before --deterministic set one thread, CI saw
    # straight runs drift apart by up to 2.9e-6 on values near 7 (rtol 4e-7). A
    # resume that restarts the data moves weights by 1e-2 (mutation-checked).
    resumed = final_weights(tmp_path, "cifar10_small_cnn_m2_seed42_smoke")
    run_recipe("cifar10", tmp_path / "straight", *flags, env=env)
    straight = final_weights(tmp_path / "straight", "cifar10_small_cnn_m2_seed42_smoke")
    assert len(resumed) == len(straight) > 0
    for a, b in zip(resumed, straight):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_groups_recipe_exports_the_smallest_architecture(tmp_path, tfds_dir):
    """--students=ARCH:COUNT,...: one HWM per group of two or more, the small student exported."""
    run_recipe("cifar10", tmp_path, f"--data_dir={tfds_dir}", "--students=resnet32:1,small_cnn:2")
    run_name = "cifar10_small_cnn_okdph_groups_resnet32x1_small_cnnx2_seed42_smoke"
    run_dir = tmp_path / "runs" / run_name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["method"] == "okdph_groups" and config["model"] == "small_cnn"
    assert config["groups"] == [["resnet32", 1], ["small_cnn", 2]]
    assert config["views"] == ["hflip", "hflip", "cutout", "randaugment"]  # one HWM: group 1's
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["final_test_accuracy"]) == {
        "student_0",
        "student_1",
        "student_2",
        "hwm_1",
        "ensemble",
    }
    validation = results["final_validation_accuracy"]
    assert results["best_student"] == max((1, 2), key=lambda m: validation[f"student_{m}"])
    import keras  # noqa: PLC0415

    from okdph_keras.models import get_model  # noqa: PLC0415

    exported = keras.saving.load_model(tmp_path / "saved" / run_name / "student.keras")
    small = get_model("small_cnn", 10, exported.input_shape[1:])
    assert exported.count_params() == small.count_params()
