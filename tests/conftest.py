"""Shared fixtures: tiny data, so the whole suite runs on 2 CPU cores."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import IMAGE_SHAPE, NUM_CLASSES  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def batch(rng):
    """16 images, their labels, and three different views of them [16, 3, 8, 8, 1]."""
    images = rng.uniform(0, 1, size=(16, *IMAGE_SHAPE)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, size=16)
    views = np.stack([images, images[:, ::-1], images[:, :, ::-1]], axis=1)
    return images, labels, views


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
