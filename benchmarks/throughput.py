"""Training throughput of OKDPH against one model's step, and peak memory, in one run.

    python -m benchmarks.throughput                     # resnet32, batch 128, 32x32x3, 10 classes
    python -m benchmarks.throughput --quick             # small_cnn, batch 32, 5 steps: ~2 minutes on 2 cores
    python -m benchmarks.throughput --configs=single,okdph_m2 --steps=10 --repeats=3
    python -m benchmarks.throughput --configs=single,okdph_m2 --precision=mixed_bfloat16
    python -m benchmarks.throughput --configs=okdph_m2 --strategy=mirrored --batch_size=256

Every configuration runs in its own fresh subprocess (this file with `--_one=CONFIG`), so
each peak-memory figure is that configuration's alone: on a GPU
`tf.config.experimental.get_memory_info("GPU:0")["peak"]`, on CPU the process's peak
resident set (`resource.getrusage(RUSAGE_SELF).ru_maxrss`, which includes TensorFlow's
own ~0.5-1 GB; the RSS after imports is printed beside it). Data are one fixed synthetic
batch repeated in memory (`tf.data.Dataset.from_tensors(...).repeat()`), so the input
pipeline is excluded. Each process runs `model.fit(steps_per_epoch=--steps,
epochs=--epochs)`; a callback times every epoch (wall clock, epoch begin to end, the end
waiting for the step's results), the first epoch (tracing, warm-up) is discarded and the
median of the others gives images/s. With `--repeats=R` the whole list of configurations
runs R times in turn (A, B, C, A, B, C, ...), so that a change in the machine's load hits
every configuration alike; the table shows medians over repeats, and each ratio is the
median over repeats of that repeat's own ratio. The table also gives each configuration's
last training loss; the command exits with status 1 when a configuration failed or its
loss is not finite.

Precision and strategy apply to every configuration, in its child process:
  --precision     float32 (default), mixed_bfloat16 or mixed_float16: the Keras dtype policy,
                  set with `keras.mixed_precision.set_global_policy` before the model is
                  built (under mixed_float16 Keras' compile adds dynamic loss scaling).
                  mixed_float16 only on a GPU of compute capability >= 7.0, else "n/a";
                  mixed_bfloat16 runs anywhere (slowly on a CPU without bfloat16 units).
  --strategy      none (default): the default device. mirrored: the model and optimizer
                  are built and compiled inside `tf.distribute.MirroredStrategy()`'s scope,
                  over every visible GPU (the CPU if there is none). `--batch_size` is then
                  the global batch, split evenly over the replicas (each replica's share
                  fed from memory by `strategy.distribute_datasets_from_function`), and
                  images/s counts the global batch; peak GPU memory is the largest over
                  the GPUs.

Configurations:
  single          one student trained with plain `fit()`: SGD(lr, momentum 0.9), sparse
                  softmax cross-entropy from logits, accuracy metric and the same coupled
                  L2 (`--weight_decay` * 0.5 * sum of squares, as `OKDPH(weight_decay=...)`)
                  added to the loss: the work of one student's step.
  okdph_m2/m3/m4  `OKDPH(builder, num_students=M, weight_decay=...)`, the paper's mode
                  (`hwm_gradient=True`), inputs `[B, M+1, H, W, C]` (M+1 different views).
  okdph_m2_nohwm  M=2 with `hwm_gradient=False` (the reference code).
  single_keras_bn, okdph_m2_keras_bn
                  single and okdph_m2 with Keras' own (unfused) BatchNormalization in place
                  of the architectures' FusedBatchNormalization (`plain_student(model)`):
                  the A/B of the fused kernel; their cost is against the fused single.
  single_deterministic, okdph_m2_deterministic
                  single and okdph_m2 after `okdph_keras.train.enable_determinism()` (op
                  determinism, one CPU thread), as under a recipe's --deterministic: the
                  cost of bit-identical runs; their cost is against single.
  okdph_m2_k1/k2/k4
                  M=2, `objective="okdph_multi_hwm"` with K = 1, 2, 4 Dirichlet hybrids per
                  batch (K=1 is `okdph_dirichlet`): the step cost of extra HWMs.
  single_mixed, okdph_m2_mixed
                  single and okdph_m2 under `mixed_float16` whatever `--precision` says
                  (their cost is against single_mixed); only on a GPU of compute
                  capability >= 7.0, else "n/a". The same runs as `--precision=
                  mixed_float16 --configs=single,okdph_m2`.

"Cost" is the single model's images/s divided by the configuration's (images = samples
of the batch, B per step, whatever the number of views). Targets: M=2 <= 2.5x,
hwm_gradient=False <= 1.9x.
"""

import importlib.metadata
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

from benchmarks import machine
from okdph_keras import onednn

onednn.prefer_onednn()  # as the recipes do, before TensorFlow is imported

CONFIGS = {
    # name: (num_students or None for the single model, hwm_gradient, mixed precision,
    #        other OKDPH arguments)
    "single": (None, True, False, {}),
    "single_keras_bn": (None, True, False, dict(plain_batchnorm=True)),
    "okdph_m2": (2, True, False, {}),
    "okdph_m2_keras_bn": (2, True, False, dict(plain_batchnorm=True)),
    "okdph_m3": (3, True, False, {}),
    "okdph_m4": (4, True, False, {}),
    "okdph_m2_nohwm": (2, False, False, {}),
    "single_deterministic": (None, True, False, dict(deterministic=True)),
    "okdph_m2_deterministic": (2, True, False, dict(deterministic=True)),
    "okdph_m2_k1": (
        2,
        True,
        False,
        dict(objective="okdph_multi_hwm", settings={"hybrid_samples": 1}),
    ),
    "okdph_m2_k2": (
        2,
        True,
        False,
        dict(objective="okdph_multi_hwm", settings={"hybrid_samples": 2}),
    ),
    "okdph_m2_k4": (
        2,
        True,
        False,
        dict(objective="okdph_multi_hwm", settings={"hybrid_samples": 4}),
    ),
    "single_mixed": (None, True, True, {}),
    "okdph_m2_mixed": (2, True, True, {}),
}
TARGETS = {"okdph_m2": 2.5, "okdph_m2_nohwm": 1.9}
QUICK = dict(model="small_cnn", batch_size=32, steps=5, epochs=3, repeats=1)
RESULT_TAG = "THROUGHPUT_RESULT "
PRECISIONS = ["float32", "mixed_bfloat16", "mixed_float16"]
STRATEGIES = ["none", "mirrored"]

flags.DEFINE_string("model", "resnet32", "Student architecture (okdph_keras.get_model name).")
flags.DEFINE_integer("batch_size", 128, "Batch size B (images per step).")
flags.DEFINE_integer("image_size", 32, "Height and width of the synthetic images.")
flags.DEFINE_integer("channels", 3, "Channels of the synthetic images.")
flags.DEFINE_integer("num_classes", 10, "Number of classes.")
flags.DEFINE_integer("steps", 10, "Steps per epoch.")
flags.DEFINE_integer("epochs", 3, "Epochs per process; the first (tracing, warm-up) is discarded.")
flags.DEFINE_integer(
    "repeats", 1, "Fresh processes per configuration, interleaved across configurations."
)
flags.DEFINE_list("configs", list(CONFIGS), f"Configurations to run, a subset of {list(CONFIGS)}.")
flags.DEFINE_enum(
    "jit_compile",
    "auto",
    ["auto", "true", "false"],
    "compile(jit_compile=...); Keras' 'auto' is XLA on GPU, off on CPU.",
)
flags.DEFINE_integer("steps_per_execution", 1, "compile(steps_per_execution=...).")
flags.DEFINE_enum(
    "precision",
    "float32",
    PRECISIONS,
    "Keras dtype policy of every configuration (the *_mixed ones are always mixed_float16); "
    "mixed_float16 only on a GPU of compute capability >= 7.0, else n/a.",
)
flags.DEFINE_enum(
    "strategy",
    "none",
    STRATEGIES,
    "none: the default device; mirrored: build and compile inside "
    "tf.distribute.MirroredStrategy() over the visible GPUs (or the CPU); --batch_size is "
    "then the global batch.",
)
flags.DEFINE_float("weight_decay", 5e-4, "Coupled L2 of every configuration (the recipes' 5e-4).")
flags.DEFINE_float("learning_rate", 0.05, "SGD learning rate (momentum 0.9).")
flags.DEFINE_bool("quick", False, f"Smoke-sized run: {QUICK}, overriding those flags.")
flags.DEFINE_string(
    "_one", None, "Internal: run one configuration in this process and print its result."
)
FLAGS = flags.FLAGS


# --------------------------------------------------------------- one configuration
def _rss_mib():
    """Current resident set of this process, MiB (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _peak_rss_mib():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def precision_of(name):
    """The dtype policy configuration `name` runs under: its own (*_mixed) or `--precision`."""
    return "mixed_float16" if CONFIGS[name][2] else FLAGS.precision


def run_one(name):
    """Builds, trains and times configuration `name`; returns a JSON-able dict."""
    import contextlib  # noqa: PLC0415

    import keras  # noqa: PLC0415 (imported here so the parent process stays light)
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    import okdph_keras  # noqa: PLC0415
    from okdph_keras import losses  # noqa: PLC0415

    num_students, hwm_gradient, _, options = CONFIGS[name]
    options = dict(options)
    plain_batchnorm = options.pop("plain_batchnorm", False)
    if options.pop("deterministic", False):  # before TensorFlow starts
        okdph_keras.train.enable_determinism()
    precision = precision_of(name)
    gpus = tf.config.list_physical_devices("GPU")
    rss_after_imports = _rss_mib()
    capabilities = [
        tf.config.experimental.get_device_details(g).get("compute_capability") for g in gpus
    ]
    if precision == "mixed_float16" and not any(
        c is not None and tuple(c) >= (7, 0) for c in capabilities
    ):
        return dict(
            config=name,
            skipped=f"n/a (TensorFlow sees no GPU of compute capability >= 7.0: {capabilities})",
        )
    keras.mixed_precision.set_global_policy(precision)  # before anything is built
    strategy = tf.distribute.MirroredStrategy() if FLAGS.strategy == "mirrored" else None
    replicas = strategy.num_replicas_in_sync if strategy else 1
    if FLAGS.batch_size % replicas:
        raise ValueError(
            f"--batch_size={FLAGS.batch_size} (the global batch) is not divisible by the "
            f"{replicas} replicas of MirroredStrategy."
        )
    keras.utils.set_random_seed(0)
    shape = (FLAGS.image_size, FLAGS.image_size, FLAGS.channels)

    def build():
        model = okdph_keras.get_model(FLAGS.model, FLAGS.num_classes, shape)
        return okdph_keras.plain_student(model) if plain_batchnorm else model

    rng = np.random.default_rng(0)
    labels = rng.integers(0, FLAGS.num_classes, FLAGS.batch_size).astype(np.int32)
    jit = {"auto": "auto", "true": True, "false": False}[FLAGS.jit_compile]
    compile_options = dict(jit_compile=jit, steps_per_execution=FLAGS.steps_per_execution)

    # Model, optimizer and every variable under the strategy's scope, when there is one.
    with strategy.scope() if strategy else contextlib.nullcontext():
        optimizer = keras.optimizers.SGD(FLAGS.learning_rate, momentum=0.9)
        if num_students is None:
            model = build()
            images = rng.standard_normal((FLAGS.batch_size, *shape), dtype=np.float32)
            cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            weight_decay = FLAGS.weight_decay

            def loss(y_true, y_pred):  # the CE plus OKDPH's coupled L2, for one network
                value = cross_entropy(y_true, y_pred)
                if weight_decay:
                    value += weight_decay * losses.l2_penalty(model.trainable_variables)
                return value

            model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], **compile_options)
            # Keras builds the optimizer, compiled loss and metrics in the first trace, which
            # then runs twice; built here (eagerly, on 2 images) the train function is traced
            # once.
            model.optimizer.build(model.trainable_variables)
            model.compute_metrics(images[:2], labels[:2], model(images[:2]))
            model.compute_loss(x=images[:2], y=labels[:2], y_pred=model(images[:2]))
            for metric in model.metrics:
                metric.reset_state()
        else:
            model = okdph_keras.OKDPH(
                build,
                num_students=num_students,
                hwm_gradient=hwm_gradient,
                weight_decay=FLAGS.weight_decay,
                seed=0,
                **options,
            )
            images = rng.standard_normal(
                (FLAGS.batch_size, num_students + 1, *shape), dtype=np.float32
            )
            model.compile(optimizer=optimizer, **compile_options)
    if strategy is None:
        dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    else:  # the global batch in `replicas` equal shares, one per replica, from memory
        share = FLAGS.batch_size // replicas
        shares = (
            images.reshape((replicas, share, *images.shape[1:])),
            labels.reshape((replicas, share)),
        )
        dataset = strategy.distribute_datasets_from_function(
            lambda context: tf.data.Dataset.from_tensor_slices(shares).repeat()
        )

    traces = [0]
    train_step = model.train_step

    def counted_train_step(data):  # runs once per trace of the train function (per replica)
        traces[0] += 1
        return train_step(data)

    model.train_step = counted_train_step

    class EpochTimer(keras.callbacks.Callback):
        # Epoch hooks only: per-batch hooks would stop Keras' asynchronous dispatch.
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):  # logs are numbers here: the step is done
            self.seconds.append(time.perf_counter() - self.start)

    timer = EpochTimer()
    for gpu in range(len(gpus)):
        tf.config.experimental.reset_memory_stats(f"GPU:{gpu}")
    history = model.fit(
        dataset,
        steps_per_epoch=FLAGS.steps,
        epochs=FLAGS.epochs,
        verbose=0,
        callbacks=[timer],
        shuffle=False,
    )
    timed = timer.seconds[1:]
    result = dict(
        config=name,
        tensorflow_gpus=[
            tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus
        ],
        images_per_second=FLAGS.steps * FLAGS.batch_size / statistics.median(timed),
        epoch_seconds=timer.seconds,
        traces=traces[0] // replicas if traces[0] % replicas == 0 else traces[0] / replicas,
        jit_compile=bool(model.jit_compile),
        precision=precision,
        onednn=onednn.enabled(),
        compute_dtype=keras.mixed_precision.global_policy().compute_dtype,
        strategy=type(strategy).__name__ if strategy else "none",
        replicas=replicas,
        loss=float(history.history["loss"][-1]),
        rss_after_imports_mib=rss_after_imports,
        peak_rss_mib=_peak_rss_mib(),
    )
    if gpus:  # the largest over the GPUs (GPU:0 unless mirrored over several)
        peaks = [
            tf.config.experimental.get_memory_info(f"GPU:{g}")["peak"] for g in range(len(gpus))
        ]
        result["gpu_peak_mib"] = max(peaks) / 2**20
    return result


# -------------------------------------------------------------------- the driver
def hardware():
    """(description lines, whether a GPU of compute capability >= 7.0 is there).

    Read without importing TensorFlow (nvidia-smi), so that the driver process stays light;
    each child checks again with TensorFlow before it uses mixed precision.
    """
    lines = [f"CPU: {machine.cpu_name()}, {machine.cpu_cores()} cores available"]
    mixed_ok = False
    try:
        query = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        query = ""
    for line in query.strip().splitlines():
        name, _, capability = line.rpartition(",")
        lines.append(f"GPU: {name.strip()}, compute capability {capability.strip()}")
        try:
            mixed_ok = mixed_ok or float(capability) >= 7.0
        except ValueError:
            pass
    if len(lines) == 1:
        lines.append("GPU: none (nvidia-smi finds none)")
    return lines, mixed_ok


def child_command(name):
    settings = (
        "model",
        "batch_size",
        "image_size",
        "channels",
        "num_classes",
        "steps",
        "epochs",
        "jit_compile",
        "steps_per_execution",
        "weight_decay",
        "learning_rate",
        "precision",
        "strategy",
    )
    return [
        sys.executable,
        "-m",
        "benchmarks.throughput",
        f"--_one={name}",
        *(f"--{key}={getattr(FLAGS, key)}" for key in settings),
    ]


def run_child(name):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    completed = subprocess.run(
        child_command(name), cwd=root, env=env, capture_output=True, text=True
    )
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    raise RuntimeError(f"{name} failed (exit {completed.returncode}):\n{completed.stderr[-4000:]}")


def table(rows):
    widths = [max(len(str(row[k])) for row in rows) for k in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(rows[0], widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |" for row in rows[1:]
    ]
    return "\n".join(lines)


def linear_fit(points):
    """Least squares c = a + b*M over [(M, c)]; returns (a, b, largest |residual| / c)."""
    n = len(points)
    mean_m = sum(m for m, _ in points) / n
    mean_c = sum(c for _, c in points) / n
    b = sum((m - mean_m) * (c - mean_c) for m, c in points) / sum(
        (m - mean_m) ** 2 for m, _ in points
    )
    a = mean_c - b * mean_m
    return a, b, max(abs(c - (a + b * m)) / c for m, c in points)


def main(argv):
    del argv
    if FLAGS._one:
        print(RESULT_TAG + json.dumps(run_one(FLAGS._one)), flush=True)
        return
    if FLAGS.quick:
        for key, value in QUICK.items():
            setattr(FLAGS, key, value)
    unknown = sorted(set(FLAGS.configs) - set(CONFIGS))
    if unknown:
        raise app.UsageError(f"Unknown configurations {unknown}; known: {list(CONFIGS)}.")
    if FLAGS.epochs < 2:
        raise app.UsageError("--epochs must be >= 2: the first epoch is discarded.")
    configs = [name for name in CONFIGS if name in FLAGS.configs]

    started = time.perf_counter()
    lines, mixed_ok = hardware()
    invocation = (
        ["python", "-m", "benchmarks.throughput"] if __package__ else ["python", sys.argv[0]]
    )
    print(
        f"command: {shlex.join([*invocation, *sys.argv[1:]])}"
        + (
            "  (--quick: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()) + ")"
            if FLAGS.quick
            else ""
        )
    )
    print(*lines, sep="\n")
    print(
        f"TensorFlow {importlib.metadata.version('tensorflow')}, Keras {importlib.metadata.version('keras')}, "
        f"Python {platform.python_version()} ({sys.executable})"
    )
    print(
        f"{FLAGS.model}, batch {FLAGS.batch_size}, {FLAGS.image_size}x{FLAGS.image_size}x{FLAGS.channels}, "
        f"{FLAGS.num_classes} classes; SGD(momentum 0.9), coupled L2 {FLAGS.weight_decay:g}; "
        f"precision={FLAGS.precision}, strategy={FLAGS.strategy}; "
        f"jit_compile={FLAGS.jit_compile}, steps_per_execution={FLAGS.steps_per_execution}; "
        f"{FLAGS.epochs} epochs x {FLAGS.steps} steps per process (first epoch discarded), "
        f"{FLAGS.repeats} process(es) per configuration, interleaved.\n",
        flush=True,
    )

    skipped = {
        name: "n/a (no GPU of compute capability >= 7.0)"
        for name in configs
        if precision_of(name) == "mixed_float16" and not mixed_ok
    }
    failed = []
    results = {name: [] for name in configs if name not in skipped}
    for repeat in range(FLAGS.repeats):
        for name in [n for n in results if n not in skipped]:
            try:
                result = run_child(name)
            except RuntimeError as error:
                print(
                    f"  repeat {repeat + 1}/{FLAGS.repeats} {name:<17} FAILED: {error}", flush=True
                )
                failed.append(name)
                continue
            if "skipped" in result:
                skipped[name] = result["skipped"]
                continue
            results[name].append(result)
            print(
                f"  repeat {repeat + 1}/{FLAGS.repeats} {name:<17} {result['images_per_second']:9.1f} images/s "
                f"(epochs: {', '.join(f'{s:.2f}' for s in result['epoch_seconds'])} s)",
                flush=True,
            )
    results = {name: rs for name, rs in results.items() if rs}
    seen = sorted({gpu for rs in results.values() for r in rs for gpu in r["tensorflow_gpus"]})
    print(f"GPUs TensorFlow saw: {', '.join(seen) or 'none'}")
    used = sorted(
        {
            (r["strategy"], r["replicas"], r["compute_dtype"], r["onednn"])
            for rs in results.values()
            for r in rs
        }
    )
    print(
        "Ran under: "
        + (
            "; ".join(
                f"{s}, {n} replica(s), compute dtype {d}, oneDNN CPU kernels {'on' if o else 'off'}"
                for s, n, d, o in used
            )
            or "nothing (no configuration ran)"
        )
    )

    def cost(name):
        """Median over repeats of single/config images/s, each from the same repeat."""
        baseline = "single_mixed" if CONFIGS[name][2] else "single"
        if baseline not in results or name == baseline:
            return None
        return statistics.median(
            s["images_per_second"] / c["images_per_second"]
            for s, c in zip(results[baseline], results[name])
        )

    on_gpu = any("gpu_peak_mib" in r for rs in results.values() for r in rs)
    memory = "peak GPU memory (MiB)" if on_gpu else "peak RSS (MiB)"
    header = (
        "configuration",
        "images/s",
        "spread",
        "cost (x single)",
        "target",
        memory,
        "RSS after imports (MiB)",
        "traces",
        "XLA",
        "last loss",
    )
    rows = [header]
    for name in configs:
        if name not in results:
            rows.append((name, skipped.get(name, "FAILED"), "", "", "", "", "", "", "", ""))
            continue
        rates = sorted(r["images_per_second"] for r in results[name])
        epoch_rates = sorted(
            FLAGS.steps * FLAGS.batch_size / s
            for r in results[name]
            for s in r["epoch_seconds"][1:]
        )
        c = cost(name)
        target = TARGETS.get(name)
        peak = statistics.median(
            r["gpu_peak_mib" if on_gpu else "peak_rss_mib"] for r in results[name]
        )
        rows.append(
            (
                name,
                f"{statistics.median(rates):.1f}",
                f"{epoch_rates[0]:.0f}-{epoch_rates[-1]:.0f}",
                "1.00" if c is None and not CONFIGS[name][0] else (f"{c:.2f}" if c else "-"),
                ""
                if target is None
                else f"<= {target} "
                + ("(no single to compare)" if c is None else "met" if c <= target else "MISSED"),
                f"{peak:.0f}",
                f"{statistics.median(r['rss_after_imports_mib'] for r in results[name]):.0f}",
                "/".join(str(r["traces"]) for r in results[name]),
                "on" if results[name][0]["jit_compile"] else "off",
                "/".join(f"{r['loss']:.3f}" for r in results[name]),
            )
        )
    print()
    print(table(rows))
    print(
        "spread: images/s of the slowest and fastest timed epoch over every process; traces: Python "
        "executions of train_step (1 = traced once) per process."
    )
    if not on_gpu:
        print(
            "Memory: peak resident set of the configuration's own process (ru_maxrss), TensorFlow's "
            "runtime included; subtract 'RSS after imports' for the model's share."
        )

    scaling = [
        (CONFIGS[n][0], cost(n))
        for n in ("okdph_m2", "okdph_m3", "okdph_m4")
        if n in results and cost(n)
    ]
    if len(scaling) >= 2:
        print("\nScaling with M (paper mode):")
        base = scaling[0][1] if scaling[0][0] == 2 else None
        for m, c in scaling:
            extra = (
                f"; cost(M)/cost(2) = {c / base:.2f} vs M/2 = {m / 2:.2f}, (M+1)/3 = {(m + 1) / 3:.2f}"
                if base
                else ""
            )
            print(f"  M={m}: cost {c:.2f}x{extra}")
        if len(scaling) >= 3:
            a, b, residual = linear_fit(scaling)
            print(
                f"  linear fit: cost = {a:.2f} + {b:.2f} * M (largest residual {100 * residual:.1f}% of the cost); "
                f"{b:.2f}x a single model per extra student"
            )
    samples = [(k, cost(f"okdph_m2_k{k}")) for k in (1, 2, 4) if f"okdph_m2_k{k}" in results]
    samples = [(k, c) for k, c in samples if c]
    if len(samples) >= 2 and samples[0][0] == 1:
        print("\nHybrid samples K per batch (okdph_multi_hwm, M=2):")
        for k, c in samples:
            print(f"  K={k}: cost {c:.2f}x; cost(K)/cost(1) = {c / samples[0][1]:.2f}")
    print(f"\nTotal wall time: {time.perf_counter() - started:.0f} s")
    not_finite = sorted(
        {name for name, rs in results.items() for r in rs if not math.isfinite(r["loss"])}
    )
    if failed or not_finite:
        sys.exit(
            f"throughput: FAILED configurations {sorted(set(failed))}, "
            f"loss not finite in {not_finite}"
        )


if __name__ == "__main__":
    app.run(main)
