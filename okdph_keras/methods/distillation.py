"""Methods whose students distil from each other: OKDPH, DML, KDCL."""

import tensorflow as tf

from okdph_keras import losses
from okdph_keras.adaptive_fusion import DEFAULT_THRESHOLD, AdaptiveFusion
from okdph_keras.callbacks import Fusion
from okdph_keras.methods.base import Method


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


_FIXED_INTERVAL = ("fusion_every", "fusion_unit")


class HybridDistillation(Method):
    """OKDPH: `L_m = omega*CE(z_m) + (1-omega)*CE(z_h) + beta*tau^2*KL(p_e || p_m)`.

    `z_e` is the mean of all M+1 networks' logits (of every HWM the step runs,
    for the extensions), without gradient; the HWM's CE enters the total M times.
    Trains with `Fusion` unless `fusion_gamma` is 0.
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

    def distillation_terms(self, outputs, settings):
        logits = [losses.full_precision(z) for z in outputs["students"]]
        hwms = outputs.get("hwms") or [outputs["hwm"]]  # every HWM the step ran
        teacher = _mean_teacher(logits + [losses.full_precision(z) for z in hwms])
        return [losses.distillation_loss(teacher, z, settings["temperature"]) for z in logits]

    def total_loss(self, *, student_ce, hwm_ce, kd, settings, epoch):
        del epoch
        omega, num_students = settings["omega"], len(student_ce)
        data = omega * tf.add_n(student_ce) + num_students * (1.0 - omega) * hwm_ce
        return data + settings["beta"] * tf.add_n(kd)

    def callbacks(self, config, *, run_dir, bn_data, chief):
        del run_dir, bn_data, chief
        if not config.fusion_gamma:
            return []
        return [Fusion(config.fusion_gamma, config.fusion_every, config.fusion_unit)]


class AdaptiveHybridDistillation(HybridDistillation):
    """OKDPH's losses, fused by `AdaptiveFusion` instead of at a fixed interval.

    At each epoch's end the students fuse once `max_m ||theta_m - theta_h|| / ||theta_h||`
    reaches `fusion_threshold`, with `fusion_gamma` (growing with the distance when
    `fusion_adaptive_gamma`). Defaults: OKDPH's, the reference table's `omega`, `beta`
    and `fusion_gamma` included; `fusion_every` and `fusion_unit` are not used.
    """

    defaults = {
        **{k: v for k, v in HybridDistillation.defaults.items() if k not in _FIXED_INTERVAL},
        "fusion_threshold": DEFAULT_THRESHOLD,
        "fusion_adaptive_gamma": False,
    }

    run_name_suffix = Method.run_name_suffix  # `_<name>`, unlike OKDPH's

    def default_settings(self, *, dataset=None, model=None):
        settings = super().default_settings(dataset=dataset, model=model)
        return {name: settings[name] for name in self.defaults}

    def callbacks(self, config, *, run_dir, bn_data, chief):
        del run_dir, bn_data, chief
        if not config.fusion_gamma:
            return []
        return [
            AdaptiveFusion(
                config.fusion_threshold,
                config.fusion_gamma,
                adaptive_gamma=config.fusion_adaptive_gamma,
            )
        ]


class MutualLearning(Method):
    """DML: `L_m = CE(z_m) + beta * mean_{k != m} tau^2*KL(p_k || p_m)`, peers without gradient.

    Defaults: the reference code's (BASELINES.md 2.1, 01_DML.py; the DML paper's
    loss): weight 1, T = 1, where tau^2 = 1.
    """

    defaults = {**Method.defaults, "beta": 1.0, "temperature": 1.0}

    def distillation_terms(self, outputs, settings):
        temperature = settings["temperature"]
        logits = [losses.full_precision(z) for z in outputs["students"]]
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

    def total_loss(self, *, student_ce, hwm_ce, kd, settings, epoch):
        del hwm_ce, epoch
        return tf.add_n(student_ce) + settings["beta"] * tf.add_n(kd)


class CollaborativeLearning(Method):
    """KDCL: `L_m = omega*CE(z_m) + beta*tau^2*KL(p_s || p_m)`, `z_s` the students' mean logits.

    The teacher `z_s` carries no gradient. For KDCL `omega` weighs the student's
    own CE (there is no HWM) and `beta` the distillation term. Defaults: the
    reference code's (BASELINES.md 2.3, 03_KDCL.py): `(1 - alpha) CE + alpha T^2 KL`
    with alpha = 0.5 and T = 4, so omega = beta = 0.5 and temperature = 4.
    """

    defaults = {**Method.defaults, "omega": 0.5, "beta": 0.5, "temperature": 4.0}

    def distillation_terms(self, outputs, settings):
        logits = [losses.full_precision(z) for z in outputs["students"]]
        teacher = _mean_teacher(logits)
        return [losses.distillation_loss(teacher, z, settings["temperature"]) for z in logits]

    def total_loss(self, *, student_ce, hwm_ce, kd, settings, epoch):
        del hwm_ce, epoch
        return settings["omega"] * tf.add_n(student_ce) + settings["beta"] * tf.add_n(kd)
