"""FusedBatchNormalization against BatchNorm written out in numpy, and as Keras' layer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import okdph_keras
from okdph_keras.models.fused_batchnorm import FusedBatchNormalization

MOMENTUM, EPSILON = 0.9, 1e-5


def numpy_batchnorm(x, gamma, beta):
    """Training-mode BatchNorm over axes (0, 1, 2): output, batch mean, biased variance."""
    mean = x.mean(axis=(0, 1, 2))
    variance = x.var(axis=(0, 1, 2))
    return gamma * (x - mean) / np.sqrt(variance + EPSILON) + beta, mean, variance


def numpy_batchnorm_input_gradient(x, gamma, upstream):
    """d(sum(upstream * y))/dx of training-mode BatchNorm, the closed form."""
    count = x.shape[0] * x.shape[1] * x.shape[2]
    mean, variance = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    normalised = (x - mean) / np.sqrt(variance + EPSILON)
    sum_upstream = upstream.sum(axis=(0, 1, 2))
    sum_upstream_normalised = (upstream * normalised).sum(axis=(0, 1, 2))
    return (
        gamma
        / np.sqrt(variance + EPSILON)
        * (upstream - sum_upstream / count - normalised * sum_upstream_normalised / count)
    )


def make_layer(channels, rng):
    layer = FusedBatchNormalization(momentum=MOMENTUM, epsilon=EPSILON)
    layer.build((None, 4, 4, channels))
    layer.gamma.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
    layer.beta.assign(rng.normal(size=channels).astype("float32"))
    layer.moving_mean.assign(rng.normal(size=channels).astype("float32"))
    layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
    return layer


@pytest.mark.parametrize("jit_compile", [False, True])
def test_training_step_matches_numpy(jit_compile):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(6, 4, 4, 3)) * 3 + 1).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    layer = make_layer(3, rng)
    gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
    old_mean, old_variance = layer.moving_mean.numpy(), layer.moving_variance.numpy()

    @tf.function(jit_compile=jit_compile)
    def step(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = layer(inputs, training=True)
            objective = tf.reduce_sum(y * upstream)
        return (y, *tape.gradient(objective, [inputs, layer.gamma, layer.beta]))

    y, dx, dgamma, dbeta = (t.numpy() for t in step(tf.constant(x)))
    expected, mean, variance = numpy_batchnorm(x, gamma, beta)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    normalised = (x - mean) / np.sqrt(variance + EPSILON)
    np.testing.assert_allclose(dgamma, (upstream * normalised).sum(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(dbeta, upstream.sum(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(
        dx, numpy_batchnorm_input_gradient(x, gamma, upstream), rtol=1e-3, atol=1e-4
    )
    # Keras' rule with the biased variance (the kernel itself returns the unbiased one, 1%
    # larger here). atol: a moving mean near 0 is a difference of terms near 1 (XLA on one
    # CPU gave 0.00296781 for 0.00296785).
    np.testing.assert_allclose(
        layer.moving_mean.numpy(),
        MOMENTUM * old_mean + (1 - MOMENTUM) * mean,
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        layer.moving_variance.numpy(),
        MOMENTUM * old_variance + (1 - MOMENTUM) * variance,
        rtol=1e-5,
        atol=1e-6,
    )


def op_types(function, *args):
    """Op types of `function`'s graph for `args`, those inside tf.cond branches included."""
    graph_def = function.get_concrete_function(*args).graph.as_graph_def()
    nodes = [*graph_def.node, *(n for f in graph_def.library.function for n in f.node_def)]
    return {node.op for node in nodes}


def test_training_runs_the_fused_kernel_and_inference_does_not():
    layer = FusedBatchNormalization()
    x = tf.ones([2, 4, 4, 3])
    assert "FusedBatchNormV3" in op_types(tf.function(lambda v: layer(v, training=True)), x)
    assert "FusedBatchNormV3" not in op_types(tf.function(lambda v: layer(v, training=False)), x)


def test_one_element_per_channel_learns_zero_variance():
    rng = np.random.default_rng(1)
    layer = make_layer(2, rng)
    old_mean, old_variance = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    x = rng.normal(size=(1, 1, 1, 2)).astype("float32")
    y = layer(x, training=True).numpy()
    np.testing.assert_allclose(y, np.broadcast_to(layer.beta.numpy(), y.shape), atol=1e-5)
    np.testing.assert_allclose(
        layer.moving_mean.numpy(), MOMENTUM * old_mean + (1 - MOMENTUM) * x[0, 0, 0], rtol=1e-5
    )
    np.testing.assert_allclose(layer.moving_variance.numpy(), MOMENTUM * old_variance, rtol=1e-5)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_an_empty_batch_runs_no_kernel_and_keeps_the_statistics(jit_compile):
    rng = np.random.default_rng(2)
    layer = make_layer(3, rng)
    before = [v.numpy().copy() for v in layer.weights]

    @tf.function(jit_compile=jit_compile, input_signature=[tf.TensorSpec([None, 4, 4, 3])])
    def step(inputs):
        with tf.GradientTape() as tape:
            y = layer(inputs, training=True)
            objective = tf.reduce_sum(y)
        return y, tape.gradient(objective, [layer.gamma, layer.beta])

    y, gradients = step(tf.zeros([0, 4, 4, 3]))
    assert y.shape == (0, 4, 4, 3)
    for gradient in gradients:
        np.testing.assert_array_equal(gradient.numpy(), np.zeros(3, "float32"))
    for old, variable in zip(before, layer.weights):
        np.testing.assert_array_equal(variable.numpy(), old)
    y, _ = step(tf.ones([2, 4, 4, 3]))  # the same trace still trains on a real batch
    assert not np.array_equal(layer.moving_mean.numpy(), before[2])


def test_inference_and_other_inputs_are_keras_own():
    rng = np.random.default_rng(3)
    layer = make_layer(3, rng)
    x = rng.normal(size=(5, 4, 4, 3)).astype("float32")
    mean, variance = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    expected = layer.gamma.numpy() * (x - mean) / np.sqrt(variance + EPSILON) + layer.beta.numpy()
    np.testing.assert_allclose(layer(x, training=False).numpy(), expected, rtol=1e-5, atol=1e-5)
    flat = FusedBatchNormalization(momentum=MOMENTUM, epsilon=EPSILON)
    vectors = rng.normal(size=(8, 3)).astype("float32")
    y = flat(vectors, training=True).numpy()  # rank 2: Keras' path
    np.testing.assert_allclose(
        y, (vectors - vectors.mean(0)) / np.sqrt(vectors.var(0) + EPSILON), atol=1e-4
    )


def test_stateless_call_collects_the_statistics():
    rng = np.random.default_rng(4)
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, FusedBatchNormalization(momentum=MOMENTUM, epsilon=EPSILON)(inputs))
    x = rng.normal(size=(3, 4, 4, 3)).astype("float32")
    _, updated = model.stateless_call(
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        x,
        training=True,
    )
    _, mean, variance = numpy_batchnorm(x, np.ones(3), np.zeros(3))
    np.testing.assert_allclose(updated[0].numpy(), (1 - MOMENTUM) * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(updated[1].numpy(), MOMENTUM + (1 - MOMENTUM) * variance, rtol=1e-5)
    np.testing.assert_array_equal(model.non_trainable_variables[0].numpy(), np.zeros(3))


def test_architectures_use_it_and_ship_plain_batchnorm(tmp_path):
    student = okdph_keras.get_model("small_cnn", 3, (8, 8, 3))
    fused = [layer for layer in student.layers if isinstance(layer, FusedBatchNormalization)]
    assert fused
    path = str(tmp_path / "student.keras")
    student.save(path)
    assert isinstance(
        keras.models.load_model(path).get_layer(fused[0].name), FusedBatchNormalization
    )
    shipped = okdph_keras.plain_student(student)
    assert not any(isinstance(layer, FusedBatchNormalization) for layer in shipped.layers)
    assert type(shipped.get_layer(fused[0].name)) is keras.layers.BatchNormalization
    x = np.random.default_rng(5).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(shipped(x).numpy(), student(x).numpy(), rtol=1e-6, atol=1e-6)
