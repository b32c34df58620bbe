"""One training run: config -> data -> model -> fit -> run directory.

The only place that wires configuration, strategy, data, model and outputs;
every recipe calls `run(config)`. A run directory holds:

    config.json     the resolved configuration
    state.json      epochs done, the last checkpoint, the history so far
    history.csv     per-epoch metrics: training, `val_*` (the validation split,
                    held out of the training split) and `test_*` (the test split)
    checkpoints/    the last complete epoch's model (optimizer included)
    tensorboard/    TensorBoard logs
    results.json    final-epoch test accuracy of every network, when finished
    curves.png      test (and validation) accuracy and loss of every network

and the best student by final-epoch validation accuracy goes to
`<saved_models_dir>/<run_name>/student.keras`, beside `origin.json` naming the
run directory that exported it; another run directory's export is never
overwritten. Running the same config again resumes after the last complete
epoch (first applying an SWA/EMA average that a kill left pending), or
reports that the run has finished.
"""

import contextlib
import functools
import math
import os
import time
import warnings

import keras
import tensorflow as tf

from okdph_keras import (
    checkpointing,
    curves,
    distribute,
    hyperparameters,
    loop,
    methods,
    run_data,
    run_results,
)
from okdph_keras import model as model_lib
from okdph_keras.callbacks import EvaluateEachEpoch
from okdph_keras.config import Config, validate
from okdph_keras.model import OKDPH


def run(config, strategy=None, *, deterministic=False, callbacks=()):
    """Trains (or resumes, or reports) the run that `config` describes.

    Under MultiWorkerMirroredStrategy every worker calls `run` with the same
    config; the chief (worker 0) writes the run directory, which every worker
    must see (a shared file system), and `okdph_keras.loop.fit` trains, since
    Keras' `fit()` cannot. Other strategies train with `model.fit()`.

    Args:
        config: a `Config`; its unset hyperparameters take the method's
            defaults (`Config.resolved()`), and `config.json` records them.
        strategy: a `tf.distribute.Strategy`; the default strategy if None.
        deterministic: call `enable_determinism()` (best before TensorFlow
            has run anything, as the recipes do: it warns otherwise), so that
            the same command gives bit-identical weights. Slower.
        callbacks: further `keras.callbacks.Callback`s for the training loop.

    Returns:
        The run's results (the content of `results.json`).

    Raises:
        FloatingPointError: the loss became NaN or infinite; the message names
            the step and the last good checkpoint, which stays intact.
    """
    validate(config)
    config = config.resolved()
    strategy = strategy or tf.distribute.get_strategy()
    chief = distribute.is_chief(strategy)
    run_dir = os.path.join(config.output_dir, config.run_name)
    results_path = os.path.join(run_dir, "results.json")
    _check_run_dir(run_dir, config)
    if os.path.exists(results_path):
        print(f"Run {run_dir} has already finished; its results are in {results_path}.")
        return checkpointing.load_json(results_path)

    keras.utils.set_random_seed(config.seed)
    if deterministic:
        enable_determinism()
    # Everything that can fail on bad input fails before the run directory is made.
    _check_writable(config.output_dir, "output_dir")
    _check_writable(config.saved_models_dir, "saved_models_dir")
    run_results.check_export_target(config, run_dir)
    data = run_data.load_sources(config)
    state = checkpointing.load_state(run_dir)
    initial_epoch = state["epochs_done"] if state else 0
    steps_per_epoch = math.ceil(data.train.num_examples / config.batch_size)
    datasets = run_data.make_datasets(  # (a finished training's dataset is never iterated)
        config, data, min(initial_epoch, config.epochs - 1), strategy.num_replicas_in_sync
    )
    bn_data = run_data.batchnorm_batches(config, data, steps_per_epoch)
    with strategy.scope(), dtype_policy(config.precision):
        if state:
            print(f"Resuming {run_dir} after epoch {initial_epoch} of {config.epochs}.")
            model = keras.saving.load_model(os.path.join(run_dir, state["checkpoint"]))
        else:
            model = build_model(config, data.train)
            model.compile(optimizer=make_optimizer(config, steps_per_epoch))
    if chief:
        _write_config(run_dir, config)

    checkpoint = checkpointing.RunCheckpoint(run_dir, state and state["history"], write=chief)
    start = time.perf_counter()
    if initial_epoch < config.epochs:
        _fit(
            model,
            config=config,
            run_dir=run_dir,
            datasets=datasets,
            bn_data=bn_data,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            strategy=strategy,
            checkpoint=checkpoint,
            callbacks=callbacks,
        )
    elif methods.get(config.method).averages_weights and not state.get("averaged"):
        print(f"Training of {run_dir} had finished; applying the {config.method} average.")
        _apply_pending_average(
            model,
            config=config,
            run_dir=run_dir,
            datasets=datasets,
            bn_data=bn_data,
            strategy=strategy,
            checkpoint=checkpoint,
        )
    history = checkpoint.history
    summary = run_results.summarize(config, history, time.perf_counter() - start)
    if chief:
        run_results.save_best_student(
            model.student_models()[summary["best_student"]], config, run_dir=run_dir
        )
        checkpointing.write_atomically(
            os.path.join(run_dir, "curves.png"),
            lambda path: curves.plot_curves(history, path, title=config.run_name),
        )
        checkpointing.write_json_atomically(results_path, summary)
    print(run_results.format_results(summary))
    return summary


@contextlib.contextmanager
def dtype_policy(name):
    """Keras' global dtype policy set to `name` inside the block, restored after it.

    The networks built (or loaded) inside keep it; with `"mixed_float16"`,
    `compile` wraps the optimizer in a `LossScaleOptimizer`.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def enable_determinism():
    """Makes TensorFlow's training bit-reproducible from run to run on this machine.

    Turns on TensorFlow's op determinism and runs the graph on one CPU thread (one
    op at a time, each on one thread): with several threads, OKDPH's step (the HWM's
    gradient beside the students') gave gradients that differed in the last bits
    from run to run, which training amplifies, and op determinism alone does not
    prevent it. The input pipeline keeps its own threads. Call it before TensorFlow
    runs anything (the recipes' `--deterministic` does); later, the threads can no
    longer change, and it warns. Runs were bit-identical with oneDNN's CPU kernels
    on and off; oneDNN promises it for most of its kernels, not all, so should two
    runs differ, set `TF_ENABLE_ONEDNN_OPTS=0` too. Training can be slower on a
    multi-core CPU.

    Example:
        >>> import okdph_keras
        >>> okdph_keras.train.enable_determinism()  # first thing in the program
    """
    tf.config.experimental.enable_op_determinism()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        warnings.warn(
            "enable_determinism() was called after TensorFlow started, so its ops still run "
            "on several CPU threads and two runs can differ in the last bits of the weights. "
            "Call it (or pass --deterministic to a recipe) before TensorFlow runs anything.",
            stacklevel=2,
        )


def _fit(
    model,
    *,
    config,
    run_dir,
    datasets,
    bn_data,
    initial_epoch,
    steps_per_epoch,
    strategy,
    checkpoint,
    callbacks,
):
    """Trains the remaining epochs with every callback a run needs.

    `model.fit()`, or `loop.fit` where Keras cannot drive the strategy. For
    methods that replace the weights by an average when training ends, the
    final model is evaluated again and the last epoch's figures and
    checkpoint are replaced.
    """
    train_data, validation_data, test_data = datasets
    chief = distribute.is_chief(strategy)
    if distribute.is_multi_worker(strategy):
        fit, options = functools.partial(loop.fit, model), {}
    else:  # the dataset shuffles itself, seeded per epoch
        fit, options = model.fit, {"shuffle": False}
    evaluate = _evaluator(strategy)
    fit(
        train_data,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch,
        validation_data=validation_data,
        callbacks=[
            checkpointing.StopOnNonFiniteLoss(run_dir),
            *method_callbacks(config, run_dir, bn_data, chief),
            EvaluateEachEpoch(test_data, prefix="test_", evaluate=evaluate),
            checkpoint,
            *([keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"))] if chief else []),
            *callbacks,
        ],
        verbose=2,
        **options,
    )
    if methods.get(config.method).averages_weights:
        _checkpoint_average(model, datasets, evaluate, checkpoint)


def _apply_pending_average(model, *, config, run_dir, datasets, bn_data, strategy, checkpoint):
    """Averages a model whose training ended before its average was checkpointed.

    Redoes what the end of `fit` does for SWA (the average from its state
    file) or EMA (the optimizer's EMA), BatchNorm included, then checkpoints it.
    """
    method = method_callbacks(config, run_dir, bn_data, distribute.is_chief(strategy))
    for callback in method:
        callback.set_model(model)
        callback.on_train_begin()
    methods.get(config.method).finish_training(model)  # what fit() does at its end
    for callback in method:
        callback.on_train_end()
    checkpoint.set_model(model)
    _checkpoint_average(model, datasets, _evaluator(strategy), checkpoint)


def _checkpoint_average(model, datasets, evaluate, checkpoint):
    """Evaluates the averaged model and replaces the last epoch's figures and checkpoint."""
    _, validation_data, test_data = datasets
    final = {f"test_{k}": v for k, v in evaluate(model, test_data).items()}
    if validation_data is not None:
        final.update({f"val_{k}": v for k, v in evaluate(model, validation_data).items()})
    checkpoint.replace_last_epoch(final, averaged=True)


def _evaluator(strategy):
    return loop.evaluate if distribute.is_multi_worker(strategy) else _keras_evaluate


def _keras_evaluate(model, data):
    return model.evaluate(data, verbose=0, return_dict=True)


def _check_run_dir(run_dir, config):
    """Fails if `run_dir` holds a run of another configuration.

    Hyperparameters the method does not use are not compared: they change nothing
    (and an older version recorded values for them).
    """
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        return
    saved = Config.from_json_dict(checkpointing.load_json(path)).to_json_dict()
    unused = set(hyperparameters.HYPERPARAMETERS) - set(
        methods.get(config.method).default_settings()
    )
    changed = sorted(
        k for k, v in config.to_json_dict().items() if k not in unused and saved.get(k) != v
    )
    if changed:
        raise ValueError(
            f"{run_dir} holds a run with another configuration (it differs in "
            f"{changed}). Pass another --run_name or --output_dir, or delete it."
        )


def _check_writable(path, name):
    """Fails unless `path` is, or could be created as, a writable directory. Creates nothing."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"Cannot write {name}={path!r}: {existing} is not a writable directory.")


def _write_config(run_dir, config):
    path = os.path.join(run_dir, "config.json")
    if os.path.exists(path):
        return
    try:
        checkpointing.write_json_atomically(path, config.to_json_dict())
    except OSError as error:
        raise ValueError(f"Cannot write the run directory {run_dir}: {error}") from error


def method_callbacks(config, run_dir, bn_data, chief=True):
    """The callbacks `config.method` trains with (`Fusion` for OKDPH, SWA, EMA; see `methods`).

    Args:
        config: the run's `Config`.
        run_dir: the run directory (SWA keeps its running average there).
        bn_data: training batches over which SWA and EMA recompute the
            students' BatchNorm statistics for the averaged weights.
        chief: whether this process writes files.
    """
    return methods.get(config.method).callbacks(
        config, run_dir=run_dir, bn_data=bn_data, chief=chief
    )


def build_model(config, train_source):
    """An `OKDPH` of `config.num_students` students of `config.model` (or of `config.groups`),
    set up for `config.method`."""
    channels = train_source.image_shape[-1] if train_source.image_shape else 3
    input_shape = (config.image_size, config.image_size, channels)

    method = methods.get(config.method)
    objective = methods.get(method.objective_name)

    def builder(model):
        build = objective.network_builder(
            model, train_source.num_classes, input_shape, num_students=config.num_students
        )

        def student():
            network = build()
            return distribute.with_synchronized_batchnorm(network) if config.sync_bn else network

        return student

    if objective.takes_groups:
        students = [(builder(model), count) for model, count in config.student_groups()]
        num_students = None
    else:
        students, num_students = builder(config.model), config.num_students

    sharpness = method.sharpness(config) or {"rho": 0.0, "adaptive": False}
    explicit = model_lib.HYPERPARAMETERS
    return OKDPH(
        students,
        objective=method.objective_name,
        sam_rho=sharpness["rho"],
        sam_adaptive=sharpness["adaptive"],
        num_students=num_students,
        **{name: getattr(config, name) for name in explicit},
        settings={
            name: getattr(config, name)
            for name in objective.defaults
            if name not in explicit and hyperparameters.HYPERPARAMETERS[name].in_step
        },
        weight_decay=config.weight_decay,
        seed=config.seed,
    )


def make_optimizer(config, steps_per_epoch):
    """SGD with momentum on the method's learning-rate schedule, wrapped by the method.

    The schedule is `Method.learning_rate_schedule`: lr x `lr_decay` at each
    fraction of the epochs, or the method's own (SWA's).
    """
    method = methods.get(config.method)
    schedule = method.learning_rate_schedule(config, steps_per_epoch)
    optimizer = keras.optimizers.SGD(schedule, momentum=config.momentum)
    return method.wrap_optimizer(optimizer, config)
