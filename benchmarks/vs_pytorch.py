"""Keras OKDPH against the reference PyTorch OKDPH on the CPU: images/s side by side, in one run.

ResNet-32, batch 128, 32x32x3, 10 classes, in-memory random data, SGD(lr 0.1, momentum 0.9)
with coupled L2 weight decay 5e-4, OKDPH with M=2 students and three views:

  one ResNet-32, Keras fit()                   benchmarks/throughput.py, config `single`
  one ResNet-32, plain PyTorch training loop   benchmarks/pytorch_side.py, config `single`
  OKDPH M=2, paper mode                        throughput.py `okdph_m2`
  OKDPH M=2, hwm_gradient=False                throughput.py `okdph_m2_nohwm`
  the reference PyTorch OKDPH (HWM detached)   pytorch_side.py `reference_okdph` (its train())

and the ratios Keras single / PyTorch single (target >= 1.0), OKDPH paper mode / reference
(>= 1.3) and OKDPH hwm_gradient=False / reference (>= 1.8), with each configuration's cost (its
own library's single network's images/s over its own).

Setup, once: a separate environment, never a dependency of this project (PyTorch's CPU-only
wheel index was unreachable here, so this is PyPI's default build, which runs on the CPU; tqdm
and ipython are imports of the reference's OKDPH.py), and the reference code:

    python -m venv /work/torchenv && /work/torchenv/bin/pip install torch torchvision numpy
    /work/torchenv/bin/pip install tqdm ipython
    git clone https://github.com/tianlizhang/OKDPH /work/okdph_ref   # measured at a562089d

Then:

    python -m benchmarks.vs_pytorch            # 3 epochs x 10 steps per process, 3 repeats
    python -m benchmarks.vs_pytorch --quick    # 2 x 2 steps, 1 repeat: about 3 minutes on 2 cores
    python -m benchmarks.vs_pytorch --repeats=5 --threads=2 --torch_python=/path/to/python

Every configuration runs in a fresh process of its own, `--repeats` rounds interleaved (A, B, C,
D, E, A, B, ...) so that a change in the machine's load hits all alike; the table shows medians
over repeats and each ratio is the median over repeats of that repeat's own ratio. Both sides
are timed alike: throughput.py runs `--epochs` epochs of `--steps` steps, discards the first and
takes the median epoch; pytorch_side.py runs `--steps` untimed warm-up steps, then
(epochs - 1) x steps timed ones whose chained per-step times are summed here into blocks of
`--steps`, each the wall time of that many consecutive steps like an epoch. Images/s is
steps x batch / median epoch or block on both sides (pytorch_side's per-step median is printed
beside it). Both run on the CPU (TensorFlow with CUDA_VISIBLE_DEVICES=""); `--threads` sets
torch.set_num_threads and TensorFlow's intra- and inter-op pools (TF_NUM_*_THREADS).
"""

import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

from benchmarks import machine, throughput

ROWS = {  # key: (table label, side, configuration of that side's script)
    "keras_single": ("one ResNet-32, Keras `fit()`", "keras", "single"),
    "torch_single": ("one ResNet-32, plain PyTorch training loop", "torch", "single"),
    "okdph_m2": ("OKDPH M=2, paper mode", "keras", "okdph_m2"),
    "okdph_m2_nohwm": ("OKDPH M=2, `hwm_gradient=False`", "keras", "okdph_m2_nohwm"),
    "reference_okdph": ("the reference PyTorch OKDPH (HWM detached)", "torch", "reference_okdph"),
}
SINGLE = {"keras": "keras_single", "torch": "torch_single"}
RATIOS = (  # (label, numerator, denominator, target: ratio >= target)
    ("Keras single / PyTorch single", "keras_single", "torch_single", 1.0),
    ("OKDPH paper mode / reference", "okdph_m2", "reference_okdph", 1.3),
    ("OKDPH hwm_gradient=False / reference", "okdph_m2_nohwm", "reference_okdph", 1.8),
)
# What pytorch_side.py fixes (the reference's CIFAR-10 ResNet-32 settings): the Keras side must match.
FIXED = dict(
    model="resnet32",
    image_size=32,
    channels=3,
    num_classes=10,
    learning_rate=0.1,
    weight_decay=5e-4,
)
QUICK = dict(steps=2, epochs=2, repeats=1)
TORCH_TAG = "PYTORCH_RESULT "  # pytorch_side.RESULT_TAG (that module needs torch to import)
SETUP = """python -m venv /work/torchenv && /work/torchenv/bin/pip install torch torchvision numpy
/work/torchenv/bin/pip install tqdm ipython
git clone https://github.com/tianlizhang/OKDPH /work/okdph_ref"""

# throughput.py's flags (batch_size, steps, epochs, repeats, quick, ...) are this file's too.
flags.DEFINE_string("torch_python", "/work/torchenv/bin/python", "Python of the PyTorch venv.")
flags.DEFINE_string("reference_dir", "/work/okdph_ref", "Checkout of tianlizhang/OKDPH.")
flags.DEFINE_integer(
    "threads", machine.cpu_cores(), "Threads of each library (default: all cores)."
)
FLAGS = flags.FLAGS
FLAGS.set_default("learning_rate", FIXED["learning_rate"])
FLAGS.set_default("repeats", 3)
FLAGS["quick"].help = f"Smoke-sized run: {QUICK}, overriding those flags."


def torch_version():
    """The torch venv's torch version; exits with the setup commands if there is none."""
    try:
        return subprocess.run(
            [FLAGS.torch_python, "-c", "import torch; print(torch.__version__)"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as error:
        sys.exit(
            f"No torch under --torch_python={FLAGS.torch_python} ({error}). Set it up:\n{SETUP}"
        )


def reference_commit():
    """The reference checkout's commit; exits with the setup commands if there is none."""
    if not os.path.isfile(os.path.join(FLAGS.reference_dir, "src", "OKDPH.py")):
        sys.exit(
            f"No src/OKDPH.py under --reference_dir={FLAGS.reference_dir}. Set it up:\n{SETUP}"
        )
    git = ["git", "-C", FLAGS.reference_dir, "rev-parse", "HEAD"]
    return subprocess.run(git, capture_output=True, text=True).stdout.strip() or "unknown commit"


def run_keras(config):
    """(images/s, detail) of a throughput.py configuration, in its own process."""
    result = throughput.run_child(config)
    epochs = ", ".join(f"{s:.2f}" for s in result["epoch_seconds"])
    return result["images_per_second"], f"epochs: {epochs} s"


def run_torch(config):
    """(images/s, detail) of a pytorch_side.py configuration, in its own process."""
    command = [
        FLAGS.torch_python,
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "pytorch_side.py"),
        f"--configs={config}",
        f"--reference_dir={FLAGS.reference_dir}",
        f"--batch_size={FLAGS.batch_size}",
        f"--warmup={FLAGS.steps}",
        f"--steps={(FLAGS.epochs - 1) * FLAGS.steps}",
        f"--threads={FLAGS.threads}",
    ]
    completed = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in completed.stdout.splitlines() if line.startswith(TORCH_TAG)]
    if not lines:
        raise RuntimeError(
            f"{config} failed (exit {completed.returncode}):\n{completed.stderr[-4000:]}"
        )
    result = json.loads(lines[0][len(TORCH_TAG) :])
    steps = result["step_seconds"]
    blocks = [sum(steps[i : i + FLAGS.steps]) for i in range(0, len(steps), FLAGS.steps)]
    rate = FLAGS.steps * FLAGS.batch_size / statistics.median(blocks)
    detail = ", ".join(f"{s:.2f}" for s in blocks)
    return rate, f"blocks: {detail} s; per-step median {result['images_per_second']:.1f} images/s"


def main(argv):
    del argv
    if FLAGS.quick:
        for key, value in QUICK.items():
            setattr(FLAGS, key, value)
    changed = {k: getattr(FLAGS, k) for k, v in FIXED.items() if getattr(FLAGS, k) != v}
    if changed:
        raise app.UsageError(f"The PyTorch side is fixed at {FIXED}; got {changed}.")
    if FLAGS.epochs < 2:
        raise app.UsageError("--epochs must be >= 2: the first epoch is discarded.")
    torch = torch_version()
    commit = reference_commit()
    threads = str(FLAGS.threads)
    os.environ.update(
        CUDA_VISIBLE_DEVICES="", TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS=threads
    )

    started = time.perf_counter()
    invocation = (
        ["python", "-m", "benchmarks.vs_pytorch"] if __package__ else ["python", sys.argv[0]]
    )
    print(f"command: {shlex.join([*invocation, *sys.argv[1:]])}")
    print(
        f"CPU: {machine.cpu_name()}, {machine.cpu_cores()} cores available; {threads} threads each"
    )
    print(
        f"TensorFlow {importlib.metadata.version('tensorflow')}, Keras {importlib.metadata.version('keras')}, "
        f"Python {platform.python_version()}; PyTorch {torch} ({FLAGS.torch_python}); "
        f"reference {FLAGS.reference_dir} at {commit}"
    )
    print(
        f"resnet32, batch {FLAGS.batch_size}, 32x32x3, 10 classes, SGD(lr 0.1, momentum 0.9), "
        f"L2 5e-4; {FLAGS.epochs} epochs (blocks) x {FLAGS.steps} steps per process, the first "
        f"discarded; {FLAGS.repeats} repeat(s), interleaved.\n",
        flush=True,
    )

    runners = {"keras": run_keras, "torch": run_torch}
    rates = {key: [] for key in ROWS}
    for repeat in range(FLAGS.repeats):
        for key, (_, side, config) in ROWS.items():
            rate, detail = runners[side](config)
            rates[key].append(rate)
            print(
                f"  repeat {repeat + 1}/{FLAGS.repeats} {key:<16} {rate:8.1f} images/s ({detail})",
                flush=True,
            )

    def ratio(numerator, denominator):
        """Median over repeats of that repeat's images/s ratio."""
        return statistics.median(a / b for a, b in zip(rates[numerator], rates[denominator]))

    rows = [("configuration", "images/s", "cost (x own single)")]
    for key, (label, side, _) in ROWS.items():
        rows.append(
            (label, f"{statistics.median(rates[key]):.1f}", f"{ratio(SINGLE[side], key):.2f}")
        )
    print()
    print(throughput.table(rows))
    print()
    rows = [("ratio (images/s)", "value", "target", "")]
    for label, numerator, denominator, target in RATIOS:
        value = ratio(numerator, denominator)
        rows.append((label, f"{value:.2f}", f">= {target}", "PASS" if value >= target else "FAIL"))
    print(throughput.table(rows))
    print(f"\nTotal wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    app.run(main)
