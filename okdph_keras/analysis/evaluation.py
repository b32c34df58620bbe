"""Loss and accuracy of a model at any weight values, without touching its variables.

Every analysis evaluates a network at weights it does not hold (a point on a
line, a perturbed copy). `Evaluator` runs `model.stateless_call` on given
values in inference mode (`training=False`, BatchNorm on its moving
statistics), so no model is ever modified.
"""

import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from okdph_keras import losses
from okdph_keras.validation import check_integer

DEFAULT_BATCH_SIZE = 256


class Evaluation(NamedTuple):
    """Mean loss over the examples and accuracy (NaN if labels are not class indices)."""

    loss: float
    accuracy: float


def model_values(model):
    """`(trainable, non_trainable)`: lists of tensors holding `model`'s current values."""
    return (
        [tf.convert_to_tensor(v) for v in model.trainable_variables],
        [tf.convert_to_tensor(v) for v in model.non_trainable_variables],
    )


def check_homogeneous(models):
    """Raises `ValueError` unless all models have the same variables, shapes and dtypes."""
    reference = models[0]
    for index, model in enumerate(models[1:], start=1):
        for kind in ("trainable_variables", "non_trainable_variables"):
            ours, theirs = getattr(reference, kind), getattr(model, kind)
            same = len(ours) == len(theirs) and all(
                a.shape == b.shape and a.dtype == b.dtype for a, b in zip(ours, theirs)
            )
            if not same:
                raise ValueError(
                    f"Model {index} ({model.name}) does not match model 0 ({reference.name}): "
                    f"their {kind} differ in number, shape or dtype; weights can only be "
                    "combined between networks of one architecture."
                )


def as_batches(data, batch_size=DEFAULT_BATCH_SIZE):
    """The `(images, labels)` batches of `data`.

    Args:
        data: a `tf.data.Dataset` of `(images, labels)` batches (used as it is;
            it must yield the same batches on every pass, as `eval_dataset`
            does), or a pair of arrays `(images [N, ...], labels [N, ...])`.
        batch_size: batch size for arrays.

    Returns:
        An iterable of `(images, labels)` batches.
    """
    if isinstance(data, tf.data.Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = np.asarray(data[0]), np.asarray(data[1])
        if len(images) != len(labels) or len(images) == 0:
            raise ValueError(
                f"data must hold as many labels as images, at least one; got {len(images)} "
                f"images and {len(labels)} labels."
            )
        check_integer("batch_size", batch_size, low=1)
        return [
            (tf.constant(images[i : i + batch_size]), tf.constant(labels[i : i + batch_size]))
            for i in range(0, len(images), batch_size)
        ]
    raise ValueError(
        "data must be a tf.data.Dataset of (images, labels) batches or a pair of arrays "
        f"(images, labels); got {type(data).__name__}."
    )


class Evaluator:
    """Mean loss and accuracy of `model` over `data` at any weight values.

    Args:
        model: a `keras.Model` mapping images to logits; its variables fix the
            order of the values given to `__call__`.
        data: see `as_batches`.
        loss_fn: `loss_fn(labels, logits)` -> mean loss of a batch; default
            the sparse softmax cross-entropy of integer labels and logits.
        batch_size: batch size for array data.

    Example:
        >>> evaluate = Evaluator(student, (x_test, y_test))
        >>> loss, accuracy = evaluate(*model_values(student))
    """

    def __init__(self, model, data, loss_fn=None, batch_size=DEFAULT_BATCH_SIZE):
        self.model = model
        self.batches = as_batches(data, batch_size)
        self.loss_fn = loss_fn or losses.cross_entropy
        self._batch_sums = tf.function(self._sums, reduce_retracing=True)

    def _sums(self, trainable, non_trainable, images, labels):
        logits, _ = self.model.stateless_call(trainable, non_trainable, images, training=False)
        count = tf.cast(tf.shape(labels)[0], tf.float64)
        loss = tf.cast(self.loss_fn(labels, logits), tf.float64) * count
        return loss, _correct(labels, logits), count

    def __call__(self, trainable, non_trainable):
        """The `Evaluation` at these values (in `model`'s variable order)."""
        totals = np.zeros(3)
        for images, labels in self.batches:
            if not len(labels):  # nothing may run on a batch without examples
                continue
            totals += [float(t) for t in self._batch_sums(trainable, non_trainable, images, labels)]
        loss, correct, count = totals
        if count == 0:
            raise ValueError("The data holds no examples.")
        return Evaluation(float(loss / count), float(correct / count))


def _correct(labels, logits):
    """How many argmax predictions equal the labels (float64); NaN unless labels are class indices."""
    if not labels.dtype.is_integer or labels.shape.rank != 1 or logits.shape.rank != 2:
        return tf.constant(math.nan, tf.float64)
    predictions = tf.argmax(logits, axis=-1, output_type=tf.int64)
    return tf.reduce_sum(tf.cast(tf.equal(predictions, tf.cast(labels, tf.int64)), tf.float64))


def evaluate(model, data, *, loss_fn=None, batch_size=DEFAULT_BATCH_SIZE):
    """Mean loss and accuracy of `model` on `data`, in inference mode.

    Args:
        model: a `keras.Model` mapping images to logits.
        data, loss_fn, batch_size: see `Evaluator`.

    Returns:
        An `Evaluation(loss, accuracy)`.

    Example:
        >>> evaluate(student, (x_test, y_test)).accuracy
    """
    return Evaluator(model, data, loss_fn, batch_size)(*model_values(model))
