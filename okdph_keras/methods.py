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

import os

import keras
import tensorflow as tf

from okdph_keras import baselines, hwm, hyperparameters, losses, validation
from okdph_keras.baselines.swa import SWALearningRate
from okdph_keras.callbacks import Fusion

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


class Method:
    """Independent training: `L_m = CE(z_m)`; the students never interact.

    Subclasses override what differs. Attributes:
        name: the registry name (`Config.method`, `--method`).
        defaults: the hyperparameters (`okdph_keras.hyperparameters`) the method
            uses, with its defaults. Every method reports the HWM, so every
            method has `hybrid` and `hwm_gradient`.
        objective_name: the method whose losses the students train with inside
            `OKDPH` (itself, unless the method only adds callbacks, an optimizer
            wrapping or sharpness-aware gradients to another's losses).
        uses_hwm: whether training runs (and reports) the HWM.
        averages_weights: whether the trained weights are replaced by an
            average when training ends (then BatchNorm is recomputed).
        config_overrides: `Config` fields this method sets (ablations).
    """

    uses_hwm = False
    averages_weights = False
    defaults = {"hybrid": "mean", "hwm_gradient": True}

    def __init__(self, name, *, objective_name=None, config_overrides=None):
        self.name = name
        self.objective_name = objective_name or name
        self.config_overrides = dict(config_overrides or {})

    def default_settings(self, *, dataset=None, model=None):
        """This method's hyperparameter defaults, for `(dataset, model)` where they depend on it."""
        del dataset, model
        return dict(self.defaults)

    def settings(self, values, *, dataset=None, model=None):
        """The hyperparameters a run of this method trains with, each checked once.

        Args:
            values: hyperparameter name -> the user's value, None meaning "the
                method's default". Values of hyperparameters the method does not
                use are checked and kept.
            dataset, model: the run's, for defaults that depend on them.

        Returns:
            name -> value: the method's defaults, overridden by the values given.
        """
        given = {name: hyperparameters.check(name, v) for name, v in values.items()}
        return {
            **self.default_settings(dataset=dataset, model=model),
            **{name: v for name, v in given.items() if v is not None},
        }

    @property
    def config_method(self):
        """The `Config.method` of a run of this method (an ablation runs its base method)."""
        return self.objective_name if self.config_overrides else self.name

    @property
    def run_name_suffix(self):
        """What the default run name adds for this method (`_dml`, ...)."""
        return f"_{self.name}"

    def network_logits(self, students, views, coefficients, *, training, **hwm_options):
        """`(student_logits, hwm_logits)`: every network's logits on its view.

        Out of training the HWM runs for every method (it is reported); in
        training only for methods that use it (`uses_hwm`), else `hwm_logits` is
        None. A method whose peers are not separate networks (branches of one
        network, say) overrides this. Arguments (`hwm_options`: `hwm_gradient`,
        `hwm_state`): see `hwm.network_logits`.
        """
        if self.uses_hwm or not training:
            return hwm.network_logits(
                students, views, coefficients, training=training, **hwm_options
            )
        return [student(view, training=training) for student, view in zip(students, views)], None

    def cross_entropy(self, labels, logits, settings):
        """A student's `CE(z_m)` (mean over the batch) from integer labels `[B]` and its logits.

        `settings`: the run's hyperparameters (`settings`), for a CE that has some.
        """
        del settings
        return losses.cross_entropy(labels, logits)

    def distillation_terms(self, student_logits, hwm_logits, temperature):
        """Student m's distillation term, for each m."""
        del hwm_logits, temperature
        return [tf.zeros([]) for _ in student_logits]

    def total_loss(self, *, student_ce, hwm_ce, kd, omega, beta):
        """`sum_m L_m` from the cross-entropies and distillation terms."""
        del hwm_ce, kd, omega, beta
        return tf.add_n(student_ce)

    def sharpness(self, config):
        """`{"rho": ..., "adaptive": ...}` for sharpness-aware gradients, or None."""
        del config
        return None

    def callbacks(self, config, *, run_dir, bn_data, chief):
        """The callbacks a run of this method trains with."""
        del config, run_dir, bn_data, chief
        return []

    def learning_rate_schedule(self, config, steps_per_epoch):
        """The run's SGD learning rate, a `keras.optimizers.schedules.LearningRateSchedule`.

        By default x `lr_decay` at each of `config.lr_decay_epochs` (fractions of
        the epochs; `config` is the run's resolved `Config`).
        """
        # PiecewiseConstantDecay keeps a value up to its boundary inclusive: the last
        # step of the epoch before each decay is the boundary.
        boundaries = [
            int(round(f * config.epochs)) * steps_per_epoch - 1 for f in config.lr_decay_epochs
        ]
        values = [config.learning_rate * config.lr_decay**k for k in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)

    def wrap_optimizer(self, optimizer, config):
        """The optimizer a run trains with, built from plain SGD."""
        del config
        return optimizer

    def trained_students(self, students):
        """The students whose variables the optimizer updates (all; a teacher is not)."""
        return students

    def after_step(self, model, step):
        """What follows each optimizer step `step` (0-based) in `train_step`; nothing."""
        del model, step

    def finish_training(self, model):
        """What `fit()` does to the weights when training ends, before the callbacks' end."""
        del model


def _mean_teacher(logits):
    return tf.stop_gradient(tf.add_n(logits) / float(len(logits)))


# (dataset, model) -> OKDPH's (omega, beta, fusion_gamma, fusion_every, fusion_unit): the
# reference code's table (METHOD.md). Other pairs take the paper's defaults.
REFERENCE_SETTINGS = {
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


class HybridDistillation(Method):
    """OKDPH: `L_m = omega*CE(z_m) + (1-omega)*CE(z_h) + beta*tau^2*KL(p_e || p_m)`.

    `z_e` is the mean of all M+1 networks' logits, without gradient; the HWM's
    CE enters the total M times. Trains with `Fusion` unless `fusion_gamma` is 0.
    Defaults: the paper's, or the reference code's table (`REFERENCE_SETTINGS`)
    for the `(dataset, model)` pairs it lists.
    """

    uses_hwm = True
    defaults = {
        **Method.defaults,
        "omega": 0.8,
        "beta": 0.8,
        "temperature": 4.0,
        "fusion_gamma": 0.5,
        "fusion_every": 1,
        "fusion_unit": "epoch",
    }

    run_name_suffix = ""  # the method itself: runs are named after dataset and model

    def default_settings(self, *, dataset=None, model=None):
        settings = dict(self.defaults)
        if (dataset, model) in REFERENCE_SETTINGS:
            names = ("omega", "beta", "fusion_gamma", "fusion_every", "fusion_unit")
            settings.update(zip(names, REFERENCE_SETTINGS[dataset, model]))
        return settings

    def distillation_terms(self, student_logits, hwm_logits, temperature):
        logits = [losses.full_precision(z) for z in student_logits]
        teacher = _mean_teacher(logits + [losses.full_precision(hwm_logits)])
        return [losses.distillation_loss(teacher, z, temperature) for z in logits]

    def total_loss(self, *, student_ce, hwm_ce, kd, omega, beta):
        num_students = len(student_ce)
        data = omega * tf.add_n(student_ce) + num_students * (1.0 - omega) * hwm_ce
        return data + beta * tf.add_n(kd)

    def callbacks(self, config, *, run_dir, bn_data, chief):
        del run_dir, bn_data, chief
        if not config.fusion_gamma:
            return []
        return [Fusion(config.fusion_gamma, config.fusion_every, config.fusion_unit)]


class MutualLearning(Method):
    """DML: `L_m = CE(z_m) + beta * mean_{k != m} tau^2*KL(p_k || p_m)`, peers without gradient.

    Defaults: the reference code's (BASELINES.md 2.1, 01_DML.py; the DML paper's
    loss): weight 1, T = 1, where tau^2 = 1.
    """

    defaults = {**Method.defaults, "beta": 1.0, "temperature": 1.0}

    def distillation_terms(self, student_logits, hwm_logits, temperature):
        logits = [losses.full_precision(z) for z in student_logits]
        peers = [tf.stop_gradient(z) for z in logits]
        return [
            tf.add_n(
                [
                    losses.distillation_loss(peers[k], z, temperature)
                    for k in range(len(logits))
                    if k != m
                ]
            )
            / float(len(logits) - 1)
            for m, z in enumerate(logits)
        ]

    def total_loss(self, *, student_ce, hwm_ce, kd, omega, beta):
        return tf.add_n(student_ce) + beta * tf.add_n(kd)


class CollaborativeLearning(Method):
    """KDCL: `L_m = omega*CE(z_m) + beta*tau^2*KL(p_s || p_m)`, `z_s` the students' mean logits.

    The teacher `z_s` carries no gradient. For KDCL `omega` weighs the student's
    own CE (there is no HWM) and `beta` the distillation term. Defaults: the
    reference code's (BASELINES.md 2.3, 03_KDCL.py): `(1 - alpha) CE + alpha T^2 KL`
    with alpha = 0.5 and T = 4, so omega = beta = 0.5 and temperature = 4.
    """

    defaults = {**Method.defaults, "omega": 0.5, "beta": 0.5, "temperature": 4.0}

    def distillation_terms(self, student_logits, hwm_logits, temperature):
        logits = [losses.full_precision(z) for z in student_logits]
        teacher = _mean_teacher(logits)
        return [losses.distillation_loss(teacher, z, temperature) for z in logits]

    def total_loss(self, *, student_ce, hwm_ce, kd, omega, beta):
        return omega * tf.add_n(student_ce) + beta * tf.add_n(kd)


class SharpnessAware(Method):
    """Students trained alone with SAM (or ASAM) gradients, on label-smoothed cross-entropy.

    `L_m = CE_eps(z_m)`, the CE to targets `1 - eps` on the label and `eps/(C-1)`
    on each other class (`losses.smoothed_cross_entropy`, eps = `label_smoothing`),
    the gradients taken at the sharpness-aware point of radius `sam_rho`.
    Defaults: the reference code's (BASELINES.md 2.9, 13_SAM.py): ASAM with
    rho = 0.05 and label smoothing 0.1. The ASAM authors' own radius is larger
    (2.0, to be checked against their paper); set `sam_rho` for it.
    """

    defaults = {**Method.defaults, "sam_rho": 0.05, "sam_adaptive": True, "label_smoothing": 0.1}

    def cross_entropy(self, labels, logits, settings):
        return losses.smoothed_cross_entropy(labels, logits, settings["label_smoothing"])

    def sharpness(self, config):
        return {"rho": config.sam_rho, "adaptive": config.sam_adaptive}


class WeightAveraging(Method):
    """Students trained alone, their weights averaged every epoch from `swa_start` of the epochs.

    The learning rate follows the SWA authors' schedule (`baselines.swa.SWALearningRate`):
    `learning_rate`, decaying linearly to `swa_lr` and constant there before the
    averaging starts. Defaults: the reference code's (BASELINES.md 2.8, 12_SWA.py):
    averaging after epochs 240..299 of 300 (`swa_start` 0.8) and `swa_lr` 0.001.
    The SWA paper's own settings (to be checked against it) average from epoch 161
    of 300 at `swa_lr` 0.01 to 0.05: `swa_start=0.5333`, `swa_lr=0.05`, say.
    """

    averages_weights = True
    defaults = {**Method.defaults, "swa_start": 0.8, "swa_lr": 0.001}

    def callbacks(self, config, *, run_dir, bn_data, chief):
        start, state_path = self._start_epoch(config), os.path.join(run_dir, "swa_state.npz")
        return [baselines.SWA(start, bn_data=bn_data, state_path=state_path if chief else None)]

    def learning_rate_schedule(self, config, steps_per_epoch):
        return SWALearningRate(
            config.learning_rate,
            config.swa_lr,
            start_epoch=self._start_epoch(config),
            steps_per_epoch=steps_per_epoch,
        )

    @staticmethod
    def _start_epoch(config):
        """The first epoch averaged (0-based): `swa_start` of the epochs, the last at most."""
        return min(config.epochs - 1, int(round(config.swa_start * config.epochs)))


class WeightEMA(Method):
    """Independent students whose final weights are an EMA of momentum `config.ema_momentum`."""

    averages_weights = True
    defaults = {**Method.defaults, "ema_momentum": 0.999}

    def callbacks(self, config, *, run_dir, bn_data, chief):
        del config, run_dir, chief
        return [baselines.EMABatchNorm(bn_data)]

    def wrap_optimizer(self, optimizer, config):
        return baselines.ema_optimizer(optimizer, config.ema_momentum)

    def finish_training(self, model):
        model.optimizer.finalize_variable_values(model.trainable_weights)


for _method in (
    HybridDistillation("okdph"),
    Method("independent"),
    MutualLearning("dml"),
    CollaborativeLearning("kdcl"),
    SharpnessAware("sam"),
    WeightAveraging("swa", objective_name="independent"),
    WeightEMA("ema", objective_name="independent"),
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


def run_names():
    """The names `Config.method` takes: every method that is not an ablation."""
    return tuple(name for name in names() if not get(name).config_overrides)
