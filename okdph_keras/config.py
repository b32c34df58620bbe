"""Experiment configuration: plain data; the method fills in what is left unset.

Every field is a recipe flag of the same name (`recipes/common.py` derives the flags
from the fields and their help), and a key of a run's `config.json`.
"""

import dataclasses
import math

from okdph_keras import hyperparameters, methods, validation
from okdph_keras.data.views import DEFAULT_VIEWS, STYLES, VIEW_NAMES

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def _field(help, default=dataclasses.MISSING, *, flag=True, item=None, choices=()):
    """A `Config` field and what its flag needs: one line of help, whether it is a flag,
    the type of a tuple's items, the allowed values."""
    metadata = {"help": help, "flag": flag, "item": item, "choices": choices}
    return dataclasses.field(default=default, metadata=metadata)


def _hyperparameter(name):
    """A method hyperparameter: None (the default) means "the method's default"."""
    spec = hyperparameters.HYPERPARAMETERS[name]
    return _field(spec.help, None, choices=spec.choices)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything one training run depends on. JSON-serialisable.

    Each field's help is `dataclasses.fields(Config)[i].metadata["help"]` (the recipes'
    `--help` shows it). The method's hyperparameters (`okdph_keras.hyperparameters`)
    default to None, "the method's default"; `resolved()` fills them in from the
    method (`okdph_keras.methods`), which `train.run` does before anything else, so a
    run directory's `config.json` records every value the run used.

    Example:
        >>> config = Config("cifar10", "resnet32", ("hflip", "cutout", "none"), "cifar", 32,
        ...                 ((0.49, 0.48, 0.45), (0.25, 0.24, 0.26)), method="dml")
        >>> config.beta, config.resolved().beta
        (None, 1.0)
    """

    dataset: str = _field(
        "A TFDS name (cifar10, cifar100, imagenet2012, ...) or image_folder.", flag=False
    )
    model: str = _field(
        "Student architecture (okdph_keras.models.MODELS); with groups, the one exported."
    )
    views: tuple = _field(
        "One view per network, students then HWM(s) (default: the dataset's).", item=str
    )
    style: str = _field(
        "Augmentation style: cifar (pad and crop) or imagenet (resized crop).",
        choices=STYLES,
    )
    image_size: int = _field("Side of the square images the networks see.")
    normalization: tuple = _field("Per-channel (mean, std) of images in [0, 1].", flag=False)
    data_dir: str = _field("TFDS data directory, or the root of an image tree.", None)
    groups: tuple = _field(
        "Students in groups of one architecture, ((architecture, count), ...), for a method "
        "that takes groups (okdph_groups); None: config.model for every student. The "
        "recipes' --students=ARCH:COUNT,... sets it.",
        None,
        flag=False,
    )
    epochs: int = _field("Epochs.", 300)
    batch_size: int = _field("Global batch size.", 128)
    learning_rate: float = _field("SGD learning rate.", 0.1)
    momentum: float = _field("SGD momentum.", 0.9)
    lr_decay_epochs: tuple = _field(
        "Fractions of the epochs where the learning rate is multiplied by --lr_decay.",
        (0.5, 0.75),
        item=float,
    )
    lr_decay: float = _field("Learning-rate decay factor.", 0.1)
    weight_decay: float = _field("Coupled L2, torch-style SGD(weight_decay=...).", 5e-4)
    method: str = _field("Training method.", "okdph", choices=methods.run_names())
    omega: float = _hyperparameter("omega")
    beta: float = _hyperparameter("beta")
    temperature: float = _hyperparameter("temperature")
    hybrid: str = _hyperparameter("hybrid")
    hybrid_samples: int = _hyperparameter("hybrid_samples")
    hwm_gradient: bool = _hyperparameter("hwm_gradient")
    fusion_gamma: float = _hyperparameter("fusion_gamma")
    fusion_every: int = _hyperparameter("fusion_every")
    fusion_unit: str = _hyperparameter("fusion_unit")
    sam_rho: float = _hyperparameter("sam_rho")
    sam_adaptive: bool = _hyperparameter("sam_adaptive")
    label_smoothing: float = _hyperparameter("label_smoothing")
    swa_start: float = _hyperparameter("swa_start")
    swa_lr: float = _hyperparameter("swa_lr")
    ema_momentum: float = _hyperparameter("ema_momentum")
    rampup_epochs: float = _hyperparameter("rampup_epochs")
    ema_decay: float = _hyperparameter("ema_decay")
    fusion_threshold: float = _hyperparameter("fusion_threshold")
    fusion_adaptive_gamma: bool = _hyperparameter("fusion_adaptive_gamma")
    sync_bn: bool = _field("Synchronise BatchNorm statistics across replicas and workers.", False)
    precision: str = _field(
        "Keras dtype policy of the networks: float32, or mixed precision (float32 variables, "
        "bfloat16 or float16 compute; float16 with dynamic loss scaling).",
        "float32",
        choices=PRECISIONS,
    )
    noise_mean: float = _field("Mean of Gaussian input noise after normalisation.", 0.0)
    noise_std: float = _field(
        "Std of Gaussian noise added after normalisation, to training and test images.", 0.0
    )
    validation_fraction: float = _field(
        "Fraction of each training class held out to choose the exported student "
        "(0 trains on the whole split, as the paper).",
        0.1,
    )
    data_fraction: float = _field(
        "Fraction of each class kept for training, after the validation split.", 1.0
    )
    seed: int = _field("Seeds initialisation, shuffling, augmentation and coefficients.", 42)
    smoke: bool = _field("A seconds-long run on a tiny slice, for trying a recipe out.", False)
    output_dir: str = _field("Where run directories go.", "runs")
    run_name: str = _field(
        "Run directory name (default: from dataset, model, method, M and seed).", None
    )
    saved_models_dir: str = _field(
        "Where the best student is exported, as <dir>/<run name>/student.keras, whatever "
        "--output_dir; a student another run directory exported is never overwritten.",
        "saved_models",
    )

    @property
    def num_students(self):
        if self.groups:
            return sum(count for _, count in self.groups)
        return len(self.views) - 1

    def student_groups(self):
        """`((architecture, count), ...)`: `groups`, or one group of `model`."""
        return tuple(self.groups) if self.groups else ((self.model, self.num_students),)

    def student_architectures(self):
        """The architecture of each student, in order (`student_<m>`)."""
        return [model for model, count in self.student_groups() for _ in range(count)]

    def without_groups(self):
        """This config for `model` alone: its group's students, each group's views kept.

        For a comparison's methods that take no groups: the small architecture
        trained alone or homogeneously, with its students' views and the HWM's.
        """
        if not self.groups:
            return self
        own = [v for v, a in zip(self.views, self.student_architectures()) if a == self.model]
        if len(own) < 2:  # a group of one: a second student with the same view
            own *= 2
        views = tuple(own) + self.views[self.num_students :][:1]
        return dataclasses.replace(self, groups=None, views=views)

    def resolved(self):
        """This config with every unset hyperparameter set to the method's default.

        Raises:
            ValueError: for an unknown method or a bad hyperparameter.
        """
        names = hyperparameters.HYPERPARAMETERS
        settings = methods.get(self.method, what="method").settings(
            {name: getattr(self, name) for name in names}, dataset=self.dataset, model=self.model
        )
        return dataclasses.replace(self, **settings)

    def to_json_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_json_dict(cls, values):
        values = dict(values)
        for name in ("views", "normalization", "lr_decay_epochs", "groups"):
            values[name] = _as_tuple(values.get(name))
        return cls(**values)


def _as_tuple(value):
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


def default_views(dataset_kind, num_students=2, num_hwms=1):
    """The paper's views for M students and the HWM, students first.

    Args:
        dataset_kind: `"cifar10"`, `"cifar100"` or `"imagenet"`.
        num_students: M. With 2, the dataset's defaults; with 4, the paper's
            four-student setting (hflip, cutout, randaugment, autoaugment;
            HWM none); otherwise the default student views repeated.
        num_hwms: HWMs (one per group of two or more students, with groups);
            each takes the HWM's view.

    Returns:
        A tuple of M + num_hwms view names.
    """
    if dataset_kind not in DEFAULT_VIEWS:
        raise ValueError(f"No default views for {dataset_kind!r}; known: {sorted(DEFAULT_VIEWS)}.")
    validation.check_integer("num_students", num_students, low=2)
    if num_students == 4 and dataset_kind != "imagenet":
        return ("hflip", "cutout", "randaugment", "autoaugment") + ("none",) * num_hwms
    *students, hwm = DEFAULT_VIEWS[dataset_kind]
    return tuple(students[m % len(students)] for m in range(num_students)) + (hwm,) * num_hwms


def group_views(dataset_kind, groups):
    """Default views for students in groups: each group the dataset's two-student views
    (repeated), then the HWM's view for each group of two or more.

    Example:
        >>> group_views("cifar10", (("resnet32", 2), ("small_cnn", 1)))
        ('hflip', 'cutout', 'hflip', 'randaugment')
    """
    *students, hwm = default_views(dataset_kind, 2)
    views = tuple(students[m % len(students)] for _, count in groups for m in range(count))
    return views + (hwm,) * num_hwms(groups)


def parse_students(text):
    """`--students`: a count M, or groups `ARCH:COUNT,...`.

    Args:
        text: `"4"`, or `"resnet110:2,resnet32:2"`.

    Returns:
        `(count, groups)`: an int and None, or None and `((arch, count), ...)`.

    Example:
        >>> parse_students("resnet110:2,resnet32:1")
        (None, (('resnet110', 2), ('resnet32', 1)))
    """
    allowed = "a count (e.g. 2) or groups ARCH:COUNT,... (e.g. resnet110:2,resnet32:2)"
    text = str(text).strip()
    if ":" not in text:
        if not text.isdigit():
            validation.fail("students", text, allowed)
        return validation.check_integer("students", int(text), low=2), None
    groups = []
    for item in text.split(","):
        model, _, count = item.strip().partition(":")
        if not model or not count.isdigit() or int(count) < 1:
            validation.fail("students", text, allowed + f"; {item!r} is not ARCH:COUNT")
        groups.append((model, int(count)))
    return None, tuple(groups)


def num_hwms(groups):
    """The HWMs of `groups`: one per group of two or more students."""
    return sum(1 for _, count in groups if count >= 2)


def reference_config(dataset, model, views, style, image_size, normalization, **overrides):
    """A validated `Config` of the reference recipe, its method's settings filled in.

    Args:
        dataset, model, views, style, image_size, normalization: see `Config`.
        **overrides: any other `Config` field; None values are ignored, so
            unset command-line flags keep the defaults.

    Returns:
        A validated `Config` whose `run_name` defaults to
        `<dataset>_<model>[_<method>]_m<M>_seed<seed>` (with `_smoke` for smoke runs).
        Its unset hyperparameters are left to the method (`Config.resolved()`):
        for OKDPH, the reference code's table for `(dataset, model)`.

    Example:
        >>> reference_config("cifar10", "vgg16", ("hflip", "cutout", "randaugment"),
        ...                  "cifar", 32, ((0.49, 0.48, 0.45), (0.20, 0.20, 0.20))).resolved().omega
        0.3
    """
    values = dict(
        dataset=dataset,
        model=model,
        views=tuple(views),
        style=style,
        image_size=image_size,
        normalization=_as_tuple(normalization),
    )
    if overrides.get("smoke"):
        values.update(epochs=2, batch_size=16, image_size=min(image_size, 64))
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["views"] = tuple(values["views"])
    if values.get("run_name") is None:
        method = methods.get(values.get("method", Config.method), what="method")
        name = f"{values['dataset']}_{values['model']}{method.run_name_suffix}"
        groups = values.get("groups")
        size = "_".join(f"{m}x{c}" for m, c in groups) if groups else f"m{len(values['views']) - 1}"
        name += f"_{size}_seed{values.get('seed', Config.seed)}"
        values["run_name"] = name + ("_smoke" if values.get("smoke") else "")
    config = Config(**values)
    validate(config)
    return config


def validate(config):
    """Raises `ValueError` naming the first bad field of `config` and what is allowed."""
    from okdph_keras.models import MODELS  # noqa: PLC0415

    validation.check_choice("method", config.method, methods.run_names())
    config.resolved()  # the method's hyperparameters
    validation.check_choice("model", config.model, sorted(MODELS))
    if config.groups is not None:
        _check_groups(config)
    elif not isinstance(config.views, (tuple, list)) or len(config.views) < 3:
        validation.fail(
            "views", config.views, "one view per network: at least 2 students, then the HWM"
        )
    for view in config.views:
        validation.check_choice("view", view, VIEW_NAMES)
    validation.check_choice("style", config.style, STYLES)
    validation.check_choice("precision", config.precision, PRECISIONS)
    for name in ("epochs", "batch_size", "image_size"):
        validation.check_integer(name, getattr(config, name), low=1)
    for name in ("learning_rate", "weight_decay", "noise_std"):
        validation.check_number(name, getattr(config, name), low=0.0)
    validation.check_number("momentum", config.momentum, low=0.0, high=1.0)
    validation.check_number("lr_decay", config.lr_decay, low=0.0, high=1.0)
    validation.check_number("noise_mean", config.noise_mean)
    validation.check_number("data_fraction", config.data_fraction, low=0.0, low_open=True, high=1.0)
    validation.check_number(
        "validation_fraction", config.validation_fraction, low=0.0, high=1.0, high_open=True
    )
    fractions = config.lr_decay_epochs
    if not isinstance(fractions, (tuple, list)) or not all(
        validation.is_number(f) and 0.0 < f < 1.0 for f in fractions
    ):
        validation.fail(
            "lr_decay_epochs", fractions, "a tuple of fractions of the epochs in (0, 1)"
        )
    for name in ("sync_bn", "smoke"):
        validation.check_bool(name, getattr(config, name))
    _check_normalization(config.normalization)
    run_name = config.run_name
    if not isinstance(run_name, str) or not run_name or "/" in run_name or run_name.startswith("."):
        validation.fail("run_name", run_name, "a plain directory name")


def _check_groups(config):
    from okdph_keras.models import MODELS  # noqa: PLC0415

    if not methods.get(methods.get(config.method).objective_name).takes_groups:
        allowed = [n for n in methods.run_names() if methods.get(n).takes_groups]
        validation.fail(
            "method", config.method, f"one of {allowed} with groups of students ({config.groups})"
        )
    groups = config.groups
    if not isinstance(groups, (tuple, list)) or not groups:
        validation.fail("groups", groups, "((architecture, count), ...)")
    for model, count in groups:
        validation.check_choice("group architecture", model, sorted(MODELS))
        validation.check_integer(f"the count of {model}", count, low=1)
    architectures = [model for model, _ in groups]
    if len(set(architectures)) != len(architectures):
        validation.fail("groups", groups, "one group per architecture")
    if num_hwms(groups) == 0:
        validation.fail("groups", groups, "at least one group of two or more students")
    validation.check_choice("model (the architecture exported)", config.model, architectures)
    wanted = config.num_students + num_hwms(groups)
    if not isinstance(config.views, (tuple, list)) or len(config.views) != wanted:
        validation.fail(
            "views",
            config.views,
            f"{wanted} views: one per student ({config.num_students}), then one per HWM "
            f"({num_hwms(groups)}, one per group of two or more)",
        )


def _check_normalization(normalization):
    allowed = "(mean, std) with one finite value per channel each, every std > 0"
    if (
        not isinstance(normalization, (tuple, list))
        or len(normalization) != 2
        or not all(isinstance(values, (tuple, list)) and values for values in normalization)
        or len(normalization[0]) != len(normalization[1])
        or not all(
            validation.is_number(v) and math.isfinite(v) for values in normalization for v in values
        )
        or not all(v > 0 for v in normalization[1])
    ):
        validation.fail("normalization", normalization, allowed)
