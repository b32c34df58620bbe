import numpy as np
import tensorflow as tf
from helpers import log_softmax, np_cross_entropy, np_distillation

from okdph_keras import losses


def test_cross_entropy_matches_numpy(rng):
    logits = rng.normal(size=(6, 4)) * 3
    labels = rng.integers(0, 4, size=6)
    np.testing.assert_allclose(
        losses.cross_entropy(labels, logits).numpy(), np_cross_entropy(labels, logits), rtol=1e-10
    )


def test_cross_entropy_of_half_precision_logits_is_float32(rng):
    logits = tf.constant(rng.normal(size=(3, 4)), tf.float16)
    assert losses.cross_entropy([0, 1, 2], logits).dtype == tf.float32


def test_smoothed_cross_entropy_matches_numpy_and_is_plain_ce_without_smoothing(rng):
    # SAM's reference targets (BASELINES.md 2.9): 1 - eps on the label, eps/(C-1) on each
    # other class (not Keras' eps/C on every class).
    logits = rng.normal(size=(6, 4)) * 3
    labels = rng.integers(0, 4, size=6)
    targets = np.full((6, 4), 0.1 / 3)
    targets[np.arange(6), labels] = 0.9
    expected = -np.mean(np.sum(targets * log_softmax(logits), axis=-1))
    np.testing.assert_allclose(
        losses.smoothed_cross_entropy(labels, logits, 0.1).numpy(), expected, rtol=1e-10
    )
    keras_convention = -np.mean(
        np.sum((0.9 * np.eye(4)[labels] + 0.1 / 4) * log_softmax(logits), axis=-1)
    )
    assert abs(expected - keras_convention) > 1e-3
    np.testing.assert_allclose(
        losses.smoothed_cross_entropy(labels, logits, 0.0).numpy(),
        losses.cross_entropy(labels, logits).numpy(),
        rtol=1e-12,
    )
    half = tf.constant(logits, tf.float16)
    assert losses.smoothed_cross_entropy(labels, half, 0.1).dtype == tf.float32


def test_distillation_matches_numpy_batchmean_kl(rng):
    teacher, student = rng.normal(size=(5, 7)) * 4, rng.normal(size=(5, 7)) * 4
    for tau in (1.0, 4.0):
        np.testing.assert_allclose(
            losses.distillation_loss(teacher, student, tau).numpy(),
            np_distillation(teacher, student, tau),
            rtol=1e-10,
        )


def test_distillation_gradient_has_closed_form(rng):
    # d/dz_s [tau^2 KL(p || softmax(z_s/tau))], batchmean = tau * (q - p) / B.
    tau, size = 4.0, 5
    teacher, student = rng.normal(size=(size, 3)), tf.Variable(rng.normal(size=(size, 3)))
    with tf.GradientTape() as tape:
        loss = losses.distillation_loss(teacher, student, tau)
    p = tf.nn.softmax(teacher / tau).numpy()
    q = tf.nn.softmax(student / tau).numpy()
    np.testing.assert_allclose(
        tape.gradient(loss, student).numpy(), tau * (q - p) / size, rtol=1e-9
    )


def test_l2_penalty_gradient_is_the_variable(rng):
    variables = [tf.Variable(rng.normal(size=(2, 3))), tf.Variable(rng.normal(size=4))]
    with tf.GradientTape() as tape:
        penalty = losses.l2_penalty(variables)
    np.testing.assert_allclose(
        penalty.numpy(), 0.5 * sum(np.sum(v.numpy() ** 2) for v in variables)
    )
    for variable, gradient in zip(variables, tape.gradient(penalty, variables)):
        np.testing.assert_allclose(gradient.numpy(), variable.numpy())


def test_scale_for_replicas_is_identity_on_one_replica():
    assert losses.scale_for_replicas(tf.constant(3.0)).numpy() == 3.0
