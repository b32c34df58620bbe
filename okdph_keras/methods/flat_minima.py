"""Methods after flat minima, on students trained alone: SAM/ASAM, SWA, weight EMA."""

import os

import tensorflow as tf

from okdph_keras import baselines, losses, validation
from okdph_keras.baselines import branch_losses
from okdph_keras.baselines.swa import SWALearningRate
from okdph_keras.methods.base import Method


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


class MeanTeacher(Method):
    """Mean Teacher, the paper's "EMA" row: a student and its EMA teacher, on two views.

    `L = CE(z_s) + beta * r(e; rampup_epochs) * mean_{b,c} (softmax(z_s) - softmax(sg z_t))^2`
    (`baselines.branch_losses.mean_teacher_terms`). Student 0 is the student, on view 0;
    student 1 is the teacher, on view 1: the optimizer leaves it alone, and after every
    step its trainable weights follow the student's,
    `theta_t <- a theta_t + (1 - a) theta_s` with `a = min(1 - 1/(s+1), ema_decay)`, `s`
    the steps taken (the Mean Teacher authors' count: the first update has a = 1/2).
    Its BatchNorm statistics stay its own, from its forward passes. Defaults: the
    reference code's (BASELINES.md 2.7, 11_EMA.py): consistency weight 10, ramp-up 5
    epochs, decay 0.99. Both networks are reported; the exported one is chosen on
    the validation split like any other.
    """

    uses_epoch = True
    defaults = {**Method.defaults, "beta": 10.0, "rampup_epochs": 5.0, "ema_decay": 0.99}

    def build_networks(self, students, num_students):
        networks = super().build_networks(students, num_students)
        if len(networks) != 2:
            validation.fail(
                "the number of students",
                len(networks),
                "2 for mean_teacher (a student, its teacher)",
            )
        return networks

    def trained_students(self, students):
        return students[:1]

    def distillation_terms(self, outputs, settings):
        del settings
        student, teacher = outputs["students"]
        return [branch_losses.softmax_mse(student, teacher), tf.zeros([])]

    def total_loss(self, *, student_ce, hwm_ce, kd, settings, epoch):
        del hwm_ce
        weight = settings["beta"] * branch_losses.rampup(epoch, settings["rampup_epochs"])
        return student_ce[0] + tf.cast(weight, kd[0].dtype) * kd[0]

    def after_step(self, model, step):
        student, teacher = model.students
        branch_losses.ema_update(
            teacher.trainable_variables,
            student.trainable_variables,
            step + 1,
            model.settings["ema_decay"],
        )
