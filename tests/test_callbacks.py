"""Fusion: theta_m <- gamma * theta_h + (1 - gamma) * theta_m, checked in numpy."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import combine, np_cross_entropy, randomize, tiny_student

from okdph_keras import OKDPH, Fusion
from okdph_keras.callbacks import EvaluateEachEpoch


def float_weights(model):
    return [[v.numpy() for v in s.variables if "int" not in str(v.dtype)] for s in model.students]


def expected_fusion(weights, r, gamma):
    hwm = combine(weights, r)
    return [[gamma * h + (1 - gamma) * w for h, w in zip(hwm, ws)] for ws in weights]


def assert_weights(model, expected):
    for actual_list, expected_list in zip(float_weights(model), expected):
        for a, e in zip(actual_list, expected_list):
            np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7)


@pytest.fixture
def model(rng):
    model = OKDPH(tiny_student, num_students=3, identical_init=False)
    for student in model.students:
        randomize(student, rng)  # BN statistics too, so their fusion is visible
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    model.coefficients.assign([0.2, 0.3, 0.5])
    return model


def test_epoch_fusion_follows_the_formula_every_n_epochs(model):
    fusion = Fusion(gamma=0.3, every=2, unit="epoch")
    fusion.set_model(model)
    fusion.on_train_begin()
    start = float_weights(model)
    fusion.on_epoch_begin(0)
    fusion.on_epoch_end(0)
    assert_weights(model, start)
    fusion.on_epoch_begin(1)
    fusion.on_test_begin()  # fit's validation pass: the epoch's training is done
    expected = expected_fusion(start, [0.2, 0.3, 0.5], 0.3)
    assert_weights(model, expected)
    fusion.on_epoch_end(1)  # once per epoch
    assert_weights(model, expected)


def test_validation_during_fit_sees_the_fused_students(batch):
    images, labels, views = batch
    model = OKDPH(tiny_student, identical_init=False)
    model.compile(optimizer="sgd")
    history = model.fit(
        views,
        labels,
        batch_size=8,
        epochs=1,
        verbose=0,
        validation_data=(images, labels),
        callbacks=[Fusion(1.0)],
    )
    # gamma = 1 makes the students identical before validation.
    logs = {k: v[-1] for k, v in history.history.items()}
    assert logs["val_student_0_ce"] == logs["val_student_1_ce"]
    assert logs["val_student_0_ce"] == pytest.approx(logs["val_hwm_ce"], rel=1e-6)


def test_evaluate_each_epoch_logs_the_fused_model_on_its_data(batch):
    images, labels, views = batch
    model = OKDPH(tiny_student, identical_init=False)
    model.compile(optimizer="sgd")
    test_data = tf.data.Dataset.from_tensor_slices((images[:10], labels[:10])).batch(4)
    checkpoints = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: checkpoints.append(dict(logs))
    )
    model.fit(
        views,
        labels,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[Fusion(1.0), EvaluateEachEpoch(test_data, "test_"), record],
    )
    logs = checkpoints[-1]
    # No validation: fusion runs at the epoch's end, before the test pass.
    assert logs["test_student_0_ce"] == logs["test_student_1_ce"]
    logits = model.students[0](images[:10]).numpy()
    assert logs["test_student_0_ce"] == pytest.approx(
        np_cross_entropy(labels[:10], logits), rel=1e-5
    )
    assert logs["test_student_0_accuracy"] == pytest.approx(
        np.mean(logits.argmax(-1) == labels[:10])
    )
    assert "student_0_ce" in logs and logs["student_0_ce"] != logs["test_student_0_ce"]
    with pytest.raises(ValueError, match="prefix='val_' is not allowed"):
        EvaluateEachEpoch((images, labels), "val_")


def test_batch_fusion_follows_the_formula_every_n_batches(model):
    fusion = Fusion(gamma=0.6, every=3, unit="batch")
    fusion.set_model(model)
    fusion.on_train_begin()
    expected = float_weights(model)
    fusion.on_epoch_begin(0)
    for batch in range(4):  # batches 1..4: fusion after the 3rd
        fusion.on_train_batch_end(batch)
        if batch == 2:
            expected = expected_fusion(expected, [0.2, 0.3, 0.5], 0.6)
        assert_weights(model, expected)
    fusion.on_epoch_end(0)  # epoch ends are not a batch unit's business
    assert_weights(model, expected)
    fusion.on_epoch_begin(1)
    fusion.on_train_batch_end(0)
    assert_weights(model, expected)
    fusion.on_train_batch_end(1)  # 6th batch overall
    assert_weights(model, expected_fusion(expected, [0.2, 0.3, 0.5], 0.6))


def test_gamma_one_copies_the_hwm_and_integer_and_optimizer_state_stay(rng, batch):
    _, labels, views = batch
    model = OKDPH(lambda: tiny_student(dropout=0.5), identical_init=False)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    model.fit(views, labels, epochs=1, batch_size=8, verbose=0)
    seeds = [[v.numpy() for v in s.variables if "int" in str(v.dtype)] for s in model.students]
    assert seeds[0] and not np.array_equal(seeds[0][0], seeds[1][0])
    optimizer_state = [v.numpy() for v in model.optimizer.variables]
    hwm = combine(float_weights(model), model.coefficients.numpy())

    model.fuse(1.0)

    for weights in float_weights(model):
        for a, h in zip(weights, hwm):
            np.testing.assert_allclose(a, h, rtol=1e-6, atol=1e-7)
    for student, before in zip(model.students, seeds):
        after = [v.numpy() for v in student.variables if "int" in str(v.dtype)]
        for a, b in zip(after, before):
            np.testing.assert_array_equal(a, b)
    for variable, before in zip(model.optimizer.variables, optimizer_state):
        np.testing.assert_array_equal(variable.numpy(), before)


class CountingOKDPH(OKDPH):
    fusions = 0

    def fuse(self, gamma):
        type(self).fusions += 1
        super().fuse(gamma)


@pytest.mark.parametrize("steps_per_execution", [1, 4])
def test_batch_fusion_counts_steps_with_steps_per_execution(steps_per_execution, batch):
    _, labels, views = batch
    CountingOKDPH.fusions = 0
    model = CountingOKDPH(tiny_student)
    model.compile(optimizer="sgd", steps_per_execution=steps_per_execution)
    # 16 examples, batch 2: 8 steps; fusion every 3 steps -> after steps 3 and 6.
    model.fit(
        views,
        labels,
        batch_size=2,
        epochs=1,
        verbose=0,
        callbacks=[Fusion(0.5, every=3, unit="batch")],
    )
    assert CountingOKDPH.fusions == 2


def test_fusion_within_fit_leaves_students_identical_with_gamma_one(batch):
    _, labels, views = batch
    model = OKDPH(tiny_student, identical_init=False)
    model.compile(optimizer="sgd")
    model.fit(views, labels, batch_size=8, epochs=1, verbose=0, callbacks=[Fusion(1.0)])
    for a, b in zip(*float_weights(model)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(gamma=1.5), r"gamma=1.5 is not allowed; it must be a number in \[0, 1\]"),
        (dict(gamma=True), r"gamma=True is not allowed; it must be a number in \[0, 1\]"),
        (dict(every=0), r"every=0 is not allowed; it must be an integer >= 1"),
        (dict(every=1.5), r"every=1.5 is not allowed"),
        (dict(unit="step"), r"unit='step' is not allowed; it must be one of \('epoch', 'batch'\)"),
    ],
)
def test_bad_fusion_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Fusion(**kwargs)


def test_fusion_refuses_a_model_that_is_not_okdph():
    with pytest.raises(
        ValueError, match=r"model=<Functional .* is not allowed; it must be an OKDPH model"
    ):
        Fusion().set_model(tiny_student())


def test_fusion_config_round_trip():
    fusion = Fusion(gamma=0.25, every=5, unit="batch")
    assert Fusion.from_config(fusion.get_config()).get_config() == fusion.get_config()
