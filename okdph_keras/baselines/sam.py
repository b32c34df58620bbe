"""Sharpness-aware minimisation: SAM (Foret et al. 2021) and ASAM (Kwon et al. 2021).

Each step computes the gradient g at the weights w, moves to w + eps with
`eps = rho * g / ||g||` (SAM) or `eps = rho * T^2 g / ||T g||` with
`T = |w| + eta` elementwise (ASAM), and returns the gradient at w + eps for the
optimizer to apply at w. Under `tf.distribute`, every replica perturbs with its
own local gradient (the paper's "m-sharpness", m = per-replica batch); only
the final gradients are summed across replicas, by the optimizer.
"""

import keras
import tensorflow as tf

from okdph_keras import distribute, hybrid, losses, sync_batchnorm
from okdph_keras.validation import check_bool, check_number, fail

NORM_EPSILON = 1e-12  # added to ||g|| so that a zero gradient gives eps = 0


def sharpness_aware_gradients(
    loss_fn, variable_groups, rho=0.05, adaptive=False, eta=0.01, frozen_variables=()
):
    """Gradients at the sharpness-aware point w + eps, with a separate eps per group.

    Each group is perturbed with its own norm, so M independent networks in one
    objective each get the eps they would get if trained alone. The variables
    are assigned w + eps for the second pass and then reassigned their saved
    values (exactly w, not w + eps - eps). Works eagerly, inside `tf.function`
    and in a `tf.distribute` replica context (variables with Keras' default
    aggregation `"none"` are perturbed replica by replica). eps is invariant to
    a positive scaling of the objective, so replica scaling and mixed-precision
    loss scaling do not change it.

    Args:
        loss_fn: a callable with no arguments that runs the forward pass on the
            variables' current values and returns `(objective, aux)`: the scalar
            to differentiate (already replica- and loss-scaled, as it would be
            for `optimizer.apply_gradients`) and anything else (logits, ...).
            It is called twice: at w, then at w + eps.
        variable_groups: a list of lists of float variables; each list is one
            independent network, perturbed with its own norm.
        rho: the neighbourhood radius, > 0.
        adaptive: False for SAM, True for ASAM.
        eta: ASAM's offset in `T = |w| + eta`, >= 0; applied to every variable
            (biases included). Ignored by SAM.
        frozen_variables: variables the second pass must leave unchanged, such
            as BatchNorm moving statistics; they keep the values the first pass
            (at w) gave them.

    Returns:
        `(gradients, objective, aux)`: the gradients at w + eps, one per
        variable, groups concatenated in order (zeros where a variable does not
        affect the objective); the objective and aux of the first pass, at w.

    Example:
        >>> def loss_fn():
        ...     logits = model(x, training=True)
        ...     return loss_object(y, logits), logits
        >>> grads, loss, logits = sharpness_aware_gradients(
        ...     loss_fn, [model.trainable_variables], rho=0.05)
        >>> optimizer.apply_gradients(zip(grads, model.trainable_variables))
    """
    _check_options(rho, adaptive, eta)
    return _sharpness_aware_gradients(
        loss_fn,
        variable_groups,
        rho=rho,
        adaptive=adaptive,
        eta=eta,
        frozen_variables=frozen_variables,
    )


def _sharpness_aware_gradients(loss_fn, variable_groups, *, rho, adaptive, eta, frozen_variables):
    """`sharpness_aware_gradients` with options already checked."""
    groups = [list(group) for group in variable_groups]
    variables = [v for group in groups for v in group]
    gradients, objective, aux = _gradients(loss_fn, variables)

    originals = [tf.convert_to_tensor(v) for v in variables]
    frozen = list(frozen_variables)
    frozen_values = [tf.convert_to_tensor(v) for v in frozen]
    start = 0
    for group in groups:
        end = start + len(group)
        epsilons = perturbation(
            originals[start:end], gradients[start:end], rho, adaptive=adaptive, eta=eta
        )
        for variable, value, epsilon in zip(group, originals[start:end], epsilons):
            variable.assign(value + epsilon)
        start = end

    perturbed_gradients, _, _ = _gradients(loss_fn, variables)
    for variable, value in zip(variables + frozen, originals + frozen_values):
        variable.assign(value)
    return perturbed_gradients, objective, aux


def perturbation(values, gradients, rho, adaptive=False, eta=0.01):
    """eps for one group: `rho * g / ||g||` (SAM) or `rho * T^2 g / ||T g||`, `T = |w| + eta`.

    Args:
        values: the group's weights w (tensors or variables).
        gradients: the gradients g at w, in the same order.
        rho, adaptive, eta: as in `sharpness_aware_gradients`.

    Returns:
        A list of tensors eps, in the variables' dtypes; the norm is taken over
        the whole group, in at least float32.
    """
    gradients = [losses.full_precision(tf.convert_to_tensor(g)) for g in gradients]
    if adaptive:
        scales = [tf.abs(losses.full_precision(tf.convert_to_tensor(w))) + eta for w in values]
    else:
        scales = [tf.ones_like(g) for g in gradients]
    scaled = [t * g for t, g in zip(scales, gradients)]
    norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(s)) for s in scaled]))
    factor = rho / (norm + NORM_EPSILON)
    return [
        tf.cast(factor * t * s, tf.convert_to_tensor(w).dtype)
        for w, t, s in zip(values, scales, scaled)
    ]


def _gradients(loss_fn, variables):
    with tf.GradientTape() as tape:
        objective, aux = loss_fn()
    gradients = tape.gradient(
        objective, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    return [tf.convert_to_tensor(g) for g in gradients], objective, aux


def _check_options(rho, adaptive, eta):
    check_number("rho", rho, low=0, low_open=True)
    check_bool("adaptive", adaptive)
    check_number("eta", eta, low=0)


@keras.saving.register_keras_serializable(package="okdph_keras")
class SAM(keras.Model):
    """Trains any Keras model with SAM or ASAM; otherwise behaves like it.

    `compile`, `fit`, `evaluate` and `predict` work as for the wrapped model;
    calls, evaluation and prediction are the wrapped model's. Each training
    step costs two forward and backward passes. The loss and compiled metrics
    reported by `fit` are those of the first pass, at w. BatchNorm moving
    statistics (every float non-trainable variable of the wrapped model) are
    updated by the first pass only: the second pass's changes are undone.
    Gradients are summed over replicas by the optimizer; eps is per replica
    (m-sharpness).

    Args:
        model: the `keras.Model` to train, built (it has its variables).
        rho: the neighbourhood radius, > 0 (the SAM paper uses 0.05; ASAM
            needs larger values, 0.5 to 2).
        adaptive: False for SAM, True for ASAM.
        eta: ASAM's offset in `T = |w| + eta`, >= 0 (default 0.01).
        **kwargs: passed to `keras.Model` (`name`, ...).

    Example:
        >>> sam = SAM(get_model("resnet32", num_classes=100), rho=0.05)
        >>> sam.compile(keras.optimizers.SGD(0.1, momentum=0.9),
        ...             loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ...             metrics=["accuracy"])
        >>> sam.fit(train_data, epochs=200)
        >>> sam.model.save("trained.keras")  # the plain model
    """

    def __init__(self, model, rho=0.05, adaptive=False, eta=0.01, **kwargs):
        super().__init__(**kwargs)
        if not (isinstance(model, keras.Model) and model.built and model.trainable_variables):
            fail(
                "model",
                model,
                "a built keras.Model with trainable variables (start it with keras.Input, "
                "or call it on a batch first)",
            )
        _check_options(rho, adaptive, eta)
        self.model = model
        self.rho = float(rho)
        self.adaptive = adaptive
        self.eta = float(eta)
        self._synchronized = sync_batchnorm.uses_synchronized_batchnorm([model])
        self.built = True

    def call(self, inputs, training=False):
        return self.model(inputs, training=training)

    def train_step(self, data):
        variables = self.trainable_variables

        def train_on_examples(batch, weight):
            x, y, sample_weight = batch
            sample_weight = sample_weight * weight

            def loss_fn():
                y_pred = self.model(x, training=True)
                loss = self._compute_loss(
                    x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
                )
                return self.optimizer.scale_loss(loss), (loss, y_pred)

            gradients, _, (loss, y_pred) = _sharpness_aware_gradients(
                loss_fn,
                [variables],
                rho=self.rho,
                adaptive=self.adaptive,
                eta=self.eta,
                frozen_variables=[
                    v for v in self.model.non_trainable_variables if hybrid.is_interpolable(v)
                ],
            )
            # `compute_loss` divides by the replicas in sync; the metric takes the
            # replica's own mean, as in `keras.Model.train_step`.
            num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
            self._loss_tracker.update_state(
                loss * num_replicas, sample_weight=tf.reduce_sum(sample_weight)
            )
            self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
            return gradients

        # A replica with no examples of a ragged batch runs nothing.
        gradients = distribute.when_not_empty(
            self._weighted(data),
            train_on_examples,
            lambda: [tf.zeros_like(v) for v in variables],
            synchronized=self._synchronized,
        )
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self.get_metrics_result()

    def test_step(self, data):
        def evaluate_examples(batch, weight):
            x, y, sample_weight = batch
            super(SAM, self).test_step((x, y, sample_weight * weight))  # updates the metrics
            return tf.constant(True)

        distribute.when_not_empty(
            self._weighted(data),
            evaluate_examples,
            lambda: tf.constant(False),
            synchronized=self._synchronized,
        )
        return self.get_metrics_result()

    @staticmethod
    def _weighted(data):
        """`(x, y, sample_weight)`, the weights ones if `data` has none."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is None:
            sample_weight = tf.ones(tf.shape(tf.nest.flatten(x)[0])[:1])
        return x, y, sample_weight

    def get_config(self):
        options = {key: getattr(self, key) for key in ("name", "rho", "adaptive", "eta")}
        return {**options, "model": keras.saving.serialize_keras_object(self.model)}

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "model": keras.saving.deserialize_keras_object(config["model"])})
