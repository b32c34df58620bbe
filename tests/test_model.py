"""OKDPH as a keras.Model: construction, inputs, fit/evaluate, weight decay, saving."""

import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import NUM_CLASSES, np_cross_entropy, np_distillation, tiny_student

from okdph_keras import OKDPH, Fusion


def compiled(num=2, lr=0.1, momentum=0.9, **options):
    model = OKDPH(tiny_student, num_students=num, **options)
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=momentum))
    return model


# ------------------------------------------------------------- construction
@pytest.mark.parametrize(
    "options, message",
    [
        (dict(omega=1.5), r"omega=1.5 is not allowed; it must be a number in \[0, 1\]"),
        (dict(omega=-0.1), r"omega=-0.1 is not allowed"),
        (dict(beta=-1), r"beta=-1 is not allowed; it must be a finite number >= 0"),
        (dict(temperature=0), r"temperature=0 is not allowed; it must be a finite number > 0"),
        (
            dict(temperature=float("nan")),
            r"temperature=nan is not allowed; it must be a finite number > 0",
        ),
        (dict(weight_decay=-5e-4), r"weight_decay=-0.0005 is not allowed"),
        (dict(omega="high"), r"omega='high' is not allowed; it must be a number in \[0, 1\]"),
        (
            dict(hybrid="uniform"),
            r"hybrid='uniform' is not allowed; it must be one of \('mean', 'dirichlet'\)",
        ),
        (dict(hwm_gradient="yes"), r"hwm_gradient='yes' is not allowed; it must be True or False"),
        (dict(identical_init=1), r"identical_init=1 is not allowed; it must be True or False"),
        (dict(seed=1.5), r"seed=1.5 is not allowed; it must be an integer or None"),
        (dict(num_students=1), r"num_students=1 is not allowed; it must be an integer >= 2"),
        (dict(num_students=2.0), r"num_students=2.0 is not allowed; it must be an integer >= 2"),
    ],
)
def test_bad_options_raise_clear_errors(options, message):
    options = {"num_students": 2, **options}
    with pytest.raises(ValueError, match=message):
        OKDPH(tiny_student, **options)


def test_heterogeneous_students_name_the_first_mismatching_variable():
    with pytest.raises(
        ValueError, match=r"trainable_variables\[0\] differs.*\(3, 3, 1, 4\).*\(3, 3, 1, 6\)"
    ):
        OKDPH([tiny_student(width=4), tiny_student(width=6)])
    with pytest.raises(
        ValueError, match=r"trainable_variables\[2\] differs.*conv2d.*batch_normalization"
    ):
        OKDPH([tiny_student(batch_norm=False), tiny_student(batch_norm=True)])
    with pytest.raises(ValueError, match="float64"):
        OKDPH([tiny_student(), tiny_student(dtype="float64")])


def test_bad_student_arguments_raise_clear_errors():
    student = tiny_student()
    with pytest.raises(ValueError, match="got a single model"):
        OKDPH(student)
    with pytest.raises(ValueError, match="same model object appears twice"):
        OKDPH([student, student])
    with pytest.raises(ValueError, match="at least 2 students; got 1"):
        OKDPH([student])
    with pytest.raises(ValueError, match="num_students=3 does not match the 2"):
        OKDPH([student, tiny_student()], num_students=3)
    with pytest.raises(ValueError, match="Student 1 is a str"):
        OKDPH([student, "resnet"])
    with pytest.raises(ValueError, match="has no variables yet"):
        OKDPH(lambda: keras.Sequential([keras.layers.Dense(3)]))
    with pytest.raises(ValueError, match="builder.*or a list"):
        OKDPH(42)


def test_compile_rejects_a_loss():
    model = OKDPH(tiny_student)
    with pytest.raises(ValueError, match="remove `loss=`"):
        model.compile(optimizer="sgd", loss="mse")


def test_students_start_identical_unless_asked_otherwise():
    model = OKDPH(tiny_student, num_students=3)
    for student in model.students[1:]:
        for a, b in zip(student.get_weights(), model.students[0].get_weights()):
            np.testing.assert_array_equal(a, b)
    model = OKDPH(tiny_student, num_students=3, identical_init=False)
    kernels = [s.trainable_variables[0].numpy() for s in model.students]
    assert not np.allclose(kernels[0], kernels[1])


# ------------------------------------------------------------------- inputs
def test_stacked_and_tuple_views_are_the_same_input(batch):
    _, _, views = batch
    model = OKDPH(tiny_student, identical_init=False)
    stacked = model(views).numpy()
    as_tuple = model(tuple(views[:, k] for k in range(3))).numpy()
    np.testing.assert_array_equal(stacked, as_tuple)
    assert stacked.shape == (16, 3, NUM_CLASSES)
    # Each network sees its own view.
    np.testing.assert_allclose(stacked[:, 1], model.students[1](views[:, 1]).numpy(), rtol=1e-5)


def test_wrong_inputs_raise_clear_errors(batch):
    images, labels, views = batch
    model = compiled()
    with pytest.raises(ValueError, match="takes 3 views.*got 2"):
        model((views[:, 0], views[:, 1]))
    with pytest.raises(ValueError, match=r"takes 3 views.* on axis 1.*\(16, 2, 8, 8, 1\)"):
        model(views[:, :2])
    with pytest.raises(ValueError, match=r"images of rank 4 .* or rank 5 .*got shape \(16, 8, 8\)"):
        model(images[..., 0])
    with pytest.raises(ValueError, match=r"integer class indices of shape \[B\].*\(16, 5\)"):
        model.train_on_batch(views, keras.utils.to_categorical(labels, NUM_CLASSES))
    with pytest.raises(ValueError, match="needs labels"):
        model.fit(views, epochs=1, verbose=0)


def test_shared_input_with_identical_students_warns(batch):
    images, labels, views = batch
    model = compiled()
    with pytest.warns(UserWarning, match="stay identical"):
        model.fit(images, labels, epochs=1, batch_size=8, verbose=0)
    model = compiled()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*stay identical.*")
        model.fit(views, labels, epochs=1, batch_size=8, verbose=0)


# ----------------------------------------------------------------- training
def hand_written_gradient(students, views, labels, r, omega=0.8, beta=0.8, tau=4.0):
    """d/dtheta of sum_m L_m (METHOD.md, paper formulation), written here from the spec.

    L_m = omega CE(z_m, y) + (1 - omega) CE(z_h, y) + beta tau^2 KL(softmax(z_e/tau) || softmax(z_m/tau)),
    z_h from theta_h = sum_m r_m theta_m (so CE(z_h) reaches every student), z_e = (sum z_m + z_h) / (M+1)
    without gradient, KL summed over classes and averaged over the batch. The networks run
    in training mode (batch statistics) through Keras' `stateless_call` on plain tensors;
    nothing from `okdph_keras` is used. Returns numpy gradients, students' variables in order.
    """
    num = len(students)
    thetas = [[tf.constant(v.numpy()) for v in s.trainable_variables] for s in students]
    statistics = [[tf.constant(v.numpy()) for v in s.non_trainable_variables] for s in students]
    onehot = tf.one_hot(labels, NUM_CLASSES)

    def ce(z):
        return -tf.reduce_mean(tf.reduce_sum(onehot * tf.nn.log_softmax(z), axis=-1))

    with tf.GradientTape() as tape:
        for theta in thetas:
            tape.watch(theta)
        z = [
            s.stateless_call(t, n, views[m], training=True)[0]
            for m, (s, t, n) in enumerate(zip(students, thetas, statistics))
        ]
        theta_h = [sum(r[m] * thetas[m][i] for m in range(num)) for i in range(len(thetas[0]))]
        stats_h = [
            sum(r[m] * statistics[m][i] for m in range(num)) for i in range(len(statistics[0]))
        ]
        z_h = students[0].stateless_call(theta_h, stats_h, views[num], training=True)[0]
        z_e = tf.stop_gradient((tf.add_n(z) + z_h) / (num + 1))
        log_p = tf.nn.log_softmax(z_e / tau)
        total = 0.0
        for z_m in z:
            kl = tf.reduce_mean(
                tf.reduce_sum(tf.exp(log_p) * (log_p - tf.nn.log_softmax(z_m / tau)), axis=-1)
            )
            total += omega * ce(z_m) + (1 - omega) * ce(z_h) + beta * tau**2 * kl
    flat = [t for theta in thetas for t in theta]
    return [g.numpy() for g in tape.gradient(total, flat)]


def test_coupled_l2_matches_torch_style_sgd_with_momentum(batch):
    """theta <- theta - lr * v,  v <- mu * v + (g + wd * theta)   (torch SGD).

    g is the gradient of the spec's loss, computed by `hand_written_gradient`.
    """
    _, labels, views = batch
    lr, mu, wd = 0.05, 0.9, 0.1
    model = compiled(lr=lr, momentum=mu, weight_decay=wd, identical_init=False)
    np.testing.assert_allclose(model.coefficients.numpy(), [0.5, 0.5])  # "mean", the default
    view_list = [views[:, k] for k in range(3)]

    def data_gradient():  # the gradient without weight decay at the current weights
        return hand_written_gradient(model.students, view_list, labels, [0.5, 0.5])

    variables = [v for s in model.students for v in s.trainable_variables]
    theta = [v.numpy() for v in variables]
    velocity = [np.zeros_like(t) for t in theta]
    for _ in range(2):
        g = data_gradient()
        velocity = [mu * v + gi + wd * t for v, gi, t in zip(velocity, g, theta)]
        theta = [t - lr * v for t, v in zip(theta, velocity)]
        model.train_on_batch(views, labels)
        for variable, expected in zip(variables, theta):
            np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_dirichlet_coefficients_change_every_batch_and_are_reproducible(batch):
    _, labels, views = batch

    def run():
        model = compiled(hybrid="dirichlet", seed=7)
        seen = []
        record = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda b, logs: seen.append(model.coefficients.numpy().copy())
        )
        model.fit(views, labels, epochs=2, batch_size=4, verbose=0, callbacks=[record])
        return np.array(seen)

    first, second = run(), run()
    assert first.shape == (8, 2)
    assert np.all(first >= 0)
    np.testing.assert_allclose(first.sum(axis=1), 1.0, rtol=1e-6)
    assert len(np.unique(first[:, 0])) == 8
    np.testing.assert_array_equal(first, second)


def test_mean_coefficients_stay_one_over_m(batch):
    _, labels, views = batch
    model = compiled(num=4)
    model.fit(np.stack([views[:, 0]] * 5, axis=1), labels, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_allclose(model.coefficients.numpy(), 0.25)


@pytest.mark.parametrize("num", [2, 4])
def test_fit_and_evaluate_report_every_network_as_numpy_computes_it(num, batch):
    images, labels, views = batch
    views = np.concatenate([views, views[:, :2]], axis=1)[:, : num + 1]
    model = compiled(num=num, identical_init=False)
    history = model.fit(views, labels, epochs=2, batch_size=8, verbose=0, callbacks=[Fusion(0.5)])
    names = {"loss", "kd_loss", "hwm_ce", "hwm_accuracy", "ensemble_ce", "ensemble_accuracy"}
    names |= {f"student_{m}_{k}" for m in range(num) for k in ("ce", "accuracy")}
    assert set(history.history) == names
    assert all(len(v) == 2 and np.isfinite(v).all() for v in history.history.values())

    result = model.evaluate(images, labels, batch_size=len(labels), verbose=0, return_dict=True)
    student_logits = [s.predict(images, verbose=0) for s in model.students]
    hwm_logits = model.hybrid_model().predict(images, verbose=0)
    ensemble = np.mean(student_logits, axis=0)
    accuracy = lambda z: np.mean(np.argmax(z, axis=1) == labels)  # noqa: E731
    for m in range(num):
        assert result[f"student_{m}_accuracy"] == pytest.approx(accuracy(student_logits[m]))
        assert result[f"student_{m}_ce"] == pytest.approx(
            np_cross_entropy(labels, student_logits[m]), rel=1e-4
        )
    assert result["hwm_accuracy"] == pytest.approx(accuracy(hwm_logits))
    assert result["hwm_ce"] == pytest.approx(np_cross_entropy(labels, hwm_logits), rel=1e-4)
    assert result["ensemble_accuracy"] == pytest.approx(accuracy(ensemble))
    assert result["ensemble_ce"] == pytest.approx(np_cross_entropy(labels, ensemble), rel=1e-4)
    z_e = (np.sum(student_logits, axis=0) + hwm_logits) / (num + 1)
    kd = [np_distillation(z_e, z, 4.0) for z in student_logits]
    assert result["kd_loss"] == pytest.approx(np.mean(kd), rel=1e-3, abs=1e-6)
    ce_h = np_cross_entropy(labels, hwm_logits)
    total = sum(
        0.8 * np_cross_entropy(labels, z) + 0.2 * ce_h + 0.8 * k for z, k in zip(student_logits, kd)
    )
    assert result["loss"] == pytest.approx(total, rel=1e-4)


def test_jit_compile_gives_the_same_step(batch):
    _, labels, views = batch
    eager = compiled(identical_init=False)
    xla = OKDPH.from_config(eager.get_config())
    xla.set_weights(eager.get_weights())
    xla.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=True)
    a = eager.train_on_batch(views, labels, return_dict=True)
    b = xla.train_on_batch(views, labels, return_dict=True)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    for u, v in zip(eager.get_weights(), xla.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------- saving
def test_keras_round_trip_restores_predictions_config_and_optimizer(tmp_path, batch):
    images, labels, views = batch
    model = compiled(hybrid="dirichlet", weight_decay=5e-4, identical_init=False, seed=3)
    model.fit(views, labels, epochs=1, batch_size=8, verbose=0)
    path = tmp_path / "okdph.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)

    assert isinstance(loaded, OKDPH)
    as_json = lambda config: json.dumps(config, sort_keys=True)  # noqa: E731  (tuples == lists)
    assert as_json(loaded.get_config()) == as_json(model.get_config())
    np.testing.assert_array_equal(loaded.predict(views, verbose=0), model.predict(views, verbose=0))
    np.testing.assert_array_equal(loaded.coefficients.numpy(), model.coefficients.numpy())
    assert int(loaded.optimizer.iterations.numpy()) == 2
    # Training on from the file continues exactly as training on in memory.
    model.train_on_batch(views, labels)
    loaded.train_on_batch(views, labels)
    for u, v in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)


def test_students_and_hwm_are_plain_models_that_save(tmp_path, batch):
    images, _, _ = batch
    model = OKDPH(tiny_student, identical_init=False)
    for name, network in [("student", model.students[1]), ("hwm", model.hybrid_model())]:
        path = tmp_path / f"{name}.keras"
        network.save(path)
        restored = keras.saving.load_model(path)
        np.testing.assert_allclose(
            restored.predict(images, verbose=0), network.predict(images, verbose=0)
        )
    # The HWM is a snapshot: a later change to a student does not reach it.
    hwm = model.hybrid_model()
    before = hwm.predict(images, verbose=0)
    model.students[0].trainable_variables[0].assign_add(
        tf.ones_like(model.students[0].trainable_variables[0])
    )
    np.testing.assert_array_equal(hwm.predict(images, verbose=0), before)
