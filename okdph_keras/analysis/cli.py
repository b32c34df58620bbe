"""`python -m okdph_keras.analysis {interpolate,landscape,flatness} SOURCE --output DIR`.

SOURCE is a run directory (its `state.json` names the checkpoint, its
`config.json` the data and preprocessing) or a `.keras` file of an `OKDPH`
model (or of a single network, for `landscape` and `flatness`), which
records no data: pass `--data PATH.npz` then.
"""

import argparse
import dataclasses
import json
import os
import sys

import numpy as np
import tensorflow as tf

from okdph_keras import checkpointing, rundir
from okdph_keras.analysis import commands
from okdph_keras.data import sources as sources_lib
from okdph_keras.data import views as views_lib
from okdph_keras.data.pipeline import eval_dataset

SPLITS = ("train", "validation", "test")


def load_data(origin, *, split, data_path, batch_size, max_examples):
    """`(dataset of (images, labels) batches, description)` for the analyses.

    Without `data_path`, the run's `split` from `okdph_keras.run_data.load_sources`,
    preprocessed as the run's test images. With it, an `.npz` holding
    `images` and `labels`: float images are used as they are; uint8 images
    are preprocessed as the run's test images, or (a `.keras` file, which
    records no preprocessing) only cast to float32.
    """
    config = origin.config
    if data_path is not None:
        images, labels = _read_npz(data_path)
        images, labels = images[:max_examples], labels[:max_examples]
        description = f"{len(images)} examples from {data_path}"
        if images.dtype != np.uint8:
            return tf.data.Dataset.from_tensor_slices((images, labels)).batch(
                batch_size
            ), description
        if config is None:
            pairs = (images.astype(np.float32), labels)
            return tf.data.Dataset.from_tensor_slices(pairs).batch(batch_size), description
        return _preprocess(sources_lib.from_arrays(images, labels), config, batch_size), description
    if config is None:
        raise ValueError(
            f"{origin.path} is a .keras file, which records no data: pass --data PATH.npz "
            "(arrays 'images' and 'labels')."
        )
    source = getattr(origin.sources(f"the analysis ({split} split)"), split)
    if source is None:
        raise ValueError(f"Run {origin.path} has no {split} split.")
    if max_examples is not None and max_examples < source.num_examples:
        source = dataclasses.replace(
            source, dataset=source.dataset.take(max_examples), num_examples=max_examples
        )
    description = f"{source.num_examples} examples of the {split} split of {config.dataset}"
    return _preprocess(source, config, batch_size), description


def _read_npz(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--data {path} does not exist.")
    with np.load(path) as arrays:
        missing = {"images", "labels"} - set(arrays.files)
        if missing:
            raise ValueError(
                f"--data {path} must hold arrays 'images' and 'labels'; it holds {sorted(arrays.files)}."
            )
        images, labels = arrays["images"], arrays["labels"]
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"--data {path}: {len(images)} images but {len(labels)} labels.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"--data {path}: labels must be integer class indices; got {labels.dtype}."
        )
    return images, labels.astype(np.int64)


def _preprocess(source, config, batch_size):
    return eval_dataset(
        source,
        batch_size,
        transform=views_lib.eval_transform(config.style, config.image_size),
        normalization=config.normalization,
        noise_mean=config.noise_mean,
        noise_std=config.noise_std,
        seed=config.seed,
    )


# --- command line ------------------------------------------------------------------------


def _at_least(kind, low, strict=False):
    """An argparse type: `kind(text)`, which must be >= low (> low if strict)."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}") from None
        if not (value > low if strict else value >= low) or not np.isfinite(value):
            relation = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"{text} is not allowed; it must be {relation} {low}")
        return value

    return parse


COUNT, INDEX, POSITIVE = _at_least(int, 1), _at_least(int, 0), _at_least(float, 0.0, strict=True)


def build_parser():
    """The `argparse` parser of the three commands and their common options."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("source", help="run directory, or .keras file of an OKDPH model")
    common.add_argument("--output", required=True, help="directory for the results (created)")
    common.add_argument(
        "--split", choices=SPLITS, default="test", help="the run's split (default test)"
    )
    common.add_argument(
        "--data",
        default=None,
        help="an .npz with 'images' and 'labels' instead of the run's data (needed for a .keras "
        "file); float images are used as they are, uint8 ones preprocessed as the run's test images",
    )
    common.add_argument("--max_examples", type=COUNT, default=None, help="use the first N examples")
    common.add_argument(
        "--batch_size", type=COUNT, default=256, help="evaluation batch (default 256)"
    )
    network = dict(default="0", help="a student's index, or hwm (default 0)")

    parser = argparse.ArgumentParser(
        prog="python -m okdph_keras.analysis",
        description="Loss-landscape analysis of an OKDPH run: interpolation, 2-D landscape, flatness.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    line = commands.add_parser(
        "interpolate",
        parents=[common],
        help="loss on the line between two students and through the HWM",
    )
    line.add_argument("--students", type=INDEX, nargs=2, default=(0, 1), metavar=("A", "B"))
    line.add_argument("--steps", type=COUNT, default=10, help="intervals per segment (default 10)")
    grid = commands.add_parser(
        "landscape", parents=[common], help="2-D loss landscape along filter-normalised directions"
    )
    grid.add_argument("--network", **network)
    grid.add_argument(
        "--span", type=POSITIVE, default=1.0, help="the grid covers [-span, span] (default 1)"
    )
    grid.add_argument(
        "--resolution", type=_at_least(int, 2), default=21, help="points per axis (default 21)"
    )
    grid.add_argument("--seed", type=INDEX, default=0, help="seed of the directions (default 0)")
    flat = commands.add_parser(
        "flatness",
        parents=[common],
        help="loss increase under random perturbations, top Hessian eigenvalue",
    )
    flat.add_argument("--network", **network)
    flat.add_argument(
        "--radius",
        type=POSITIVE,
        nargs="+",
        default=[0.01, 0.05],
        help="relative perturbation sizes rho (default 0.01 0.05)",
    )
    flat.add_argument(
        "--samples", type=COUNT, default=10, help="perturbations per radius (default 10)"
    )
    flat.add_argument(
        "--seed", type=INDEX, default=0, help="seed of perturbations and start vector"
    )
    flat.add_argument(
        "--iterations", type=COUNT, default=100, help="power iterations at most (default 100)"
    )
    flat.add_argument(
        "--tolerance", type=POSITIVE, default=1e-3, help="relative tolerance (default 1e-3)"
    )
    flat.add_argument(
        "--hessian_batches", type=COUNT, default=4, help="the Hessian's batches (default 4)"
    )
    return parser


def main(argv=None):
    """`python -m okdph_keras.analysis COMMAND SOURCE --output DIR`; returns 0, exits 1 on errors."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        origin = rundir.load(args.source)
        data, description = load_data(
            origin,
            split=args.split,
            data_path=args.data,
            batch_size=args.batch_size,
            max_examples=args.max_examples,
        )
        stem, summary = commands.COMMANDS[args.command](args, origin, data)
        summary = {"command": args.command, "source": origin.path, "data": description} | summary
        checkpointing.write_json_atomically(stem + ".json", summary)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(1, f"error: {error}\n")
    print(json.dumps(summary, indent=2))
    print(f"Wrote {stem}.*")
    return 0


if __name__ == "__main__":
    sys.exit(main())
