"""The OKDPH step: hybridize, run the M students and the HWM, losses, gradients.

This is the single implementation of the method's per-batch mathematics
(METHOD.md, "Per batch t"). `OKDPH.train_step`, `OKDPH.test_step` and any custom
distributed loop call it; it knows nothing of data sources, files or metrics.
"""

from typing import NamedTuple

import tensorflow as tf

from okdph_keras import hybrid, losses, methods
from okdph_keras.baselines import sam


class StepOutputs(NamedTuple):
    """Logits and losses of one OKDPH forward pass (all unscaled means).

    Attributes:
        student_logits: list of M tensors `[B, num_classes]`.
        hwm_logits: `[B, num_classes]`, the hybrid-weight model's logits; None
            when training with an objective that does not use the HWM.
        student_ce: list of M scalars, CE(z_m, y).
        hwm_ce: scalar, CE(z_h, y), or None with `hwm_logits`.
        kd: list of M scalars, student m's distillation term (see `forward`).
        total: scalar, sum_m L_m (without weight decay).
        hwms: `(logits, ce)` of every reported HWM (`Method.hwm_names`), the
            first being `(hwm_logits, hwm_ce)`; empty without an HWM.
    """

    student_logits: list
    hwm_logits: tf.Tensor
    student_ce: list
    hwm_ce: tf.Tensor
    kd: list
    total: tf.Tensor
    hwms: list = ()


def forward(
    students,
    views,
    labels,
    coefficients,
    *,
    objective="okdph",
    training=True,
    hwm_state=None,
    epoch=None,
    **settings,
):
    """Runs the networks and computes every loss of `objective`.

    The losses are the method's (`okdph_keras.methods`): with `"okdph"`,
    `L_m = omega*CE(z_m) + (1-omega)*CE(z_h) + beta*tau^2*KL(p_e || p_m)`, where
    `z_e = (sum_m z_m + z_h) / (M+1)` carries no gradient. The total is
    `sum_m L_m`, so the HWM's CE enters it M times and, with `hwm_gradient`,
    student m receives `M*(1-omega)*r_m` times the CE gradient at theta_h.
    Methods without the HWM (`independent`, `dml`, `kdcl`, ...) do not run it
    in training.

    Args:
        students: the networks `OKDPH` holds (`Method.build_networks`): for
            OKDPH, M homogeneous `keras.Model`s mapping images to logits.
        views: list of M+1 image batches: one per student, then the HWM's.
        labels: integer labels `[B]`.
        coefficients: tensor `[M]`, the hybridization weights r.
        objective: the name of a method `OKDPH` trains by itself
            (`methods.names(trainable_by_model=True)`).
        training: the networks' mode. In training mode the students' BatchNorm
            statistics are updated; the HWM's never persist. Out of training
            the HWM is run (and reported) for every method that has one, and
            each peer's CE is the plain CE.
        hwm_state: the HWM's own integer state; see `hwm.network_logits`.
        epoch: the 0-based epoch (a scalar), for an objective whose losses
            ramp up (`Method.uses_epoch`).
        **settings: the objective's hyperparameters (`okdph_keras.hyperparameters`:
            `omega`, `beta`, `temperature`, `hwm_gradient`, ...); one left out
            or None takes the objective's default.

    Returns:
        A `StepOutputs`.
    """
    method = methods.get(objective, what="objective", trainable_by_model=True)
    if method.uses_epoch and epoch is None:
        raise ValueError(
            f"objective={objective!r} ramps its losses up over the epochs: pass epoch= "
            "(OKDPH keeps it in its `epoch` variable)."
        )
    settings = method.settings(settings)
    outputs = method.network_outputs(
        students,
        views,
        coefficients,
        training=training,
        hwm_gradient=settings["hwm_gradient"],
        hwm_state=hwm_state,
    )
    terms = method.losses(labels, outputs, settings, epoch=epoch, training=training)
    hwms = terms.get("hwms")
    if hwms is None:
        hwms = [] if outputs["hwm"] is None else [(outputs["hwm"], terms["hwm_ce"])]
    return StepOutputs(
        outputs["students"],
        outputs["hwm"],
        terms["student_ce"],
        terms["hwm_ce"],
        terms["kd"],
        terms["total"],
        hwms,
    )


def compute_gradients(
    students,
    views,
    labels,
    coefficients,
    *,
    trained=None,
    weight_decay=0.0,
    scale_loss=None,
    sharpness=None,
    data_weight=None,
    **loss_options,
):
    """One training step up to the gradients, under one `tf.GradientTape`.

    Args:
        students, views, labels, coefficients: as in `forward`.
        trained: the students whose variables get gradients (and weight decay);
            all of them when None (`methods.Method.trained_students`).
        weight_decay: coupled L2 coefficient (torch `SGD(weight_decay=...)`).
        scale_loss: optional callable applied to the differentiated loss, such
            as `optimizer.scale_loss` for mixed-precision loss scaling.
        sharpness: None, or `{"rho": ..., "adaptive": ...}` to take the
            gradients at the sharpness-aware point (SAM/ASAM,
            `okdph_keras.baselines.sharpness_aware_gradients`), each student
            perturbed with its own norm; its BatchNorm statistics are updated
            by the first pass only. The forward pass then runs twice.
        data_weight: optional float scalar multiplying the data term: 0.0 for
            a replica's padding (see `distribute.when_not_empty`), whose loss
            would otherwise reach the other replicas through the gradient of
            global BatchNorm statistics.
        **loss_options: `objective`, `hwm_state`, `epoch` and the settings,
            as in `forward`.

    Returns:
        `(gradients, outputs)`: gradients for the students' trainable variables,
        concatenated student by student, and the `StepOutputs` (at the
        unperturbed weights). The loss that is differentiated is divided by the
        number of replicas in sync, because the optimizer sums gradients over
        replicas.
    """
    trained = students if trained is None else trained
    variables = [v for s in trained for v in s.trainable_variables]

    def differentiated_loss():
        outputs = forward(students, views, labels, coefficients, training=True, **loss_options)
        total = outputs.total if data_weight is None else outputs.total * data_weight
        return _differentiated(total, variables, weight_decay, scale_loss), outputs

    if sharpness is not None:
        state = [
            v for s in students for v in s.non_trainable_variables if hybrid.is_interpolable(v)
        ]
        gradients, _, outputs = sam.sharpness_aware_gradients(
            differentiated_loss,
            [s.trainable_variables for s in trained],
            frozen_variables=state,
            **sharpness,
        )
        return gradients, outputs
    with tf.GradientTape() as tape:
        loss, outputs = differentiated_loss()
    gradients = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return gradients, outputs


def penalty_gradients(students, *, weight_decay=0.0, scale_loss=None):
    """The gradients of a step on a replica batch with no examples: weight decay only.

    Such a step runs no network (see `distribute.when_not_empty`); its data
    term contributes nothing, and its share of the coupled L2 term is what
    every replica contributes, so the summed gradient keeps the full decay.

    Args:
        students: list of M `keras.Model`s.
        weight_decay, scale_loss: as in `compute_gradients`.

    Returns:
        Gradients for the students' trainable variables, as `compute_gradients`.
    """
    variables = [v for s in students for v in s.trainable_variables]
    if not weight_decay:
        return [tf.zeros_like(v) for v in variables]
    with tf.GradientTape() as tape:
        loss = _differentiated(tf.zeros([]), variables, weight_decay, scale_loss)
    return tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def _differentiated(total, variables, weight_decay, scale_loss):
    """The loss a replica differentiates: total + L2, over the replicas, scaled."""
    loss = total
    if weight_decay:
        loss += weight_decay * losses.l2_penalty(variables)
    loss = losses.scale_for_replicas(loss)
    return loss if scale_loss is None else scale_loss(loss)
