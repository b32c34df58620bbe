"""Batches without examples: nothing runs on them.

A ragged last batch leaves a replica with no examples.

`empty_replica_worker.py` runs under a 2-replica MirroredStrategy in a fresh
interpreter (see its docstring) and this module checks what it reports: the
update equals one computed by hand, BatchNorm statistics stay finite and the
empty replica's are untouched, and evaluation counts every example once.
Without the guard the step crashes (oneDNN convolutions on Intel CPUs return
wrong shapes for an empty batch) or leaves NaN statistics and weights.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import IMAGE_SHAPE, tiny_student

import okdph_keras
from okdph_keras.analysis.evaluation import Evaluator, model_values
from okdph_keras.baselines import SAM
from okdph_keras.baselines.batchnorm import batchnorm_layers, recompute_batchnorm

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "empty_replica_worker.py")
TIMEOUT_S = 240


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")
    completed = subprocess.run(
        [sys.executable, WORKER],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=os.path.dirname(os.path.dirname(WORKER)),
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert completed.returncode == 0 and lines, completed.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT ") :])


def _section(results, name):
    section = results[name]
    assert "error" not in section, section.get("error")
    return section


def test_a_step_with_an_empty_replica_equals_the_update_computed_by_hand(results):
    section = _section(results, "update")
    assert section["iterations"] == 2
    assert max(section["differences"]) < 1e-6, section


def test_synchronized_batchnorm_with_an_empty_replica_equals_the_update_computed_by_hand(results):
    section = _section(results, "sync_bn")
    assert section["iterations"] == 2
    assert max(section["differences"]) < 1e-5, section


def test_batchnorm_statistics_of_an_empty_replica_stay_finite_and_untouched(results):
    section = _section(results, "batchnorm")
    assert section["finite"]
    assert section["empty_replica_statistics_unchanged"]
    assert section["replica_0_statistics_changed"]


def test_evaluation_counts_every_example_once(results):
    section = _section(results, "evaluate")
    for student in section.values():
        found, expected = student["accuracy"]
        assert found == pytest.approx(expected, abs=1e-6)
        found, expected = student["ce"]
        assert found == pytest.approx(expected, abs=1e-5)


# ------------------------------------------- the baselines' own steps, on one device
def _images(count, seed=0):
    return np.random.default_rng(seed).uniform(size=(count, *IMAGE_SHAPE)).astype("float32")


def test_recompute_batchnorm_skips_batches_without_examples():
    model = tiny_student(batch_norm=True)
    batches = [_images(4, 1), _images(0), _images(4, 2)]
    assert recompute_batchnorm(model, batches) == 2
    layer = batchnorm_layers(model)[0]
    conv = keras.Model(model.inputs, layer.input)  # what the BatchNorm layer normalises
    per_batch = [
        conv(b).numpy().reshape(-1, layer.input.shape[-1]) for b in (batches[0], batches[2])
    ]
    np.testing.assert_allclose(
        layer.moving_mean.numpy(), np.mean([f.mean(0) for f in per_batch], 0), atol=1e-5
    )
    np.testing.assert_allclose(
        layer.moving_variance.numpy(), np.mean([f.var(0) for f in per_batch], 0), atol=1e-5
    )


@pytest.mark.parametrize("synchronized", [False, True])
def test_sam_wrapper_steps_on_an_empty_batch_change_nothing(synchronized):
    student = tiny_student(batch_norm=True)
    if synchronized:  # runs the padded step, which global BatchNorm must ignore
        student = okdph_keras.with_synchronized_batchnorm(student)
    model = SAM(student, rho=0.05)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = [v.numpy().copy() for v in model.variables]
    model.train_on_batch(_images(0), np.zeros(0, "int32"))
    for variable, value in zip(model.variables, before):
        np.testing.assert_allclose(variable.numpy(), value, rtol=1e-6, atol=0)
    model.evaluate(_images(0), np.zeros(0, "int32"), verbose=0)


def test_analysis_evaluator_skips_batches_without_examples():
    model = tiny_student(batch_norm=True)
    images = _images(6, 3)
    labels = np.arange(6) % 5
    batches = [(images[:4], labels[:4]), (images[:0], labels[:0]), (images[4:], labels[4:])]
    result = Evaluator(
        model,
        tf.data.Dataset.from_generator(
            lambda: iter(batches),
            output_signature=(tf.TensorSpec([None, *IMAGE_SHAPE]), tf.TensorSpec([None], tf.int64)),
        ),
    )(*model_values(model))
    logits = model(images, training=False).numpy().astype("float64")
    shifted = logits - logits.max(1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    assert result.loss == pytest.approx(-log_probs[np.arange(6), labels].mean(), abs=1e-5)
    assert result.accuracy == pytest.approx(np.mean(logits.argmax(1) == labels))
