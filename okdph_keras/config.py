"""Experiment configuration: plain data, with the reference recipe's defaults."""

import dataclasses
import math
import numbers

from okdph_keras import methods

# (dataset, model) -> (omega, beta, fusion gamma, fusion interval, fusion unit),
# the reference code's table (METHOD.md).
REFERENCE_HYPERPARAMETERS = {
    ("cifar10", "resnet32"): (0.8, 0.8, 0.5, 1, "epoch"),
    ("cifar10", "vgg16"): (0.3, 0.3, 1.0, 1, "epoch"),
    ("cifar10", "densenet_40_12"): (0.8, 0.8, 0.5, 5, "batch"),
    ("cifar10", "wrn_20_8"): (0.8, 0.8, 0.5, 1, "epoch"),
    ("cifar10", "resnet110"): (0.8, 0.8, 0.5, 5, "batch"),
    ("cifar100", "resnet32"): (1.0, 0.5, 1.0, 5, "batch"),
    ("cifar100", "vgg16"): (0.3, 0.3, 1.0, 1, "epoch"),
    ("cifar100", "densenet_40_12"): (1.0, 0.5, 0.5, 5, "batch"),
    ("cifar100", "wrn_20_8"): (0.5, 0.5, 0.5, 5, "batch"),
    ("cifar100", "resnet110"): (0.8, 0.8, 0.5, 5, "batch"),
}
# The paper's defaults, for pairs the table does not list.
PAPER_DEFAULTS = (0.8, 0.8, 0.5, 1, "epoch")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything one training run depends on. JSON-serialisable.

    Attributes:
        dataset: a TFDS name (`"cifar10"`, `"cifar100"`, `"imagenet2012"`, ...)
            or `"image_folder"` (then `data_dir` is the tree's root).
        data_dir: TFDS data directory, or the image tree's root.
        model: an architecture name of `okdph_keras.models.MODELS`.
        views: one view name per network: the students', then the HWM's.
        style: `"cifar"` (pad-and-crop views) or `"imagenet"` (random resized crop).
        image_size: side of the square images the networks see.
        normalization: `(mean, std)` per channel, for images scaled to [0, 1].
        epochs, batch_size: the schedule; `batch_size` is the global batch.
        learning_rate, momentum: SGD's.
        lr_decay_epochs: fractions of `epochs` at which the learning rate is
            multiplied by `lr_decay`.
        weight_decay: coupled L2 (torch `SGD(weight_decay=...)`).
        omega, beta, temperature, hybrid, hwm_gradient: `OKDPH` options.
        fusion_gamma, fusion_every, fusion_unit: `Fusion` options (OKDPH
            only; gamma 0: no fusion).
        method: one of `methods.run_names()`. `"okdph"` is the method; `"independent"`,
            `"dml"` and `"kdcl"` train the same students with another
            objective (`okdph_keras.step.forward`); `"sam"`, `"swa"` and
            `"ema"` train independent students with sharpness-aware
            gradients, stochastic weight averaging or a weight EMA.
        sam_rho, sam_adaptive: SAM's radius, and ASAM instead of SAM.
        swa_start: fraction of the epochs after which SWA averages (every
            epoch end from there on).
        ema_momentum: the weight EMA's momentum.
        sync_bn: BatchNormalization with global batch statistics across
            replicas and workers (`distribute.with_synchronized_batchnorm`).
        noise_mean, noise_std: Gaussian noise added after normalisation, to
            training and test images (0 std: none).
        validation_fraction: fraction of each class of the training split held
            out for validation, which chooses the exported student (0: none;
            then student 0 is exported). The paper trains on the whole split:
            pass 0 to reproduce its setting exactly.
        data_fraction: fraction of each class kept for training (1: all), of
            what remains after the validation split.
        seed: seeds initialisation, shuffling, augmentation and coefficients.
        smoke: a seconds-long run on a tiny slice, for trying a recipe out.
        output_dir: where run directories go.
        run_name: the run directory's name (and the exported student's).
        saved_models_dir: where the best student is exported, to
            `<saved_models_dir>/<run_name>/` whatever `output_dir` is; a
            student another run directory exported there is never
            overwritten (`train.run` refuses before training).
    """

    dataset: str
    model: str
    views: tuple
    style: str
    image_size: int
    normalization: tuple
    data_dir: str = None
    epochs: int = 300
    batch_size: int = 128
    learning_rate: float = 0.1
    momentum: float = 0.9
    lr_decay_epochs: tuple = (0.5, 0.75)
    lr_decay: float = 0.1
    weight_decay: float = 5e-4
    omega: float = 0.8
    beta: float = 0.8
    temperature: float = 4.0
    hybrid: str = "mean"
    hwm_gradient: bool = True
    fusion_gamma: float = 0.5
    fusion_every: int = 1
    fusion_unit: str = "epoch"
    sync_bn: bool = False
    method: str = "okdph"
    sam_rho: float = 0.05
    sam_adaptive: bool = False
    swa_start: float = 0.75
    ema_momentum: float = 0.999
    noise_mean: float = 0.0
    noise_std: float = 0.0
    validation_fraction: float = 0.1
    data_fraction: float = 1.0
    seed: int = 42
    smoke: bool = False
    output_dir: str = "runs"
    run_name: str = None
    saved_models_dir: str = "saved_models"

    @property
    def num_students(self):
        return len(self.views) - 1

    def to_json_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_json_dict(cls, values):
        values = dict(values)
        for name in ("views", "normalization", "lr_decay_epochs"):
            values[name] = _as_tuple(values[name])
        return cls(**values)


def _as_tuple(value):
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


def default_views(dataset_kind, num_students=2):
    """The paper's views for M students and the HWM, students first.

    Args:
        dataset_kind: `"cifar10"`, `"cifar100"` or `"imagenet"`.
        num_students: M. With 2, the dataset's defaults; with 4, the paper's
            four-student setting (hflip, cutout, randaugment, autoaugment;
            HWM none); otherwise the default student views repeated.

    Returns:
        A tuple of M+1 view names.
    """
    from okdph_keras.data.views import DEFAULT_VIEWS  # noqa: PLC0415

    if dataset_kind not in DEFAULT_VIEWS:
        raise ValueError(f"No default views for {dataset_kind!r}; known: {sorted(DEFAULT_VIEWS)}.")
    if isinstance(num_students, bool) or not isinstance(num_students, int) or num_students < 2:
        raise ValueError(
            f"num_students={num_students!r} is not allowed; it must be an integer >= 2."
        )
    if num_students == 4 and dataset_kind != "imagenet":
        return ("hflip", "cutout", "randaugment", "autoaugment", "none")
    *students, hwm = DEFAULT_VIEWS[dataset_kind]
    return tuple(students[m % len(students)] for m in range(num_students)) + (hwm,)


def reference_config(dataset, model, views, style, image_size, normalization, **overrides):
    """A `Config` with the reference recipe's hyperparameters for `(dataset, model)`.

    Args:
        dataset, model, views, style, image_size, normalization: see `Config`.
        **overrides: any other `Config` field; None values are ignored, so
            unset command-line flags keep the defaults.

    Returns:
        A validated `Config` whose `run_name` defaults to
        `<dataset>_<model>_m<M>_seed<seed>` (with `_smoke` for smoke runs).

    Example:
        >>> reference_config("cifar10", "vgg16", ("hflip", "cutout", "randaugment"),
        ...                  "cifar", 32, ((0.49, 0.48, 0.45), (0.20, 0.20, 0.20))).omega
        0.3
    """
    omega, beta, gamma, every, unit = REFERENCE_HYPERPARAMETERS.get(
        (dataset, model), PAPER_DEFAULTS
    )
    values = dict(
        dataset=dataset,
        model=model,
        views=tuple(views),
        style=style,
        image_size=image_size,
        normalization=_as_tuple(normalization),
        omega=omega,
        beta=beta,
        fusion_gamma=gamma,
        fusion_every=every,
        fusion_unit=unit,
    )
    if overrides.get("smoke"):
        values.update(epochs=2, batch_size=16, image_size=min(image_size, 64))
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["views"] = tuple(values["views"])
    if values.get("run_name") is None:
        method = values.get("method", Config.method)
        name = f"{values['dataset']}_{values['model']}" + methods.get(method).run_name_suffix
        name += f"_m{len(values['views']) - 1}"
        name += f"_seed{values.get('seed', Config.seed)}"
        values["run_name"] = name + ("_smoke" if values.get("smoke") else "")
    config = Config(**values)
    validate(config)
    return config


def validate(config):
    """Raises `ValueError` naming the first bad field of `config` and what is allowed."""
    from okdph_keras.data import views as views_lib  # noqa: PLC0415 (data imports config-free)
    from okdph_keras.hybrid import HYBRID_MODES  # noqa: PLC0415
    from okdph_keras.models import MODELS  # noqa: PLC0415

    def fail(name, allowed):
        raise ValueError(f"{name}={getattr(config, name)!r} is not allowed; {allowed}.")

    if config.model not in MODELS:
        fail("model", f"known models: {sorted(MODELS)}")
    if len(config.views) < 3:
        fail("views", "give one view per network: at least 2 students, then the HWM")
    unknown = [v for v in config.views if v not in views_lib.VIEW_NAMES]
    if unknown:
        raise ValueError(f"Unknown view {unknown[0]!r}; known views: {list(views_lib.VIEW_NAMES)}.")
    if config.style not in ("cifar", "imagenet"):
        fail("style", "expected 'cifar' or 'imagenet'")
    for name in ("epochs", "batch_size", "image_size", "fusion_every"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail(name, "it must be an integer >= 1")
    for name, low, high in (
        ("learning_rate", 0.0, math.inf),
        ("momentum", 0.0, 1.0),
        ("lr_decay", 0.0, 1.0),
        ("weight_decay", 0.0, math.inf),
        ("noise_std", 0.0, math.inf),
        ("omega", 0.0, 1.0),
        ("beta", 0.0, math.inf),
        ("fusion_gamma", 0.0, 1.0),
    ):
        if not _is_number(getattr(config, name)) or not low <= getattr(config, name) <= high:
            fail(name, f"it must be a number in [{low}, {high}{')' if high == math.inf else ']'}")
    if not _is_number(config.temperature) or not 0.0 < config.temperature < math.inf:
        fail("temperature", "it must be a number > 0")
    if not _is_number(config.noise_mean) or not math.isfinite(config.noise_mean):
        fail("noise_mean", "it must be a finite number")
    if not _is_number(config.data_fraction) or not 0.0 < config.data_fraction <= 1.0:
        fail("data_fraction", "it must be in (0, 1]")
    if not _is_number(config.validation_fraction) or not 0.0 <= config.validation_fraction < 1.0:
        fail("validation_fraction", "it must be in [0, 1)")
    allowed = "each must be a fraction of the epochs in (0, 1)"
    if not isinstance(config.lr_decay_epochs, (tuple, list)):
        fail("lr_decay_epochs", f"give a tuple of fractions; {allowed}")
    for fraction in config.lr_decay_epochs:
        if not _is_number(fraction) or not 0.0 < fraction < 1.0:
            fail("lr_decay_epochs", f"{allowed}; {fraction!r} is not")
    if config.hybrid not in HYBRID_MODES:
        fail("hybrid", f"expected one of {HYBRID_MODES}")
    if config.method not in methods.run_names():
        fail("method", f"expected one of {methods.run_names()}")
    if not 0.0 <= config.swa_start < 1.0:
        fail("swa_start", "it must be a fraction of the epochs in [0, 1)")
    if not 0.0 <= config.ema_momentum < 1.0:
        fail("ema_momentum", "it must be in [0, 1)")
    if not config.sam_rho > 0.0:
        fail("sam_rho", "it must be > 0")
    for name in ("hwm_gradient", "sync_bn", "smoke", "sam_adaptive"):
        if not isinstance(getattr(config, name), bool):
            fail(name, "expected True or False")
    if config.fusion_unit not in ("epoch", "batch"):
        fail("fusion_unit", "expected 'epoch' or 'batch'")
    normalization = config.normalization
    if (
        not isinstance(normalization, (tuple, list))
        or len(normalization) != 2
        or not all(isinstance(values, (tuple, list)) and values for values in normalization)
        or len(normalization[0]) != len(normalization[1])
        or not all(_is_number(v) and math.isfinite(v) for values in normalization for v in values)
    ):
        fail("normalization", "expected (mean, std) with one value per channel each")
    if not all(v > 0 for v in normalization[1]):
        fail("normalization", "every std must be > 0")
    run_name = config.run_name
    if not isinstance(run_name, str) or not run_name or "/" in run_name or run_name.startswith("."):
        fail("run_name", "it must be a plain directory name")


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
