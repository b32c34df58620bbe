"""Stochastic weight averaging (Izmailov et al. 2018): the averaging callback, the lr schedule."""

import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from okdph_keras import checkpointing, hybrid
from okdph_keras.baselines.batchnorm import (
    batchnorm_layers,
    batchnorm_statistics,
    check_steps,
    recompute_statistics,
)
from okdph_keras.validation import check_integer, check_number, fail


@keras.saving.register_keras_serializable(package="okdph_keras")
class SWA(keras.callbacks.Callback):
    """Equal-weight running average of the weights at chosen epoch ends.

    From epoch `start_epoch` on (0-based, as in Keras callbacks), at the end of
    every `every`-th epoch, `avg <- n/(n+1) * avg + 1/(n+1) * w` for every float
    variable except BatchNorm moving statistics (trainable variables, and for
    `OKDPH` also its last-batch coefficients), n being the number of epochs
    averaged so far. For `OKDPH` each student is averaged separately (it is
    per-variable). Training itself is not changed. At the end of `fit` the
    average is written into the model and the BatchNorm statistics are
    recomputed on `bn_data` with `recompute_batchnorm`; without `bn_data` a
    model with BatchNorm keeps the statistics of the last trained weights,
    with a warning. Training on after that `fit` starts from the average.

    Resuming: the average lives in variables the callback owns, so it carries
    over between `fit` calls with the same callback. Across processes, give
    `state_path`: the average, its count and the last epoch averaged are saved
    there (atomically) after every update and loaded at the start of `fit`.
    An epoch already in the file is not averaged again when it is trained
    again after a resume from an older model checkpoint; if a run dies after
    saving the model but before saving this file, that epoch is missed.
    With `Fusion`, list `SWA` after it so that fused weights are averaged.
    `bn_data` is not part of `get_config`.

    Args:
        start_epoch: first epoch averaged, an integer >= 0.
        every: average every `every` epochs from `start_epoch`, integer >= 1.
        bn_data: batches of model inputs for `recompute_batchnorm`.
        bn_steps: number of `bn_data` batches to use; all when None.
        state_path: an `.npz` file holding the running average, or None.

    Example:
        >>> swa = SWA(start_epoch=150, bn_data=train_images.batch(256))
        >>> model.fit(train_data, epochs=200, callbacks=[swa])  # ends averaged
    """

    def __init__(self, start_epoch, every=1, bn_data=None, bn_steps=None, state_path=None):
        super().__init__()
        self.start_epoch = check_integer("start_epoch", start_epoch, low=0)
        self.every = check_integer("every", every, low=1)
        check_steps("bn_steps", bn_steps)
        if state_path is not None and not str(state_path).endswith(".npz"):
            fail("state_path", state_path, "None or a path ending in '.npz'")
        self.bn_data = bn_data
        self.bn_steps = bn_steps
        self.state_path = state_path
        self.count = 0
        self.last_epoch = -1
        self.averages = None  # tf.Variables, created for the first model seen

    def set_model(self, model):
        if not isinstance(model, keras.Model):
            fail("model", model, "a keras.Model")
        super().set_model(model)

    def on_train_begin(self, logs=None):
        variables = averaged_variables(self.model)
        if self.averages is None:
            self.averages = [
                tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in variables
            ]
        _check_matches(self.averages, variables, "SWA's running average")
        if self.count == 0 and self.state_path and os.path.exists(self.state_path):
            self._load_state()

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.start_epoch or (epoch - self.start_epoch) % self.every:
            return
        if epoch <= self.last_epoch:
            return  # averaged before a resume
        n = self.count
        weights = tf.constant([n / (n + 1.0), 1.0 / (n + 1.0)])
        variables = averaged_variables(self.model)
        for average, value in zip(
            self.averages, hybrid.convex_combination([self.averages, variables], weights)
        ):
            average.assign(value)
        self.count = n + 1
        self.last_epoch = epoch
        if self.state_path:
            self._save_state()

    def on_train_end(self, logs=None):
        self.assign_average()

    def assign_average(self):
        """Writes the average into the model and recomputes BatchNorm statistics.

        Called at the end of `fit`; call it yourself to get the average
        earlier (it replaces the weights being trained). Does nothing but warn
        if no epoch has been averaged yet.
        """
        if not self.count:
            warnings.warn(
                f"SWA averaged no epoch (start_epoch={self.start_epoch} was not "
                "reached): the model keeps its trained weights.",
                stacklevel=2,
            )
            return
        for variable, average in zip(averaged_variables(self.model), self.averages):
            variable.assign(average)
        if self.bn_data is not None:
            recompute_statistics(self.model, self.bn_data, self.bn_steps)
        elif any(layer.trainable for layer in batchnorm_layers(self.model)):
            warnings.warn(
                "SWA got no bn_data: the model's BatchNorm statistics belong to the "
                "last trained weights, not to the average. Pass bn_data=... (training "
                "inputs) to recompute them.",
                stacklevel=2,
            )

    def _save_state(self):
        arrays = {f"average_{i}": v.numpy() for i, v in enumerate(self.averages)}

        def write(path):
            np.savez(path, count=self.count, last_epoch=self.last_epoch, **arrays)

        checkpointing.write_atomically(self.state_path, write)

    def _load_state(self):
        with np.load(self.state_path) as state:
            arrays = [state[f"average_{i}"] for i in range(len(state.files) - 2)]
            _check_matches(arrays, self.averages, f"The SWA state {self.state_path}")
            for average, array in zip(self.averages, arrays):
                average.assign(array)
            self.count = int(state["count"])
            self.last_epoch = int(state["last_epoch"])

    def get_config(self):
        return {
            "start_epoch": self.start_epoch,
            "every": self.every,
            "bn_steps": self.bn_steps,
            "state_path": self.state_path,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def averaged_variables(model):
    """The variables SWA averages: every float variable but BatchNorm statistics."""
    statistics = {id(v) for v in batchnorm_statistics(model)}
    return [
        v
        for v in model.trainable_variables + model.non_trainable_variables
        if hybrid.is_interpolable(v) and id(v) not in statistics
    ]


def _check_matches(found, expected, what):
    if [tuple(v.shape) for v in found] != [tuple(v.shape) for v in expected]:
        raise ValueError(
            f"{what} holds {len(found)} arrays that do not match the "
            f"{len(expected)} variables SWA averages in this model (shapes differ). "
            "Use a new SWA callback (and state_path) per model."
        )


@keras.saving.register_keras_serializable(package="okdph_keras")
class SWALearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """The SWA paper's learning rate: constant, a linear decay to `swa_learning_rate`, constant.

    With epoch `e = step // steps_per_epoch` and `t = e / (start_epoch + 1)`:
    `initial_learning_rate` for `t <= 0.5`, then linear down to
    `swa_learning_rate` at `t = 0.9`, then `swa_learning_rate` (the authors'
    `schedule` in their train.py, which the OKDPH reference code's 12_SWA.py
    uses with `swa_start = start_epoch + 1`, 1-based). For 300 epochs averaged
    from epoch 240 (0-based), `t = e / 241`: 0.1 for e <= 120, the decay for
    e = 121..216 and 0.001 from e = 217 (BASELINES.md 2.8). A function of the
    step alone, so a resumed run continues it exactly.

    Args:
        initial_learning_rate: the learning rate until `t = 0.5`, > 0.
        swa_learning_rate: the learning rate from `t = 0.9` on, > 0.
        start_epoch: the first epoch SWA averages, 0-based, >= 0.
        steps_per_epoch: optimizer steps per epoch, >= 1.
        name: the schedule's name.

    Example:
        >>> schedule = SWALearningRate(0.1, 0.001, start_epoch=240, steps_per_epoch=391)
        >>> keras.optimizers.SGD(schedule, momentum=0.9)
    """

    def __init__(
        self,
        initial_learning_rate,
        swa_learning_rate,
        start_epoch,
        steps_per_epoch,
        name="SWALearningRate",
    ):
        super().__init__()
        self.initial_learning_rate = check_number(
            "initial_learning_rate", initial_learning_rate, low=0.0, low_open=True
        )
        self.swa_learning_rate = check_number(
            "swa_learning_rate", swa_learning_rate, low=0.0, low_open=True
        )
        self.start_epoch = check_integer("start_epoch", start_epoch, low=0)
        self.steps_per_epoch = check_integer("steps_per_epoch", steps_per_epoch, low=1)
        self.name = name

    def __call__(self, step):
        epoch = tf.math.floordiv(tf.cast(step, tf.int64), self.steps_per_epoch)
        t = tf.cast(epoch, tf.float64) / float(self.start_epoch + 1)
        ratio = self.swa_learning_rate / self.initial_learning_rate
        decay = 1.0 - (1.0 - ratio) * (t - 0.5) / 0.4
        ones = tf.ones_like(t)
        factor = tf.where(t <= 0.5, ones, tf.where(t <= 0.9, decay, ratio * ones))
        return tf.cast(self.initial_learning_rate * factor, tf.float32)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "swa_learning_rate": self.swa_learning_rate,
            "start_epoch": self.start_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "name": self.name,
        }
