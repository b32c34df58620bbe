"""`OKDPH`: M peer students and their hybrid-weight model as one `keras.Model`."""

import inspect
import random
import warnings

import keras
import tensorflow as tf

from okdph_keras import distribute, hwm, hyperparameters, methods, step, sync_batchnorm, validation
from okdph_keras import labels as labels_lib
from okdph_keras import students as students_lib
from okdph_keras.callbacks import EpochCounter
from okdph_keras.network_metrics import NetworkMetrics

# OKDPH's arguments that are method hyperparameters (`okdph_keras.hyperparameters`).
HYPERPARAMETERS = ("omega", "beta", "temperature", "hybrid", "hwm_gradient", "label_smoothing")


@keras.saving.register_keras_serializable(package="okdph_keras")
class OKDPH(NetworkMetrics, keras.Model):
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
            the same order). With `objective="okdph_groups"`, a list of groups
            of homogeneous students, each a `(builder, count)` pair or a list
            of built models, e.g. `[(resnet110, 2), (resnet32, 2)]`: one view
            and one output per network, the students group by group, then one
            HWM per group of two or more (`network_names()`).
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
        label_smoothing: of the students' cross-entropy, for an objective that
            smooths it (`"sam"`: 0.1 by default).
            Each of these six left None takes the objective's default
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
            without the HWM (`"independent"`, `"dml"`, `"kdcl"`, `"mean_teacher"`;
            the HWM is still evaluated), or a multi-branch method (`"one"`,
            `"cl_ilr"`, `"okddip"`, `"ffl"`, `"pcl"`), for which `students` is a
            `models.multi_branch` network or a builder of one, with M branches.
            Beyond the paper: `"okdph_groups"` (students of several
            architectures, one HWM per group), `"okdph_multi_hwm"` (K
            Dirichlet HWMs per batch, `settings={"hybrid_samples": K}`).
        sam_rho: > 0 trains with sharpness-aware gradients (SAM, Foret et al.
            2021) of radius `sam_rho`, each student perturbed with its own
            norm; 0 (default) trains with plain gradients.
        sam_adaptive: ASAM instead of SAM (Kwon et al. 2021).
        settings: the objective's other hyperparameters, by name
            (`okdph_keras.hyperparameters`: `rampup_epochs`, `ema_decay`); those
            left out take the objective's defaults.
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
        label_smoothing=None,
        weight_decay=0.0,
        identical_init=True,
        seed=None,
        objective="okdph",
        sam_rho=0.0,
        sam_adaptive=False,
        settings=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._method = methods.get(objective, what="objective", trainable_by_model=True)
        self.objective = objective
        given = dict(omega=omega, beta=beta, temperature=temperature, hybrid=hybrid)
        given.update(hwm_gradient=hwm_gradient, label_smoothing=label_smoothing)
        given.update(_other_settings(settings))
        resolved = self._method.settings(given)
        for name in HYPERPARAMETERS:  # None where the objective does not use it
            setattr(self, name, resolved.get(name))
        # The objective's other step hyperparameters (rampup_epochs, ema_decay, ...).
        self.settings = {
            name: value
            for name, value in resolved.items()
            if name not in HYPERPARAMETERS and hyperparameters.HYPERPARAMETERS[name].in_step
        }
        check = validation.check_number
        self.weight_decay = check("weight_decay", weight_decay, low=0.0)
        self.sam_rho = check("sam_rho", sam_rho, low=0.0)
        self.sam_adaptive = validation.check_bool("sam_adaptive", sam_adaptive)
        self.identical_init = validation.check_bool("identical_init", identical_init)
        if seed is not None and not validation.is_integer(seed):
            validation.fail("seed", seed, "an integer or None")
        self.seed = random.randrange(2**31) if seed is None else int(seed)

        students = self._method.build_networks(students, num_students)
        self.students = students
        self.num_students = self._method.num_peers(students)
        # Global BatchNorm all-reduces inside the networks: an empty replica must run them too.
        self._synchronized = sync_batchnorm.uses_synchronized_batchnorm(students)
        if self.identical_init:
            self._method.make_identical(students)

        # The mean hybrid (1/M; with groups, 1/size within each group) until a batch draws.
        mean = self._method.draw_coefficients("mean", students, None, self.settings)
        self.coefficients = self.add_weight(
            name="hybrid_coefficients",
            shape=(len(students),),
            initializer=keras.initializers.Constant(self._method.fusion_coefficients(mean).numpy()),
            trainable=False,
            aggregation="only_first_replica",
        )
        self.hwm_state = self._create_hwm_state()
        # The epoch in progress, for losses that ramp up; set by `callbacks.EpochCounter`.
        self.epoch = None
        if self._method.uses_epoch:
            self.epoch = self.add_weight(
                name="epoch",
                shape=(),
                initializer="zeros",
                trainable=False,
                aggregation="only_first_replica",
            )
        self._create_trackers()
        self._fuse_function = None
        self.built = True

    def _create_hwm_state(self):
        """Every HWM's own integer state, as variables (`hwm.initial_integer_state`):
        one list per hybrid group (`Method.hybrid_groups`), concatenated."""
        state = []
        for group, (start, _) in enumerate(self._method.hybrid_groups(self.students)):
            prefix = "hwm" if group == 0 else f"hwm{group}"
            seed = self.seed + 7919 * group  # each group's HWM draws its own masks
            for name, value in hwm.initial_integer_state(self.students[start], seed):
                variable = self.add_weight(
                    name=name.replace("hwm", prefix, 1),
                    shape=value.shape,
                    dtype=value.dtype,
                    initializer="zeros",
                    trainable=False,
                    aggregation="none",
                )
                variable.assign(value)
                state.append(variable)
        return state

    # -------------------------------------------------------------- training
    def compile(self, optimizer="sgd", **kwargs):
        """Configures training. OKDPH computes its own losses and metrics.

        Args:
            optimizer: a `keras.optimizers.Optimizer` or its name; it updates
                every student's trainable variables.
            **kwargs: `keras.Model.compile` arguments other than `loss`,
                `loss_weights`, `metrics` and `weighted_metrics`, which OKDPH
                defines itself and rejects. `jit_compile="auto"` keeps
                Keras' meaning (XLA on a single GPU): XLA drops the step's
                check of the label range, so `fit`, `evaluate`,
                `train_on_batch` and `test_on_batch` check the labels on the
                input (`okdph_keras.labels`).
        """
        for name in ("loss", "loss_weights", "metrics", "weighted_metrics"):
            if kwargs.get(name) is not None:
                raise ValueError(
                    f"OKDPH computes its own losses and metrics; remove `{name}=` from compile()."
                )
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
        coefficients = self._method.draw_coefficients(
            self.hybrid, self.students, seed, self.settings
        )
        self.coefficients.assign(self._method.fusion_coefficients(coefficients))
        return coefficients

    def train_step(self, data):
        views, labels, shared = self._unpack(data)
        if shared and self.identical_init and self._method.has_hwm:
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
        trained = self._method.trained_students(self.students)

        def train_on_examples(batch, weight):
            gradients, outputs = step.compute_gradients(
                self.students,
                *batch,
                coefficients,
                trained=trained,
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
            lambda: step.penalty_gradients(trained, **penalty),
            synchronized=self._synchronized,
        )
        variables = [v for s in trained for v in s.trainable_variables]
        self.optimizer.apply_gradients(zip(gradients, variables))
        self._method.after_step(self, step_count)
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
        return self._results(hwm_ran=self._method.has_hwm)

    def call(self, inputs, training=False):
        """Logits `[B, M+1, num_classes]`: every peer's, then the HWM's (`[B, M, ...]`
        for an objective without an HWM, such as the multi-branch methods; with
        groups, one HWM per group of two or more, `network_names()`)."""
        views, _ = self._split_views(inputs)
        outputs = self._method.network_outputs(
            self.students,
            views,
            tf.convert_to_tensor(self.coefficients),
            training=training,
            hwm_gradient=True,
            hwm_state=self.hwm_state,
        )
        hwm_logits = outputs.get("hwms", [] if outputs["hwm"] is None else [outputs["hwm"]])
        return tf.stack(outputs["students"] + list(hwm_logits), axis=1)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, with the labels checked on the input (also under XLA) and
        `callbacks.EpochCounter` added for an objective that ramps its losses up over
        the epochs (`Method.uses_epoch`)."""
        arguments = self._checked_arguments(keras.Model.fit, args, kwargs)
        arguments["validation_data"] = labels_lib.checked_validation_data(
            arguments["validation_data"], self._num_classes()
        )
        arguments["callbacks"] = self.with_epoch_counter(arguments["callbacks"])
        return super().fit(**arguments)

    def evaluate(self, *args, **kwargs):
        """`keras.Model.evaluate`, with the labels checked on the input (also under XLA)."""
        return super().evaluate(**self._checked_arguments(keras.Model.evaluate, args, kwargs))

    def train_on_batch(self, *args, **kwargs):
        """`keras.Model.train_on_batch`, with the labels checked first (also under XLA)."""
        return super().train_on_batch(
            **self._checked_arguments(keras.Model.train_on_batch, args, kwargs)
        )

    def test_on_batch(self, *args, **kwargs):
        """`keras.Model.test_on_batch`, with the labels checked first (also under XLA)."""
        return super().test_on_batch(
            **self._checked_arguments(keras.Model.test_on_batch, args, kwargs)
        )

    def _checked_arguments(self, method, args, kwargs):
        """The arguments of a call to Keras' `method`, by name, with `x` and `y` checked."""
        signature = inspect.signature(method)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = {}
        for name, value in list(bound.arguments.items())[1:]:  # without self
            if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(value)
            else:
                arguments[name] = value
        arguments["x"], arguments["y"] = labels_lib.checked_input(
            arguments["x"], arguments["y"], self._num_classes()
        )
        return arguments

    def _num_classes(self):
        return students_lib.output_width(self.students[0])

    def with_epoch_counter(self, callbacks):
        """`callbacks` as a list, with an `EpochCounter` where the objective needs one."""
        callbacks = list(callbacks or [])
        if self.epoch is not None and not any(isinstance(c, EpochCounter) for c in callbacks):
            callbacks.append(EpochCounter())
        return callbacks

    def student_models(self):
        """One plain `keras.Model` per peer (images to logits), in the order of the
        reported `student_<m>`: the students themselves, or for a multi-branch method
        each branch with the trunk (`models.export_branch`). Export these."""
        return self._method.student_models(self.students)

    def _loss_options(self):
        options = {name: getattr(self, name) for name in HYPERPARAMETERS if name != "hybrid"}
        options.update(self.settings)
        epoch = None if self.epoch is None else tf.convert_to_tensor(self.epoch)
        return dict(options, objective=self.objective, hwm_state=self.hwm_state, epoch=epoch)

    # ----------------------------------------------------------------- inputs
    def _unpack(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError("OKDPH needs labels: feed (views, labels) pairs.")
        if sample_weight is not None:
            raise ValueError("OKDPH does not support sample weights.")
        views, shared = self._split_views(x)
        return views, students_lib.check_labels(y, self.students[0]), shared

    def _split_views(self, x):
        return students_lib.split_views(x, self.students[0], self.network_names())

    def network_names(self):
        """The networks that take a view, in the order of the views: `student_0`, ...,
        then the HWM (`hwm`, or `hwm_<g>` for each group g with one)."""
        return self._method.network_names(self.students)

    # --------------------------------------------------------------- the HWM
    def hybrid_model(self, group=0):
        """A new `keras.Model` holding the current HWM, `sum_m r_m theta_m`.

        A snapshot with `r = self.coefficients` (the last batch's; 1/M in
        `"mean"` mode), cloned on every call; evaluate, save or export it as any
        Keras model.

        Args:
            group: which HWM, for students in groups (`objective="okdph_groups"`):
                its index among the groups that have one (0 otherwise).
        """
        groups = self._hybrid_groups()
        group = validation.check_integer("group", group, low=0, high=len(groups) - 1)
        start, stop = groups[group]
        return hwm.snapshot(self.students[start:stop], self.coefficients[start:stop])

    def hybrid_groups(self):
        """`(start, stop)` in `students` of each group with an HWM (one group, or
        with `objective="okdph_groups"` each group of two or more)."""
        return self._method.hybrid_groups(self.students)

    def _hybrid_groups(self):
        groups = self.hybrid_groups()
        if not groups:
            raise ValueError(
                f"objective={self.objective!r} trains no group of separate students of one "
                "architecture, so it has no hybrid-weight model to snapshot or fuse."
            )
        return groups

    def fuse(self, gamma):
        """Fusion: theta_m <- gamma * theta_h + (1 - gamma) * theta_m for every student.

        theta_h is the HWM with the current `coefficients`; every float variable
        is fused, BatchNorm statistics averaged over replicas and workers first
        (`hwm.fuse`); integer state and the optimizer's state are left as they
        are. Called from the cross-replica context (a callback, or between steps
        of a custom loop).

        Args:
            gamma: fusion ratio in [0, 1]; 1 copies the HWM into every student.
        """
        gamma = validation.check_number("gamma", gamma, low=0.0, high=1.0)
        self._hybrid_groups()
        if self._fuse_function is None:
            self._fuse_function = tf.function(self._fuse, autograph=False)
        self._fuse_function(tf.constant(gamma, tf.float32))

    def _fuse(self, gamma):
        coefficients = tf.convert_to_tensor(self.coefficients)
        for start, stop in self._hybrid_groups():  # each group toward its own HWM
            hwm.fuse(
                self.students[start:stop],
                coefficients[start:stop],
                gamma,
                self.distribute_strategy,
            )

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
        return [v for student in self.students for v in hwm.seed_states(student)]

    def get_config(self):
        return {
            "name": self.name,
            "students": [keras.saving.serialize_keras_object(s) for s in self.students],
            **{name: getattr(self, name) for name in HYPERPARAMETERS},
            "weight_decay": self.weight_decay,
            "identical_init": self.identical_init,
            "seed": self.seed,
            "objective": self.objective,
            "sam_rho": self.sam_rho,
            "sam_adaptive": self.sam_adaptive,
            "settings": dict(self.settings),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["students"] = [keras.saving.deserialize_keras_object(s) for s in config["students"]]
        return cls(**config)


_SEED_KEY = "student_seed_state_"


def _other_settings(settings):
    """`OKDPH(settings=...)`: step hyperparameters other than its explicit arguments."""
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        validation.fail("settings", settings, "a dict of hyperparameter name -> value, or None")
    for name in settings:
        known = hyperparameters.HYPERPARAMETERS.get(name)
        if name in HYPERPARAMETERS or known is None or not known.in_step:
            allowed = [
                n
                for n, h in hyperparameters.HYPERPARAMETERS.items()
                if h.in_step and n not in HYPERPARAMETERS
            ]
            validation.fail(
                "the settings key", name, f"one of {allowed} (the others are OKDPH's arguments)"
            )
    return settings
