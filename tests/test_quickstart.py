"""End-to-end smoke test of `python -m recipes.quickstart` (2 epochs)."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from recipes import quickstart  # noqa: E402


def test_quickstart_runs_and_saves_the_best_student(tmp_path):
    import keras  # noqa: PLC0415

    completed = subprocess.run(
        [sys.executable, "-m", "recipes.quickstart", "--epochs=2", f"--output_dir={tmp_path}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "okdph_ensemble" in completed.stdout

    results = json.loads((tmp_path / "results.json").read_text())
    accuracies = results["test_accuracy"]
    assert set(accuracies) == {
        "independent",
        "okdph_student_0",
        "okdph_student_1",
        "okdph_hwm",
        "okdph_ensemble",
    }
    for name, value in accuracies.items():
        assert 0.0 <= value <= 1.0, (name, value)
    assert len(results["okdph_validation_accuracy"]) == 2
    best = results["best_student"]
    assert best == int(np.argmax(results["okdph_validation_accuracy"]))
    assert results["config"]["epochs"] == 2
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]

    student = keras.saving.load_model(tmp_path / "best_student.keras")
    x_test, y_test = quickstart.load_splits(results["config"]["seed"])["test"]
    logits = student.predict(x_test, verbose=0)
    assert logits.shape == (len(y_test), 10)
    recomputed = float(np.mean(np.argmax(logits, axis=-1) == y_test))
    assert recomputed == pytest.approx(accuracies[f"okdph_student_{best}"], abs=1e-6)
    assert results["best_student_test_accuracy"] == accuracies[f"okdph_student_{best}"]
