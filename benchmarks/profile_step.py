"""Where a training step's time goes: TensorFlow's profiler, summed by op type.

    python -m benchmarks.profile_step                          # one ResNet-32, Keras fit()
    python -m benchmarks.profile_step --config=okdph_m2 --steps=5
    python -m benchmarks.profile_step --xprof_path=/tmp/xprof  # where xprof's converter is

Runs `--warmup` untraced steps, then traces `--steps` steps of `model.fit` with
`tf.profiler.experimental` into `--logdir` (open it in TensorBoard's profile tab), and prints
each op type's self time and share of all op time, ops inside BatchNorm layers (layer names
ending in `_bn`, as this library's architectures name them) apart from the rest. The table
needs xprof's converter, not a dependency of this project; TensorFlow cannot read its own
trace files. It runs without xprof's dependencies:

    pip install --no-deps --target /tmp/xprof xprof==2.24.2

The summary runs in a subprocess that does not import TensorFlow (the converter ships its own
copy of the profiler). Timings under the profiler are slower than without it; read shares,
not images/s (for those, `benchmarks/throughput.py`).
"""

import collections
import glob
import json
import os
import subprocess
import sys

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

from okdph_keras import onednn

onednn.prefer_onednn()  # as the recipes do, before TensorFlow is imported

CONFIGS = ("single", "okdph_m2", "okdph_m2_nohwm")
flags.DEFINE_enum("config", "single", CONFIGS, "What to profile (see benchmarks/throughput.py).")
flags.DEFINE_string("model", "resnet32", "Student architecture (okdph_keras.get_model name).")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("image_size", 32, "Height and width of the synthetic images.")
flags.DEFINE_integer("steps", 10, "Traced steps.")
flags.DEFINE_integer("warmup", 5, "Untraced steps before them (tracing, warm-up).")
flags.DEFINE_string("logdir", "/tmp/okdph_profile", "Where the trace is written.")
flags.DEFINE_string("xprof_path", None, "Directory holding the `xprof` package, if not installed.")
flags.DEFINE_integer("rows", 25, "Op types shown.")
flags.DEFINE_string("_summarise", None, "Internal: summarise this trace (no TensorFlow import).")
FLAGS = flags.FLAGS


def trace():
    """Trains the configuration and traces `--steps` steps; returns the trace's path."""
    import keras  # noqa: PLC0415 (the summarising subprocess must not import TensorFlow)
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    import okdph_keras  # noqa: PLC0415
    from okdph_keras import losses  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, FLAGS.batch_size).astype(np.int32)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    if FLAGS.config == "single":
        model = okdph_keras.get_model(FLAGS.model, 10, shape)
        images = rng.standard_normal((FLAGS.batch_size, *shape), dtype=np.float32)
        cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        def loss(y_true, y_pred):  # the CE plus OKDPH's coupled L2, as throughput.py's single
            return cross_entropy(y_true, y_pred) + 5e-4 * losses.l2_penalty(
                model.trainable_variables
            )

        model.compile(optimizer=optimizer, loss=loss)
    else:
        model = okdph_keras.OKDPH(
            lambda: okdph_keras.get_model(FLAGS.model, 10, shape),
            num_students=2,
            hwm_gradient=FLAGS.config == "okdph_m2",
            weight_decay=5e-4,
            seed=0,
        )
        images = rng.standard_normal((FLAGS.batch_size, 3, *shape), dtype=np.float32)
        model.compile(optimizer=optimizer)
    data = tf.data.Dataset.from_tensors((images, labels)).repeat()
    model.fit(data, steps_per_epoch=FLAGS.warmup, epochs=1, verbose=0)
    tf.profiler.experimental.start(FLAGS.logdir)
    model.fit(data, steps_per_epoch=FLAGS.steps, epochs=1, verbose=0)
    tf.profiler.experimental.stop()
    return sorted(glob.glob(os.path.join(FLAGS.logdir, "plugins/profile/*/*.xplane.pb")))[-1]


def summarise(path):
    """Prints the op-type table of the trace at `path` (xprof's framework_op_stats)."""
    if FLAGS.xprof_path:
        sys.path.insert(0, FLAGS.xprof_path)
    try:
        from xprof.convert import _pywrap_profiler_plugin  # noqa: PLC0415
    except ImportError:
        sys.exit(
            f"The trace is at {path}, but xprof is not importable: "
            "pip install --no-deps --target /tmp/xprof xprof==2.24.2, then --xprof_path=/tmp/xprof."
        )
    data, ok = _pywrap_profiler_plugin.xspace_to_tools_data([path], "framework_op_stats", {})
    if not ok:
        sys.exit(f"xprof could not read {path}.")
    stats = json.loads(data)
    stats = stats[0] if isinstance(stats, list) else stats
    columns = [column["id"] for column in stats["cols"]]
    seconds, counts = collections.Counter(), collections.Counter()
    for row in stats["rows"]:
        op = dict(zip(columns, (cell.get("v") for cell in row["c"])))
        if op["type"] == "IDLE":
            continue
        in_batchnorm = any(part.endswith("_bn") for part in op["operation"].split("/"))
        key = ("BatchNorm: " if in_batchnorm else "") + op["type"]
        seconds[key] += op["total_self_time"] / 1e6
        counts[key] += op["occurrences"]
    total = sum(seconds.values())
    batchnorm = sum(s for key, s in seconds.items() if key.startswith("BatchNorm: "))
    print(f"trace: {path}")
    print(f"op self time {total:.2f} s; inside BatchNorm layers {100 * batchnorm / total:.1f}%\n")
    print(f"{'op type':<48} {'self time (s)':>13} {'share':>7} {'ops':>7}")
    for key, value in seconds.most_common(FLAGS.rows):
        print(f"{key:<48} {value:13.3f} {100 * value / total:6.1f}% {counts[key]:7.0f}")


def main(argv):
    del argv
    if FLAGS._summarise:
        summarise(FLAGS._summarise)
        return
    path = trace()
    command = [sys.executable, "-m", "benchmarks.profile_step", f"--_summarise={path}"]
    command += [f"--rows={FLAGS.rows}"]
    if FLAGS.xprof_path:
        command.append(f"--xprof_path={FLAGS.xprof_path}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    print(f"{FLAGS.config}: {FLAGS.model}, batch {FLAGS.batch_size}, {FLAGS.steps} traced steps")
    sys.exit(subprocess.run(command, cwd=root).returncode)


if __name__ == "__main__":
    app.run(main)
