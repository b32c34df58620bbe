"""Dropout in OKDPH: every network draws its own masks, and resume is exact.

The masks are read directly: a student whose logits are its dropped-out input
(ones) shows each network's mask as the zeros of its logits.
"""

import os

import keras
import numpy as np
import tensorflow as tf
from helpers import IMAGE_SHAPE, NUM_CLASSES, tiny_student

import okdph_keras

UNITS = 512  # two independent masks of 512 units coincide with probability 2**-512


def mask_student():
    inputs = keras.Input((UNITS,))
    dropped = keras.layers.Dropout(0.5)(inputs)
    # An identity map, so that the student has weights to hybridize.
    return keras.Model(
        inputs, keras.layers.Dense(UNITS, use_bias=False, kernel_initializer="identity")(dropped)
    )


def masks(model):
    """Each network's dropout mask for one training-mode call on ones."""
    logits = model(tf.ones([1, UNITS]), training=True).numpy()[0]  # [M+1, UNITS]
    return logits != 0


def test_each_network_draws_its_own_masks_every_step():
    model = okdph_keras.OKDPH(mask_student, num_students=2, seed=3)
    first, second = masks(model), masks(model)
    # Student 0, student 1 and the HWM differ within a step...
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        assert (first[a] != first[b]).any()
    # ...and from step to step; the HWM never reuses a student's masks, this
    # step's or the next one's (it once took student 0's advanced seed).
    for network in range(3):
        assert (first[network] != second[network]).any()
    for student in (0, 1):
        assert (first[2] != second[student]).any() and (second[2] != first[student]).any()
    # Half of each mask is kept.
    assert abs(first.mean() - 0.5) < 0.05


def test_the_hwm_draws_dropout_masks_in_a_training_step():
    # The HWM's seed state advances through train_step (not only through call).
    model = okdph_keras.OKDPH(lambda: tiny_student(dropout=0.5), num_students=2, seed=5)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    before = [v.numpy().copy() for v in model.hwm_state]
    assert before, "the student has a Dropout layer, so the HWM has a seed state"
    x = np.random.default_rng(0).uniform(size=(4, 3, *IMAGE_SHAPE)).astype("float32")
    model.train_on_batch(x, np.arange(4) % NUM_CLASSES)
    assert any((v.numpy() != b).any() for v, b in zip(model.hwm_state, before))


def _data():
    rng = np.random.default_rng(1)
    views = rng.uniform(size=(24, 3, *IMAGE_SHAPE)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((views, rng.integers(0, NUM_CLASSES, 24))).batch(8)


def _new_model():
    keras.utils.set_random_seed(7)
    model = okdph_keras.OKDPH(lambda: tiny_student(dropout=0.5), num_students=2, seed=7)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    return model


def test_resume_is_exact_for_students_with_dropout(tmp_path):
    uninterrupted = _new_model()
    uninterrupted.fit(_data(), epochs=2, verbose=0)

    first = _new_model()
    first.fit(_data(), epochs=1, verbose=0)
    path = os.path.join(tmp_path, "epoch_1.keras")
    first.save(path)
    keras.utils.set_random_seed(99)  # the new process's seeds must not matter
    resumed = keras.saving.load_model(path)
    resumed.fit(_data(), epochs=2, initial_epoch=1, verbose=0)

    assert len(resumed.variables) == len(uninterrupted.variables)
    for expected, found in zip(uninterrupted.variables, resumed.variables):
        np.testing.assert_array_equal(found.numpy(), expected.numpy(), err_msg=found.path)
    for expected, found in zip(uninterrupted.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_array_equal(found.numpy(), expected.numpy(), err_msg=found.path)
