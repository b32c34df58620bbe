"""The OKDPH step: hybridize, run the M students and the HWM, losses, gradients.

This is the single implementation of the method's per-batch mathematics
(METHOD.md, "Per batch t"). `OKDPH.train_step`, `OKDPH.test_step` and any custom
distributed loop call it; it knows nothing of data sources, files or metrics.
"""

from typing import NamedTuple

import tensorflow as tf

from okdph_keras import hybrid, losses


class StepOutputs(NamedTuple):
    """Logits and losses of one OKDPH forward pass (all unscaled means).

    Attributes:
        student_logits: list of M tensors `[B, num_classes]`.
        hwm_logits: `[B, num_classes]`, the hybrid-weight model's logits.
        student_ce: list of M scalars, CE(z_m, y).
        hwm_ce: scalar, CE(z_h, y).
        kd: list of M scalars, tau^2 * KL(softmax(z_e/tau) || softmax(z_m/tau)).
        total: scalar, sum_m L_m (without weight decay).
    """

    student_logits: list
    hwm_logits: tf.Tensor
    student_ce: list
    hwm_ce: tf.Tensor
    kd: list
    total: tf.Tensor


def hybrid_values(students, coefficients, hwm_gradient=True):
    """Trainable and non-trainable values of the HWM, sum_m r_m * theta_m.

    Args:
        students: list of M homogeneous `keras.Model`s.
        coefficients: tensor `[M]`, the convex weights r.
        hwm_gradient: if False the students' trainable values enter through
            `tf.stop_gradient`, so the HWM gives the students no gradient (the
            reference code's behaviour).

    Returns:
        `(trainable_values, non_trainable_values)` in `students[0]`'s order, ready
        for `students[0].stateless_call`. BatchNorm statistics are combined;
        integer state is taken from `students[0]` unchanged.
    """
    trainable = [list(s.trainable_variables) for s in students]
    if not hwm_gradient:
        trainable = [[tf.stop_gradient(v) for v in values] for values in trainable]
    non_trainable = [list(s.non_trainable_variables) for s in students]
    return (
        hybrid.convex_combination(trainable, coefficients),
        hybrid.convex_combination(non_trainable, coefficients),
    )


def network_logits(students, views, coefficients, hwm_gradient=True, training=True):
    """Logits of the M students and of the HWM, each on its own view.

    Args:
        students: list of M homogeneous `keras.Model`s.
        views: list of M+1 image batches (students first, then the HWM).
        coefficients: tensor `[M]`, the hybridization weights r.
        hwm_gradient: see `hybrid_values`.
        training: the networks' mode.

    Returns:
        `(student_logits, hwm_logits)`: a list of M tensors and one tensor. The
        HWM runs through `students[0].stateless_call` on the hybrid values, so
        no weights are copied and no student's state changes because of it.
    """
    student_logits = [
        student(view, training=training) for student, view in zip(students, views)
    ]
    # After the students' forward passes, so that integer state taken from
    # students[0] (a dropout seed) has advanced past what student 0 just used.
    trainable, non_trainable = hybrid_values(students, coefficients, hwm_gradient)
    hwm_logits, _ = students[0].stateless_call(
        trainable, non_trainable, views[len(students)], training=training
    )
    return student_logits, hwm_logits


def forward(
    students,
    views,
    labels,
    coefficients,
    *,
    omega,
    beta,
    temperature,
    hwm_gradient=True,
    training=True,
):
    """Runs the M students and the HWM and computes every OKDPH loss.

    Student m's loss is
    `L_m = omega*CE(z_m) + (1-omega)*CE(z_h) + beta*tau^2*KL(p_e || p_m)`, where
    `z_e = (sum_m z_m + z_h) / (M+1)` carries no gradient. The total is
    `sum_m L_m`, so the HWM's CE enters it M times and, with `hwm_gradient`,
    student m receives `M*(1-omega)*r_m` times the CE gradient at theta_h.

    Args:
        students: list of M homogeneous `keras.Model`s mapping images to logits.
        views: list of M+1 image batches: one per student, then the HWM's.
        labels: integer labels `[B]`.
        coefficients: tensor `[M]`, the hybridization weights r.
        omega: weight of a student's own CE; `1 - omega` weighs the HWM's CE.
        beta: weight of the distillation term.
        temperature: distillation temperature tau.
        hwm_gradient: whether the HWM's loss differentiates into the students.
        training: the networks' mode. In training mode the students' BatchNorm
            statistics are updated; the HWM's never persist.

    Returns:
        A `StepOutputs`.
    """
    num_students = len(students)
    student_logits, hwm_logits = network_logits(
        students, views, coefficients, hwm_gradient=hwm_gradient, training=training
    )
    ensemble = tf.stop_gradient(
        tf.add_n([losses.full_precision(z) for z in student_logits + [hwm_logits]])
        / float(num_students + 1)
    )
    student_ce = [losses.cross_entropy(labels, z) for z in student_logits]
    hwm_ce = losses.cross_entropy(labels, hwm_logits)
    kd = [losses.distillation_loss(ensemble, z, temperature) for z in student_logits]
    total = (
        omega * tf.add_n(student_ce)
        + num_students * (1.0 - omega) * hwm_ce
        + beta * tf.add_n(kd)
    )
    return StepOutputs(student_logits, hwm_logits, student_ce, hwm_ce, kd, total)


def compute_gradients(
    students,
    views,
    labels,
    coefficients,
    *,
    weight_decay=0.0,
    scale_loss=None,
    **loss_options,
):
    """One OKDPH training step up to the gradients, under one `tf.GradientTape`.

    Args:
        students, views, labels, coefficients: as in `forward`.
        weight_decay: coupled L2 coefficient (torch `SGD(weight_decay=...)`).
        scale_loss: optional callable applied to the differentiated loss, such
            as `optimizer.scale_loss` for mixed-precision loss scaling.
        **loss_options: `omega`, `beta`, `temperature`, `hwm_gradient`.

    Returns:
        `(gradients, outputs)`: gradients for the students' trainable variables,
        concatenated student by student, and the `StepOutputs`. The loss that is
        differentiated is divided by the number of replicas in sync, because
        the optimizer sums gradients over replicas.
    """
    variables = [v for s in students for v in s.trainable_variables]
    with tf.GradientTape() as tape:
        outputs = forward(students, views, labels, coefficients, training=True, **loss_options)
        objective = outputs.total
        if weight_decay:
            objective += weight_decay * losses.l2_penalty(variables)
        objective = losses.scale_for_replicas(objective)
        if scale_loss is not None:
            objective = scale_loss(objective)
    gradients = tape.gradient(
        objective, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    return gradients, outputs
