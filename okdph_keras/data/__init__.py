"""Data pipelines. Nothing here knows of models."""

from okdph_keras.data.pipeline import multi_view_dataset
