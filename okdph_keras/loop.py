"""A training loop for strategies that Keras `fit()` cannot drive.

Keras 3.15's `fit()` and `evaluate()` fail under MultiWorkerMirroredStrategy
(STACK-NOTES.md). `fit` and `evaluate` here run the model's own `train_step`
and `test_step` on every replica with `strategy.run` — the very OKDPH step that
`fit()` runs — and call the callbacks as `fit()` does: Fusion, checkpoints,
TensorBoard and progress lines behave the same. Under the default strategy the
results equal `model.fit()`'s (tested).
"""

import weakref

import keras
import tensorflow as tf

_FUNCTIONS = weakref.WeakKeyDictionary()  # model -> {step name: tf.function}


def _distribute(strategy, dataset):
    options = tf.data.Options()
    # Every worker builds the same seeded pipeline and keeps its part of each batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def _step_function(model, name):
    """A `tf.function` running `model.<name>` on a distributed batch; returns the metrics it reports.

    Made once per model and step, so later epochs do not trace again.
    """
    functions = _FUNCTIONS.setdefault(model, {})
    if name not in functions:
        strategy, step = model.distribute_strategy, getattr(model, name)

        @tf.function
        def run(batch):
            reported = strategy.run(step, args=(batch,))
            # Read in the cross-replica context: the metrics of every replica and worker.
            return {
                metric.name: metric.result() for metric in model.metrics if metric.name in reported
            }

        functions[name] = run
    return functions[name]


def evaluate(model, data, callbacks=None):
    """`model.evaluate(data, return_dict=True)` for any strategy.

    Args:
        model: a compiled model created in `model.distribute_strategy`'s scope.
        data: a finite, batched `tf.data.Dataset` of `(inputs, labels)`.
        callbacks: an optional `keras.callbacks.CallbackList`, told
            `on_test_begin`/`on_test_end` as `fit()` tells it before validating.

    Returns:
        `{metric name: value}` as Python floats.
    """
    if callbacks is not None:
        callbacks.on_test_begin()
    model.reset_metrics()
    function = _step_function(model, "test_step")
    logs = {}
    for batch in _distribute(model.distribute_strategy, data):
        logs = function(batch)
    logs = {name: float(value) for name, value in logs.items()}
    if callbacks is not None:
        callbacks.on_test_end(logs)
    return logs


def fit(
    model,
    data,
    *,
    epochs,
    steps_per_epoch,
    initial_epoch=0,
    validation_data=None,
    callbacks=(),
    verbose=2,
):
    """Trains as `model.fit(data, epochs=..., steps_per_epoch=..., ...)` would.

    Args:
        model: a compiled model created in `model.distribute_strategy`'s scope.
        data: a batched `tf.data.Dataset` holding at least
            `(epochs - initial_epoch) * steps_per_epoch` batches.
        epochs, steps_per_epoch, initial_epoch: as in `fit()`.
        validation_data: a finite `tf.data.Dataset`, evaluated after each epoch
            (`val_*` logs), or None.
        callbacks: `keras.callbacks.Callback`s.
        verbose: 0 (silent), 1 (progress bar) or 2 (one line per epoch).

    Returns:
        The `keras.callbacks.History` of this call.

    Example:
        >>> strategy = make_strategy("multiworker")
        >>> with strategy.scope():
        ...     model = OKDPH(builder); model.compile(optimizer)
        >>> fit(model, train, epochs=300, steps_per_epoch=391, callbacks=[Fusion()])
    """
    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList(
        [*model.with_epoch_counter(callbacks), history],
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
    )
    train_function = _step_function(model, "train_step")
    iterator = iter(_distribute(model.distribute_strategy, data))
    model.stop_training = False
    callback_list.on_train_begin()
    logs = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            logs = train_function(next(iterator))
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        epoch_logs = {name: float(value) for name, value in logs.items()}
        if validation_data is not None:
            results = evaluate(model, validation_data, callback_list)
            epoch_logs.update({f"val_{name}": value for name, value in results.items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    model.optimizer.finalize_variable_values(model.trainable_variables)
    callback_list.on_train_end(logs=epoch_logs if epochs > initial_epoch else None)
    return history
