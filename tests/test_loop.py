"""okdph_keras.loop: the custom loop behaves as `fit()` under the default strategy."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny_student

from okdph_keras import OKDPH, Fusion, loop


def make_data():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(40, 8, 8, 1)).astype("float32")
    views = np.stack([images, images[:, ::-1], images[:, :, ::-1]], axis=1)
    labels = rng.integers(0, 5, size=40)
    train = tf.data.Dataset.from_tensor_slices((views, labels)).batch(8).repeat()
    validation = tf.data.Dataset.from_tensor_slices((images[:12], labels[:12])).batch(5)
    return train, validation


def train(run_fit, unit):
    keras.utils.set_random_seed(7)
    model = OKDPH(tiny_student, hybrid="dirichlet", weight_decay=1e-3, seed=3)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    epoch_logs = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: epoch_logs.append(dict(logs))
    )
    train_data, validation = make_data()
    callbacks = [Fusion(0.5, every=2, unit=unit), record]
    run_fit(model, train_data, validation, callbacks)
    return model, epoch_logs


def keras_fit(model, data, validation, callbacks):
    model.fit(
        data,
        epochs=3,
        initial_epoch=1,
        steps_per_epoch=5,
        validation_data=validation,
        callbacks=callbacks,
        verbose=0,
        shuffle=False,
    )


def loop_fit(model, data, validation, callbacks):
    loop.fit(
        model,
        data,
        epochs=3,
        initial_epoch=1,
        steps_per_epoch=5,
        validation_data=validation,
        callbacks=callbacks,
        verbose=0,
    )


def test_loop_equals_fit():
    # Batch fusion: the callbacks are told every step as fit() tells them.
    expected, expected_logs = train(keras_fit, "batch")
    actual, actual_logs = train(loop_fit, "batch")
    assert len(actual_logs) == len(expected_logs) == 2
    for got, want in zip(actual_logs, expected_logs):
        assert set(got) == set(want)
        for name in want:
            assert got[name] == pytest.approx(want[name], rel=1e-6, abs=1e-7), name
    for a, e in zip(actual.variables, expected.variables):
        np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-6, atol=1e-7, err_msg=a.path)
    assert int(actual.optimizer.iterations) == int(expected.optimizer.iterations) == 10


def test_evaluate_equals_keras_evaluate():
    model, _ = train(keras_fit, "epoch")
    _, validation = make_data()
    expected = model.evaluate(validation, verbose=0, return_dict=True)
    actual = loop.evaluate(model, validation)
    assert actual == pytest.approx(expected, rel=1e-6)
