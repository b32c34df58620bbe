"""`OKDPH`: M peer students and their hybrid-weight model as one `keras.Model`."""

import itertools
import random
import warnings

import keras
import numpy as np
import tensorflow as tf

from okdph_keras import distribute, losses, methods, step, sync_batchnorm, validation
from okdph_keras import hybrid as hybrid_lib
from okdph_keras import students as students_lib


@keras.saving.register_keras_serializable(package="okdph_keras")
class OKDPH(keras.Model):
    """Online knowledge distillation via parameter hybridization (CVPR 2023).

    M students of one architecture train together. Every batch, the
    hybrid-weight model (HWM) takes the weights `theta_h = sum_m r_m theta_m`,
    computed inside the gradient tape (no weights are copied), and student m
    minimises
    `L_m = omega*CE(z_m) + (1-omega)*CE(z_h) + beta*tau^2*KL(p_e || p_m)`
    where `z_e` is the mean of all M+1 networks' logits, without gradient. The
    objective is `sum_m L_m`. Pair it with `okdph_keras.callbacks.Fusion`.

    Inputs to `fit`/`evaluate`/`predict` are `(views, labels)` where `views` is
    one image batch per network (M students, then the HWM) as a tensor
    `[B, M+1, H, W, C]` or a tuple of M+1 tensors `[B, H, W, C]`, or a single
    batch `[B, H, W, C]` that every network shares. Labels are integer class
    indices `[B]`. Calling the model returns logits `[B, M+1, num_classes]`:
    the students', then the HWM's.

    Args:
        students: a builder (a callable with no arguments returning a fresh,
            built `keras.Model` that maps images to logits), or a list of M
            built, homogeneous students (same variables, shapes and dtypes in
            the same order).
        num_students: M >= 2 when `students` is a builder (default 2); must be
            omitted or equal to the list's length otherwise.
        omega: weight of a student's own cross-entropy, in [0, 1]; `1 - omega`
            weighs the HWM's cross-entropy.
        beta: weight of the distillation term, >= 0.
        temperature: distillation temperature tau, > 0.
        hybrid: `"mean"` (r_m = 1/M) or `"dirichlet"` (fresh r ~ Dir(1) every
            batch, from `seed` and the optimizer's step counter).
        hwm_gradient: True (the paper) lets the HWM's loss differentiate into
            every student through theta_h; False reproduces the reference code,
            where it gives the students no gradient.
            Each of these five left None takes the objective's default
            (`okdph_keras.methods`; OKDPH's: 0.8, 0.8, 4, "mean", True); one the
            objective does not use stays None.
        weight_decay: coupled L2 on every trainable student variable, equal to
            torch `SGD(weight_decay=...)`; >= 0.
        identical_init: at construction, copy student 0's float weights into
            the others (ready students included), so all start identical (the
            paper). Set False to keep different initialisations.
        seed: integer seed of the Dirichlet coefficients; drawn at random when
            None and then kept in the config.
        objective: the name of a registered method whose losses the students
            train with (`okdph_keras.methods.names(trainable_by_model=True)`):
            `"okdph"` (the method), or a baseline that trains the same students
            without the HWM: `"independent"`, `"dml"` or `"kdcl"`. The HWM is
            still evaluated.
        sam_rho: > 0 trains with sharpness-aware gradients (SAM, Foret et al.
            2021) of radius `sam_rho`, each student perturbed with its own
            norm; 0 (default) trains with plain gradients.
        sam_adaptive: ASAM instead of SAM (Kwon et al. 2021).
        **kwargs: passed to `keras.Model` (`name`, ...).

    Example:
        >>> def build():
        ...     return keras.Sequential([keras.Input((8, 8, 1)),
        ...                              keras.layers.Conv2D(8, 3),
        ...                              keras.layers.GlobalAveragePooling2D(),
        ...                              keras.layers.Dense(10)])
        >>> model = OKDPH(build, num_students=2)
        >>> model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        >>> model.fit(multi_view_dataset, epochs=10,
        ...           callbacks=[okdph_keras.callbacks.Fusion(gamma=0.5)])
    """

    def __init__(
        self,
        students,
        num_students=None,
        omega=None,
        beta=None,
        temperature=None,
        hybrid=None,
        hwm_gradient=None,
        weight_decay=0.0,
        identical_init=True,
        seed=None,
        objective="okdph",
        sam_rho=0.0,
        sam_adaptive=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._method = methods.get(objective, what="objective", trainable_by_model=True)
        self.objective = objective
        settings = self._method.settings(
            dict(
                omega=omega,
                beta=beta,
                temperature=temperature,
                hybrid=hybrid,
                hwm_gradient=hwm_gradient,
            )
        )
        self.omega = settings.get("omega")
        self.beta = settings.get("beta")
        self.temperature = settings.get("temperature")
        self.hybrid = settings["hybrid"]
        self.hwm_gradient = settings["hwm_gradient"]
        check = validation.check_number
        self.weight_decay = check("weight_decay", weight_decay, low=0.0)
        self.sam_rho = check("sam_rho", sam_rho, low=0.0)
        self.sam_adaptive = validation.check_bool("sam_adaptive", sam_adaptive)
        self.identical_init = validation.check_bool("identical_init", identical_init)
        if seed is not None and not validation.is_integer(seed):
            validation.fail("seed", seed, "an integer or None")
        self.seed = random.randrange(2**31) if seed is None else int(seed)

        students = students_lib.make_students(students, num_students)
        self.students = students
        self.num_students = len(students)
        # Global BatchNorm all-reduces inside the networks: an empty replica must run them too.
        self._synchronized = sync_batchnorm.uses_synchronized_batchnorm(students)
        if self.identical_init:
            for other in students[1:]:
                for target, source in zip(other.variables, students[0].variables):
                    if hybrid_lib.is_interpolable(target):
                        target.assign(source)

        self.coefficients = self.add_weight(
            name="hybrid_coefficients",
            shape=(self.num_students,),
            initializer=keras.initializers.Constant(1.0 / self.num_students),
            trainable=False,
            aggregation="only_first_replica",
        )
        self.hwm_state = self._create_hwm_state()
        self._create_trackers()
        self._fuse_function = None
        self.built = True

    def _create_hwm_state(self):
        """The HWM's own integer state: a copy of student 0's, with fresh seeds.

        Random layers' seed states get seeds derived from `seed`, so the HWM
        draws its own dropout masks, never a student's; other integer state
        starts as student 0's.
        """
        seed_states = {id(v) for v in _seed_states(self.students[0])}
        state = []
        for index, position in enumerate(step.integer_positions(self.students[0])):
            source = self.students[0].non_trainable_variables[position]
            value = source.numpy()
            if id(source) in seed_states:
                value = np.zeros_like(value)
                value.flat[0] = np.random.default_rng([self.seed % 2**32, index]).integers(1, 2**31)
            variable = self.add_weight(
                name=f"hwm_integer_state_{index}",
                shape=source.shape,
                dtype=source.dtype,
                initializer="zeros",
                trainable=False,
                aggregation="none",
            )
            variable.assign(value)
            state.append(variable)
        return state

    # ----------------------------------------------------------------- metrics
    def _create_trackers(self):
        mean, accuracy = keras.metrics.Mean, keras.metrics.SparseCategoricalAccuracy
        self.loss_tracker = mean(name="loss")
        self.kd_tracker = mean(name="kd_loss")
        self.student_ce_trackers = [mean(name=f"student_{m}_ce") for m in range(self.num_students)]
        self.student_accuracy_trackers = [
            accuracy(name=f"student_{m}_accuracy") for m in range(self.num_students)
        ]
        self.hwm_ce_tracker = mean(name="hwm_ce")
        self.hwm_accuracy_tracker = accuracy(name="hwm_accuracy")
        self.ensemble_ce_tracker = mean(name="ensemble_ce")
        self.ensemble_accuracy_tracker = accuracy(name="ensemble_accuracy")

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            *itertools.chain(*zip(self.student_ce_trackers, self.student_accuracy_trackers)),
            self.hwm_ce_tracker,
            self.hwm_accuracy_tracker,
            self.ensemble_ce_tracker,
            self.ensemble_accuracy_tracker,
            self.kd_tracker,
        ]

    def _results(self, *, hwm_ran):
        """The trackers' results; without the HWM's when it did not run."""
        reported = self.metrics
        if not hwm_ran:  # report nothing rather than zeros
            reported = [
                m for m in reported if m not in (self.hwm_ce_tracker, self.hwm_accuracy_tracker)
            ]
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
        if outputs.hwm_logits is not None:  # baselines train without the HWM
            self.hwm_ce_tracker.update_state(outputs.hwm_ce, sample_weight=batch_size)
            self.hwm_accuracy_tracker.update_state(
                labels, outputs.hwm_logits, sample_weight=example_weights
            )
        ensemble = tf.add_n([losses.full_precision(z) for z in outputs.student_logits]) / float(
            self.num_students
        )
        self.ensemble_ce_tracker.update_state(
            losses.cross_entropy(labels, ensemble), sample_weight=batch_size
        )
        self.ensemble_accuracy_tracker.update_state(labels, ensemble, sample_weight=example_weights)

    # -------------------------------------------------------------- training
    def compile(self, optimizer="sgd", **kwargs):
        """Configures training. OKDPH computes its own losses and metrics.

        Args:
            optimizer: a `keras.optimizers.Optimizer` or its name; it updates
                every student's trainable variables.
            **kwargs: `keras.Model.compile` arguments other than `loss`,
                `loss_weights`, `metrics` and `weighted_metrics`, which OKDPH
                defines itself and rejects. `jit_compile` defaults to False,
                not Keras' `"auto"` (XLA on a single GPU): XLA drops the
                in-graph check of the label range, so bad labels would train
                silently on NaN. Pass `jit_compile=True` to opt in.
        """
        for name in ("loss", "loss_weights", "metrics", "weighted_metrics"):
            if kwargs.get(name) is not None:
                raise ValueError(
                    f"OKDPH computes its own losses and metrics; remove `{name}=` from compile()."
                )
        if kwargs.get("jit_compile", "auto") == "auto":
            kwargs["jit_compile"] = False
        super().compile(optimizer=optimizer, **kwargs)
        # Built up front, the optimizer does not make Keras trace the first
        # train step twice; a loaded model gets its saved optimizer state back.
        self.optimizer.build(self.trainable_variables)

    def compile_from_config(self, config):
        # Keras skips compile() on load when it is overridden; this one is safe.
        self.compile(**keras.saving.deserialize_keras_object(config))

    def next_coefficients(self):
        """Draws this batch's coefficients r, stores them and returns them.

        `"dirichlet"` draws are seeded by `(seed, optimizer.iterations)`, so
        they change every step, agree on every replica and survive a resume.
        """
        seed = None
        if self.hybrid == "dirichlet":
            seed = tf.stack(
                [tf.constant(self.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)]
            )
        coefficients = hybrid_lib.sample_coefficients(self.hybrid, self.num_students, seed)
        self.coefficients.assign(coefficients)
        return coefficients

    def train_step(self, data):
        views, labels, shared = self._unpack(data)
        if shared and self.identical_init:
            warnings.warn(
                "Every network sees the same input batch and the students start "
                "identical: they will stay identical and OKDPH reduces to training "
                "one model. Feed one augmented view per network ([B, M+1, H, W, C] "
                "or a tuple of M+1 batches), or pass identical_init=False.",
                stacklevel=2,
            )
        step_count = tf.convert_to_tensor(self.optimizer.iterations)
        coefficients = self.next_coefficients()
        penalty = dict(weight_decay=self.weight_decay, scale_loss=self.optimizer.scale_loss)

        def train_on_examples(batch, weight):
            gradients, outputs = step.compute_gradients(
                self.students,
                *batch,
                coefficients,
                sharpness=dict(rho=self.sam_rho, adaptive=self.sam_adaptive)
                if self.sam_rho
                else None,
                data_weight=weight,
                **penalty,
                **self._loss_options(),
            )
            self._update_metrics(outputs, batch[1], weight)
            return gradients

        # A replica may get no examples of a ragged last batch: it runs no network.
        gradients = distribute.when_not_empty(
            (views, labels),
            train_on_examples,
            lambda: step.penalty_gradients(self.students, **penalty),
            synchronized=self._synchronized,
        )
        variables = [v for s in self.students for v in s.trainable_variables]
        self.optimizer.apply_gradients(zip(gradients, variables))
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            # It skips the update of a non-finite step without counting it; the
            # step count (learning-rate schedule, fusion, Dirichlet seeds) counts
            # every batch.
            self.optimizer.iterations.assign(step_count + 1)
        return self._results(hwm_ran=self._method.uses_hwm)

    def test_step(self, data):
        views, labels, _ = self._unpack(data)

        def evaluate_examples(batch, weight):
            outputs = step.forward(
                self.students,
                *batch,
                tf.convert_to_tensor(self.coefficients),
                training=False,
                **self._loss_options(),
            )
            self._update_metrics(outputs, batch[1], weight)
            return tf.constant(True)

        distribute.when_not_empty(
            (views, labels),
            evaluate_examples,
            lambda: tf.constant(False),
            synchronized=self._synchronized,
        )
        return self._results(hwm_ran=True)

    def call(self, inputs, training=False):
        """Logits `[B, M+1, num_classes]`: every student's, then the HWM's."""
        views, _ = students_lib.split_views(inputs, self.students[0], self.num_students)
        student_logits, hwm_logits = step.network_logits(
            self.students,
            views,
            tf.convert_to_tensor(self.coefficients),
            training=training,
            hwm_state=self.hwm_state,
        )
        return tf.stack(student_logits + [hwm_logits], axis=1)

    def _loss_options(self):
        return dict(
            omega=self.omega,
            beta=self.beta,
            temperature=self.temperature,
            hwm_gradient=self.hwm_gradient,
            objective=self.objective,
            hwm_state=self.hwm_state,
        )

    # ----------------------------------------------------------------- inputs
    def _unpack(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError("OKDPH needs labels: feed (views, labels) pairs.")
        if sample_weight is not None:
            raise ValueError("OKDPH does not support sample weights.")
        views, shared = students_lib.split_views(x, self.students[0], self.num_students)
        return views, students_lib.check_labels(y, self.students[0]), shared

    # --------------------------------------------------------------- the HWM
    def hybrid_model(self):
        """A new `keras.Model` holding the current HWM, `sum_m r_m theta_m`.

        A method, not a property: every call clones the students' architecture.

        It has the students' architecture, with `r = self.coefficients` (the
        last batch's coefficients; 1/M in `"mean"` mode). It is a snapshot:
        later training does not change it. Evaluate, save or export it as any
        Keras model.
        """
        model = keras.models.clone_model(self.students[0])
        trainable, non_trainable = step.hybrid_values(self.students, self.coefficients)
        for variable, value in zip(
            model.trainable_variables + model.non_trainable_variables,
            trainable + non_trainable,
        ):
            variable.assign(value)
        return model

    def fuse(self, gamma):
        """Fusion: theta_m <- gamma * theta_h + (1 - gamma) * theta_m for every student.

        Every float variable is fused, BatchNorm statistics included; integer
        state and the optimizer's state are left as they are. theta_h is the
        HWM with the current `coefficients`, computed once before any student
        changes. Called from the cross-replica context (a callback, or between
        steps of a custom loop). Under a strategy with several replicas the
        students' BatchNorm statistics, which Keras keeps per replica, are
        first averaged over every replica and worker, so all of them leave
        with identical weights.

        Args:
            gamma: fusion ratio in [0, 1]; 1 copies the HWM into every student.
        """
        gamma = validation.check_number("gamma", gamma, low=0.0, high=1.0)
        if self._fuse_function is None:
            self._fuse_function = tf.function(self._fuse, autograph=False)
        self._fuse_function(tf.constant(gamma, tf.float32))

    def _fuse(self, gamma):
        # Replicas (and workers) may hold different BatchNorm statistics.
        distribute.average_across_replicas(
            [
                v
                for s in self.students
                for v in s.non_trainable_variables
                if hybrid_lib.is_interpolable(v)
            ],
            self.distribute_strategy,
        )
        coefficients = tf.convert_to_tensor(self.coefficients)
        hwm_values = step.hybrid_values(self.students, coefficients)
        weights = tf.stack([gamma, 1.0 - gamma])
        for student in self.students:
            for variables, hwm in zip(
                (student.trainable_variables, student.non_trainable_variables), hwm_values
            ):
                fused = hybrid_lib.convex_combination([hwm, variables], weights)
                for variable, value in zip(variables, fused):
                    if hybrid_lib.is_interpolable(variable):
                        variable.assign(value)

    # ---------------------------------------------------------- serialization
    def save_own_variables(self, store):
        """Saves OKDPH's variables and every student's random seed state.

        Keras saves no `SeedGenerator` state, so a resumed run would draw other
        dropout masks than an uninterrupted one; saved here, resume is exact.
        """
        super().save_own_variables(store)
        for index, state in enumerate(self._student_seed_states()):
            store[f"{_SEED_KEY}{index}"] = state

    def load_own_variables(self, store):
        own = {key: store[key] for key in store.keys() if not key.startswith(_SEED_KEY)}
        super().load_own_variables(own)
        for index, state in enumerate(self._student_seed_states()):
            if f"{_SEED_KEY}{index}" in store:
                state.assign(store[f"{_SEED_KEY}{index}"])

    def _student_seed_states(self):
        return [v for student in self.students for v in _seed_states(student)]

    def get_config(self):
        return {
            "name": self.name,
            "students": [keras.saving.serialize_keras_object(s) for s in self.students],
            "omega": self.omega,
            "beta": self.beta,
            "temperature": self.temperature,
            "hybrid": self.hybrid,
            "hwm_gradient": self.hwm_gradient,
            "weight_decay": self.weight_decay,
            "identical_init": self.identical_init,
            "seed": self.seed,
            "objective": self.objective,
            "sam_rho": self.sam_rho,
            "sam_adaptive": self.sam_adaptive,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["students"] = [keras.saving.deserialize_keras_object(s) for s in config["students"]]
        return cls(**config)


_SEED_KEY = "student_seed_state_"


def _seed_states(model):
    """The state variables of every random layer's `SeedGenerator` in `model`."""
    states = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        states += [generator.state for generator in layer._seed_generators]
    return states
