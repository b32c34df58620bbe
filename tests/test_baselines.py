"""SAM/ASAM, SWA, EMA and BatchNorm recomputation, checked against numpy."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import IMAGE_SHAPE, NUM_CLASSES

from okdph_keras import OKDPH, step
from okdph_keras.baselines import (
    SAM,
    SWA,
    EMABatchNorm,
    ema_optimizer,
    recompute_batchnorm,
    sharpness_aware_gradients,
)
from okdph_keras.baselines.swa import SWALearningRate

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------ numpy references
def np_ce(x, y, w, b):
    """Mean softmax cross-entropy of a linear model and its gradients (dW, db)."""
    z = x @ w + b
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(p[np.arange(len(y)), y]))
    dz = (p - np.eye(w.shape[1])[y]) / len(y)
    return loss, [x.T @ dz, dz.sum(axis=0)]


def np_smoothed_ce(x, y, w, b, smoothing):
    """CE of a linear model to targets 1 - eps on the label, eps/(C-1) elsewhere; gradients."""
    z = x @ w + b
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    num_classes = w.shape[1]
    q = np.full(z.shape, smoothing / (num_classes - 1))
    q[np.arange(len(y)), y] = 1.0 - smoothing
    dz = (np.exp(log_p) - q) / len(y)
    return -np.mean(np.sum(q * log_p, axis=1)), [x.T @ dz, dz.sum(axis=0)]


def np_mse(x, y, w, b):
    """Keras MSE (mean over outputs, then over the batch) and its gradients."""
    z = x @ w + b
    loss = np.mean((z - y) ** 2)
    dz = 2.0 * (z - y) / z.size
    return loss, [x.T @ dz, dz.sum(axis=0)]


def np_epsilon(params, grads, rho, adaptive=False, eta=0.01):
    """eps = rho g/||g|| (SAM) or rho T^2 g/||T g||, T = |w| + eta (ASAM)."""
    scales = [np.abs(p) + eta if adaptive else np.ones_like(p) for p in params]
    norm = np.sqrt(sum(np.sum((t * g) ** 2) for t, g in zip(scales, grads)))
    return [rho * t**2 * g / (norm + 1e-12) for t, g in zip(scales, grads)]


def np_sam_gradient(loss_and_grads, params, rho, adaptive=False):
    _, grads = loss_and_grads(*params)
    eps = np_epsilon(params, grads, rho, adaptive)
    return loss_and_grads(*[p + e for p, e in zip(params, eps)])[1]


def sgd(params, grads, lr=0.1):
    return [p - lr * g for p, g in zip(params, grads)]


def mean_per_variable(records):
    """Mean over records (lists of arrays, one per variable) of each variable."""
    return [np.mean(values, axis=0) for values in zip(*records)]


def linear(inputs=4, outputs=3, seed=0):
    rng = np.random.default_rng(seed)
    model = keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(outputs)])
    params = [rng.normal(size=(inputs, outputs)), rng.normal(size=outputs)]
    model.set_weights([p.astype("float32") for p in params])
    return model, params


def batches(array, sizes):
    bounds = np.cumsum([0, *sizes])
    return [array[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def np_bn_stats(values):
    """Per-channel mean and biased variance (Keras' batch variance), last axis."""
    axes = tuple(range(values.ndim - 1))
    return values.mean(axis=axes), values.var(axis=axes)


def assert_batch_average(layer, stats, atol=1e-6):
    """The layer's moving statistics equal the mean of per-batch (mean, variance)."""
    mean, variance = mean_per_variable(stats)
    np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-5, atol=atol)
    np.testing.assert_allclose(layer.moving_variance.numpy(), variance, rtol=1e-5)


# --------------------------------------------------------------------- SAM
@pytest.mark.parametrize(
    "adaptive, loss, np_loss",
    [
        (False, keras.losses.SparseCategoricalCrossentropy(from_logits=True), np_ce),
        (True, keras.losses.MeanSquaredError(), np_mse),
    ],
)
def test_one_sam_step_matches_numpy(rng, adaptive, loss, np_loss):
    x = rng.normal(size=(8, 4))
    y = rng.integers(0, 3, size=8) if np_loss is np_ce else rng.normal(size=(8, 3))
    inner, params = linear()
    model = SAM(inner, rho=0.5, adaptive=adaptive)
    model.compile(keras.optimizers.SGD(0.1), loss=loss)
    logs = model.train_on_batch(x.astype("float32"), y, return_dict=True)

    def loss_and_grads(w, b):
        return np_loss(x, y, w, b)

    expected = sgd(params, np_sam_gradient(loss_and_grads, params, 0.5, adaptive))
    plain_sgd = sgd(params, loss_and_grads(*params)[1])
    assert max(np.abs(e - s).max() for e, s in zip(expected, plain_sgd)) > 1e-3
    for actual, wanted in zip(inner.get_weights(), expected):
        np.testing.assert_allclose(actual, wanted, rtol=1e-5, atol=1e-5)
    # The reported loss is the one at w, before the perturbation.
    assert logs["loss"] == pytest.approx(loss_and_grads(*params)[0], rel=1e-5)


@pytest.mark.parametrize("smoothing", [None, 0.0, 0.3])
def test_the_sam_method_takes_both_passes_on_the_label_smoothed_ce(rng, smoothing):
    # SAM's default: ASAM, rho 0.05, label smoothing 0.1 (BASELINES.md 2.9). Each linear
    # student gets its own ASAM gradient of its smoothed CE; None is the default 0.1.
    x = rng.normal(size=(8, 4))
    y = rng.integers(0, 3, size=8)
    (first, params_a), (second, params_b) = linear(seed=1), linear(seed=2)
    options = dict(omega=None, beta=None, temperature=None, objective="sam")
    if smoothing is not None:
        options["label_smoothing"] = smoothing
    gradients, outputs = step.compute_gradients(
        [first, second],
        [x.astype("float32")] * 3,
        y,
        tf.constant([0.5, 0.5]),
        sharpness=dict(rho=0.5, adaptive=True),
        **options,
    )
    eps = 0.1 if smoothing is None else smoothing

    def loss_and_grads(w, b):
        return np_smoothed_ce(x, y, w, b, eps)

    expected = np_sam_gradient(loss_and_grads, params_a, 0.5, adaptive=True)
    expected += np_sam_gradient(loss_and_grads, params_b, 0.5, adaptive=True)
    for got, want in zip(gradients, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        [float(c) for c in outputs.student_ce],
        [loss_and_grads(*params_a)[0], loss_and_grads(*params_b)[0]],
        rtol=1e-5,
    )
    plain = np_sam_gradient(lambda w, b: np_ce(x, y, w, b), params_a, 0.5, adaptive=True)
    if eps:  # the smoothing changes the gradient measurably
        assert max(np.abs(e - p).max() for e, p in zip(expected, plain)) > 1e-3


def test_each_group_gets_its_own_norm_and_weights_are_restored_exactly(rng):
    x = rng.normal(size=(6, 4))
    y = rng.integers(0, 3, size=6)
    (model_a, params_a), (model_b, params_b) = linear(seed=1), linear(seed=2)
    variables = model_a.trainable_variables + model_b.trainable_variables
    before = [v.numpy() for v in variables]
    xt = tf.constant(x, tf.float32)

    def loss_fn():
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        loss_a, loss_b = ce(y, model_a(xt)), ce(y, model_b(xt))
        return loss_a + 3.0 * loss_b, (loss_a, loss_b)

    @tf.function
    def run():
        return sharpness_aware_gradients(
            loss_fn, [model_a.trainable_variables, model_b.trainable_variables], rho=0.3
        )

    gradients, objective, (loss_a, _) = run()

    def scaled(factor):
        return lambda w, b: (None, [factor * g for g in np_ce(x, y, w, b)[1]])

    # Separate norms: each model's eps is what it would get if trained alone.
    expected = np_sam_gradient(scaled(1.0), params_a, 0.3)
    expected += np_sam_gradient(scaled(3.0), params_b, 0.3)
    for actual, wanted in zip(gradients, expected):
        np.testing.assert_allclose(actual.numpy(), wanted, rtol=1e-5, atol=1e-6)
    # One joint norm would give something else.
    joint_grads = scaled(1.0)(*params_a)[1] + scaled(3.0)(*params_b)[1]
    joint_eps = np_epsilon(params_a + params_b, joint_grads, 0.3)
    perturbed = [p + e for p, e in zip(params_a + params_b, joint_eps)]
    joint = scaled(1.0)(*perturbed[:2])[1] + scaled(3.0)(*perturbed[2:])[1]
    assert max(np.abs(j - e).max() for j, e in zip(joint, expected)) > 1e-3
    assert float(objective) == pytest.approx(
        np_ce(x, y, *params_a)[0] + 3.0 * np_ce(x, y, *params_b)[0], rel=1e-5
    )
    assert float(loss_a) == pytest.approx(np_ce(x, y, *params_a)[0], rel=1e-5)
    for variable, value in zip(variables, before):
        np.testing.assert_array_equal(variable.numpy(), value)  # bit for bit


def test_sam_evaluates_the_plain_ce(rng):
    # Training differentiates the smoothed CE; evaluation reports the plain one, so that
    # test CEs compare across methods.
    x = rng.normal(size=(8, 4))
    y = rng.integers(0, 3, size=8)
    (first, params_a), (second, params_b) = linear(seed=1), linear(seed=2)
    options = dict(omega=None, beta=None, temperature=None, objective="sam")
    views = [x.astype("float32")] * 3
    outputs = {
        training: step.forward(
            [first, second], views, y, tf.constant([0.5, 0.5]), training=training, **options
        )
        for training in (True, False)
    }
    for m, params in enumerate((params_a, params_b)):
        np.testing.assert_allclose(
            float(outputs[True].student_ce[m]), np_smoothed_ce(x, y, *params, 0.1)[0], rtol=1e-5
        )
        np.testing.assert_allclose(
            float(outputs[False].student_ce[m]), np_ce(x, y, *params)[0], rtol=1e-5
        )


def test_batchnorm_statistics_are_updated_once_per_sam_step(rng):
    inner = keras.Sequential(
        [keras.Input((3,)), keras.layers.BatchNormalization(momentum=0.9), keras.layers.Dense(2)]
    )
    model = SAM(inner, rho=0.5)
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    x = rng.normal(1.0, 2.0, size=(10, 3)).astype("float32")
    model.train_on_batch(x, rng.normal(size=(10, 2)))
    mean, variance = np_bn_stats(x.astype(np.float64))
    bn = inner.layers[0]
    # One update from the initial (0, 1); a second one would give 0.19 * mean.
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.9 + 0.1 * variance, rtol=1e-5)


def test_sam_fit_lowers_the_loss_and_round_trips_through_save(rng, tmp_path):
    images = rng.uniform(0, 1, size=(32, *IMAGE_SHAPE)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, size=32)
    inner = keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE),
            keras.layers.Flatten(),
            keras.layers.Dense(16),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dense(NUM_CLASSES),
        ]
    )
    model = SAM(inner, rho=0.05, adaptive=True, eta=0.02, name="sam")
    model.compile(
        keras.optimizers.Adam(0.02),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(images, labels, batch_size=16, epochs=6, verbose=0, shuffle=False)
    assert history.history["loss"][-1] < 0.9 * history.history["loss"][0]
    assert set(history.history) == {"loss", "accuracy"}

    path = str(tmp_path / "sam.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, SAM)
    assert (loaded.rho, loaded.adaptive, loaded.eta) == (0.05, True, 0.02)
    np.testing.assert_allclose(loaded(images).numpy(), model(images).numpy(), rtol=1e-6, atol=1e-6)
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 12
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    loaded.train_on_batch(images[:16], labels[:16])  # trains on after loading


SAM_WORKER = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from okdph_keras.baselines import SAM, recompute_batchnorm

    w, b, x, y, bn_x = (np.asarray(a, np.float32) for a in json.loads(sys.stdin.read()))
    strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
    with strategy.scope():
        inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        inner.set_weights([w, b])
        model = SAM(inner, rho=0.5)
        model.compile(keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        bn_model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    model.fit(x, y.astype("int32"), batch_size=8, epochs=1, shuffle=False, verbose=0)
    recompute_batchnorm(bn_model, [bn_x[:4], bn_x[4:]])

    def replicas(variables):
        return [[v.numpy().tolist() for v in strategy.experimental_local_results(var.value)]
                for var in variables]

    print("RESULT " + json.dumps({"weights": replicas(inner.weights),
                                  "bn": replicas(bn_model.non_trainable_weights)}))
    """
)


def test_sam_under_mirrored_strategy_perturbs_each_replica_with_its_own_gradient(rng):
    x = rng.normal(size=(8, 4))
    y = rng.integers(0, 3, size=8)
    bn_x = rng.normal(2.0, 3.0, size=(8, 3))
    _, params = linear()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
    completed = subprocess.run(
        [sys.executable, "-c", SAM_WORKER],
        input=json.dumps([a.tolist() for a in (*params, x, y, bn_x)]),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, completed.stderr[-4000:]
    result = json.loads(lines[-1][len("RESULT ") :])

    # m-sharpness: each replica's 4 examples give their own eps and gradient;
    # the optimizer applies the sum of the replicas' (1/2-scaled) gradients.
    def half(rows):
        return np_sam_gradient(lambda w, b: np_ce(x[rows], y[rows], w, b), params, 0.5)

    local = [0.5 * (g0 + g1) for g0, g1 in zip(half(slice(0, 4)), half(slice(4, 8)))]
    expected = sgd(params, local)
    global_eps = sgd(params, np_sam_gradient(lambda w, b: np_ce(x, y, w, b), params, 0.5))
    assert max(np.abs(e - g).max() for e, g in zip(expected, global_eps)) > 1e-4
    for replica_values, wanted in zip(result["weights"], expected):
        for values in replica_values:  # every replica holds the same update
            np.testing.assert_allclose(values, wanted, rtol=1e-5, atol=1e-6)

    # recompute_batchnorm from the cross-replica context sets every replica.
    stats = [np_bn_stats(part) for part in (bn_x[:4], bn_x[4:])]
    for replica_values, wanted in zip(result["bn"], mean_per_variable(stats)):
        for values in replica_values:
            np.testing.assert_allclose(values, wanted, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------- BatchNorm recompute
def test_recompute_batchnorm_averages_per_batch_statistics_like_numpy(rng):
    inner = keras.Sequential(
        [keras.Input((2, 2, 3)), keras.layers.BatchNormalization(epsilon=1e-3)]
    )
    inputs = keras.Input((2, 2, 3))
    h = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)(inputs)
    h = keras.layers.ReLU()(h)
    h = inner(h)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    first, second = model.layers[1], inner.layers[0]
    first.gamma.assign(rng.uniform(0.5, 2.0, size=3))
    first.beta.assign(rng.normal(size=3))
    for layer in (first, second):  # stale statistics, to be discarded
        layer.moving_mean.assign(rng.normal(size=3))
        layer.moving_variance.assign(rng.uniform(3.0, 5.0, size=3))
    kernel = model.layers[-1].kernel.numpy()

    x = rng.normal(0.5, 2.0, size=(21, 2, 2, 3))
    data = [(part.astype("float32"), np.zeros(len(part))) for part in batches(x, [8, 8, 5])]
    assert recompute_batchnorm(model, data) == 3

    gamma, beta = first.gamma.numpy(), first.beta.numpy()
    stats_first, stats_second = [], []
    for part, _ in data:
        mean, variance = np_bn_stats(part.astype(np.float64))
        stats_first.append((mean, variance))
        hidden = np.maximum(gamma * (part - mean) / np.sqrt(variance + 1e-3) + beta, 0.0)
        stats_second.append(np_bn_stats(hidden))
    assert_batch_average(first, stats_first)
    assert_batch_average(second, stats_second)
    assert first.momentum == 0.9 and second.momentum == 0.99
    np.testing.assert_array_equal(model.layers[-1].kernel.numpy(), kernel)
    assert recompute_batchnorm(model, data, steps=1) == 1
    np.testing.assert_allclose(first.moving_mean.numpy(), stats_first[0][0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no batches"):
        recompute_batchnorm(model, iter([]))
    np.testing.assert_allclose(first.moving_mean.numpy(), stats_first[0][0], rtol=1e-5, atol=1e-6)


def bn_student():
    return keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dense(NUM_CLASSES),
        ]
    )


def test_recompute_batchnorm_on_okdph_measures_each_student_on_its_view(rng):
    model = OKDPH(bn_student, num_students=2)
    model.coefficients.assign([0.3, 0.7])
    views = rng.normal(size=(12, 3, *IMAGE_SHAPE)).astype("float32")
    views[:, 1] += 5.0
    views[:, 2] -= 5.0  # the HWM's view: visible if its pass wrote statistics
    data = batches(views, [6, 6])
    recompute_batchnorm(model, data)
    for m, student in enumerate(model.students):
        stats = [np_bn_stats(part[:, m].astype(np.float64)) for part in data]
        assert_batch_average(student.layers[0], stats, atol=1e-5)
    np.testing.assert_allclose(model.coefficients.numpy(), [0.3, 0.7])


# ----------------------------------------------------------------------- SWA
def recorder(model, per="epoch"):
    records = []

    def record(*_, **__):
        records.append([v.numpy().astype(np.float64) for v in model.trainable_variables])

    hook = "on_train_batch_end" if per == "batch" else "on_epoch_end"
    return records, keras.callbacks.LambdaCallback(**{hook: record})


def assert_weights(model, expected, rtol=1e-5):
    for variable, value in zip(model.trainable_variables, expected):
        np.testing.assert_allclose(variable.numpy(), value, rtol=rtol, atol=1e-6)


def test_swa_averages_the_chosen_epochs(rng):
    model, _ = linear()
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    x, y = rng.normal(size=(16, 4)), rng.normal(size=(16, 3))
    records, record = recorder(model)
    swa = SWA(start_epoch=1, every=2)
    model.fit(x, y, batch_size=8, epochs=6, verbose=0, callbacks=[record, swa])
    expected = mean_per_variable([records[e] for e in (1, 3, 5)])
    assert np.abs(expected[0] - records[-1][0]).max() > 1e-3
    assert_weights(model, expected)


def test_swa_recomputes_batchnorm_for_the_averaged_weights(rng):
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(2),
        ]
    )
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    x, y = rng.normal(size=(16, 3)), rng.normal(size=(16, 2))
    bn_data = batches(x.astype("float32"), [10, 6])
    records, record = recorder(model)
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        verbose=0,
        callbacks=[record, SWA(start_epoch=0, bn_data=bn_data)],
    )
    average = mean_per_variable(records)
    assert_weights(model, average)
    kernel, bias = average[0], average[1]
    assert_batch_average(model.layers[1], [np_bn_stats(part @ kernel + bias) for part in bn_data])


def test_swa_without_bn_data_warns_on_a_batchnorm_model(rng):
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.BatchNormalization(), keras.layers.Dense(2)]
    )
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    with pytest.warns(UserWarning, match="no bn_data"):
        model.fit(
            rng.normal(size=(8, 3)),
            rng.normal(size=(8, 2)),
            epochs=1,
            verbose=0,
            callbacks=[SWA(start_epoch=0)],
        )


def test_swa_state_file_survives_a_resume(rng, tmp_path):
    state_path = str(tmp_path / "swa.npz")
    model, _ = linear()
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    x, y = rng.normal(size=(16, 4)), rng.normal(size=(16, 3))
    first, record = recorder(model)
    model.fit(
        x, y, batch_size=8, epochs=2, verbose=0, callbacks=[record, SWA(0, state_path=state_path)]
    )
    # A new process resumes from the checkpoint of epoch 0 (older than the
    # state file): epoch 1 runs again but is not averaged twice.
    model.set_weights([w.astype("float32") for w in first[0]])
    second, record = recorder(model)
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=4,
        initial_epoch=1,
        verbose=0,
        callbacks=[record, SWA(0, state_path=state_path)],
    )
    epochs = [first[0], first[1], second[1], second[2]]  # epochs 0, 1, 2, 3
    assert_weights(model, mean_per_variable(epochs))


def test_swa_learning_rate_is_the_reference_schedule_at_300_epochs():
    # BASELINES.md 2.8, t = e / 241: 0.1 for e <= 120, 0.1 (1 - 0.99 (t - 0.5) / 0.4)
    # for e = 121..216, 0.001 from e = 217 (averaging from epoch 240 of 300).
    schedule = SWALearningRate(0.1, 0.001, start_epoch=240, steps_per_epoch=391)

    def reference(e):
        t = e / 241
        return 0.1 if e <= 120 else 0.1 * (1 - 0.99 * (t - 0.5) / 0.4) if e <= 216 else 0.001

    for epoch in (0, 120, 121, 150, 216, 217, 299):
        for step_in_epoch in (0, 390):
            lr = float(schedule(epoch * 391 + step_in_epoch))
            assert lr == pytest.approx(reference(epoch), rel=1e-6), (epoch, step_in_epoch)
    assert float(schedule(121 * 391)) == pytest.approx(0.1 * (1 - 0.99 * (121 / 241 - 0.5) / 0.4))
    assert float(schedule(121 * 391)) < 0.1 and float(schedule(216 * 391)) > 0.001

    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, SWALearningRate)
    assert (
        restored.get_config()
        == schedule.get_config()
        == {
            "initial_learning_rate": 0.1,
            "swa_learning_rate": 0.001,
            "start_epoch": 240,
            "steps_per_epoch": 391,
            "name": "SWALearningRate",
        }
    )
    assert float(restored(150 * 391)) == float(schedule(150 * 391))


def test_an_optimizer_on_the_swa_schedule_resumes_it_from_a_saved_model(tmp_path):
    model, _ = linear()
    schedule = SWALearningRate(0.1, 0.001, start_epoch=4, steps_per_epoch=2)
    model.compile(keras.optimizers.SGD(schedule), loss="mse")
    model.optimizer.iterations.assign(7)  # epoch 3: t = 3/5 = 0.6
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    saved = loaded.optimizer.get_config()["learning_rate"]
    assert saved["registered_name"] == "okdph_keras>SWALearningRate"
    expected = 0.1 * (1 - 0.99 * (0.6 - 0.5) / 0.4)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(expected, rel=1e-6)


def test_swa_on_okdph_averages_every_student_and_recomputes_their_batchnorm(rng):
    model = OKDPH(bn_student, num_students=2, identical_init=False)
    views = rng.normal(size=(8, 3, *IMAGE_SHAPE)).astype("float32")
    views[:, 1] += 3.0
    swa = SWA(start_epoch=1, bn_data=batches(views, [4, 4]))
    swa.set_model(model)
    swa.on_train_begin()
    records, coefficients = [], []
    for epoch in range(3):  # stands in for three epochs of training
        for variable in model.trainable_variables:
            variable.assign(rng.normal(size=variable.shape))
        coefficients.append(rng.dirichlet([1.0, 1.0]))
        model.coefficients.assign(coefficients[-1])
        records.append([v.numpy().astype(np.float64) for v in model.trainable_variables])
        swa.on_epoch_end(epoch)
    swa.on_train_end()
    assert_weights(model, mean_per_variable(records[1:]))
    np.testing.assert_allclose(model.coefficients.numpy(), np.mean(coefficients[1:], 0), rtol=1e-6)
    for m, student in enumerate(model.students):
        stats = [np_bn_stats(part[:, m].astype(np.float64)) for part in batches(views, [4, 4])]
        assert_batch_average(student.layers[0], stats, atol=1e-5)


# ----------------------------------------------------------------------- EMA
def test_optimizer_ema_after_fit_matches_numpy(rng):
    model, _ = linear()
    model.compile(ema_optimizer(keras.optimizers.SGD(0.1), momentum=0.8), loss="mse")
    records, record = recorder(model, per="batch")
    model.fit(
        rng.normal(size=(20, 4)),
        rng.normal(size=(20, 3)),
        batch_size=4,
        epochs=1,
        verbose=0,
        callbacks=[record],
    )
    assert len(records) == 5
    average = records[0]  # the first update initialises the average
    for weights in records[1:]:
        average = [0.8 * a + 0.2 * w for a, w in zip(average, weights)]
    assert np.abs(average[0] - records[-1][0]).max() > 1e-3
    assert_weights(model, average)


def test_ema_batchnorm_recomputes_statistics_for_the_ema_weights(rng):
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(2),
        ]
    )
    model.compile(ema_optimizer("sgd", momentum=0.5), loss="mse")
    x = rng.normal(size=(12, 3))
    bn_data = [(part.astype("float32"), None) for part in batches(x, [6, 6])]
    model.fit(
        x,
        rng.normal(size=(12, 2)),
        batch_size=4,
        epochs=1,
        verbose=0,
        callbacks=[EMABatchNorm(bn_data)],
    )
    kernel, bias = (v.numpy().astype(np.float64) for v in model.layers[0].weights)
    stats = [np_bn_stats(part @ kernel + bias) for part, _ in bn_data]
    assert_batch_average(model.layers[1], stats)


def test_ema_optimizer_keeps_the_configuration():
    optimizer = ema_optimizer(keras.optimizers.SGD(0.05, momentum=0.9), momentum=0.99)
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert optimizer.use_ema and optimizer.ema_momentum == 0.99
    assert optimizer.momentum == 0.9
    assert float(optimizer.learning_rate) == pytest.approx(0.05)


# ---------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda m: SAM(m, rho=0.0), r"rho=0\.0 .* > 0"),
        (lambda m: SAM(m, rho=-0.1), r"rho=-0\.1 .* > 0"),
        (lambda m: SAM(m, rho=float("nan")), r"rho=nan .* finite"),
        (
            lambda m: SAM(m, adaptive="yes"),
            r"adaptive='yes' is not allowed; it must be True or False",
        ),
        (lambda m: SAM(m, eta=-1), r"eta=-1 .* >= 0"),
        (
            lambda m: SAM("resnet", rho=0.1),
            r"model='resnet' is not allowed; it must be a built keras.Model",
        ),
        (lambda m: sharpness_aware_gradients(None, [], rho=0), r"rho=0 .* > 0"),
        (lambda m: SWA(start_epoch=-1), r"start_epoch=-1 .* integer >= 0"),
        (lambda m: SWA(start_epoch=1.5), r"start_epoch=1\.5 .* integer >= 0"),
        (lambda m: SWA(0, every=0), r"every=0 .* integer >= 1"),
        (
            lambda m: SWA(0, state_path="swa.txt"),
            r"state_path='swa.txt' is not allowed; it must be None or a path ending in '\.npz'",
        ),
        (
            lambda m: SWA(0).set_model("model"),
            r"model='model' is not allowed; it must be a keras.Model",
        ),
        (
            lambda m: EMABatchNorm(None),
            r"bn_data=None is not allowed; it must be batches of training inputs",
        ),
        (lambda m: ema_optimizer("sgd", momentum=1.0), r"momentum=1\.0 .* \[0, 1\)"),
        (lambda m: recompute_batchnorm(m, np.zeros((4, 4))), r"iterable of batches"),
        (lambda m: recompute_batchnorm(m, [np.zeros((4, 4))], steps=0), r"steps=0 .* >= 1"),
        (lambda m: recompute_batchnorm(m, []), r"no batches"),
    ],
)
def test_bad_arguments_raise_clear_errors(make, message):
    model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match=message):
        make(model)


def test_ema_batchnorm_refuses_an_optimizer_without_ema(rng):
    model, _ = linear()
    model.compile("sgd", loss="mse")
    with pytest.raises(ValueError, match="use_ema=True"):
        model.fit(
            rng.normal(size=(4, 4)),
            rng.normal(size=(4, 3)),
            verbose=0,
            callbacks=[EMABatchNorm([np.zeros((2, 4), "float32")])],
        )
