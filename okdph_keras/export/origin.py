"""Which student an export takes, and where it came from (for the metadata's `source`).

The source itself, a run directory or a `.keras` file, is read by `okdph_keras.rundir`.
"""

import os

import numpy as np

from okdph_keras.export import convert
from okdph_keras.validation import fail, is_integer


def choose_student(origin, *, student, selection, settings):
    """(index, how it was chosen): `student`, else the best on the `selection` images."""
    count = len(origin.students)
    if student is not None:
        if not is_integer(student) or not 0 <= student < count:
            fail(
                "student",
                student,
                f"an integer in [0, {count - 1}]: {origin.path} holds {count} "
                f"student{'s' if count > 1 else ''}",
            )
        return int(student), {"by": "index given by the caller"}
    if count == 1:
        return 0, {"by": "the only network in the file"}
    if selection is None:
        raise ValueError(
            f"{origin.path} holds {count} students: pass student= (0 to {count - 1}) or "
            "selection_data= to choose one."
        )
    functions = [convert.reference_function(s, settings) for s in origin.students]
    correct = np.zeros(count)
    for images, labels in selection.batches():
        for m, function in enumerate(functions):
            correct[m] += np.sum(function(images).numpy().argmax(-1) == labels)
    accuracies = correct / selection.count
    best = int(np.argmax(accuracies))  # the first of equals
    return best, {
        "by": "accuracy on the selection data (the first of equals)",
        "data": selection.description,
        "accuracies": [float(a) for a in accuracies],
    }


def source_info(origin, index, source):
    """The metadata's `source`: where the student came from and its recorded test accuracy."""
    info = {
        "path": origin.path,
        "given_as": os.fspath(source),
        "kind": origin.kind,
        "num_students": len(origin.students),
        "student": index,
        "test_accuracy": None,
    }
    if origin.kind == "run":
        config = origin.config
        info.update(
            run_name=config.run_name,
            dataset=config.dataset,
            model=config.model,
            epochs_done=origin.state["epochs_done"],
            epochs=config.epochs,
        )
        if config.noise_std:
            info["note"] = (
                f"the run added Gaussian noise (mean {config.noise_mean}, std {config.noise_std}) "
                "to normalised test images; the exported models add none"
            )
        if origin.results:
            info["test_accuracy"] = origin.results["final_test_accuracy"][f"student_{index}"]
            info["test_accuracy_from"] = "results.json: final-epoch test accuracy of this student"
            info["run_best_student"] = origin.results.get("best_student")
        else:
            history = origin.state["history"].get(f"test_student_{index}_accuracy")
            if history:
                info["test_accuracy"] = history[-1]
                info["test_accuracy_from"] = (
                    f"state.json: test accuracy after epoch {origin.state['epochs_done']} (unfinished run)"
                )
    return info
