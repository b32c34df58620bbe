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

import keras
import numpy as np
import tensorflow as tf

from okdph_keras import checkpointing
from okdph_keras.analysis import evaluation, hessian, interpolation, landscape, plots, sharpness
from okdph_keras.config import Config
from okdph_keras.data import sources as sources_lib
from okdph_keras.data import views as views_lib
from okdph_keras.data.pipeline import eval_dataset
from okdph_keras.model import OKDPH

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Origin:
    """A loaded model and, for a run directory, its configuration."""

    path: str
    model: keras.Model  # an OKDPH, or a single network
    config: Config | None


def load_origin(source):
    """The model of a run directory (its last checkpoint) or of a `.keras` file.

    Example:
        >>> load_origin("runs/cifar10_resnet32_m2_seed42").model.students
    """
    path = os.path.abspath(os.fspath(source))
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{source} does not exist: expected a run directory (with config.json and "
            "state.json) or a .keras file."
        )
    if not os.path.isdir(path):
        if not path.endswith(".keras"):
            raise ValueError(f"{source} is not a run directory or a .keras file.")
        return Origin(path, _load_keras(path), None)
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise ValueError(f"{source} has no config.json: it is not a run directory.")
    state = checkpointing.load_state(path)
    if state is None:
        raise ValueError(
            f"Run directory {source} holds no checkpoint yet (no {checkpointing.STATE_FILE})."
        )
    checkpoint = os.path.join(path, state["checkpoint"])
    if not os.path.isfile(checkpoint):
        raise ValueError(
            f"Run directory {source} names the checkpoint {checkpoint}, which is missing."
        )
    config = Config.from_json_dict(checkpointing.load_json(config_path))
    return Origin(path, _load_keras(checkpoint), config)


def _load_keras(path):
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 (Keras raises many kinds; name the file)
        raise ValueError(f"Could not load a Keras model from {path}: {error}") from error
    if not isinstance(model, keras.Model):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a Keras model.")
    return model


def select_network(model, network):
    """`(name, keras.Model)` for a student index (`"0"`, `"1"`, ...) or `"hwm"`."""
    if network == "hwm":
        if not isinstance(model, OKDPH):
            raise ValueError(
                f"--network hwm needs an OKDPH model; this is a {type(model).__name__}."
            )
        return "hwm", model.hybrid_model()
    students = model.students if isinstance(model, OKDPH) else [model]
    try:
        index = int(network)
    except ValueError:
        index = None
    if index is None or not 0 <= index < len(students):
        choices = f"a student index from 0 to {len(students) - 1}"
        choices += " or 'hwm'" if isinstance(model, OKDPH) else ""
        raise ValueError(
            f"Network {network!r} is out of range or unknown: the model has {len(students)} "
            f"student(s); give {choices}."
        )
    return f"student_{index}", students[index]


def load_data(origin, split="test", data_path=None, batch_size=256, max_examples=None):
    """`(dataset of (images, labels) batches, description)` for the analyses.

    Without `data_path`, the run's `split` from `okdph_keras.train.load_sources`,
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
    from okdph_keras import train  # noqa: PLC0415 (heavy; only for run directories)

    source = getattr(train.load_sources(config), split)
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


# --- commands ----------------------------------------------------------------------------


def run_interpolate(args, origin, data):
    """Student A -> B on a line, and A -> HWM -> B; writes .npz and .png, returns (stem, summary)."""
    model = origin.model
    if not isinstance(model, OKDPH):
        raise ValueError(
            f"interpolate needs two students: {origin.path} holds a {type(model).__name__}, "
            "not an OKDPH model."
        )
    a, b = args.students
    if a == b:
        raise ValueError(f"--students {a} {b}: give two different students.")
    (_, student_a), (_, student_b) = (select_network(model, str(index)) for index in (a, b))
    print(f"Line from student {a} to student {b}:")
    line = interpolation.interpolate(
        student_a,
        student_b,
        data,
        np.linspace(0.0, 1.0, args.steps + 1),
        batch_size=args.batch_size,
        verbose=True,
    )
    print(f"Path from student {a} through the HWM to student {b}:")
    through = interpolation.interpolate_through(
        [student_a, model.hybrid_model(), student_b],
        data,
        args.steps,
        batch_size=args.batch_size,
        verbose=True,
    )
    stem = os.path.join(args.output, f"interpolation_student_{a}_student_{b}")
    arrays = dict(
        line_alphas=line.positions,
        line_loss=line.loss,
        line_accuracy=line.accuracy,
        path_positions=through.positions,
        path_loss=through.loss,
        path_accuracy=through.accuracy,
    )
    hwm = args.steps  # the HWM's index on the path
    summary = {
        "students": [a, b],
        "hwm_coefficients": np.asarray(model.coefficients).tolist(),
        "endpoint_loss": [line.loss[0], line.loss[-1]],
        "endpoint_accuracy": [line.accuracy[0], line.accuracy[-1]],
        "line_barrier": interpolation.loss_barrier(line),
        "hwm_loss": through.loss[hwm],
        "hwm_accuracy": through.accuracy[hwm],
        "path_barrier": interpolation.loss_barrier(through),
    }
    _write_npz(stem + ".npz", arrays)
    checkpointing.write_atomically(
        stem + ".png",
        lambda path: plots.plot_interpolation(
            {f"line: student {a} -> {b}": line, f"path: student {a} -> HWM -> {b}": through},
            path,
            title=os.path.basename(origin.path),
        ),
    )
    return stem, summary


def run_landscape(args, origin, data):
    """The 2-D loss landscape around one network; writes .npz and .png, returns (stem, summary)."""
    name, network = select_network(origin.model, args.network)
    grid = landscape.landscape_2d(
        network,
        data,
        args.span,
        args.resolution,
        args.seed,
        batch_size=args.batch_size,
        verbose=True,
    )
    stem = os.path.join(args.output, f"landscape_{name}")
    _write_npz(stem + ".npz", dataclasses.asdict(grid))
    checkpointing.write_atomically(
        stem + ".png",
        lambda path: plots.plot_landscape(
            grid, path, title=f"{name}, {os.path.basename(origin.path)}"
        ),
    )
    return stem, {
        "network": name,
        "span": args.span,
        "resolution": args.resolution,
        "seed": args.seed,
        "network_loss": evaluation.evaluate(network, data).loss,
        "grid_min_loss": float(grid.loss.min()),
        "grid_max_loss": float(grid.loss.max()),
    }


def run_flatness(args, origin, data):
    """Perturbation sharpness at each radius and the top Hessian eigenvalue: (stem, summary)."""
    name, network = select_network(origin.model, args.network)
    radii = []
    for radius in args.radius:
        result = sharpness.perturbation_sharpness(
            network, data, radius, args.samples, args.seed, batch_size=args.batch_size, verbose=True
        )
        radii.append(
            {
                "radius": radius,
                "base_loss": result.base_loss,
                "mean_increase": result.mean_increase,
                "max_increase": result.max_increase,
                "increases": result.increases.tolist(),
            }
        )
    top = hessian.top_hessian_eigenvalue(
        network,
        data.take(args.hessian_batches),
        args.iterations,
        args.tolerance,
        args.seed,
        batch_size=args.batch_size,
        verbose=True,
    )
    summary = {
        "network": name,
        "samples": args.samples,
        "seed": args.seed,
        "perturbation": radii,
        "hessian": dataclasses.asdict(top) | {"tolerance": args.tolerance},
    }
    return os.path.join(args.output, f"flatness_{name}"), summary


def _write_npz(path, arrays):
    checkpointing.write_atomically(path, lambda temporary: np.savez(temporary, **arrays))


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


COMMANDS = {"interpolate": run_interpolate, "landscape": run_landscape, "flatness": run_flatness}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        origin = load_origin(args.source)
        data, description = load_data(
            origin, args.split, args.data, args.batch_size, args.max_examples
        )
        stem, summary = COMMANDS[args.command](args, origin, data)
        summary = {"command": args.command, "source": origin.path, "data": description} | summary
        checkpointing.write_json_atomically(stem + ".json", summary)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(1, f"error: {error}\n")
    print(json.dumps(summary, indent=2))
    print(f"Wrote {stem}.*")
    return 0


if __name__ == "__main__":
    sys.exit(main())
