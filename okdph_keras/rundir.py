"""Reading what training leaves: a run directory or a `.keras` file, with clear errors.

A run directory holds `config.json`, `state.json` (which names the last checkpoint), that
checkpoint (a `.keras` file of an `OKDPH` model) and, once the run has finished,
`results.json`. A `.keras` file holds an `OKDPH` model or a single network, and records
neither configuration nor data. Analysis (`okdph_keras.analysis`) and export
(`okdph_keras.export`) both start here.
"""

import dataclasses
import os

import keras

from okdph_keras import checkpointing
from okdph_keras.config import Config
from okdph_keras.model import OKDPH
from okdph_keras.predict import METADATA_FILE

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"


@dataclasses.dataclass
class Origin:
    """A loaded run directory or `.keras` file.

    Attributes:
        path: the absolute path of the directory or file.
        model: an `OKDPH` model (always, for a run), or a single network.
        config: the run's `Config`; None for a `.keras` file.
        state: the run's `state.json`; None for a `.keras` file.
        results: the run's `results.json`; None for a `.keras` file or an unfinished run.
    """

    path: str
    model: keras.Model
    config: Config | None = None
    state: dict | None = None
    results: dict | None = None
    _sources: object = dataclasses.field(default=None, repr=False)

    @property
    def kind(self):
        """`"run"`, `"okdph_model"` (a `.keras` file of an OKDPH model) or `"student_model"`."""
        if self.config is not None:
            return "run"
        return "okdph_model" if isinstance(self.model, OKDPH) else "student_model"

    @property
    def students(self):
        """The model's students, or the single network as a list of one."""
        return self.model.student_models() if isinstance(self.model, OKDPH) else [self.model]

    def sources(self, needed_for, remedy=""):
        """The run's `run_data.RunSources` (training, validation, test), loaded once.

        Args:
            needed_for: what the data is needed for, for the error message.
            remedy: a sentence appended to that message (how to do without the run's data).

        Raises:
            ValueError: this is a `.keras` file, or the run's data cannot be loaded.
        """
        if self.config is None:
            raise ValueError(f"{self.path} is a .keras file, which records no data.")
        if self._sources is None:
            from okdph_keras import run_data  # noqa: PLC0415 (heavy; only for run directories)

            try:
                self._sources = run_data.load_sources(self.config)
            except (ValueError, OSError, ConnectionError) as error:
                raise ValueError(
                    f"The data of run {self.path} ({self.config.dataset}, data_dir="
                    f"{self.config.data_dir}) could not be loaded, and it is needed for "
                    f"{needed_for}: {error}{' ' + remedy if remedy else ''}"
                ) from error
        return self._sources


def load(source):
    """The `Origin` of `source`: a run directory (its last checkpoint) or a `.keras` file.

    Args:
        source: the path of a run directory or of a `.keras` file.

    Returns:
        An `Origin`.

    Raises:
        FileNotFoundError: `source` does not exist.
        ValueError: it is neither a run directory nor a `.keras` file, the run has no
            checkpoint yet, or the model cannot be loaded.

    Example:
        >>> load("runs/cifar10_resnet32_m2_seed42").students
    """
    path = os.path.abspath(os.fspath(source))
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{source} does not exist: expected a run directory (with {CONFIG_FILE} and "
            f"{checkpointing.STATE_FILE}) or a .keras file."
        )
    if os.path.isdir(path):
        return _load_run(source, path)
    if not path.endswith(".keras"):
        raise ValueError(f"{source} is not a run directory or a .keras file.")
    return Origin(path, load_keras(path))


def _load_run(source, path):
    config_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config_path):
        what = (
            "an export, not a run"
            if os.path.isfile(os.path.join(path, METADATA_FILE))
            else "no run"
        )
        raise ValueError(
            f"{source} holds {what} (no {CONFIG_FILE}): expected a run directory (with "
            f"{CONFIG_FILE}, {checkpointing.STATE_FILE} and a checkpoint) or a .keras file."
        )
    config = Config.from_json_dict(checkpointing.load_json(config_path))
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
    model = load_keras(checkpoint)
    if not isinstance(model, OKDPH):
        raise ValueError(
            f"The checkpoint {checkpoint} holds a {type(model).__name__}, not an OKDPH model."
        )
    results_path = os.path.join(path, RESULTS_FILE)
    results = checkpointing.load_json(results_path) if os.path.isfile(results_path) else None
    return Origin(path, model, config, state, results)


def load_keras(path):
    """The `keras.Model` of a `.keras` file, loaded with `compile=False`.

    Raises:
        ValueError: the file cannot be loaded or holds no Keras model, naming it.
    """
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 (Keras raises many kinds; name the file)
        raise ValueError(f"Could not load a Keras model from {path}: {error}") from error
    if not isinstance(model, keras.Model):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a Keras model.")
    return model
