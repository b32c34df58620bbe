"""`python -m okdph_keras.export SOURCE --output DIR [options]`: see `okdph_keras.export`."""

import argparse
import os

from okdph_keras.data import sources as sources_lib
from okdph_keras.data.views import NORMALIZATION, STYLES
from okdph_keras.export.build import export_student
from okdph_keras.export.convert import VARIANTS
from okdph_keras.export.metadata import format_table


def _normalization_argument(text):
    if text in NORMALIZATION:
        return text
    try:
        mean, std = text.split(":")
        return tuple(float(v) for v in mean.split(",")), tuple(float(v) for v in std.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a name of {sorted(NORMALIZATION)} or MEAN,MEAN,MEAN:STD,STD,STD; got {text!r}"
        ) from None


# The command-line options passed to `export_student` as they are.
OPTIONS = (
    "student",
    "int8_io",
    "normalization",
    "style",
    "input_size",
    "max_held_out",
    "overwrite",
)


def _dataset_options(dataset, data_dir):
    """`export_student`'s data from `--dataset`: train calibrates and selects, test verifies."""
    train, test = (
        sources_lib.load_source(dataset, split, data_dir=data_dir, download=False)
        for split in ("train", "test")
    )
    return {
        "representative_data": train,
        "selection_data": train,
        "held_out": test,
        "class_names": train.class_names,
    }


def main(argv=None):
    """`python -m okdph_keras.export SOURCE --output DIR [options]`; returns 0, exits 1 on errors."""
    parser = argparse.ArgumentParser(
        prog="python -m okdph_keras.export",
        description="Export one student of a run (or a .keras file) to a SavedModel and TFLite, verified.",
    )
    parser.add_argument(
        "source", help="run directory, or .keras file of an OKDPH model or a student"
    )
    parser.add_argument("--output", required=True, help="export directory to create")
    parser.add_argument(
        "--student",
        type=int,
        default=None,
        help="student index (default: the best on the selection data)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        help=f"TFLite variants, space- or comma-separated (default: {' '.join(VARIANTS)})",
    )
    parser.add_argument("--int8_io", action="store_true", help="int8 outputs for the int8 model")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export")
    parser.add_argument(
        "--max_held_out", type=int, default=None, help="verify on at most this many test images"
    )
    group = parser.add_argument_group("for a .keras file (a run directory records these)")
    group.add_argument(
        "--normalization",
        type=_normalization_argument,
        default=None,
        help=f"{' | '.join(sorted(NORMALIZATION))} | MEAN,..:STD,..",
    )
    group.add_argument(
        "--style", choices=STYLES, default=None, help="test-time transform (default: plain resize)"
    )
    group.add_argument(
        "--image_size",
        dest="input_size",
        type=int,
        default=None,
        help="input side (default: the model's)",
    )
    group.add_argument(
        "--dataset",
        default=None,
        help="TFDS name or image_folder: its train split calibrates int8 and picks the student, "
        "its test split verifies",
    )
    group.add_argument("--data_dir", default=None, help="TFDS data directory or image folder root")
    args = parser.parse_args(argv)
    options = {name: getattr(args, name) for name in OPTIONS}
    options["variants"] = [v for item in args.variants for v in item.split(",") if v]
    try:
        if args.dataset:
            options |= _dataset_options(args.dataset, args.data_dir)
        metadata = export_student(args.source, args.output, **options)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as error:
        parser.exit(1, f"error: {error}\n")
    source = metadata["source"]
    print(
        f"Exported student {source['student']} of {source['path']} to {os.path.abspath(args.output)}"
    )
    if source["test_accuracy"] is not None:
        print(f"Source test accuracy of this student: {source['test_accuracy']:.4f}")
    print(format_table(metadata))
    return 0
