"""Ragged last batches under a 2-replica MirroredStrategy: one replica gets no examples.

Run by `tests/test_empty_batches.py` in a fresh interpreter (the two
logical CPU devices must be configured before TensorFlow initialises). Prints
one JSON line prefixed with `RESULT `. Sections, each reported even if another
fails:
  * "update": students without BatchNorm, objective "independent", plain SGD
    and weight decay, on 3 examples in batches of 2: the second step leaves
    replica 1 empty. Reports each student's largest difference from an update
    computed by hand with a plain `tf.GradientTape` on copies of the students
    (no OKDPH code): replica 0's mean CE gradient divided by the 2 replicas,
    plus the full weight-decay gradient.
  * "batchnorm": BatchNorm students, OKDPH with Fusion, two epochs of the
    library's own pipeline on 3 examples in batches of 2: whether every
    variable stays finite, and whether the empty replica's copy of the
    BatchNorm statistics is left exactly as the step before left it.
  * "sync_bn": as "update", but the students normalise over the global batch
    (`with_synchronized_batchnorm`): every variable of each student, moving
    statistics included, on both replicas, against a hand computation on a
    plain-BatchNorm copy run on the global batch (step 1: examples 0 and 1,
    BatchNorm over both; step 2: example 2 alone, the empty replica adding
    nothing).
  * "evaluate": 5 examples in batches of 4 (the second batch leaves replica 1
    empty): each student's accuracy and CE against numpy on its own logits.
"""

import json
import os
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import IMAGE_SHAPE, NUM_CLASSES, tiny_student  # noqa: E402

import okdph_keras  # noqa: E402

LEARNING_RATE, WEIGHT_DECAY = 0.1, 0.01


def data(count, seed=0):
    rng = np.random.default_rng(seed)
    views = rng.uniform(size=(count, 3, *IMAGE_SHAPE)).astype("float32")
    return views, rng.integers(0, NUM_CLASSES, count).astype("int32")


def replica_values(variable):
    value = variable.value
    return (
        [v.numpy() for v in value.values]
        if isinstance(value, tf.distribute.DistributedValues)
        else [value.numpy()]
    )


def expected_update(students, views, labels):
    """Per-student variables after the two steps, by hand: SGD on CE, replica means / 2.

    Each step runs a plain copy on the step's global batch (BatchNorm, if any,
    over the whole of it) and differentiates sum over replicas of the replica's
    mean CE / 2 replicas, plus the full weight decay.
    """
    results = []
    for m, student in enumerate(students):
        copy = keras.models.clone_model(
            student,
            clone_function=lambda layer: layer.__class__.from_config(
                {**layer.get_config(), "synchronized": False}
                if isinstance(layer, keras.layers.BatchNormalization)
                else layer.get_config()
            ),
        )
        copy.set_weights(student.get_weights())
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
        # Step 1: examples 0 and 1, one per replica; step 2: example 2 on replica 0 only.
        for replica_batches in ([[0], [1]], [[2]]):
            indices = sum(replica_batches, [])
            with tf.GradientTape() as tape:
                per_example = ce(labels[indices], copy(views[indices, m], training=True))
                loss, start = 0.0, 0
                for batch in replica_batches:
                    loss += tf.reduce_mean(per_example[start : start + len(batch)]) / 2.0
                    start += len(batch)
            gradients = tape.gradient(loss, copy.trainable_variables)
            for variable, gradient in zip(copy.trainable_variables, gradients):
                w = variable.numpy()
                variable.assign(w - LEARNING_RATE * (gradient.numpy() + WEIGHT_DECAY * w))
        results.append([v.numpy() for v in copy.variables])
    return results


def update(strategy, sync_bn=False):
    keras.utils.set_random_seed(1)
    views, labels = data(3)

    def student():
        if sync_bn:
            return okdph_keras.with_synchronized_batchnorm(tiny_student(batch_norm=True))
        return tiny_student(batch_norm=False)

    with strategy.scope():
        model = okdph_keras.OKDPH(
            student,
            num_students=2,
            objective="independent",
            weight_decay=WEIGHT_DECAY,
            seed=1,
        )
        model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
    expected = expected_update(model.students, views, labels)
    history = model.fit(
        tf.data.Dataset.from_tensor_slices((views, labels)).batch(2), epochs=1, verbose=0
    )
    differences = [
        max(
            float(np.max(np.abs(replica - e)))
            for v, e in zip(student.variables, want)
            for replica in replica_values(v)
        )
        for student, want in zip(model.students, expected)
    ]
    return {
        "differences": differences,
        "loss": history.history["loss"],
        "iterations": int(model.optimizer.iterations.numpy()),
    }


class RecordStatistics(keras.callbacks.Callback):
    def __init__(self, variables):
        super().__init__()
        self.variables, self.after_batch = variables, []

    def on_train_batch_end(self, batch, logs=None):
        self.after_batch.append([replica_values(v) for v in self.variables])


def batchnorm(strategy):
    keras.utils.set_random_seed(2)
    views, labels = data(3, seed=1)
    with strategy.scope():
        model = okdph_keras.OKDPH(lambda: tiny_student(batch_norm=True), num_students=2, seed=2)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    statistics = [
        v for s in model.students for v in s.non_trainable_variables if "moving" in v.path
    ]
    record = RecordStatistics(statistics)
    pipeline = okdph_keras.multi_view_dataset(
        (views[:, 0], labels), [None, None, None], batch_size=2, epochs=1, shuffle=False
    )
    history = model.fit(pipeline, epochs=1, steps_per_epoch=2, verbose=0, callbacks=[record])
    first, second = record.after_batch
    # Replica 1 got no example in the second step: its copies must not change.
    unchanged = all(np.array_equal(a[1], b[1]) for a, b in zip(first, second))
    changed_on_replica_0 = any(not np.array_equal(a[0], b[0]) for a, b in zip(first, second))
    finite = all(np.isfinite(r).all() for v in model.variables for r in replica_values(v))
    return {
        "empty_replica_statistics_unchanged": unchanged,
        "replica_0_statistics_changed": changed_on_replica_0,
        "finite": finite,
        "loss": history.history["loss"],
    }


def evaluate(strategy):
    keras.utils.set_random_seed(3)
    views, labels = data(5, seed=2)
    images = views[:, 0]
    with strategy.scope():
        model = okdph_keras.OKDPH(
            lambda: tiny_student(batch_norm=True), num_students=2, identical_init=False, seed=3
        )
        model.compile(optimizer="sgd")
    found = model.evaluate(images, labels, batch_size=4, verbose=0, return_dict=True)
    report = {}
    for m, student in enumerate(model.students):
        logits = student(images, training=False).numpy().astype("float64")
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        report[f"student_{m}"] = {
            "accuracy": [
                found[f"student_{m}_accuracy"],
                float(np.mean(logits.argmax(1) == labels)),
            ],
            "ce": [found[f"student_{m}_ce"], float(-log_probs[np.arange(5), labels].mean())],
        }
    return report


def main():
    strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
    results = {}
    sections = (
        ("update", update),
        ("sync_bn", lambda s: update(s, sync_bn=True)),
        ("batchnorm", batchnorm),
        ("evaluate", evaluate),
    )
    for name, section in sections:
        try:
            results[name] = section(strategy)
        except Exception:  # noqa: BLE001 - reported, and the test fails on it
            results[name] = {"error": traceback.format_exc()[-3000:]}
    print("RESULT " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
