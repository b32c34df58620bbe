"""The commands of `python -m okdph_keras.analysis`, by name in `COMMANDS`.

Each `run_<command>(args, origin, data)` takes the parsed arguments, the source's
`rundir.Origin` and the data, writes its arrays (`.npz`) and figure (`.png`) into
`args.output`, and returns `(stem, summary)`; the command line writes `<stem>.json`.
"""

import dataclasses
import os

import numpy as np

from okdph_keras import checkpointing
from okdph_keras.analysis import evaluation, hessian, interpolation, landscape, plots, sharpness
from okdph_keras.model import OKDPH


def select_network(origin, network):
    """`(name, keras.Model)` of `origin` for a student index (`"0"`, `"1"`, ...) or `"hwm"`."""
    model, students = origin.model, origin.students
    if network == "hwm":
        if not isinstance(model, OKDPH):
            raise ValueError(
                f"--network hwm needs an OKDPH model; this is a {type(model).__name__}."
            )
        return "hwm", model.hybrid_model()
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
    (_, student_a), (_, student_b) = (select_network(origin, str(index)) for index in (a, b))
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
    arrays = {"line_alphas": line.positions, "path_positions": through.positions}
    for prefix, curve in (("line", line), ("path", through)):
        arrays |= {f"{prefix}_loss": curve.loss, f"{prefix}_accuracy": curve.accuracy}
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
    name, network = select_network(origin, args.network)
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
    name, network = select_network(origin, args.network)
    radii = []
    for radius in args.radius:
        result = sharpness.perturbation_sharpness(
            network,
            data,
            radius=radius,
            samples=args.samples,
            seed=args.seed,
            batch_size=args.batch_size,
            verbose=True,
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


COMMANDS = {"interpolate": run_interpolate, "landscape": run_landscape, "flatness": run_flatness}
