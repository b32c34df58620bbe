"""`tf.distribute` strategies by name, and what OKDPH needs to run under them.

    strategy = make_strategy("auto")   # before anything else touches TensorFlow
    with strategy.scope():
        model = OKDPH(...)

`"auto"` picks MultiWorkerMirroredStrategy when `TF_CONFIG` names a cluster of
more than one task, MirroredStrategy when more than one GPU is visible, and the
default strategy otherwise. Keras 3.15's `fit()` does not run under
MultiWorkerMirroredStrategy; `okdph_keras.loop.fit` does, with the same
per-replica step.
"""

import json
import os

import keras
import tensorflow as tf

from okdph_keras import sync_batchnorm
from okdph_keras.validation import check_choice, check_integer

STRATEGIES = ("auto", "default", "mirrored", "multiworker")


def cluster_size():
    """Number of tasks `TF_CONFIG` names (0 without a cluster)."""
    config = os.environ.get("TF_CONFIG")
    if not config:
        return 0
    try:
        cluster = json.loads(config).get("cluster", {})
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"TF_CONFIG is not a JSON object with a 'cluster': {error}") from error
    return sum(len(tasks) for tasks in cluster.values())


def make_strategy(name="auto", cpu_replicas=1):
    """Creates the strategy `name` names.

    Create it first thing in the program: MultiWorkerMirroredStrategy must exist
    before TensorFlow runs any op.

    Args:
        name: one of `STRATEGIES`.
        cpu_replicas: on a machine without GPUs, split the CPU into this many
            logical devices, so that `"mirrored"` runs this many replicas (to
            try distribution without GPUs; it is not faster).

    Returns:
        A `tf.distribute.Strategy`.

    Example:
        >>> strategy = make_strategy("mirrored")   # every visible GPU
    """
    check_choice("strategy", name, STRATEGIES)
    cpu_replicas = check_integer("cpu_replicas", cpu_replicas, low=1)
    if cpu_replicas > 1 and not tf.config.list_physical_devices("GPU"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas
        )
    if name == "auto":
        if cluster_size() > 1:
            name = "multiworker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "multiworker":
        if cluster_size() < 1:
            raise ValueError(
                "strategy 'multiworker' needs TF_CONFIG to name the cluster and this task, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}}.'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        devices = None
        if not tf.config.list_physical_devices("GPU"):
            devices = [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def is_multi_worker(strategy):
    """Whether `strategy` spans several processes (Keras `fit()` cannot drive it)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy=None):
    """Whether this process writes the run's files: the chief, or worker 0 without one."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if not is_multi_worker(strategy) or resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def when_not_empty(batch, step, empty_step, *, synchronized=False):
    """`step(batch, 1.0)` if this replica's batch holds examples, else `empty_step()`.

    Under a strategy with several replicas a last, ragged batch can leave a
    replica with no examples. Nothing may then run on the empty batch: kernels
    disagree on empty inputs (oneDNN's convolutions on Intel CPUs return wrong
    shapes) and BatchNorm's statistics of no examples are NaN.

    Args:
        batch: a nest of tensors whose first dimension counts the examples.
        step: callable `(batch, weight)`; `weight`, a float scalar, is what
            each example counts for (1.0, or 0.0 for padding); metrics it
            updates must be weighted by it.
        empty_step: callable with the same output structure, run otherwise.
        synchronized: whether `step` all-reduces inside (BatchNormalization
            over the global batch, `sync_batchnorm.SynchronizedBatchNormalization`).
            Every replica must then run it: an empty batch becomes one zero
            example of weight 0, which those layers leave out of their
            statistics, and `empty_step()`'s outputs replace its outputs.

    Returns:
        The outputs of the branch taken.

    Example:
        >>> gradients = when_not_empty((views, labels), train, lambda: zero_gradients)
    """
    has_examples = tf.shape(tf.nest.flatten(batch)[0])[0] > 0
    if not synchronized:
        return tf.cond(has_examples, lambda: step(batch, tf.ones([])), empty_step)
    weight = tf.cast(has_examples, tf.float32)
    padded = tf.nest.map_structure(
        lambda t: tf.cond(  # the shape of an empty tensor is safe to read; no kernel runs on it
            has_examples, lambda: t, lambda: tf.zeros(tf.concat([[1], tf.shape(t)[1:]], 0), t.dtype)
        ),
        batch,
    )
    with sync_batchnorm.example_weight(weight):
        outputs = step(padded, weight)
    return tf.cond(has_examples, lambda: outputs, empty_step)


def average_across_replicas(variables, strategy=None):
    """Sets every replica's copy of each variable to the mean over all replicas.

    Called in the cross-replica context (between steps). Keras keeps BatchNorm
    statistics per replica; this makes them agree again, on every worker.
    Does nothing with a single replica.

    Args:
        variables: float variables created in `strategy`'s scope.
        strategy: the strategy; the current one if None.
    """
    strategy = strategy or tf.distribute.get_strategy()
    variables = list(variables)
    if strategy.num_replicas_in_sync == 1 or not variables:
        return

    def replica_means():
        context = tf.distribute.get_replica_context()
        return context.all_reduce(tf.distribute.ReduceOp.MEAN, [tf.identity(v) for v in variables])

    means = strategy.run(replica_means)  # the same on every replica
    for variable, mean in zip(variables, means):
        variable.assign(strategy.experimental_local_results(mean)[0])


def with_synchronized_batchnorm(model):
    """A copy of `model` whose BatchNormalization layers use global batch statistics.

    Under a strategy with several replicas, each batch's mean and variance are
    then computed over the global batch (an all-reduce per layer and step), so
    replicas and workers keep identical moving statistics. Weights are copied.
    `plain_student` turns the layers back into plain Keras ones, to ship.

    Args:
        model: a functional or sequential `keras.Model` (nested ones included).

    Returns:
        A new `keras.Model`; `model` itself if it has no BatchNormalization.

    Example:
        >>> OKDPH(lambda: with_synchronized_batchnorm(get_model("resnet32", 10)))
    """

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization):
            return sync_batchnorm.SynchronizedBatchNormalization.from_config(
                {**config, "synchronized": True}
            )
        return layer.__class__.from_config(config)

    layers = sync_batchnorm.nested_layers(model)
    if not any(isinstance(layer, keras.layers.BatchNormalization) for layer in layers):
        return model
    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy
