"""Train several methods with several seeds on one setup, and compare them.

    summary = compare(base_config, ["independent", "dml", "kdcl", "okdph"], seeds=3,
                      output_dir="comparisons/cifar10")

Every run is `train.run` of `base_config` with only the method (and its
options) and the seed changed, so data, views, architecture and schedule are
the same. Runs live in `<output_dir>/runs/<method>_seed<k>`; a finished run is
reused, an interrupted one resumes. The comparison writes `comparison.md` (mean ±
std over seeds of the final test accuracy of every network, of the exported
student and a flatness figure), `comparison.json` and `comparison.png`.
"""

import dataclasses
import os
import time

import numpy as np

from okdph_keras import analysis, checkpointing, methods, run_data, train
from okdph_keras.config import validate
from okdph_keras.data import views as views_lib
from okdph_keras.data.pipeline import eval_dataset

FLATNESS_EXAMPLES = 512
FLATNESS_SAMPLES = 5


def method_config(base, method, seed, output_dir):
    """The `Config` of one run: `base` with `method` (or an ablation) and `seed`.

    Args:
        base: the shared `Config`.
        method: a registered method or ablation (`methods.names()`).
        seed: the run's seed.
        output_dir: the comparison's directory.

    Returns:
        A validated `Config` named `<method>_seed<seed>`, with the method's
        settings where `base` leaves them unset.
    """
    registered = methods.get(method)
    if not methods.get(registered.objective_name).takes_groups:
        base = base.without_groups()  # config.model alone: its own students' views
    overrides = dict(registered.config_overrides, method=registered.config_method)
    wanted = registered.default_num_students
    if wanted and base.num_students < wanted:  # OKDDip: 3 peers and the leader
        students = base.views[:-1]
        overrides["views"] = tuple(students[m % len(students)] for m in range(wanted))
        overrides["views"] += base.views[-1:]
    config = dataclasses.replace(
        base,
        **overrides,
        seed=seed,
        run_name=f"{method}_seed{seed}",
        output_dir=os.path.join(output_dir, "runs"),
        saved_models_dir=os.path.join(output_dir, "saved_models"),
    )
    validate(config)
    return config.resolved()


def compare(base, methods, seeds, output_dir, *, flatness_radius=0.05, strategy=None):
    """Trains (or reuses) every method x seed and writes the comparison.

    Args:
        base: the shared `Config` (its method, seed and names are replaced).
        methods: names of registered methods or ablations (`methods.names()`).
        seeds: the number of seeds (`base.seed`, `base.seed + 1`, ...), or a
            list of seeds.
        output_dir: where runs and the comparison go.
        flatness_radius: relative radius of the random weight perturbations
            whose mean loss increase (on up to 512 test images) is reported
            for each exported student; 0 skips it.
        strategy: the `tf.distribute.Strategy` every run trains in.

    Returns:
        The summary written to `comparison.json`.
    """
    seeds = list(range(base.seed, base.seed + seeds)) if isinstance(seeds, int) else list(seeds)
    if not methods or not seeds:
        raise ValueError(f"Nothing to compare: methods={methods!r}, seeds={seeds!r}.")
    configs = [
        method_config(base, m, s, output_dir) for m in methods for s in seeds
    ]  # all checked first
    runs = {}
    for index, config in enumerate(configs, start=1):
        finished = os.path.exists(os.path.join(config.output_dir, config.run_name, "results.json"))
        print(
            f"[{index}/{len(configs)}] {config.run_name}: {'reused' if finished else 'training'}",
            flush=True,
        )
        start = time.perf_counter()
        results = train.run(config, strategy)
        if flatness_radius:
            results = dict(results, sharpness=_sharpness(config, results, flatness_radius))
        runs[config.run_name] = dict(results, wall_seconds=time.perf_counter() - start)
    summary = summarize(methods, seeds, runs, flatness_radius)
    summary["settings"] = {
        name: method_settings(method_config(base, name, seeds[0], output_dir)) for name in methods
    }
    os.makedirs(output_dir, exist_ok=True)
    checkpointing.write_json_atomically(os.path.join(output_dir, "comparison.json"), summary)
    checkpointing.write_text_atomically(
        os.path.join(output_dir, "comparison.md"), format_markdown(summary)
    )
    checkpointing.write_atomically(
        os.path.join(output_dir, "comparison.png"), lambda path: plot_comparison(summary, path)
    )
    print(format_markdown(summary))
    return summary


def method_settings(config):
    """What a run of `config` trains with that differs between methods: a short string.

    The method's hyperparameters (`Method.defaults`), the number of peers and the
    views, e.g. `"students=2, beta=1.0, temperature=1.0, views=hflip,cutout,none"`.
    """
    registered = methods.get(config.method)
    names = [n for n in registered.defaults if n not in ("hybrid", "hwm_gradient")]
    if registered.uses_hwm:
        names = list(registered.defaults)
    groups = ",".join(f"{model}:{count}" for model, count in config.groups or ())
    values = [f"students={groups or config.num_students}"]
    values += [f"{name}={getattr(config, name)}" for name in names]
    values.append("views=" + ",".join(config.views))
    return ", ".join(values)


def _sharpness(config, results, radius):
    """Mean loss increase of the exported student under random perturbations of size `radius`."""
    import keras  # noqa: PLC0415

    student = keras.saving.load_model(results["exported_student"], compile=False)
    test = run_data.load_sources(config).test
    data = (
        eval_dataset(
            test,
            128,
            transform=views_lib.eval_transform(config.style, config.image_size),
            normalization=config.normalization,
            seed=config.seed,
            noise_mean=config.noise_mean,
            noise_std=config.noise_std,
        )
        .unbatch()
        .take(FLATNESS_EXAMPLES)
        .batch(128)
    )
    figures = analysis.perturbation_sharpness(
        student, data, radius, samples=FLATNESS_SAMPLES, seed=config.seed
    )
    return figures.mean_increase


def _mean_std(values):
    values = np.asarray(values, np.float64)
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "values": values.tolist(),
    }


def summarize(methods, seeds, runs, flatness_radius=0.0):
    """Mean ± std over seeds of every figure, per method.

    Args:
        methods, seeds: as given to `compare`.
        runs: `{run_name: results}` (`train.run`'s results, plus `sharpness`).
        flatness_radius: the radius the sharpness figures were measured at.

    Returns:
        `{"seeds", "flatness_radius", "methods": {method: {figure: {"mean", "std", "values"}}}}`.
    """
    table = {}
    for method in methods:
        results = [runs[f"{method}_seed{seed}"] for seed in seeds]
        networks = list(results[0]["final_test_accuracy"])
        row = {
            name: _mean_std([r["final_test_accuracy"][name] for r in results]) for name in networks
        }
        row["students_mean"] = _mean_std([r["students_mean_final_test_accuracy"] for r in results])
        row["exported_student"] = _mean_std(
            [r["final_test_accuracy"][f"student_{r['best_student']}"] for r in results]
        )
        if all("sharpness" in r for r in results):
            row["sharpness"] = _mean_std([r["sharpness"] for r in results])
        row["wall_seconds"] = _mean_std([r["wall_seconds"] for r in results])
        table[method] = row
    return {"seeds": seeds, "flatness_radius": flatness_radius, "methods": table}


def format_markdown(summary):
    """The comparison as a markdown table (accuracies in %, mean ± std over seeds)."""
    methods = summary["methods"]
    students = sorted(
        {name for row in methods.values() for name in row if name.startswith("student_")}
    )
    hwms = sorted({name for row in methods.values() for name in row if name.startswith("hwm")})
    columns = [*students, "students_mean", *hwms, "ensemble", "exported_student"]
    header = ["method", *columns]
    if any("sharpness" in row for row in methods.values()):
        header.append(f"sharpness (ρ={summary['flatness_radius']:g})")
    header.append("wall (s)")
    lines = [
        f"Final test accuracy (%), mean ± std over seeds {summary['seeds']}. "
        "`exported_student` is the student each run chose on its validation split; "
        "sharpness is the mean test-loss increase under random weight perturbations "
        "(lower is flatter); wall is each run's training and evaluation time in seconds.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for method, row in methods.items():
        cells = [method]
        for name in columns:
            cells.append(
                f"{100 * row[name]['mean']:.2f} ± {100 * row[name]['std']:.2f}"
                if name in row
                else ""
            )
        if "sharpness" in row:
            cells.append(f"{row['sharpness']['mean']:.4f} ± {row['sharpness']['std']:.4f}")
        elif len(header) > len(columns) + 2:  # a sharpness column, without this row's figure
            cells.append("")
        cells.append(f"{row['wall_seconds']['mean']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    if summary.get("settings"):
        lines += ["", "Settings of each method:", ""]
        lines += [f"- {method}: {text}" for method, text in summary["settings"].items()]
    return "\n".join(lines) + "\n"


def plot_comparison(summary, path):
    """A bar chart of the exported student's test accuracy per method (mean ± std, seeds as dots)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    methods = list(summary["methods"])
    rows = [summary["methods"][m]["exported_student"] for m in methods]
    figure, axis = plt.subplots(figsize=(1.4 * len(methods) + 2, 4))
    positions = np.arange(len(methods))
    axis.bar(
        positions,
        [100 * r["mean"] for r in rows],
        yerr=[100 * r["std"] for r in rows],
        capsize=4,
        color="C0",
        alpha=0.6,
    )
    for position, row in zip(positions, rows):
        axis.scatter(
            [position] * len(row["values"]), [100 * v for v in row["values"]], color="k", s=10
        )
    low = min(100 * v for r in rows for v in r["values"])
    axis.set_ylim(
        max(0.0, low - 5), min(100.0, max(100 * r["mean"] + 100 * r["std"] for r in rows) + 3)
    )
    axis.set_xticks(positions, methods, rotation=20)
    axis.set_ylabel("exported student test accuracy (%)")
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
