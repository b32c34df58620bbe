"""XLA: `jit_compile=True` trains as the graph does, and bad labels are still refused.

XLA drops Assert ops from the step it compiles, so the labels are checked on the
input (`okdph_keras.labels`): every kind of input `fit`, `evaluate` and the
`*_on_batch` methods take is tried here with a bad label, under XLA, and must stop
before any variable changes.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import IMAGE_SHAPE, NUM_CLASSES, tiny_student

import okdph_keras
from okdph_keras import labels

BATCH, STEPS = 4, 3
MESSAGE = r"labels must be class indices in \[0, 5\) \(the students output 5 logits\); got label\] "


def make_model(jit_compile, **options):
    keras.utils.set_random_seed(3)
    model = okdph_keras.OKDPH(tiny_student, num_students=2, hybrid="dirichlet", seed=5, **options)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=jit_compile)
    return model


def data(bad_index=None):
    rng = np.random.default_rng(0)
    views = rng.uniform(size=(BATCH * STEPS, 3, *IMAGE_SHAPE)).astype("float32")
    targets = rng.integers(0, NUM_CLASSES, BATCH * STEPS)
    if bad_index is not None:
        targets[bad_index] = NUM_CLASSES
    return views, targets


@pytest.mark.parametrize("options", [{}, dict(hwm_gradient=False)], ids=["paper", "no_hwm_grad"])
def test_xla_trains_as_the_graph_does(options):
    views, targets = data()
    losses, weights = {}, {}
    for jit in (False, True):
        model = make_model(jit, **options)
        assert model.jit_compile is jit
        losses[jit] = [
            model.train_on_batch(views[i : i + BATCH], targets[i : i + BATCH], return_dict=True)[
                "loss"
            ]
            for i in range(0, len(views), BATCH)
        ]
        weights[jit] = [v.numpy() for v in model.variables]
    # The loss changes from step to step: the comparison is not of constants.
    assert np.ptp(losses[False]) > 1e-3
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4, atol=1e-5)
    for with_xla, without in zip(weights[True], weights[False]):
        np.testing.assert_allclose(with_xla, without, rtol=1e-4, atol=1e-5)


def test_auto_keeps_keras_meaning():
    """`"auto"` resolves as for a plain Keras model on this machine (no XLA on CPU)."""
    plain = tiny_student()
    plain.compile("sgd", loss="mse", jit_compile="auto")
    assert make_model("auto").jit_compile == plain.jit_compile


def test_the_compiled_step_alone_checks_nothing():
    """Why the input is checked: XLA drops the step's Assert (if this starts to fail,
    XLA keeps Asserts and the input check could go)."""
    model = make_model(True)
    views, targets = data(bad_index=1)
    step = tf.function(model.train_step, jit_compile=True)
    step((tf.constant(views[:BATCH]), tf.constant(targets[:BATCH])))  # no error


class Batches(keras.utils.PyDataset):
    def __init__(self, views, targets):
        super().__init__()
        self.views, self.targets = views, targets

    def __len__(self):
        return len(self.views) // BATCH

    def __getitem__(self, index):
        window = slice(index * BATCH, (index + 1) * BATCH)
        return self.views[window], self.targets[window]


def generator(views, targets):
    for start in range(0, len(views), BATCH):
        yield views[start : start + BATCH], targets[start : start + BATCH]


def dataset(views, targets):
    return tf.data.Dataset.from_tensor_slices((views, targets)).batch(BATCH)


# The bad label sits at index 1: position 1 of the first batch.
CALLS = {
    "fit_arrays": (
        lambda m, v, t: m.fit(v, t, batch_size=BATCH, verbose=0),
        r"\[5\] \[at index\] \[1\]",
    ),
    "fit_dataset": (
        lambda m, v, t: m.fit(dataset(v, t), verbose=0),
        r"\[5\] \[at batch position\] \[1\]",
    ),
    "fit_generator": (
        lambda m, v, t: m.fit(generator(v, t), verbose=0),
        r"\[5\] \[at batch position\] \[1\]",
    ),
    "fit_py_dataset": (
        lambda m, v, t: m.fit(Batches(v, t), verbose=0),
        r"\[5\] \[at batch position\] \[1\]",
    ),
    "fit_validation_tuple": (
        lambda m, v, t: m.fit(
            v, np.zeros_like(t), batch_size=BATCH, validation_data=(v, t), verbose=0
        ),
        r"\[5\] \[at index\] \[1\]",
    ),
    "fit_validation_dataset": (
        lambda m, v, t: m.fit(
            v, np.zeros_like(t), batch_size=BATCH, validation_data=dataset(v, t), verbose=0
        ),
        r"\[5\] \[at batch position\] \[1\]",
    ),
    "evaluate_arrays": (
        lambda m, v, t: m.evaluate(v, t, batch_size=BATCH, verbose=0),
        r"\[5\] \[at index\] \[1\]",
    ),
    "evaluate_dataset": (
        lambda m, v, t: m.evaluate(dataset(v, t), verbose=0),
        r"\[5\] \[at batch position\] \[1\]",
    ),
    "train_on_batch": (
        lambda m, v, t: m.train_on_batch(v[:4], t[:4]),
        r"\[5\] \[at index\] \[1\]",
    ),
    "test_on_batch": (lambda m, v, t: m.test_on_batch(v[:4], t[:4]), r"\[5\] \[at index\] \[1\]"),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_xla_refuses_bad_labels_before_any_update(name):
    call, where = CALLS[name]
    model = make_model(True)
    views, targets = data(bad_index=1)
    before = [v.numpy().copy() for v in model.variables]
    with pytest.raises(tf.errors.InvalidArgumentError, match=MESSAGE + where):
        call(model, views, targets)
    if name.startswith("fit_validation"):
        return  # the training epoch ran on good labels; validation refused its data
    for variable, value in zip(model.variables, before):
        np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)


def test_good_input_of_every_kind_passes_unchanged():
    views, targets = data()
    for x in (dataset(views, targets), generator(views, targets), Batches(views, targets)):
        checked, _ = labels.checked_input(x, None, NUM_CLASSES)
        batches = list(checked)
        got_views = np.concatenate([np.asarray(b[0]) for b in batches])
        got_targets = np.concatenate([np.asarray(b[1]) for b in batches])
        np.testing.assert_array_equal(got_views, views)
        np.testing.assert_array_equal(got_targets, targets)


@pytest.mark.parametrize(
    "values, message",
    [
        (np.array([], np.int64), None),
        (np.array([[0], [4]]), None),
        (np.array([0.0, -0.5]), r"\[-0.5\] \[at index\] \[1\]"),
        (np.array([0, 2**32 + 1], np.int64), r"\[4294967297\] \[at index\] \[1\]"),
        (np.array([True, False]), None),
    ],
    ids=["empty", "column", "negative_float", "wraps_int32", "bool"],
)
def test_edges_agree_in_numpy_and_in_the_graph(values, message):
    """Both implementations of the check, on the edges: an empty batch passes, a value
    that a cast would bring into range does not."""
    graph_message = None if message is None else message.replace("index", "batch position")
    for check, pattern in (
        (lambda: labels.check_values(values, NUM_CLASSES, where="index"), message),
        (lambda: tf.function(labels.in_range)(tf.constant(values), NUM_CLASSES), graph_message),
    ):
        if pattern is None:
            check()
        else:
            with pytest.raises(tf.errors.InvalidArgumentError, match=MESSAGE + pattern):
                check()
