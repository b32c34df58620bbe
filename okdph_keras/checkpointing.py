"""Atomic files and per-epoch checkpoints that let a run resume where it stopped.

A run directory holds `state.json`, which names the last complete checkpoint
(`checkpoints/epoch_NNNN.keras`) and the history so far, and says whether that
checkpoint holds the average SWA or EMA replace the last epoch's weights by. Every file is written
to a temporary name and renamed into place, and `state.json` is replaced only
after the checkpoint it names is complete, so a run killed at any moment
leaves the previous state intact.
"""

import csv
import io
import json
import math
import os
import tempfile

import keras

STATE_FILE = "state.json"
HISTORY_FILE = "history.csv"
CHECKPOINT_DIR = "checkpoints"


def write_atomically(path, write):
    """Calls `write(temporary_path)` beside `path`, then renames it to `path`.

    Args:
        path: the final file path.
        write: a callable that writes a complete file at the path it is given.
            The temporary name keeps `path`'s extension (Keras checks it).
    """
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    stem, extension = os.path.splitext(name)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{stem}.", suffix=f".tmp{extension}", dir=directory
    )
    os.close(descriptor)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_bytes_atomically(path, content):
    """Writes `content` (bytes) to `path` through a synced temporary file."""

    def write(temporary):
        with open(temporary, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())

    write_atomically(path, write)


def write_text_atomically(path, text):
    write_bytes_atomically(path, text.encode("utf-8"))


def write_json_atomically(path, value):
    write_text_atomically(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def load_json(path):
    with open(path) as file:
        return json.load(file)


def load_state(run_dir):
    """The run's saved state (`epochs_done`, `checkpoint`, `history`, `averaged`), or None."""
    path = os.path.join(run_dir, STATE_FILE)
    return load_json(path) if os.path.exists(path) else None


def history_csv(history):
    """History `{metric: [per-epoch values]}` as CSV text, one row per epoch."""
    names = sorted(history)
    rows = zip(*(history[name] for name in names))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["epoch", *names])
    for epoch, row in enumerate(rows, start=1):
        writer.writerow([epoch, *row])
    return buffer.getvalue()


class RunCheckpoint(keras.callbacks.Callback):
    """Saves the whole model (optimizer included) and the history every epoch.

    Args:
        run_dir: the run directory.
        history: the history of the epochs done before this `fit`, when
            resuming; new epochs are appended to it.
        write: False on workers other than the chief: they keep the history
            but write nothing.

    Example:
        >>> state = load_state(run_dir)
        >>> model.fit(..., callbacks=[RunCheckpoint(run_dir, state and state["history"])])
    """

    def __init__(self, run_dir, history=None, write=True):
        super().__init__()
        self.run_dir = run_dir
        self.history = {name: list(values) for name, values in (history or {}).items()}
        self.write = write

    def on_epoch_end(self, epoch, logs=None):
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(float(value))
        self._save(epoch + 1)

    def replace_last_epoch(self, logs, averaged=False):
        """Overwrites the last epoch's figures with `logs` and saves the model again.

        For weights that change after the last epoch (SWA, EMA): the checkpoint
        and the history then describe the model as training left it, and
        `averaged=True` records in `state.json` that they hold the average.
        """
        for name, value in logs.items():
            self.history[name][-1] = float(value)
        self._save(len(self.history["loss"]), averaged)

    def _save(self, epochs_done, averaged=False):
        if not self.write:
            return
        relative = os.path.join(CHECKPOINT_DIR, f"epoch_{epochs_done:04d}.keras")
        write_atomically(os.path.join(self.run_dir, relative), self.model.save)
        previous = load_state(self.run_dir)
        write_json_atomically(
            os.path.join(self.run_dir, STATE_FILE),
            {
                "epochs_done": epochs_done,
                "checkpoint": relative,
                "history": self.history,
                "averaged": averaged,
            },
        )
        write_text_atomically(os.path.join(self.run_dir, HISTORY_FILE), history_csv(self.history))
        if previous and previous["checkpoint"] != relative:
            stale = os.path.join(self.run_dir, previous["checkpoint"])
            if os.path.exists(stale):
                os.remove(stale)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first NaN or infinite loss, naming the last good checkpoint.

    The run's last checkpoint is untouched: epochs are saved only when they end,
    so it predates the bad step.

    Args:
        run_dir: the run directory, whose `state.json` names the last checkpoint.

    Raises:
        FloatingPointError: from `on_train_batch_end`, with the step (the
            optimizer's, counted from the run's start) and the checkpoint.
    """

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        state = load_state(self.run_dir)
        last = (
            f"the last good checkpoint is {os.path.join(self.run_dir, state['checkpoint'])} "
            f"(after epoch {state['epochs_done']}); running the same command again resumes from it"
            if state
            else "no epoch had finished, so there is no checkpoint"
        )
        raise FloatingPointError(
            f"The training loss became {float(loss)} at step {int(self.model.optimizer.iterations)} "
            f"(batch {batch} of the epoch); training stopped and {last}. Lower the learning rate "
            "or check the data for bad values."
        )
