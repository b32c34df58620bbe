"""A finished run's outputs: `results.json`'s content and the exported best student."""

import os

from okdph_keras import checkpointing, curves
from okdph_keras.student_copy import plain_student

ORIGIN_FILE = "origin.json"  # beside an exported student: the run directory that wrote it


def summarize(config, history, seconds):
    """results.json content: final-epoch test accuracy of every network and more.

    The best student is the one of `config.model` (with groups: of that
    architecture) with the best final-epoch validation accuracy (the first of
    equals), or the first such when the run keeps no validation split: the test
    split never chooses. Fusion runs before each epoch's evaluations,
    so the last epoch's figures are the final model's.
    """
    names = curves.network_names(history)
    students = [name for name in names if name.startswith("student_")]

    def final(split, metric="accuracy"):
        return {name: history[f"{split}_{name}_{metric}"][-1] for name in names}

    test_accuracy = final("test")
    results = {
        "run_name": config.run_name,
        "epochs": len(history["loss"]),
        "final_test_accuracy": test_accuracy,
        "final_test_ce": final("test", "ce"),
        "students_mean_final_test_accuracy": sum(test_accuracy[s] for s in students)
        / len(students),
        "best_over_epochs_test_accuracy (not a final figure)": {
            name: max(history[f"test_{name}_accuracy"]) for name in names
        },
    }
    # With groups, only students of config.model are exported.
    exportable = [m for m, a in enumerate(config.student_architectures()) if a == config.model]
    if "val_loss" in history:
        validation_accuracy = final("val")
        results["final_validation_accuracy"] = validation_accuracy
        results["best_student"] = max(exportable, key=lambda m: validation_accuracy[f"student_{m}"])
        results["best_student_selected_by"] = (
            f"final-epoch accuracy on the validation split ({config.validation_fraction:g} of "
            "each class of the training split, held out)"
        )
    else:
        results["best_student"] = exportable[0]
        results["best_student_selected_by"] = (
            f"none: the run keeps no validation split (validation_fraction=0), so student "
            f"{exportable[0]} is exported; the test split is never used to choose"
        )
    results["exported_student"] = os.path.join(
        config.saved_models_dir, config.run_name, "student.keras"
    )
    results["train_seconds_this_session"] = seconds
    return results


def save_best_student(student, config, *, run_dir):
    """Saves a student to `<saved_models_dir>/<run_name>/student.keras`, atomically.

    `origin.json` beside it names `run_dir`; an export of another run
    directory is refused (`check_export_target`), never overwritten.
    The student is saved as it ships (`plain_student`): float32 whatever the
    training precision, and with plain Keras BatchNorm, so that the file loads
    with Keras alone and converts to TFLite.
    """
    check_export_target(config, run_dir)
    directory = os.path.join(config.saved_models_dir, config.run_name)
    checkpointing.write_json_atomically(
        os.path.join(directory, ORIGIN_FILE), {"run_dir": os.path.realpath(run_dir)}
    )
    path = os.path.join(directory, "student.keras")
    plain = plain_student(student)
    checkpointing.write_atomically(path, plain.save)
    return path


def check_export_target(config, run_dir):
    """Fails if `<saved_models_dir>/<run_name>` holds a student another run directory exported."""
    directory = os.path.join(config.saved_models_dir, config.run_name)
    marker = os.path.join(directory, ORIGIN_FILE)
    if os.path.exists(marker):
        origin = checkpointing.load_json(marker)["run_dir"]
    elif os.path.exists(os.path.join(directory, "student.keras")):
        origin = f"an unknown run (there is no {ORIGIN_FILE})"
    else:
        return
    if origin != os.path.realpath(run_dir):
        raise ValueError(
            f"{directory} holds the student exported by {origin}; this run "
            f"({os.path.realpath(run_dir)}) would overwrite it. Pass another --run_name or "
            "--saved_models_dir, or delete that directory."
        )


def format_results(results):
    lines = [f"Final-epoch test accuracy ({results['run_name']}, {results['epochs']} epochs):"]
    for name, value in results["final_test_accuracy"].items():
        lines.append(f"  {name:<12} {value:.4f}")
    lines.append(f"Best student: {results['best_student']} -> {results['exported_student']}")
    return "\n".join(lines)
