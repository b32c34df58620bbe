import numpy as np
import pytest
import tensorflow as tf
from helpers import splitmix64_uniform

from okdph_keras import hybrid, stateless_random


def test_convex_combination_matches_numpy_and_passes_integers_through(rng):
    lists = [
        [rng.normal(size=(3, 2)).astype("float32"), np.array([7, m], np.int64)] for m in range(3)
    ]
    r = np.array([0.2, 0.5, 0.3], np.float32)
    combined = hybrid.convex_combination(lists, r)
    expected = 0.2 * lists[0][0] + 0.5 * lists[1][0] + 0.3 * lists[2][0]
    np.testing.assert_allclose(combined[0].numpy(), expected, rtol=1e-6)
    assert combined[1].dtype == tf.int64
    np.testing.assert_array_equal(combined[1].numpy(), lists[0][1])


def test_convex_combination_of_variables_keeps_float64():
    a = tf.Variable(np.array([1.0, 2.0]))
    b = tf.Variable(np.array([3.0, 6.0]))
    (combined,) = hybrid.convex_combination([[a], [b]], [0.25, 0.75])
    assert combined.dtype == tf.float64
    np.testing.assert_allclose(combined.numpy(), [2.5, 5.0])


@pytest.mark.parametrize("num", [2, 4])
def test_mean_coefficients(num):
    np.testing.assert_allclose(
        hybrid.sample_coefficients("mean", num).numpy(), np.full(num, 1 / num)
    )


def test_dirichlet_lies_on_simplex_changes_with_step_and_averages_one_over_m():
    num, draws = 3, 4000
    samples = np.stack(
        [
            hybrid.sample_coefficients("dirichlet", num, seed=[42, step]).numpy()
            for step in range(draws)
        ]
    )
    assert np.all(samples >= 0)
    np.testing.assert_allclose(samples.sum(axis=1), 1.0, rtol=1e-5)
    assert len(np.unique(samples[:, 0])) == draws  # fresh coefficients every step
    # Dir(1,1,1): each component is Beta(1, 2): mean 1/3, E[r^2] = 2 / (M (M+1)) = 1/6.
    np.testing.assert_allclose(samples.mean(axis=0), 1 / num, atol=0.015)
    np.testing.assert_allclose((samples**2).mean(axis=0), 1 / 6, atol=0.01)
    # The whole distribution: the Kolmogorov distance to Beta(1, 2)'s CDF 1 - (1 - x)^2
    # (about 0.031 at the 0.1% level for 4000 draws).
    for component in samples.T:
        x = np.sort(component)
        empirical = np.arange(1, draws + 1) / draws
        assert np.max(np.abs(empirical - (1 - (1 - x) ** 2))) < 0.031


def test_dirichlet_is_reproducible_from_its_seed():
    a = hybrid.sample_coefficients("dirichlet", 2, seed=[5, 9]).numpy()
    b = hybrid.sample_coefficients("dirichlet", 2, seed=[5, 9]).numpy()
    c = hybrid.sample_coefficients("dirichlet", 2, seed=[6, 9]).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_unknown_mode_and_missing_seed_raise():
    with pytest.raises(ValueError, match="'uniform'.*mean.*dirichlet"):
        hybrid.sample_coefficients("uniform", 2)
    with pytest.raises(ValueError, match="seed"):
        hybrid.sample_coefficients("dirichlet", 2)


@pytest.mark.parametrize("seed", [(42, 7), (0, 0), (-3, 2**40), (2**31 - 1, 123456)])
def test_the_uniform_draws_are_splitmix64_with_xla_and_without(seed):
    expected = splitmix64_uniform(6, *seed, stream=2)
    seed = tf.constant(seed, tf.int64)
    draw = lambda s: stateless_random.uniform([2, 3], s, stream=2)  # noqa: E731
    np.testing.assert_array_equal(draw(seed).numpy().ravel(), expected.astype(np.float32))
    np.testing.assert_array_equal(
        tf.function(draw, jit_compile=True)(seed).numpy().ravel(), expected.astype(np.float32)
    )
    other_stream = stateless_random.uniform([6], seed, stream=3).numpy()
    assert not np.allclose(other_stream, expected)


def test_dirichlet_is_the_same_with_xla():
    seed = tf.constant([11, 4], tf.int64)
    draw = lambda s: hybrid.sample_coefficients("dirichlet", 3, s, samples=2)  # noqa: E731
    exponential = -np.log1p(-splitmix64_uniform(6, 11, 4).reshape(2, 3))
    expected = exponential / exponential.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(draw(seed).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(
        tf.function(draw, jit_compile=True)(seed).numpy(), expected, rtol=1e-6
    )
