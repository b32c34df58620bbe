"""OKDPH under tf.distribute.MirroredStrategy on two logical CPU devices.

Logical devices must be configured before TensorFlow initialises, which has
already happened in pytest's process, so `distribute_worker.py` runs in a
fresh interpreter and prints its measurements as one JSON line. This module
runs it once and checks:

* Equivalence (students without BatchNorm, whose per-replica batch statistics
  would differ from the global batch's by design): one epoch of `fit` with
  Dirichlet coefficients, weight decay, SGD with momentum and batch-level
  `Fusion` gives the same variables (students, coefficients, optimizer
  state), coefficients and epoch losses under MirroredStrategy as under the
  default strategy.
* Every replica of every mirrored variable holds the same value after that
  epoch.
* With BatchNorm students and `Fusion`, replicas hold identical values of
  every variable (BatchNorm statistics included) after the epoch, which ends
  with a fusion, and after `fuse(1.0)`; after `fuse(1.0)` both students are
  identical.
* Fused values (a separate script, two batches without fusion, then `fuse(gamma)`): every
  replica of every student variable, BatchNorm statistics included, equals the fusion
  formula applied in numpy to the replicas' means of the values before the fusion.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distribute_worker.py")
REPO_ROOT = os.path.dirname(os.path.dirname(WORKER))
TIMEOUT_S = 240
STDERR_TAIL = 6000

VARIABLE_TOLERANCE = 1e-5  # absolute, scaled by max(1, |value|)
LOSS_TOLERANCE = 1e-5
REPLICA_TOLERANCE = 1e-7


def _tail(text, limit=STDERR_TAIL):
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text[-limit:]


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    # Both runs on the CPU, so that "default strategy" and "mirrored" differ
    # only in the distribution.
    env["CUDA_VISIBLE_DEVICES"] = "-1"
    try:
        completed = subprocess.run(
            [sys.executable, WORKER],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(
            f"distribute_worker.py did not finish in {TIMEOUT_S} s.\n"
            f"--- stderr tail ---\n{_tail(error.stderr)}"
        )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        pytest.fail(
            f"distribute_worker.py exited with {completed.returncode} and "
            f"{'a' if lines else 'no'} result line.\n"
            f"--- stdout tail ---\n{_tail(completed.stdout, 2000)}\n"
            f"--- stderr tail ---\n{_tail(completed.stderr)}"
        )
    parsed = json.loads(lines[-1][len("RESULT ") :])
    parsed["_stderr_tail"] = _tail(completed.stderr)
    return parsed


def _section(results, name):
    section = results[name]
    if "error" in section:
        pytest.fail(
            f"The worker's {name!r} section raised: {section['error']}\n"
            f"--- stderr tail ---\n{results['_stderr_tail']}"
        )
    return section


def test_worker_sees_two_logical_cpus(results):
    assert results["num_logical_cpus"] == 2


def test_mirrored_variables_match_default_strategy(results):
    section = _section(results, "equivalence")
    assert section["num_replicas_in_sync"] == 2
    assert section["default_iterations"] == section["mirrored_iterations"] == 4
    differences = section["differences"]
    assert differences, "no variables were compared"
    too_far = [
        d for d in differences if not d["abs_diff"] <= VARIABLE_TOLERANCE * max(1.0, d["scale"])
    ]
    assert not too_far, f"variables differ between default and mirrored runs: {too_far}"


def test_mirrored_coefficients_match_default_strategy(results):
    section = _section(results, "equivalence")
    default = np.array(section["default_coefficients"])
    mirrored = np.array(section["mirrored_coefficients"])
    assert default.shape == mirrored.shape == (2,)
    np.testing.assert_allclose(mirrored, default, rtol=0, atol=1e-7)
    np.testing.assert_allclose(default.sum(), 1.0, atol=1e-6)
    # Dirichlet draws, not the initial 1/M: the coefficients did change.
    assert abs(default[0] - 0.5) > 1e-3


def test_mirrored_epoch_losses_match_default_strategy(results):
    section = _section(results, "equivalence")
    default, mirrored = section["default_history"], section["mirrored_history"]
    assert set(default) == set(mirrored)
    loss_keys = sorted(k for k in default if k == "loss" or k.endswith(("_loss", "_ce")))
    assert "loss" in loss_keys
    for key in loss_keys:
        assert len(default[key]) == len(mirrored[key]) == 1, key
        np.testing.assert_allclose(
            mirrored[key],
            default[key],
            rtol=LOSS_TOLERANCE,
            atol=LOSS_TOLERANCE,
            err_msg=f"history[{key!r}]",
        )


def _assert_replicas_identical(report, where):
    assert report["num_replicas"] == 2, where
    assert report["num_distributed_variables"] > 0, f"{where}: nothing is mirrored"
    assert report["max_replica_spread"] <= REPLICA_TOLERANCE, (
        f"{where}: replicas differ (largest spread {report['max_replica_spread']} "
        f"in {report['worst_variable']}); all differing: {report['differing']}"
    )


def test_mirrored_replicas_identical_after_training(results):
    section = _section(results, "equivalence")
    report = section["replicas"]
    # Every model and optimizer variable is mirrored: the check is not vacuous.
    assert report["num_distributed_variables"] == len(section["differences"])
    _assert_replicas_identical(report, "after one epoch without BatchNorm")


def test_batchnorm_replicas_identical_after_fused_epoch_and_fuse(results):
    section = _section(results, "batchnorm")
    assert section["num_bn_statistics"] == 6  # 3 BatchNorm layers per student
    assert np.isfinite(section["history"]["loss"][0])
    _assert_replicas_identical(section["after_fit"], "BatchNorm, after the epoch")
    _assert_replicas_identical(section["after_fuse"], "BatchNorm, after fuse(1.0)")


# Run in its own interpreter (two logical CPUs): BatchNorm students train two batches under
# MirroredStrategy with no fusion, so each replica's moving statistics come from its own
# half-batch; the script records every replica's value of every float variable of every
# student, and the coefficients, then calls fuse(GAMMA) and records them again.
FUSION_GAMMA = 0.3
FUSION_SCRIPT = f"""
import json, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import okdph_keras

keras.utils.set_random_seed(1234)
rng = np.random.default_rng(0)
images = rng.normal(size=(32, 8, 8, 1)).astype("float32")
views = np.ascontiguousarray(np.stack([images, images[:, :, ::-1], images[:, ::-1]], axis=1))
labels = rng.integers(0, 10, size=32).astype("int32")
strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
with strategy.scope():
    model = okdph_keras.OKDPH(
        lambda: okdph_keras.models.small_cnn((8, 8, 1), 10, width=4, batch_norm=True),
        num_students=2, hybrid="dirichlet", seed=1)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
model.fit(views, labels, batch_size=16, epochs=1, shuffle=False, verbose=0)

def replicas(variable):
    value = variable.value
    values = value.values if isinstance(value, tf.distribute.DistributedValues) else [value]
    return [np.asarray(v.numpy(), np.float64).tolist() for v in values]

def snapshot():
    return [
        [{{"path": v.path, "moving": "moving" in v.path, "replicas": replicas(v)}}
         for v in list(s.trainable_variables) + list(s.non_trainable_variables)
         if tf.as_dtype(v.dtype).is_floating]
        for s in model.students
    ]

before, coefficients = snapshot(), model.coefficients.numpy().tolist()
model.fuse({FUSION_GAMMA})
print("RESULT " + json.dumps(
    {{"before": before, "coefficients": coefficients, "after": snapshot()}}), flush=True)
"""


@pytest.fixture(scope="module")
def fusion_results():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")
    completed = subprocess.run(
        [sys.executable, "-c", FUSION_SCRIPT],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        pytest.fail(
            f"the fusion script exited with {completed.returncode}.\n"
            f"--- stderr tail ---\n{_tail(completed.stderr)}"
        )
    return json.loads(lines[-1][len("RESULT ") :])


def test_fused_batchnorm_statistics_equal_the_fusion_of_the_replica_means(fusion_results):
    """After fuse(gamma) every replica of student m holds, for every float variable,
    gamma * sum_k r_k mean_replicas(theta_k) + (1 - gamma) * mean_replicas(theta_m)
    (METHOD.md step 8, with Keras' per-replica BatchNorm statistics first averaged over
    the replicas, as `OKDPH.fuse` documents), computed here in numpy from the values
    each replica held before the fusion."""
    before, after = fusion_results["before"], fusion_results["after"]
    r = np.array(fusion_results["coefficients"])
    assert r.shape == (2,) and abs(r[0] - 0.5) > 1e-3  # Dirichlet: not the trivial 1/M
    gamma = FUSION_GAMMA
    num_variables = len(before[0])
    assert num_variables == len(before[1]) == len(after[0]) == len(after[1])
    moving = [v["moving"] for v in before[0]]
    assert sum(moving) == 6  # mean and variance of 3 BatchNorm layers
    # Not vacuous: before the fusion the replicas hold different statistics.
    spread = max(
        np.max(np.abs(np.subtract(*map(np.array, v["replicas"]))))
        for student in before
        for v in student
        if v["moving"]
    )
    assert spread > 1e-4, f"replicas' statistics already agreed before fusion ({spread})"
    for i in range(num_variables):
        means = [np.mean(np.array(student[i]["replicas"]), axis=0) for student in before]
        hwm = sum(r_k * mean_k for r_k, mean_k in zip(r, means))
        for m, student in enumerate(after):
            expected = gamma * hwm + (1.0 - gamma) * means[m]
            assert len(student[i]["replicas"]) == 2
            for replica, value in enumerate(student[i]["replicas"]):
                np.testing.assert_allclose(
                    np.array(value),
                    expected,
                    rtol=1e-5,
                    atol=1e-6,
                    err_msg=f"student {m}, {student[i]['path']}, replica {replica}",
                )


def test_students_identical_after_full_fusion(results):
    section = _section(results, "batchnorm")
    assert section["student_max_diff_after_fuse"] <= REPLICA_TOLERANCE


@pytest.mark.xfail(
    reason=(
        "Keras 3.15 BatchNormalization moving statistics are MirroredVariables "
        "with aggregation 'none': each replica updates its own copy from its "
        "sub-batch, so replicas drift apart until the next fusion."
    ),
    strict=True,  # fails, as a reminder, once Keras keeps the replicas in step
)
def test_batchnorm_replicas_identical_after_unfused_step(results):
    section = _section(results, "batchnorm")
    _assert_replicas_identical(
        section["after_unfused_step"], "BatchNorm, one step after the last fusion"
    )


def test_synchronized_batchnorm_keeps_replicas_identical_between_fusions(results):
    section = _section(results, "sync_bn")
    assert section["synchronized"] == [True] * 6
    assert np.isfinite(section["history"]["loss"][0])
    _assert_replicas_identical(
        section["after_unfused_step"], "synchronised BatchNorm, unfused step"
    )
