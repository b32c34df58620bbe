"""Training methods: one object each, registered by name. The only module that knows names.

A method says whether it trains the hybrid-weight model (HWM), how it turns the
networks' logits into losses, which hyperparameters it uses and their defaults, which
callbacks and optimizer wrapping a run needs, and whether its final weights are an
average. `step.forward`, `OKDPH`, `Config`, `train.run`, `compare` and the recipes look
methods up here (`get`, `names`) and ask the object.

Example:
    >>> get("dml").uses_hwm
    False
    >>> [name for name in names() if get(name).averages_weights]
    ['swa', 'ema']
    >>> get("okdph").settings({"omega": None}, dataset="cifar10", model="vgg16")["omega"]
    0.3
"""

from okdph_keras import validation
from okdph_keras.methods.base import Method
from okdph_keras.methods.branches import (
    BranchDistillation,
    CollaborativeBranches,
    DiversePeers,
    FeatureFusion,
    NativeEnsemble,
    PeerCollaboration,
)
from okdph_keras.methods.distillation import (
    REFERENCE_SETTINGS,
    AdaptiveHybridDistillation,
    CollaborativeLearning,
    HybridDistillation,
    MutualLearning,
)
from okdph_keras.methods.extensions import HybridGroups, HybridSamples
from okdph_keras.methods.flat_minima import (
    MeanTeacher,
    SharpnessAware,
    WeightAveraging,
    WeightEMA,
)

__all__ = [
    "PAPER",
    "REFERENCE_SETTINGS",
    "AdaptiveHybridDistillation",
    "BranchDistillation",
    "CollaborativeBranches",
    "CollaborativeLearning",
    "DiversePeers",
    "FeatureFusion",
    "HybridDistillation",
    "HybridGroups",
    "HybridSamples",
    "MeanTeacher",
    "Method",
    "MutualLearning",
    "NativeEnsemble",
    "PeerCollaboration",
    "SharpnessAware",
    "WeightAveraging",
    "WeightEMA",
    "get",
    "names",
    "register",
    "run_names",
]

_REGISTRY = {}


def register(method):
    """Adds `method` (a `Method` instance) to the registry under `method.name`; returns it."""
    if method.name in _REGISTRY:
        raise ValueError(f"A method named {method.name!r} is already registered.")
    _REGISTRY[method.name] = method
    return method


def names(*, trainable_by_model=False):
    """The registered method names, in registration order.

    Args:
        trainable_by_model: only the methods `OKDPH(objective=...)` trains by
            itself (no callback, optimizer wrapping or ablation overrides needed).
    """
    return tuple(
        name
        for name, method in _REGISTRY.items()
        if not trainable_by_model or method.objective_name == name
    )


def get(name, *, what="method", trainable_by_model=False):
    """The registered `Method` called `name`.

    Raises:
        ValueError: `<what>=<name> is not allowed; it must be one of (<the allowed names>)`.
    """
    return _REGISTRY[
        validation.check_choice(what, name, names(trainable_by_model=trainable_by_model))
    ]


for _method in (
    HybridDistillation("okdph"),
    Method("independent"),
    MutualLearning("dml"),
    CollaborativeLearning("kdcl"),
    SharpnessAware("sam"),
    WeightAveraging("swa", objective_name="independent"),
    WeightEMA("ema", objective_name="independent"),
    MeanTeacher("mean_teacher"),
    NativeEnsemble("one"),
    CollaborativeBranches("cl_ilr"),
    DiversePeers("okddip"),
    FeatureFusion("ffl"),
    PeerCollaboration("pcl"),
    # Beyond the paper (issue 14): groups of several architectures, K hybrids per batch,
    # fusion when the students have drifted from their hybrid.
    HybridGroups("okdph_groups"),
    HybridSamples("okdph_multi_hwm"),
    AdaptiveHybridDistillation("okdph_adaptive", objective_name="okdph"),
    # The paper's OKDPH ablations: OKDPH with one `Config` field changed.
    HybridDistillation(
        "okdph_no_hwm_loss", objective_name="okdph", config_overrides={"omega": 1.0}
    ),
    HybridDistillation(
        "okdph_no_fusion", objective_name="okdph", config_overrides={"fusion_gamma": 0.0}
    ),
    HybridDistillation(
        "okdph_dirichlet", objective_name="okdph", config_overrides={"hybrid": "dirichlet"}
    ),
    HybridDistillation(
        "okdph_reference", objective_name="okdph", config_overrides={"hwm_gradient": False}
    ),
):
    register(_method)


# The paper's comparison (Tables 1-3): independent training, the online-distillation
# baselines, the flat-minima baselines ("EMA" is Mean Teacher), then OKDPH.
PAPER = (
    "independent",
    "dml",
    "one",
    "cl_ilr",
    "okddip",
    "kdcl",
    "ffl",
    "pcl",
    "mean_teacher",
    "swa",
    "sam",
    "okdph",
)


def run_names():
    """The names `Config.method` takes: every method that is not an ablation."""
    return tuple(name for name in names() if not get(name).config_overrides)
