"""The label range check, and where it runs: in the step and on the input.

XLA (`compile(jit_compile=True)`, Keras' `"auto"` on one GPU) drops Assert ops from
the step it compiles, so `OKDPH.fit`, `evaluate`, `train_on_batch` and
`test_on_batch` also check the labels before they reach the step: a `tf.data`
pipeline gets a `map` (tf.data is never compiled by XLA), arrays are checked once,
eagerly, and each batch of a Python generator or a `keras.utils.PyDataset` is checked
as it is drawn. Every path raises the same `tf.errors.InvalidArgumentError`.
"""

import inspect
import warnings

import keras
import numpy as np
import tensorflow as tf


def in_range(labels, num_classes, *, where="batch position"):
    """`labels` once every value is checked to lie in `[0, num_classes)`, in the graph.

    An Assert the returned tensor depends on, so that nothing using the labels
    runs on a bad batch. Safe on an empty batch. Values are compared before any
    cast, so neither -0.5 nor 2**32 + 1 passes as a class.

    Args:
        labels: a numeric tensor of any shape (flattened for the message).
        num_classes: the number of classes.
        where: how the message names a label's index.

    Returns:
        `labels`, unchanged.
    """
    labels = tf.convert_to_tensor(labels)
    values = tf.cast(labels, tf.int32) if labels.dtype.is_bool else labels
    values = tf.reshape(values, [-1])
    outside = tf.logical_or(values < 0, values >= num_classes)
    # The first bad index, or the size when none (argmax of an empty tensor is avoided).
    first = tf.argmax(tf.concat([tf.cast(outside, tf.int32), [1]], 0), output_type=tf.int32)
    check = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(outside)),
        [
            _message(num_classes),
            tf.gather(tf.concat([values, tf.zeros([1], values.dtype)], 0), first),
            f"at {where}",
            first,
        ],
    )
    with tf.control_dependencies([check]):
        return tf.identity(labels)


def check_values(labels, num_classes, *, where="batch position"):
    """`in_range` for labels held in Python (arrays, lists, eager tensors), in numpy.

    No TensorFlow op runs, so a `PyDataset`'s worker processes may call it. It
    raises the same `tf.errors.InvalidArgumentError`, worded as the Assert's.
    Non-numeric labels pass: the step refuses them with a clearer message.
    """
    values = np.asarray(labels).reshape(-1)
    if values.dtype.kind not in "biuf":
        return
    outside = (values < 0) | (values >= num_classes)
    if outside.any():
        first = int(np.argmax(outside))
        raise tf.errors.InvalidArgumentError(
            None,
            None,
            f"assertion failed: [{_message(num_classes)}] [{values[first]}] [at {where}] [{first}]",
        )


def _message(num_classes):
    return (
        f"OKDPH: labels must be class indices in [0, {num_classes}) (the students "
        f"output {num_classes} logits); got label"
    )


def checked_input(x, y, num_classes):
    """`(x, y)` as `keras.Model.fit` takes them, with the labels checked on the way in.

    Args:
        x, y: what the user passed to `fit`, `evaluate` or `*_on_batch`: arrays or
            tensors with `y`, or a `tf.data.Dataset`, a Python generator or a
            `keras.utils.PyDataset` of `(x, y[, sample_weight])` batches.
        num_classes: the students' number of logits, or None to check nothing.

    Returns:
        `(x, y)`: arrays checked now; a dataset mapped, a generator or a
        `PyDataset` wrapped, so that each batch is checked before the step.
        Any other input is returned as it is, with a warning: the in-step check
        still runs, unless XLA compiles the step.
    """
    if num_classes is None:
        return x, y
    if y is not None:
        check_values(y, num_classes, where="index")
        return x, y
    if isinstance(x, tf.data.Dataset):
        check = lambda *batch: _checked_batch(batch, num_classes, in_graph=True)  # noqa: E731
        return x.map(lambda *batch: check(*batch) if len(batch) > 1 else batch[0]), None
    if isinstance(x, keras.utils.PyDataset):
        return _CheckedPyDataset(x, num_classes), None
    if inspect.isgenerator(x):
        return (_checked_batch(batch, num_classes) for batch in x), None
    if x is not None:
        warnings.warn(
            f"OKDPH cannot check the labels of a {type(x).__name__} before the step; "
            "under XLA (jit_compile=True) labels out of range would train silently. "
            "Pass arrays, a tf.data.Dataset, a generator or a keras.utils.PyDataset.",
            stacklevel=4,  # the caller of OKDPH.fit / evaluate
        )
    return x, y


def checked_validation_data(validation_data, num_classes):
    """`fit`'s `validation_data`, checked as `checked_input` checks `(x, y)`."""
    if isinstance(validation_data, (tuple, list)) and len(validation_data) in (2, 3):
        x, y = checked_input(*validation_data[:2], num_classes)
        return (x, y, *validation_data[2:])
    return checked_input(validation_data, None, num_classes)[0]


def _checked_batch(batch, num_classes, *, in_graph=False):
    """A `(x, y[, sample_weight])` batch with its labels checked (others pass)."""
    if not (isinstance(batch, (tuple, list)) and len(batch) in (2, 3) and batch[1] is not None):
        return batch
    if not in_graph:
        check_values(batch[1], num_classes)
        return batch
    if not (batch[1].dtype.is_integer or batch[1].dtype.is_floating or batch[1].dtype.is_bool):
        return batch  # the step refuses them, with a clearer message
    return (batch[0], in_range(batch[1], num_classes), *batch[2:])


class _CheckedPyDataset(keras.utils.PyDataset):
    """A `keras.utils.PyDataset` whose batches have their labels checked."""

    def __init__(self, dataset, num_classes):
        super().__init__(
            workers=dataset.workers,
            use_multiprocessing=dataset.use_multiprocessing,
            max_queue_size=dataset.max_queue_size,
        )
        self.dataset = dataset
        self.num_classes = num_classes

    def __getitem__(self, index):
        return _checked_batch(self.dataset[index], self.num_classes)

    @property
    def num_batches(self):
        return self.dataset.num_batches

    def on_epoch_begin(self):
        self.dataset.on_epoch_begin()

    def on_epoch_end(self):
        self.dataset.on_epoch_end()
