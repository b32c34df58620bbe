"""The multi-view pipeline: one view per network, seeded, resumable, normalised."""

import numpy as np
import pytest

from okdph_keras.data import eval_dataset, multi_view_dataset
from okdph_keras.data.sources import from_arrays
from okdph_keras.data.views import make_view

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)


@pytest.fixture
def source(rng):
    images = rng.integers(0, 256, size=(40, 16, 16, 3), dtype=np.uint8)
    return from_arrays(images, rng.integers(0, 4, size=40))


def views(names=("hflip", "cutout", "none")):
    return [make_view(name, "cifar", 16, seed=k) for k, name in enumerate(names)]


def batches(dataset):
    return [([v.numpy() for v in x], y.numpy()) for x, y in dataset]


def test_each_network_gets_its_own_view_of_the_same_images(source):
    data = multi_view_dataset(source, views(), 8, seed=1, shuffle=False, normalization=(MEAN, STD))
    (first, labels), *rest = batches(data)
    assert len(rest) == 4 and len(first) == 3
    assert all(v.shape == (8, 16, 16, 3) and v.dtype == np.float32 for v in first)
    np.testing.assert_array_equal(labels, [int(y) for _, y in source.dataset.take(8)])
    # "none" is the normalised image itself; the other views differ from it and each other.
    images = np.stack([x.numpy() for x, _ in source.dataset.take(8)]).astype(np.float32)
    np.testing.assert_allclose(first[2], (images / 255 - MEAN) / STD, rtol=1e-5, atol=1e-5)
    assert not np.allclose(first[0], first[2]) and not np.allclose(first[0], first[1])


def test_gaussian_noise_is_added_after_normalisation(source):
    clean = multi_view_dataset(
        source, views(("none",) * 3), 40, shuffle=False, normalization=(MEAN, STD)
    )
    noisy = multi_view_dataset(
        source,
        views(("none",) * 3),
        40,
        shuffle=False,
        normalization=(MEAN, STD),
        noise_mean=0.5,
        noise_std=2.0,
    )
    difference = batches(noisy)[0][0][0] - batches(clean)[0][0][0]
    assert difference.mean() == pytest.approx(0.5, abs=0.06)
    assert difference.std() == pytest.approx(2.0, rel=0.05)
    test = eval_dataset(source, 40, normalization=(MEAN, STD), noise_std=2.0, seed=3)
    first, second = next(iter(test))[0].numpy(), next(iter(test))[0].numpy()
    np.testing.assert_array_equal(first, second)  # the same test noise on every pass
    clean_test = next(iter(eval_dataset(source, 40, normalization=(MEAN, STD))))[0].numpy()
    np.testing.assert_allclose(clean_test, batches(clean)[0][0][0], rtol=1e-6)
    assert np.std(first - clean_test) == pytest.approx(2.0, rel=0.05)


def test_epochs_are_reproducible_differ_and_resume_exactly(source):
    full = batches(multi_view_dataset(source, views(), 8, seed=5, epochs=3))
    again = batches(multi_view_dataset(source, views(), 8, seed=5, epochs=3))
    resumed = batches(multi_view_dataset(source, views(), 8, seed=5, epochs=3, initial_epoch=2))
    assert len(full) == 15 and len(resumed) == 5
    for (x, y), (u, w) in zip(full, again):
        np.testing.assert_array_equal(y, w)
        for a, b in zip(x, u):
            np.testing.assert_array_equal(a, b)
    for (x, y), (u, w) in zip(full[10:], resumed):
        np.testing.assert_array_equal(y, w)
        np.testing.assert_array_equal(x[0], u[0])
    assert not np.array_equal(full[0][1], full[5][1])  # each epoch reshuffled
    other_seed = batches(multi_view_dataset(source, views(), 8, seed=6, epochs=1))
    assert not np.array_equal(full[0][0][0], other_seed[0][0][0])


def test_one_epoch_dataset_changes_every_iteration_but_is_seeded(source):
    data = multi_view_dataset(source, views(), 40, seed=2)
    first, second = batches(data)[0], batches(data)[0]
    assert not np.array_equal(first[0][0], second[0][0])
    np.testing.assert_array_equal(
        batches(multi_view_dataset(source, views(), 40, seed=2))[0][0][0], first[0][0]
    )


def test_arrays_and_keras_layers_work_as_views(rng):
    import keras  # noqa: PLC0415

    images = rng.uniform(size=(10, 8, 8, 1)).astype(np.float32)
    flip = keras.layers.RandomFlip("horizontal", seed=1)
    data = multi_view_dataset((images, np.arange(10)), [flip, None], 5, shuffle=False)
    (x, y), _ = batches(data)
    np.testing.assert_array_equal(x[1], images[:5])
    np.testing.assert_array_equal(y, np.arange(5))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(views=[]), "at least one view"),
        (dict(views=["hflip"]), "must be an okdph_keras.data.views.View, a callable"),
        (dict(batch_size=0), "batch_size=0 is not allowed; it must be an integer >= 1"),
    ],
)
def test_bad_arguments_raise_clear_errors(source, kwargs, message):
    arguments = {"data": source, "views": views(), "batch_size": 8, **kwargs}
    with pytest.raises(ValueError, match=message):
        multi_view_dataset(**arguments)
