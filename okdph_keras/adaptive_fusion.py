"""Adaptive fusion: fuse when the students have drifted from their HWM, not on a timer.

The signal is the students' relative distance from the HWM,
`max_m ||theta_m - theta_h|| / ||theta_h||` over the trainable float variables. Fusion
leaves the HWM where it is (`sum_m r_m (gamma theta_h + (1 - gamma) theta_m) = theta_h`)
and scales every distance by `1 - gamma`, which is what the adaptive gamma uses.
"""

import keras
import numpy as np
import tensorflow as tf

from okdph_keras import hwm
from okdph_keras.hybrid import is_interpolable
from okdph_keras.validation import check_bool, check_number, fail

# Measured, not invented: plain OKDPH (two small_cnn students on random 8x8 images, batch
# 32, SGD 0.1 with momentum 0.9, Fusion(0.5) every epoch) ends epochs 1-8 at 0.016-0.048
# with 8 steps an epoch, and epochs 1-6 at 0.056-0.073 with 32 steps. 0.05 lies within
# that range. Unmeasured on ResNet-32 and CIFAR-10: measure with threshold=0 and choose.
DEFAULT_THRESHOLD = 0.05


def relative_distance(students, coefficients):
    """Each student's distance from the HWM relative to the HWM's size.

    `||theta_m - theta_h|| / ||theta_h||`, the norms taken over all trainable
    float variables of a student at once (as if flattened and concatenated),
    `theta_h = sum_m r_m theta_m` (`hwm.hybrid_values`).

    Args:
        students: list of M homogeneous `keras.Model`s.
        coefficients: the convex weights r, shape `[M]`.

    Returns:
        A float64 numpy array of M distances.

    Example:
        >>> relative_distance(model.students, model.coefficients).max()
    """
    hwm_values, _ = hwm.hybrid_values(students, tf.convert_to_tensor(coefficients))
    floats = [i for i, v in enumerate(students[0].trainable_variables) if is_interpolable(v)]
    hwm_norm = _norm([hwm_values[i] for i in floats])
    return np.array(
        [
            _norm([student.trainable_variables[i] - hwm_values[i] for i in floats]) / hwm_norm
            for student in students
        ]
    )


def _norm(values):
    return np.sqrt(sum(np.sum(np.square(np.asarray(v, np.float64))) for v in values))


@keras.saving.register_keras_serializable(package="okdph_keras")
class AdaptiveFusion(keras.callbacks.Callback):
    """Fuses the students into the HWM when they have drifted `threshold` away from it.

    At each epoch's end, once training is done and before validation (so that
    validation sees the fused students), the signal
    `s = max_m ||theta_m - theta_h|| / ||theta_h||` is measured
    (`relative_distance`, with `model.coefficients`). If `s >= threshold`,
    `model.fuse(gamma)`: `theta_m <- gamma theta_h + (1 - gamma) theta_m`. The
    maximum, not the mean: the HWMs the training draws span the students'
    hull, and its farthest corner is the student farthest away.

    With `adaptive_gamma`, `gamma_t = 1 - (1 - gamma) * threshold / s`, which is
    `gamma` when `s` is at the threshold and grows toward 1 with `s`: since
    fusion keeps the HWM and scales the distances by `1 - gamma_t`, every
    fusion leaves the students at `(1 - gamma) * threshold`, however far they
    had drifted.

    The epoch's logs get `fusion_signal` (`s`, before fusing) and `fused` (1 or
    0), so `History`, a run's `history.csv` and its curves record them. The
    callback keeps nothing from one epoch to the next: the decision depends
    only on the weights and coefficients, which a model checkpoint holds, so
    a resumed run fuses exactly as an uninterrupted one.

    Args:
        threshold: the signal at which to fuse, >= 0; 0 fuses every epoch (and
            logs the signal of `Fusion(gamma, every=1)`). The default, 0.05, is
            within what plain OKDPH's students drift in an epoch on a small CNN
            (`DEFAULT_THRESHOLD`).
        gamma: fusion ratio in [0, 1] (the least one, with `adaptive_gamma`).
        adaptive_gamma: whether gamma grows with the signal, as above.

    Example:
        >>> model.fit(data, epochs=300, callbacks=[AdaptiveFusion(threshold=0.05)])
        >>> model.history.history["fused"]  # 1.0 for each epoch that fused
    """

    def __init__(self, threshold=DEFAULT_THRESHOLD, gamma=0.5, adaptive_gamma=False):
        super().__init__()
        self.threshold = check_number("threshold", threshold, low=0)
        self.gamma = check_number("gamma", gamma, low=0, high=1)
        self.adaptive_gamma = check_bool("adaptive_gamma", adaptive_gamma)
        self._epoch = None  # the epoch in progress whose check is still due
        self._logs = {}

    def set_model(self, model):
        if not callable(getattr(model, "fuse", None)):
            fail("model", model, "an OKDPH model (AdaptiveFusion calls its fuse method)")
        super().set_model(model)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_test_begin(self, logs=None):
        # Inside fit(), validation starts once the epoch's training is done.
        self._check()

    def on_epoch_end(self, epoch, logs=None):
        self._check()
        if logs is not None:
            logs.update(self._logs)

    def _check(self):
        if self._epoch is None:
            return
        self._epoch = None
        students, coefficients = self.model.students, self.model.coefficients
        signal = max(  # with groups, the farthest student from its own group's HWM
            float(np.max(relative_distance(students[a:b], coefficients[a:b])))
            for a, b in self.model.hybrid_groups()
        )
        fused = signal >= self.threshold
        if fused:
            self.model.fuse(self.fusion_gamma(signal))
        self._logs = {"fusion_signal": signal, "fused": float(fused)}

    def fusion_gamma(self, signal):
        """The gamma a fusion at `signal` (>= `threshold`) uses."""
        if not self.adaptive_gamma or signal <= 0:
            return self.gamma
        return 1.0 - (1.0 - self.gamma) * self.threshold / signal

    def get_config(self):
        return {
            "threshold": self.threshold,
            "gamma": self.gamma,
            "adaptive_gamma": self.adaptive_gamma,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
