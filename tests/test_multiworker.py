"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 train one run.

Each worker runs `okdph_keras.train.run` (through `tests/multiworker_worker.py`)
with `TF_CONFIG` naming both; training goes through `okdph_keras.loop.fit`.
Both must finish with identical students (BatchNorm included, thanks to the
averaging before each fusion), and only the chief writes the run directory. A job
whose workers are SIGKILLed after an epoch and started again with the same
command resumes and ends as an uninterrupted job (to float rounding).
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from okdph_keras.config import Config

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multiworker_worker.py")
REPO_ROOT = os.path.dirname(os.path.dirname(WORKER))
TIMEOUT_S = 300


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def write_images(root):
    rng = np.random.default_rng(0)
    for split, count in (("train", 20), ("test", 6)):
        for label, name in enumerate(("a", "b", "c")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 80, size=(8, 8, 3), dtype=np.uint8)
                image[..., label] += 150
                (folder / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())


def run_workers(tmp_path, config, tag, kill_after_epoch=None):
    """Runs both workers to the end (or SIGKILLs both once `kill_after_epoch` epochs are saved)."""
    config_path = tmp_path / f"config_{tag}.json"
    config_path.write_text(json.dumps(config.to_json_dict()))
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    state_path = pathlib.Path(config.output_dir) / config.run_name / "state.json"
    processes, logs = [], []
    try:
        for index in range(2):
            env = dict(
                os.environ,
                CUDA_VISIBLE_DEVICES="-1",
                TF_CPP_MIN_LOG_LEVEL="2",
                TF_CONFIG=json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}}
                ),
            )
            log = open(tmp_path / f"worker_{tag}_{index}.log", "w+")
            logs.append(log)
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        WORKER,
                        str(config_path),
                        str(tmp_path / f"weights_{tag}_{index}.npz"),
                    ],
                    cwd=REPO_ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline and any(p.poll() is None for p in processes):
            if kill_after_epoch and state_path.exists():
                if json.loads(state_path.read_text())["epochs_done"] >= kill_after_epoch:
                    break
            time.sleep(0.1)
        codes = [p.poll() for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
            p.wait()
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    if kill_after_epoch:
        assert codes == [None, None], f"the workers ended ({codes}) before they could be killed"
        return None, outputs
    assert codes == [0, 0], f"worker exit codes {codes}\n" + "\n----\n".join(
        o[-3000:] for o in outputs
    )
    return [np.load(tmp_path / f"weights_{tag}_{index}.npz") for index in range(2)], outputs


def make_config(tmp_path, data_dir, root):
    return Config(
        dataset="image_folder",
        data_dir=str(data_dir),
        model="small_cnn",
        views=("hflip", "cutout", "none"),
        style="cifar",
        image_size=8,
        normalization=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
        epochs=3,
        batch_size=8,
        learning_rate=0.05,
        validation_fraction=0.2,
        seed=3,
        output_dir=str(root / "runs"),
        run_name="mw",
        saved_models_dir=str(root / "saved"),
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("multiworker")
    write_images(root / "data")
    (first, second), outputs = run_workers(root, make_config(root, root / "data", root), "a")
    return root, first, second, outputs


def test_two_workers_finish_with_identical_students(uninterrupted):
    root, first, second, outputs = uninterrupted
    assert len(first.files) == len(second.files) > 0
    for name in first.files:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    run_dir = root / "runs" / "mw"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["epochs"] == 3 and "final_validation_accuracy" in results
    assert (root / "saved" / "mw" / "student.keras").exists()
    history = (run_dir / "history.csv").read_text().splitlines()
    assert len(history) == 4 and "test_student_0_accuracy" in history[0]
    assert all("Epoch 3/3" in output for output in outputs)


def test_a_killed_job_restarted_with_the_same_command_ends_as_if_uninterrupted(
    uninterrupted, tmp_path
):
    root, expected, _, _ = uninterrupted
    config = make_config(tmp_path, root / "data", tmp_path)
    run_workers(tmp_path, config, "b", kill_after_epoch=1)
    done = json.loads((tmp_path / "runs" / "mw" / "state.json").read_text())["epochs_done"]
    assert 1 <= done < 3
    (first, second), outputs = run_workers(tmp_path, config, "b")
    assert all(f"Resuming {tmp_path / 'runs' / 'mw'} after epoch {done} of 3" in o for o in outputs)
    for name in expected.files:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
        # Float rounding allowed: before the workers ran on one CPU thread, last-ulp
        # differences (up to 6e-8) were seen in one run of two; machines differ. A resume
        # from the wrong epoch, data or optimizer state differs by orders of magnitude more.
        np.testing.assert_allclose(first[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
