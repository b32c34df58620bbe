"""Architectures. Nothing here knows of OKDPH: any classifier can be a student."""

from okdph_keras.models.registry import MODELS, get_model
from okdph_keras.models.small_cnn import small_cnn
