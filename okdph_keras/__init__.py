"""okdph-keras: online knowledge distillation via parameter hybridization (OKDPH).

Names and submodules are imported on first use (PEP 562), so that `import okdph_keras`
is cheap and `python -m okdph_keras.predict` starts without Keras or the training code.
To export a name, add it to `_NAMES` (name -> the submodule defining it) or a submodule to
`_SUBMODULES`; `__all__` follows.
"""

import importlib

__version__ = "0.1.0"

# Submodules in `__all__` (also reachable as attributes, e.g. `okdph_keras.train`).
_SUBMODULES = (
    "analysis",
    "baselines",
    "callbacks",
    "data",
    "distribute",
    "hybrid",
    "hyperparameters",
    "loop",
    "losses",
    "methods",
    "models",
    "onednn",
    "step",
    "train",
)
# Further submodules reachable as attributes, not in `__all__`.
_OTHER_SUBMODULES = (
    "adaptive_fusion",
    "checkpointing",
    "config",
    "curves",
    "export",
    "hwm",
    "labels",
    "model",
    "network_metrics",
    "predict",
    "rundir",
    "run_data",
    "run_results",
    "stateless_random",
    "student_copy",
    "students",
    "validation",
)
_NAMES = {
    "Fusion": "callbacks",
    "AdaptiveFusion": "adaptive_fusion",
    "EvaluateEachEpoch": "callbacks",
    "Config": "config",
    "default_views": "config",
    "reference_config": "config",
    "make_strategy": "distribute",
    "with_synchronized_batchnorm": "distribute",
    "load_source": "data",
    "from_arrays": "data",
    "eval_dataset": "data",
    "export_student": "export",
    "plain_student": "student_copy",
    "make_view": "data",
    "multi_view_dataset": "data",
    "convex_combination": "hybrid",
    "sample_coefficients": "hybrid",
    "OKDPH": "model",
    "get_model": "models",
}

__all__ = [*_SUBMODULES, *_NAMES]


def __getattr__(name):
    if name in _NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
        globals()[name] = value  # once imported, an ordinary attribute
        return value
    if name in _SUBMODULES or name in _OTHER_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")  # which sets the attribute
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__, *_OTHER_SUBMODULES})
