"""Mixed precision: a step the LossScaleOptimizer skips still counts as a step.

Keras' `LossScaleOptimizer` does not advance `iterations` when it skips a
non-finite step, so the learning-rate schedule, batch fusion, the Dirichlet
seeds and the NaN message's step would drift behind the batches seen.
"""

import keras
import numpy as np
from helpers import IMAGE_SHAPE, NUM_CLASSES, splitmix64_uniform

import okdph_keras

STEPS, BOUNDARY = 12, 6


def mixed_student():
    inputs = keras.Input(IMAGE_SHAPE)
    x = keras.layers.Conv2D(4, 3, dtype="mixed_float16")(inputs)
    x = keras.layers.BatchNormalization(dtype="mixed_float16")(x)
    x = keras.layers.GlobalAveragePooling2D(dtype="mixed_float16")(x)
    return keras.Model(inputs, keras.layers.Dense(NUM_CLASSES, dtype="mixed_float16")(x))


def test_skipped_steps_count_for_the_schedule_and_the_coefficients():
    rng = np.random.default_rng(0)
    views = rng.uniform(size=(STEPS * 4, 3, *IMAGE_SHAPE)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, STEPS * 4)
    model = okdph_keras.OKDPH(mixed_student, num_students=2, hybrid="dirichlet", seed=11)
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([BOUNDARY], [0.1, 0.01])
    # float16 gradients overflow at this scale: the first few steps are skipped.
    optimizer = keras.optimizers.LossScaleOptimizer(
        keras.optimizers.SGD(schedule), initial_scale=2.0**20
    )
    model.compile(optimizer=optimizer)
    initial = [v.numpy().copy() for v in model.trainable_variables]
    seen = []
    model.fit(
        views,
        labels,
        batch_size=4,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[
            keras.callbacks.LambdaCallback(
                on_train_batch_end=lambda batch, logs: seen.append(
                    model.coefficients.numpy().copy()
                )
            )
        ],
    )
    assert float(optimizer.dynamic_scale.numpy()) < 2.0**20, "no step was skipped"
    assert int(optimizer.iterations.numpy()) == STEPS
    assert float(optimizer.learning_rate.numpy()) == np.float32(0.01)
    # Batch k drew Dir(1) with the stateless seed (seed, k): one draw per batch, each
    # an Exponential(1) = -log(1 - U).
    for k, coefficients in enumerate(seen):
        draws = -np.log1p(-splitmix64_uniform(2, 11, k))
        np.testing.assert_allclose(coefficients, draws / draws.sum(), rtol=1e-6)
    assert all(np.isfinite(v.numpy()).all() for v in model.variables)
    assert any((v.numpy() != w).any() for v, w in zip(model.trainable_variables, initial)), (
        "no step applied"
    )
