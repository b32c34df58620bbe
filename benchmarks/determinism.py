"""Are uninterrupted runs of one `--deterministic` recipe command bit-identical here?

    python benchmarks/determinism.py --runs=4                     # oneDNN on, as the recipes
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/determinism.py --runs=6

Runs the CIFAR-10 smoke recipe (`small_cnn`, 6 epochs, views hflip/cutout/none,
`--deterministic`) `--runs` times, each in a fresh process, on a fake CIFAR-10 this script
prepares (no download), then compares every run's final checkpoint (weights and optimizer
state) with the first run's. It prints, per run, how many variables differ and the largest
difference. This is one measurement behind the README's determinism paragraph.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

from absl import app, flags

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the fake-CIFAR fixture

FLAGS = flags.FLAGS
flags.DEFINE_integer("runs", 4, "Uninterrupted runs to compare (>= 2).")
flags.DEFINE_string("output_dir", None, "Where the runs go (default: a temporary directory).")
RUN_NAME = "cifar10_small_cnn_m2_seed42_smoke"


def run_recipe(root, data_dir):
    command = [
        sys.executable,
        "-m",
        "recipes.cifar10",
        "--smoke",
        f"--data_dir={data_dir}",
        f"--output_dir={root / 'runs'}",
        f"--saved_models_dir={root / 'saved'}",
        "--model=small_cnn",
        "--epochs=6",
        "--views=hflip,cutout,none",
        "--deterministic",
    ]
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True)


def final_state(root):
    """Name -> value of every variable of the run's last checkpoint, optimizer included."""
    import keras  # noqa: PLC0415 (after the subprocesses: this process needs no TF before)

    import okdph_keras.model  # noqa: F401, PLC0415 (registers OKDPH)

    run_dir = root / "runs" / RUN_NAME
    state = json.loads((run_dir / "state.json").read_text())
    model = keras.saving.load_model(run_dir / state["checkpoint"])
    return {v.path: v.numpy() for v in model.variables + model.optimizer.variables}


def main(argv):
    del argv
    if FLAGS.runs < 2:
        raise app.UsageError(f"--runs={FLAGS.runs} is not allowed; it must be an integer >= 2.")
    from cifar_fixtures import prepare_fake_cifar  # noqa: PLC0415

    root = pathlib.Path(FLAGS.output_dir or tempfile.mkdtemp(prefix="okdph_determinism_"))
    data_dir = root / "tfds"
    if not data_dir.exists():
        prepare_fake_cifar(data_dir, "cifar10", num_train=40, num_test=20)
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset: the recipes set 1)")
    print(f"TF_ENABLE_ONEDNN_OPTS={onednn}; {FLAGS.runs} runs in {root}", flush=True)
    for k in range(FLAGS.runs):
        run_recipe(root / f"run{k}", data_dir)
        print(f"  run {k} done", flush=True)
    reference = final_state(root / "run0")
    for k in range(1, FLAGS.runs):
        state = final_state(root / f"run{k}")
        differing = {
            name: float(abs(value - reference[name]).max())
            for name, value in state.items()
            if (value != reference[name]).any()
        }
        largest = max(differing.values(), default=0.0)
        print(
            f"run {k} vs run 0: {len(differing)} of {len(state)} variables differ, "
            f"largest difference {largest:.3g}"
        )


if __name__ == "__main__":
    app.run(main)
