"""Cross-entropy (plain or label-smoothed) and temperature-scaled distillation, with replica-aware scaling.

Every loss here is the mean over the examples a replica sees. Under a
`tf.distribute` strategy the optimizer sums gradients over replicas, so the value
that is differentiated must be divided by the number of replicas
(`scale_for_replicas`); metrics take the unscaled value.
"""

import tensorflow as tf


def full_precision(x):
    """Casts float16/bfloat16 (mixed precision) to float32; other dtypes unchanged."""
    x = tf.convert_to_tensor(x)
    if x.dtype in (tf.float16, tf.bfloat16):
        return tf.cast(x, tf.float32)
    return x


def cross_entropy(labels, logits):
    """Mean softmax cross-entropy of integer labels, in at least float32.

    Args:
        labels: integer class indices, shape `[B]`.
        logits: shape `[B, num_classes]`.

    Returns:
        A scalar: the mean over the batch.
    """
    logits = full_precision(logits)
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=logits
    )
    return tf.reduce_mean(per_example)


def smoothed_cross_entropy(labels, logits, smoothing):
    """Mean cross-entropy to smoothed targets: 1 - smoothing on the label, the rest shared.

    The target puts `1 - smoothing` on the true class and `smoothing / (C - 1)`
    on each of the other C - 1 classes (the SAM/ASAM reference code's
    convention; Keras' `label_smoothing` spreads `smoothing / C` over every
    class instead). At `smoothing = 0` it is `cross_entropy`. The reference
    computes `KL(target || softmax(logits))`, which differs from this by the
    target's entropy, a constant: the gradients are the same.

    Args:
        labels: integer class indices, shape `[B]`.
        logits: shape `[B, num_classes]`, num_classes >= 2.
        smoothing: in [0, 1).

    Returns:
        A scalar: the mean over the batch, in at least float32.

    Example:
        >>> round(float(smoothed_cross_entropy([0], tf.zeros([1, 4]), 0.1)), 4)  # log 4
        1.3863
    """
    log_probs = tf.nn.log_softmax(full_precision(logits), axis=-1)
    num_classes = log_probs.shape[-1]
    true_class = tf.gather(log_probs, tf.cast(labels, tf.int32), axis=-1, batch_dims=1)
    other_classes = tf.reduce_sum(log_probs, axis=-1) - true_class
    per_example = -(1.0 - smoothing) * true_class - smoothing / (num_classes - 1) * other_classes
    return tf.reduce_mean(per_example)


def distillation_loss(teacher_logits, student_logits, temperature):
    """tau^2 * KL(softmax(teacher / tau) || softmax(student / tau)), "batchmean".

    The KL divergence is summed over classes and averaged over the batch, as
    torch's `KLDivLoss(reduction="batchmean")`. Gradients flow into both
    arguments; stop the teacher's gradient at the call site if it is a target.

    Args:
        teacher_logits: shape `[B, num_classes]`, the target distribution.
        student_logits: shape `[B, num_classes]`.
        temperature: tau > 0.

    Returns:
        A scalar.

    Example:
        >>> distillation_loss(tf.zeros([1, 3]), tf.zeros([1, 3]), 4.0)
        <tf.Tensor: shape=(), dtype=float32, numpy=0.0>
    """
    teacher = full_precision(teacher_logits) / temperature
    student = full_precision(student_logits) / temperature
    teacher_log_probs = tf.nn.log_softmax(teacher, axis=-1)
    student_log_probs = tf.nn.log_softmax(student, axis=-1)
    kl = tf.reduce_sum(tf.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)
    return temperature**2 * tf.reduce_mean(kl)


def l2_penalty(variables):
    """0.5 * sum of squares of every variable: its gradient is the variable itself.

    Adding `weight_decay * l2_penalty(params)` to a loss reproduces torch's
    coupled `SGD(weight_decay=...)`, which adds `weight_decay * param` to the
    gradient before momentum.
    """
    return 0.5 * tf.add_n([tf.reduce_sum(tf.square(full_precision(v))) for v in variables])


def scale_for_replicas(loss):
    """Divides a per-replica mean loss by the number of replicas in sync.

    Gradients are summed across replicas, so this makes a distributed step
    follow the gradient of the global-batch mean. Outside a strategy it is the
    identity.
    """
    num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if num_replicas == 1:
        return loss
    return loss / tf.cast(num_replicas, loss.dtype)
