"""Flat-minimum baselines: SAM/ASAM, SWA, weight EMA, and BatchNorm recomputation.

Also the loss terms and layers of the multi-branch online-distillation baselines
(ONE, CL-ILR, OKDDip, FFL, PCL) and of Mean Teacher.
"""

from okdph_keras.baselines.batchnorm import (
    batchnorm_layers,
    batchnorm_statistics,
    recompute_batchnorm,
)
from okdph_keras.baselines.branch_layers import FusionModule, OkddipAttention, OneGate
from okdph_keras.baselines.branch_losses import (
    cl_ilr_terms,
    ema_update,
    ffl_terms,
    mean_teacher_terms,
    okddip_terms,
    one_terms,
    pcl_terms,
    rampup,
    scale_gradient,
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
    "FusionModule",
    "OkddipAttention",
    "OneGate",
    "cl_ilr_terms",
    "ema_update",
    "ffl_terms",
    "mean_teacher_terms",
    "okddip_terms",
    "one_terms",
    "pcl_terms",
    "rampup",
    "scale_gradient",
]
