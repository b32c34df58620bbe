"""What an export starts from: a run directory or a `.keras` file, and its chosen student."""

import dataclasses
import os
import warnings

import keras
import numpy as np

from okdph_keras import checkpointing
from okdph_keras.config import Config
from okdph_keras.export import convert
from okdph_keras.model import OKDPH
from okdph_keras.predict import METADATA_FILE


@dataclasses.dataclass
class Origin:
    """A loaded source: its students and, for a run directory, its configuration."""

    kind: str  # "run", "okdph_model" or "student_model"
    path: str
    students: list
    config: Config | None = None
    results: dict | None = None
    state: dict | None = None
    _sources: tuple | None = None

    def sources(self, needed_for):
        """The run's `train.RunSources` (training, validation, test), loaded once."""
        if self._sources is None:
            from okdph_keras import train  # noqa: PLC0415 (heavy; only for run directories)

            try:
                self._sources = train.load_sources(self.config)
            except (ValueError, OSError, ConnectionError) as error:
                raise ValueError(
                    f"The data of run {self.path} ({self.config.dataset}, data_dir="
                    f"{self.config.data_dir}) could not be loaded, and it is needed for "
                    f"{needed_for}: {error} Pass that data to export_student instead "
                    "(student=, class_names=, representative_data=, held_out=)."
                ) from error
        return self._sources


def _load_keras(path):
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 (Keras raises many kinds; name the file)
        raise ValueError(f"Could not load a Keras model from {path}: {error}") from error


def load(source):
    """The `Origin` of `source`, a run directory or a `.keras` file."""
    path = os.path.abspath(os.fspath(source))
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{source} does not exist: expected a run directory or a .keras file."
        )
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            what = (
                "an export, not a run"
                if os.path.isfile(os.path.join(path, METADATA_FILE))
                else "no run"
            )
            raise ValueError(
                f"{source} holds {what}: expected a run directory (with config.json, "
                "state.json and a checkpoint) or a .keras file."
            )
        config = Config.from_json_dict(checkpointing.load_json(os.path.join(path, "config.json")))
        state = checkpointing.load_state(path)
        if state is None:
            raise ValueError(
                f"Run directory {source} holds no checkpoint yet (no {checkpointing.STATE_FILE}): "
                "train at least one epoch first."
            )
        checkpoint = os.path.join(path, state["checkpoint"])
        if not os.path.isfile(checkpoint):
            raise ValueError(
                f"Run directory {source} names the checkpoint {checkpoint}, which is missing."
            )
        model = _load_keras(checkpoint)
        if not isinstance(model, OKDPH):
            raise ValueError(
                f"The checkpoint {checkpoint} holds a {type(model).__name__}, not an OKDPH model."
            )
        results_path = os.path.join(path, "results.json")
        results = checkpointing.load_json(results_path) if os.path.isfile(results_path) else None
        if results is None:
            warnings.warn(
                f"Run {source} has not finished: exporting from its checkpoint after epoch "
                f"{state['epochs_done']} of {config.epochs}.",
                stacklevel=3,
            )
        return Origin("run", path, list(model.students), config, results, state)
    if not path.endswith(".keras"):
        raise ValueError(f"{source} is not a run directory or a .keras file.")
    model = _load_keras(path)
    if isinstance(model, OKDPH):
        return Origin("okdph_model", path, list(model.students))
    if isinstance(model, keras.Model):
        return Origin("student_model", path, [model])
    raise ValueError(f"{source} holds a {type(model).__name__}, not a Keras model.")


def choose_student(origin, student, selection, settings):
    """(index, how it was chosen): `student`, else the best on the `selection` images."""
    count = len(origin.students)
    if student is not None:
        if (
            isinstance(student, bool)
            or not isinstance(student, (int, np.integer))
            or not 0 <= student < count
        ):
            raise ValueError(
                f"student={student!r} is out of range: {origin.path} holds {count} "
                f"student{'s' if count > 1 else ''} (indices 0 to {count - 1})."
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
