"""Flat-minimum baselines: SAM/ASAM, SWA, weight EMA, and BatchNorm recomputation."""

from okdph_keras.baselines.batchnorm import (
    batchnorm_layers,
    batchnorm_statistics,
    recompute_batchnorm,
)
from okdph_keras.baselines.ema import EMABatchNorm, ema_optimizer
from okdph_keras.baselines.sam import SAM, perturbation, sharpness_aware_gradients
from okdph_keras.baselines.swa import SWA, averaged_variables

__all__ = [
    "EMABatchNorm",
    "SAM",
    "SWA",
    "averaged_variables",
    "batchnorm_layers",
    "batchnorm_statistics",
    "ema_optimizer",
    "perturbation",
    "recompute_batchnorm",
    "sharpness_aware_gradients",
]
