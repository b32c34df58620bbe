"""What `OKDPH` reports each step: loss, every network's CE and accuracy, the ensemble's, KD."""

import itertools

import keras
import tensorflow as tf

from okdph_keras import losses


class NetworkMetrics:
    """A mixin for `OKDPH`: its `keras.metrics` trackers, updated from a step's `StepOutputs`.

    The trackers are attributes of the model, so Keras resets and saves them as
    any model's metrics. Reported names: `loss`, `student_<m>_ce`,
    `student_<m>_accuracy`, `hwm_ce` and `hwm_accuracy` (`<name>_ce`, ... for each of
    `Method.hwm_names`), `ensemble_ce`,
    `ensemble_accuracy` (the students' mean logits) and `kd_loss`.
    """

    def _create_trackers(self):
        mean, accuracy = keras.metrics.Mean, keras.metrics.SparseCategoricalAccuracy
        self.loss_tracker = mean(name="loss")
        self.kd_tracker = mean(name="kd_loss")
        self.student_ce_trackers = [mean(name=f"student_{m}_ce") for m in range(self.num_students)]
        self.student_accuracy_trackers = [
            accuracy(name=f"student_{m}_accuracy") for m in range(self.num_students)
        ]
        hwm_names = self._method.hwm_names(self.students) or ["hwm"]
        self.hwm_ce_trackers = [mean(name=f"{name}_ce") for name in hwm_names]
        self.hwm_accuracy_trackers = [accuracy(name=f"{name}_accuracy") for name in hwm_names]
        self.ensemble_ce_tracker = mean(name="ensemble_ce")
        self.ensemble_accuracy_tracker = accuracy(name="ensemble_accuracy")

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            *itertools.chain(*zip(self.student_ce_trackers, self.student_accuracy_trackers)),
            *itertools.chain(*zip(self.hwm_ce_trackers, self.hwm_accuracy_trackers)),
            self.ensemble_ce_tracker,
            self.ensemble_accuracy_tracker,
            self.kd_tracker,
        ]

    def _results(self, *, hwm_ran):
        """The trackers' results; without the HWM's when it did not run."""
        reported = self.metrics
        if not hwm_ran:  # report nothing rather than zeros
            hwm_trackers = self.hwm_ce_trackers + self.hwm_accuracy_trackers
            reported = [m for m in reported if all(m is not t for t in hwm_trackers)]
        return {metric.name: metric.result() for metric in reported}

    def _update_metrics(self, outputs, labels, weight):
        """Adds a batch to the metrics, each example counting `weight` (0 for padding)."""
        example_weights = tf.fill(tf.shape(labels), tf.cast(weight, tf.float32))
        batch_size = tf.reduce_sum(example_weights)
        self.loss_tracker.update_state(outputs.total, sample_weight=batch_size)
        self.kd_tracker.update_state(
            tf.add_n(outputs.kd) / self.num_students, sample_weight=batch_size
        )
        for m in range(self.num_students):
            self.student_ce_trackers[m].update_state(
                outputs.student_ce[m], sample_weight=batch_size
            )
            self.student_accuracy_trackers[m].update_state(
                labels, outputs.student_logits[m], sample_weight=example_weights
            )
        # Baselines train without the HWM: then `outputs.hwms` is empty.
        for (logits, ce), ce_tracker, accuracy_tracker in zip(
            outputs.hwms, self.hwm_ce_trackers, self.hwm_accuracy_trackers
        ):
            ce_tracker.update_state(ce, sample_weight=batch_size)
            accuracy_tracker.update_state(labels, logits, sample_weight=example_weights)
        ensemble = tf.add_n([losses.full_precision(z) for z in outputs.student_logits]) / float(
            self.num_students
        )
        self.ensemble_ce_tracker.update_state(
            losses.cross_entropy(labels, ensemble), sample_weight=batch_size
        )
        self.ensemble_accuracy_tracker.update_state(labels, ensemble, sample_weight=example_weights)
