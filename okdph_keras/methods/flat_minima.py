"""Methods after flat minima, on students trained alone: SAM/ASAM, SWA, weight EMA."""

import os

from okdph_keras import baselines, losses
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
