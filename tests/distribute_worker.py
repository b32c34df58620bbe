"""Runs OKDPH under the default strategy and a 2-replica MirroredStrategy.

Run by `tests/test_distribute.py` in a fresh interpreter: the two logical CPU
devices must be configured before TensorFlow initialises, which pytest's own
process has already done. Prints one JSON line (prefixed with `RESULT `) on
stdout; diagnostics go to stderr.

Sections (each reported even if another one fails):
  * "equivalence": the same seed, data and schedule (Dirichlet coefficients,
    weight decay, SGD with momentum, batch-level Fusion) under the default
    strategy and under MirroredStrategy(["CPU:0", "CPU:1"]), with students
    without BatchNorm. Reports the largest difference of every model and
    optimizer variable, the coefficients, the history, and whether every
    replica of every mirrored variable holds the same value.
  * "batchnorm": MirroredStrategy with BatchNorm students and Fusion. Reports
    the replica spread of every variable after the epoch and after
    `fuse(1.0)`, the largest difference between the two students after
    `fuse(1.0)`, and the replica spread after one more step without fusion.
"""

import json
import os
import sys
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

import okdph_keras  # noqa: E402

SEED = 1234
NUM_EXAMPLES = 64
BATCH_SIZE = 16


def make_data():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(NUM_EXAMPLES, 8, 8, 1)).astype("float32")
    # One view per network (2 students, then the HWM), all different.
    views = np.stack([images, images[:, :, ::-1], images[:, ::-1]], axis=1)
    labels = rng.integers(0, 10, size=NUM_EXAMPLES).astype("int32")
    return np.ascontiguousarray(views), labels


def train(strategy, batch_norm, sync_bn=False):
    """Builds, compiles and fits an OKDPH model for one epoch in `strategy`."""
    keras.utils.set_random_seed(SEED)
    views, labels = make_data()

    def student():
        model = okdph_keras.models.small_cnn((8, 8, 1), 10, width=4, batch_norm=batch_norm)
        return okdph_keras.distribute.with_synchronized_batchnorm(model) if sync_bn else model

    with strategy.scope():
        model = okdph_keras.OKDPH(
            student,
            num_students=2,
            hybrid="dirichlet",
            weight_decay=5e-4,
            seed=1,
        )
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    history = model.fit(
        views,
        labels,
        batch_size=BATCH_SIZE,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[okdph_keras.Fusion(gamma=0.5, every=2, unit="batch")],
    )
    return model, {k: [float(x) for x in v] for k, v in history.history.items()}


def state_variables(model):
    """Model variables (students' and coefficients) then optimizer variables."""
    return (
        list(model.trainable_variables)
        + list(model.non_trainable_variables)
        + list(model.optimizer.variables)
    )


def replica_values(variable):
    """Per-replica numpy values of a Keras variable (one entry if not mirrored)."""
    value = variable.value  # the tf.Variable (a MirroredVariable under Mirrored)
    if isinstance(value, tf.distribute.DistributedValues):
        return [np.asarray(v.numpy()) for v in value.values]
    return [np.asarray(value.numpy())]


def replica_report(model):
    """Largest spread between replicas over every mirrored variable."""
    worst, worst_path, num_distributed, differing = 0.0, None, 0, []
    for variable in state_variables(model):
        values = replica_values(variable)
        if len(values) > 1:
            num_distributed += 1
        spread = max(
            float(np.max(np.abs(v.astype("float64") - values[0].astype("float64"))))
            if v.size
            else 0.0
            for v in values
        )
        if spread > 0:
            differing.append([variable.path, spread])
        if spread >= worst:
            worst, worst_path = spread, variable.path
    return {
        "max_replica_spread": worst,
        "worst_variable": worst_path,
        "num_distributed_variables": num_distributed,
        "num_replicas": len(replica_values(model.trainable_variables[0])),
        "differing": differing,
    }


def equivalence(mirrored_strategy):
    start = time.time()
    default_model, default_history = train(tf.distribute.get_strategy(), batch_norm=False)
    mirrored_model, mirrored_history = train(mirrored_strategy, batch_norm=False)

    default_vars = state_variables(default_model)
    mirrored_vars = state_variables(mirrored_model)
    # Layer names get numeric suffixes in the second model: match by position.
    layout = [(tuple(v.shape), str(v.dtype)) for v in default_vars]
    if layout != [(tuple(v.shape), str(v.dtype)) for v in mirrored_vars]:
        raise AssertionError(
            "variable lists differ: "
            f"{[v.path for v in default_vars]} vs {[v.path for v in mirrored_vars]}"
        )
    differences = []
    for a, b in zip(default_vars, mirrored_vars):
        x = np.asarray(a.numpy(), dtype="float64")
        y = np.asarray(b.numpy(), dtype="float64")
        abs_diff = float(np.max(np.abs(x - y))) if x.size else 0.0
        scale = float(np.max(np.abs(x))) if x.size else 0.0
        differences.append(
            {"path": a.path, "abs_diff": abs_diff, "scale": scale, "dtype": str(a.dtype)}
        )
    return {
        "num_replicas_in_sync": mirrored_strategy.num_replicas_in_sync,
        "differences": differences,
        "default_coefficients": default_model.coefficients.numpy().tolist(),
        "mirrored_coefficients": mirrored_model.coefficients.numpy().tolist(),
        "default_iterations": int(default_model.optimizer.iterations.numpy()),
        "mirrored_iterations": int(mirrored_model.optimizer.iterations.numpy()),
        "default_history": default_history,
        "mirrored_history": mirrored_history,
        "replicas": replica_report(mirrored_model),
        "seconds": time.time() - start,
    }


def batchnorm(strategy):
    start = time.time()
    model, history = train(strategy, batch_norm=True)
    after_fit = replica_report(model)
    model.fuse(1.0)
    after_fuse = replica_report(model)
    students = model.students
    student_diff = 0.0
    for kind in ("trainable_variables", "non_trainable_variables"):
        for a, b in zip(getattr(students[0], kind), getattr(students[1], kind)):
            for x, y in zip(replica_values(a), replica_values(b)):
                if x.size:
                    student_diff = max(
                        student_diff,
                        float(np.max(np.abs(x.astype("float64") - y.astype("float64")))),
                    )
    bn_paths = [v.path for v in students[0].non_trainable_variables if "moving" in v.path]
    # One more step with no fusion after it: Keras 3 BatchNormalization's
    # moving statistics are MirroredVariables with aggregation "none", which
    # each replica updates from its own sub-batch, so replicas may drift apart
    # until the next fusion (reported, not a property OKDPH can enforce).
    views, labels = make_data()
    step_start = time.time()
    model.fit(
        views[:BATCH_SIZE],
        labels[:BATCH_SIZE],
        batch_size=BATCH_SIZE,
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    print(f"unfused step: {time.time() - step_start:.1f} s", file=sys.stderr)
    after_unfused_step = replica_report(model)
    return {
        "history": history,
        "after_fit": after_fit,
        "after_fuse": after_fuse,
        "student_max_diff_after_fuse": student_diff,
        "after_unfused_step": after_unfused_step,
        "num_bn_statistics": len(bn_paths),
        "seconds": time.time() - start,
    }


def sync_bn(strategy):
    """Synchronised BatchNorm: replicas agree after an unfused step too."""
    start = time.time()
    model, history = train(strategy, batch_norm=True, sync_bn=True)
    views, labels = make_data()
    model.fit(
        views[:BATCH_SIZE],
        labels[:BATCH_SIZE],
        batch_size=BATCH_SIZE,
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    synchronized = [
        layer.synchronized
        for s in model.students
        for layer in s.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    return {
        "history": history,
        "synchronized": synchronized,
        "after_unfused_step": replica_report(model),
        "seconds": time.time() - start,
    }


def main():
    result = {"num_logical_cpus": len(tf.config.list_logical_devices("CPU"))}
    # One strategy for both sections: a second MirroredStrategy over the same
    # devices in one process reuses collective instance keys, and its first
    # all-reduce then fails with "Shape mismatch in the collective instance"
    # (TF 2.21 / Keras 3.15, seen with plain Keras models too).
    strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
    for name, section in (
        ("equivalence", equivalence),
        ("batchnorm", batchnorm),
        ("sync_bn", sync_bn),
    ):
        try:
            result[name] = section(strategy)
        except Exception as error:  # reported to the test, which fails on it
            traceback.print_exc(file=sys.stderr)
            result[name] = {"error": f"{type(error).__name__}: {error}"[:4000]}
    sys.stdout.flush()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
