"""`Method`: independent training, and every hook a method may override."""

import functools

import keras
import tensorflow as tf

from okdph_keras import hwm, hybrid, hyperparameters, losses
from okdph_keras import students as students_lib
from okdph_keras.models import get_model


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
        has_hwm: whether the networks have an HWM (peers of one architecture),
            which evaluation runs and reports.
        uses_epoch: whether the losses depend on the epoch (a ramp-up); `OKDPH`
            then keeps an `epoch` variable that `callbacks.EpochCounter` sets.
        averages_weights: whether the trained weights are replaced by an
            average when training ends (then BatchNorm is recomputed).
        config_overrides: `Config` fields this method sets (ablations).
        default_num_students: the peers a comparison gives the method when the
            base configuration has fewer (None: the base's).
        takes_groups: whether `OKDPH(students=...)` takes groups of students of
            several architectures (`Config.groups`).
    """

    uses_hwm = False
    has_hwm = True
    takes_groups = False
    uses_epoch = False
    averages_weights = False
    default_num_students = None
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

    def network_builder(self, model, num_classes, input_shape, *, num_students):
        """A builder (no arguments) of the network `OKDPH(students=...)` takes for a run.

        Args:
            model: an architecture of `okdph_keras.models.MODELS`.
            num_classes, input_shape: the data's.
            num_students: M, the peers.
        """
        del num_students
        return lambda: get_model(model, num_classes, input_shape)

    def build_networks(self, students, num_students):
        """The networks `OKDPH` holds (`OKDPH.students`), from its `students` argument.

        By default M separate students (`okdph_keras.students.make_students`).
        A method whose peers are branches of one network, or which adds a
        teacher or modules, builds what it needs here.
        """
        return students_lib.make_students(students, num_students)

    def make_identical(self, networks):
        """Copies network 0's float weights into the others (`OKDPH(identical_init=True)`)."""
        for other in networks[1:]:
            for target, source in zip(other.variables, networks[0].variables):
                if hybrid.is_interpolable(target):
                    target.assign(source)

    def num_peers(self, networks):
        """How many peers the networks hold, each reported as `student_<m>`."""
        return len(networks)

    def hybrid_groups(self, networks):
        """`(start, stop)` of every group of `networks` that has an HWM, in order.

        By default the peers form one group when the method has an HWM.
        """
        return [(0, len(networks))] if self.has_hwm else []

    def network_names(self, networks):
        """The networks that take a view, in the order of the views: peers, then HWMs.

        A method without an HWM still takes the HWM's view (and ignores it), so
        every method trains on the same pipeline.
        """
        return [f"student_{m}" for m in range(self.num_peers(networks))] + ["hwm"]

    def hwm_names(self, networks):
        """The names under which the HWMs are reported (`hwm_ce`, `hwm_accuracy`)."""
        return ["hwm"] if self.has_hwm else []

    def draw_coefficients(self, mode, networks, seed, settings):
        """This batch's hybridization coefficients for `step.forward` (`hybrid.sample_coefficients`).

        Args:
            mode: `"mean"` or `"dirichlet"`.
            networks: the networks `OKDPH` holds.
            seed: the batch's stateless seed `[2]` for `"dirichlet"`.
            settings: the step's hyperparameters.
        """
        del settings
        return hybrid.sample_coefficients(mode, len(networks), seed)

    def fusion_coefficients(self, coefficients):
        """The coefficients `OKDPH` keeps from a batch's draw: those fusion, `hybrid_model`
        and evaluation use (a vector with one weight per network)."""
        return coefficients

    def student_models(self, networks):
        """One plain `keras.Model` per peer, mapping images to logits: what is exported."""
        return list(networks)

    def network_outputs(self, networks, views, coefficients, *, training, **hwm_options):
        """Every network's outputs on its view: a dict.

        `"students"` holds the peers' logits (a list), `"hwm"` the HWM's or None:
        out of training the HWM runs for every method that has one (`has_hwm`; it
        is reported), in training only for methods that use it (`uses_hwm`). A
        method may add entries for its own losses. Arguments (`hwm_options`:
        `hwm_gradient`, `hwm_state`): see `hwm.network_logits`.
        """
        if self.uses_hwm or (self.has_hwm and not training):
            logits, hwm_logits = hwm.network_logits(
                networks, views, coefficients, training=training, **hwm_options
            )
            return {"students": logits, "hwm": hwm_logits}
        logits = [network(view, training=training) for network, view in zip(networks, views)]
        return {"students": logits, "hwm": None}

    def losses(self, labels, outputs, settings, *, epoch, training):
        """The step's losses from the labels `[B]` and `network_outputs`.

        Args:
            labels: integer labels `[B]`.
            outputs: the dict of `network_outputs`.
            settings: the run's hyperparameters (`settings`).
            epoch: the 0-based epoch, a scalar tensor, for a method with
                `uses_epoch`; else None.
            training: False reports each peer's plain CE, comparable across methods.

        Returns:
            A dict: `student_ce` (one scalar per peer), `hwm_ce` (or None), `kd`
            (one scalar per peer) and `total`, the loss to differentiate.
        """
        # Out of training every peer reports the plain CE (the base method's).
        cross_entropy = (
            self.cross_entropy if training else functools.partial(Method.cross_entropy, self)
        )
        student_ce = [cross_entropy(labels, z, settings) for z in outputs["students"]]
        # With several HWMs of the same students (`outputs["hwms"]`), their mean CE.
        hwms = outputs.get("hwms") or ([] if outputs["hwm"] is None else [outputs["hwm"]])
        hwm_ce = None
        if hwms:
            hwm_ce = tf.add_n([losses.cross_entropy(labels, z) for z in hwms]) / float(len(hwms))
        kd = self.distillation_terms(outputs, settings)
        total = self.total_loss(
            student_ce=student_ce, hwm_ce=hwm_ce, kd=kd, settings=settings, epoch=epoch
        )
        return {"student_ce": student_ce, "hwm_ce": hwm_ce, "kd": kd, "total": total}

    def cross_entropy(self, labels, logits, settings):
        """A student's `CE(z_m)` (mean over the batch) from integer labels `[B]` and its logits.

        `settings`: the run's hyperparameters (`settings`), for a CE that has some.
        """
        del settings
        return losses.cross_entropy(labels, logits)

    def distillation_terms(self, outputs, settings):
        """Student m's distillation term, for each m, from `network_outputs`."""
        del settings
        return [tf.zeros([]) for _ in outputs["students"]]

    def total_loss(self, *, student_ce, hwm_ce, kd, settings, epoch):
        """`sum_m L_m` from the cross-entropies, distillation terms and settings."""
        del hwm_ce, kd, settings, epoch
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
