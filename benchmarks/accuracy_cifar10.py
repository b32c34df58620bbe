"""Accuracy evidence on real CIFAR-10 at a budget that fits 2 CPU cores.

    python benchmarks/accuracy_cifar10.py                       # the README's table
    python benchmarks/accuracy_cifar10.py --epochs=2 --seeds=1  # a quick look

Unpacks `../shared/data/cifar10-jpg.tar.gz` (real CIFAR-10 as JPEG, never
committed) into a temporary folder and trains `independent`, `kdcl` and `okdph`
with the same students, views and schedule, several seeds each, through
`okdph_keras.compare` (what `recipes/compare.py` runs). Prints the command, the
budget, the hardware, the wall time and the final test accuracy of each
student, the students' mean, the HWM, the ensemble and the exported student,
mean ± std over seeds, on the full 10,000-image test split. Nothing here is
tuned on the test split: the hyperparameters are the reference's.
"""

import argparse
import os
import shlex
import sys
import tarfile
import tempfile
import time

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import machine  # noqa: E402

ARCHIVE = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10-jpg.tar.gz"
)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", default=ARCHIVE, help="cifar10-jpg.tar.gz")
    parser.add_argument("--methods", default="independent,kdcl,okdph", help="comma-separated")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--model", default="small_cnn", help="a narrow network: the budget is 2 CPU cores"
    )
    parser.add_argument(
        "--train_fraction", type=float, default=0.1, help="of each class, after validation"
    )
    parser.add_argument("--validation_fraction", type=float, default=0.02)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument(
        "--output_dir", default=None, help="runs and tables (default: a temporary folder)"
    )
    return parser.parse_args(argv)


def hardware():
    return f"{machine.cpu_name()}, {machine.cpu_cores()} cores, no GPU used"


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not os.path.isfile(args.archive):
        raise SystemExit(f"{args.archive} not found: pass --archive=PATH/cifar10-jpg.tar.gz.")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

    import tensorflow as tf  # noqa: PLC0415

    from okdph_keras import compare  # noqa: PLC0415
    from okdph_keras import config as config_lib  # noqa: PLC0415
    from okdph_keras.data.views import NORMALIZATION  # noqa: PLC0415

    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    output_dir = args.output_dir or tempfile.mkdtemp(prefix="okdph_accuracy_")
    data_dir = os.path.join(output_dir, "cifar10-jpg")
    if not os.path.isdir(os.path.join(data_dir, "train")):
        print(f"Unpacking {args.archive} into {data_dir} ...", flush=True)
        with tarfile.open(args.archive) as archive:
            archive.extractall(data_dir, filter="data")
    base = config_lib.reference_config(
        "image_folder",
        args.model,
        config_lib.default_views("cifar10"),
        "cifar",
        32,
        NORMALIZATION["cifar10"],
        data_dir=data_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        data_fraction=args.train_fraction,
        validation_fraction=args.validation_fraction,
        run_name="base",
    )
    okdph = base.resolved()
    budget = (
        f"{args.model}, {base.epochs} epochs, batch {base.batch_size}, {args.train_fraction:g} of each "
        f"training class after a {args.validation_fraction:g} validation hold-out "
        f"(≈{round(50000 * (1 - args.validation_fraction) * args.train_fraction)} training images), "
        f"views {list(base.views)}, OKDPH's reference hyperparameters (ω={okdph.omega}, "
        f"β={okdph.beta}, γ={okdph.fusion_gamma}, τ={okdph.temperature}; each baseline its own "
        "defaults), test on all 10,000 test images"
    )
    print(
        f"Command: {command}\nBudget: {budget}\nHardware: {hardware()}; TensorFlow {tf.__version__}",
        flush=True,
    )
    start = time.perf_counter()
    summary = compare.compare(
        base,
        args.methods.split(","),
        args.seeds,
        os.path.join(output_dir, "comparison"),
        flatness_radius=0.0,
    )
    minutes = (time.perf_counter() - start) / 60
    print(
        f"\nWall time: {minutes:.1f} min for {len(summary['methods']) * len(summary['seeds'])} runs "
        f"({output_dir}).\nCommand: {command}\nBudget: {budget}\nHardware: {hardware()}"
    )
    print(compare.format_markdown(summary))


if __name__ == "__main__":
    main()
