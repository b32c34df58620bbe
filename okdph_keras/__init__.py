"""okdph-keras: online knowledge distillation via parameter hybridization (OKDPH)."""

from okdph_keras import callbacks, data, hybrid, losses, models, step, train
from okdph_keras.callbacks import Fusion
from okdph_keras.config import Config, default_views, reference_config
from okdph_keras.data import load_source, make_view, multi_view_dataset
from okdph_keras.hybrid import convex_combination, sample_coefficients
from okdph_keras.model import OKDPH
from okdph_keras.models import get_model

__version__ = "0.1.0"
