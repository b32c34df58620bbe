"""`Method`: independent training, and every hook a method may override."""

import keras
import tensorflow as tf

from okdph_keras import hwm, hyperparameters, losses


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
