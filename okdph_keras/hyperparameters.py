"""The methods' hyperparameters: each one's help and check, written once.

A method (`okdph_keras.methods`) names the hyperparameters it uses and their
defaults; `Config`, the recipes' flags and `OKDPH` take them by these names and
check them here, so a bad value fails the same way wherever it enters.

Example:
    >>> check("omega", 1.5)
    Traceback (most recent call last):
    ValueError: omega=1.5 is not allowed; it must be a number in [0, 1].
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

from okdph_keras import validation
from okdph_keras.callbacks import FUSION_UNITS
from okdph_keras.hybrid import HYBRID_MODES


class Hyperparameter(NamedTuple):
    """A hyperparameter: its type (for flags), one line of help, its check, and whether
    the per-batch step uses it (`OKDPH` holds those; the others configure callbacks or
    the optimizer)."""

    type: type
    help: str
    check: Callable
    choices: tuple = ()
    in_step: bool = True


def _number(**bounds):
    return functools.partial(validation.check_number, **bounds)


def _choice(choices):
    return functools.partial(validation.check_choice, choices=choices)


HYPERPARAMETERS = {
    "omega": Hyperparameter(
        float,
        "Weight of each student's own CE; 1 - omega weighs the HWM's CE.",
        _number(low=0.0, high=1.0),
    ),
    "beta": Hyperparameter(float, "Weight of the distillation term.", _number(low=0.0)),
    "temperature": Hyperparameter(
        float, "Distillation temperature tau.", _number(low=0.0, low_open=True)
    ),
    "hybrid": Hyperparameter(
        str,
        "HWM coefficients: mean (1/M) or dirichlet (fresh Dir(1) draws every batch).",
        _choice(HYBRID_MODES),
        HYBRID_MODES,
    ),
    "hybrid_samples": Hyperparameter(
        int,
        "Hybrid-weight models per batch K (okdph_multi_hwm): K Dirichlet draws, mean HWM CE.",
        functools.partial(validation.check_integer, low=1),
    ),
    "hwm_gradient": Hyperparameter(
        bool,
        "The HWM's loss reaches the students (the paper) or not (the reference code).",
        validation.check_bool,
    ),
    "fusion_gamma": Hyperparameter(
        float,
        "Fusion ratio: theta_m <- gamma*theta_h + (1-gamma)*theta_m; 0: no fusion.",
        _number(low=0.0, high=1.0),
        in_step=False,
    ),
    "fusion_every": Hyperparameter(
        int,
        "Fusion interval, in --fusion_unit.",
        functools.partial(validation.check_integer, low=1),
        in_step=False,
    ),
    "fusion_unit": Hyperparameter(
        str, "Unit of the fusion interval.", _choice(FUSION_UNITS), FUSION_UNITS, in_step=False
    ),
    "fusion_threshold": Hyperparameter(
        float,
        "Adaptive fusion: fuse at an epoch's end once max_m ||theta_m - theta_h|| / ||theta_h|| "
        "reaches it.",
        _number(low=0.0),
        in_step=False,
    ),
    "fusion_adaptive_gamma": Hyperparameter(
        bool,
        "Adaptive fusion: gamma grows with the distance, so that each fusion leaves the "
        "students at (1 - gamma) * --fusion_threshold.",
        validation.check_bool,
        in_step=False,
    ),
    "sam_rho": Hyperparameter(
        float, "SAM's radius.", _number(low=0.0, low_open=True), in_step=False
    ),
    "sam_adaptive": Hyperparameter(
        bool, "ASAM instead of SAM.", validation.check_bool, in_step=False
    ),
    "label_smoothing": Hyperparameter(
        float,
        "Label smoothing of the students' CE: 1 - eps on the label, eps/(C-1) on each other class.",
        _number(low=0.0, high=1.0, high_open=True),
    ),
    "swa_start": Hyperparameter(
        float,
        "Fraction of the epochs after which SWA averages (every epoch end from there on).",
        _number(low=0.0, high=1.0, high_open=True),
        in_step=False,
    ),
    "swa_lr": Hyperparameter(
        float,
        "SWA's learning rate: the schedule decays --learning_rate to it before --swa_start.",
        _number(low=0.0, low_open=True),
        in_step=False,
    ),
    "ema_momentum": Hyperparameter(
        float,
        "Momentum of the weight EMA.",
        _number(low=0.0, high=1.0, high_open=True),
        in_step=False,
    ),
    "rampup_epochs": Hyperparameter(
        float,
        "Epochs over which the distillation weight ramps up as exp(-5 (1 - e/L)^2); 0: none.",
        _number(low=0.0),
    ),
    "ema_decay": Hyperparameter(
        float,
        "Largest decay a of the teacher's EMA, theta_t <- a theta_t + (1 - a) theta_s.",
        _number(low=0.0, high=1.0),
    ),
}


def check(name, value):
    """`value` checked as the hyperparameter `name` (None passes: "the method's default")."""
    if value is None:
        return None
    return HYPERPARAMETERS[name].check(name, value)
