"""The OKDPH step against independently built models and numpy."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    combine,
    log_softmax,
    np_cross_entropy,
    np_distillation,
    randomize,
    tiny_student,
)

from okdph_keras import OKDPH, hwm, step

LOSS_OPTIONS = dict(omega=0.8, beta=0.8, temperature=4.0)


def random_simplex(rng, num):
    r = rng.uniform(0.1, 1.0, size=num)
    return (r / r.sum()).astype("float32")


def make_students(num, rng, dtype=None):
    students = [tiny_student(dtype=dtype) for _ in range(num)]
    for student in students:
        randomize(student, rng)
    return students


def hybrid_reference(students, r, dtype=None):
    """A separately built model holding sum_m r_m theta_m, combined in numpy."""
    reference = tiny_student(dtype=dtype)
    reference.set_weights(combine([s.get_weights() for s in students], r))
    return reference


@pytest.mark.parametrize("num", [2, 4])
def test_hwm_logits_equal_a_model_holding_the_combined_weights(num, rng, batch):
    images, _, _ = batch
    students = make_students(num, rng)
    r = random_simplex(rng, num)
    reference = hybrid_reference(students, r)
    views = [images] * (num + 1)

    model = OKDPH(students, identical_init=False)
    model.coefficients.assign(r)
    expected = reference(images, training=False).numpy()
    np.testing.assert_allclose(model(images)[:, num].numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.hybrid_model()(images).numpy(), expected, rtol=1e-4, atol=1e-5)

    # Last: in training mode the students' own passes update their BN statistics.
    for training in (False, True):
        _, hwm_logits = hwm.network_logits(students, views, tf.constant(r), training=training)
        np.testing.assert_allclose(
            hwm_logits.numpy(), reference(images, training=training).numpy(), rtol=1e-4, atol=1e-5
        )


def test_hwm_forward_leaves_the_students_state_alone(rng, batch):
    images, _, _ = batch
    students = make_students(2, rng)
    before = [s.get_weights() for s in students]
    hwm.network_logits(students, [images] * 3, tf.constant([0.5, 0.5]), training=False)
    for student, weights in zip(students, before):
        for a, b in zip(student.get_weights(), weights):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("num", [2, 4])
def test_hwm_gradient_is_r_m_times_the_gradient_at_theta_h(num, rng, batch):
    images, labels, _ = batch
    students = make_students(num, rng, dtype="float64")
    r = random_simplex(rng, num)
    views = [images.astype("float64")] * (num + 1)
    # With omega = beta = 0 the objective is sum_m L_m = M * CE(z_h).
    gradients, _ = step.compute_gradients(
        students, views, labels, tf.constant(r), omega=0.0, beta=0.0, temperature=4.0
    )

    reference = hybrid_reference(students, r, dtype="float64")
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")
    with tf.GradientTape() as tape:
        loss = num * ce(labels, reference(views[-1], training=True))
    at_hybrid = [g.numpy() for g in tape.gradient(loss, reference.trainable_variables)]

    per_student = len(at_hybrid)
    for m in range(num):
        for j, expected in enumerate(at_hybrid):
            np.testing.assert_allclose(
                gradients[m * per_student + j].numpy(), r[m] * expected, rtol=1e-7, atol=1e-10
            )

    no_gradient, _ = step.compute_gradients(
        students,
        views,
        labels,
        tf.constant(r),
        omega=0.0,
        beta=0.0,
        temperature=4.0,
        hwm_gradient=False,
    )
    for g in no_gradient:
        np.testing.assert_array_equal(g.numpy(), 0.0)


def test_gradient_matches_finite_differences(rng, batch):
    """omega*sum CE(z_m) + M*(1-omega)*CE(z_h), differentiated numerically in numpy."""
    images, labels, views = batch
    views = [views[:, k].astype("float64") for k in range(3)]
    students = make_students(2, rng, dtype="float64")
    r = np.array([0.3, 0.7], np.float32)
    omega = 0.3
    gradients, _ = step.compute_gradients(
        students, views, labels, tf.constant(r), omega=omega, beta=0.0, temperature=4.0
    )

    weights = [s.get_weights() for s in students]
    probe = tiny_student(dtype="float64")

    def objective(weight_lists):
        total = 0.0
        for m, w in enumerate(weight_lists):
            probe.set_weights(w)
            total += omega * np_cross_entropy(labels, probe(views[m], training=True).numpy())
        probe.set_weights(combine(weight_lists, r))
        hwm = probe(views[2], training=True).numpy()
        return total + 2 * (1 - omega) * np_cross_entropy(labels, hwm)

    trainable_index = [
        i for i, v in enumerate(students[0].weights) if v.trainable
    ]  # get_weights() order -> trainable position
    per_student = len(students[0].trainable_variables)
    eps = 1e-6
    for m in range(2):
        for j, weight_index in enumerate(trainable_index):
            shape = weights[m][weight_index].shape
            flat = rng.integers(0, int(np.prod(shape)))
            coordinate = np.unravel_index(flat, shape)
            values = []
            for sign in (+1, -1):
                perturbed = [[w.copy() for w in ws] for ws in weights]
                perturbed[m][weight_index][coordinate] += sign * eps
                values.append(objective(perturbed))
            numeric = (values[0] - values[1]) / (2 * eps)
            analytic = gradients[m * per_student + j].numpy()[coordinate]
            np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_forward_losses_match_numpy_and_the_target_includes_the_hwm(rng, batch):
    images, labels, views = batch
    view_list = [views[:, k] for k in range(3)]
    students = make_students(2, rng)
    r = tf.constant([0.4, 0.6])
    outputs = step.forward(students, view_list, labels, r, training=True, **LOSS_OPTIONS)

    z = [outputs.student_logits[0].numpy(), outputs.student_logits[1].numpy()]
    z_h = outputs.hwm_logits.numpy()
    z_e = (z[0] + z[1] + z_h) / 3
    kd = [np_distillation(z_e, z_m, 4.0) for z_m in z]
    ce = [np_cross_entropy(labels, z_m) for z_m in z]
    ce_h = np_cross_entropy(labels, z_h)
    np.testing.assert_allclose([k.numpy() for k in outputs.kd], kd, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(outputs.hwm_ce.numpy(), ce_h, rtol=1e-5)
    expected_total = sum(0.8 * ce[m] + 0.2 * ce_h + 0.8 * kd[m] for m in range(2))
    np.testing.assert_allclose(outputs.total.numpy(), expected_total, rtol=1e-5)


def test_ensemble_target_carries_no_gradient(rng, batch):
    """Each student's gradient equals that of CE + KD to a constant numpy target."""
    images, labels, views = batch
    view_list = [views[:, k].astype("float64") for k in range(3)]
    students = make_students(2, rng, dtype="float64")
    r = tf.constant([0.5, 0.5])
    options = dict(omega=1.0, beta=1.0, temperature=4.0)  # the HWM's CE has weight 0
    gradients, outputs = step.compute_gradients(students, view_list, labels, r, **options)

    z_e = (sum(z.numpy() for z in outputs.student_logits) + outputs.hwm_logits.numpy()) / 3
    target = tf.constant(np.exp(log_softmax(z_e / 4.0)))
    per_student = len(students[0].trainable_variables)
    for m, student in enumerate(students):
        with tf.GradientTape() as tape:
            logits = student(view_list[m], training=True)
            ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")(
                labels, logits
            )
            log_q = tf.nn.log_softmax(logits / 4.0)
            kd = 16.0 * tf.reduce_mean(tf.reduce_sum(target * (tf.math.log(target) - log_q), -1))
            loss = ce + kd
        expected = tape.gradient(loss, student.trainable_variables)
        for j, g in enumerate(expected):
            np.testing.assert_allclose(
                gradients[m * per_student + j].numpy(), g.numpy(), rtol=1e-7, atol=1e-10
            )


def test_integer_state_is_never_interpolated(rng):
    students = [tiny_student(dropout=0.5) for _ in range(2)]
    integer = [v for v in students[0].non_trainable_variables if "int" in str(v.dtype)]
    assert integer, "the Dropout student should carry an integer seed state"
    _, non_trainable = hwm.hybrid_values(students, tf.constant([0.5, 0.5]))
    for variable, value in zip(students[0].non_trainable_variables, non_trainable):
        assert value.dtype == tf.as_dtype(variable.dtype)
        if "int" in str(variable.dtype):
            np.testing.assert_array_equal(value.numpy(), variable.numpy())


def np_baseline_losses(objective, logits, labels, *, omega, beta, tau):
    """numpy: per-student (CE, distillation term) and the total of a baseline objective.

    KDCL weighs the CE by omega (`(1 - alpha) CE + alpha KD`); DML does not.
    """
    ce = [np_cross_entropy(labels, z) for z in logits]
    if objective == "independent":
        kd = [0.0] * len(logits)
    elif objective == "dml":
        kd = [
            np.mean([np_distillation(logits[k], z, tau) for k in range(len(logits)) if k != m])
            for m, z in enumerate(logits)
        ]
    else:  # kdcl: the students' mean logits
        teacher = np.mean(logits, axis=0)
        kd = [np_distillation(teacher, z, tau) for z in logits]
    if objective == "kdcl":
        return ce, kd, omega * sum(ce) + beta * sum(kd)
    return ce, kd, sum(ce) + (0.0 if objective == "independent" else beta * sum(kd))


@pytest.mark.parametrize("objective", ["independent", "dml", "kdcl"])
def test_baseline_objectives_match_numpy_and_skip_the_hwm(objective, rng, batch):
    images, labels, _ = batch
    students = make_students(3, rng)
    views = [images, images[:, ::-1], images[:, :, ::-1], images]
    outputs = step.forward(
        students,
        views,
        labels,
        tf.constant([1 / 3] * 3),
        objective=objective,
        training=True,
        omega=0.3,
        beta=0.7,
        temperature=3.0,
    )
    logits = [s(v, training=True).numpy().astype("float64") for s, v in zip(students, views)]
    ce, kd, total = np_baseline_losses(objective, logits, labels, omega=0.3, beta=0.7, tau=3.0)
    assert outputs.hwm_logits is None and outputs.hwm_ce is None
    np.testing.assert_allclose([float(c) for c in outputs.student_ce], ce, rtol=1e-5)
    np.testing.assert_allclose([float(k) for k in outputs.kd], kd, rtol=1e-4, atol=1e-7)
    assert float(outputs.total) == pytest.approx(total, rel=1e-5)

    evaluation = step.forward(
        students,
        views,
        labels,
        tf.constant([1 / 3] * 3),
        objective=objective,
        training=False,
        omega=0.3,
        beta=0.7,
        temperature=3.0,
    )
    reference = hybrid_reference(students, [1 / 3] * 3)
    np.testing.assert_allclose(
        evaluation.hwm_logits.numpy(),
        reference(images, training=False).numpy(),
        rtol=1e-4,
        atol=1e-5,
    )


@pytest.mark.parametrize("objective", ["dml", "kdcl"])
def test_baseline_teachers_carry_no_gradient(objective, rng, batch):
    images, labels, _ = batch
    students = make_students(2, rng, dtype="float64")
    views = [images.astype("float64"), images[:, ::-1].astype("float64"), images.astype("float64")]
    gradients, _ = step.compute_gradients(
        students,
        views,
        labels,
        tf.constant([0.5, 0.5], tf.float64),
        objective=objective,
        omega=1.0,
        beta=0.5,
        temperature=2.0,
    )
    # Student 0's gradient: its own CE plus beta * d/dz0 of its own KD term only.
    student = students[0]
    other = tf.constant(students[1](views[1], training=True).numpy())
    with tf.GradientTape() as tape:
        z = student(views[0], training=True)
        teacher = other if objective == "dml" else tf.stop_gradient((z + other) / 2)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, z))
        p = tf.nn.softmax(teacher / 2.0)
        kl = tf.reduce_sum(p * (tf.nn.log_softmax(teacher / 2.0) - tf.nn.log_softmax(z / 2.0)), -1)
        loss += 0.5 * 4.0 * tf.reduce_mean(kl)
    expected = tape.gradient(loss, student.trainable_variables)
    for got, want in zip(gradients[: len(expected)], expected):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-7, atol=1e-10)


def test_an_unknown_objective_is_refused():
    with pytest.raises(ValueError, match="objective='mutual' is not allowed; it must be one of"):
        OKDPH(tiny_student, objective="mutual")


def test_sharpness_aware_step_perturbs_each_student_as_if_alone(rng, batch):
    images, labels, _ = batch
    students = make_students(2, rng, dtype="float64")
    views = [images.astype("float64")] * 3
    rho = 0.1
    gradients, _ = step.compute_gradients(
        students,
        views,
        labels,
        tf.constant([0.5, 0.5], tf.float64),
        objective="independent",
        sharpness={"rho": rho, "adaptive": False},
        omega=1.0,
        beta=0.0,
        temperature=1.0,
    )
    offset = 0
    for student in students:
        # numpy-side SAM for this student alone, on a separate copy of it.
        copy = tiny_student(dtype="float64")
        copy.set_weights(student.get_weights())

        def gradient_at(weights, copy=copy):
            for variable, value in zip(copy.trainable_variables, weights):
                variable.assign(value)
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(
                        labels, copy(views[0], training=True)
                    )
                )
            return [g.numpy() for g in tape.gradient(loss, copy.trainable_variables)]

        weights = [v.numpy() for v in copy.trainable_variables]
        g = gradient_at(weights)
        norm = np.sqrt(sum(np.sum(x**2) for x in g))
        expected = gradient_at([w + rho * x / norm for w, x in zip(weights, g)])
        for got, want in zip(gradients[offset : offset + len(expected)], expected):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-9)
        offset += len(expected)
        # The students' weights are back exactly where they were.
        for variable, value in zip(student.trainable_variables, weights):
            np.testing.assert_array_equal(variable.numpy(), value)
