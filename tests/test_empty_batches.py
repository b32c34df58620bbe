"""A ragged last batch leaves a replica with no examples: nothing runs on it.

`empty_replica_worker.py` runs under a 2-replica MirroredStrategy in a fresh
interpreter (see its docstring) and this module checks what it reports: the
update equals one computed by hand, BatchNorm statistics stay finite and the
empty replica's are untouched, and evaluation counts every example once.
Without the guard the step crashes (oneDNN convolutions on Intel CPUs return
wrong shapes for an empty batch) or leaves NaN statistics and weights.
"""

import json
import os
import subprocess
import sys

import pytest

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "empty_replica_worker.py")
TIMEOUT_S = 240


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")
    completed = subprocess.run(
        [sys.executable, WORKER], env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
        cwd=os.path.dirname(os.path.dirname(WORKER)),
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert completed.returncode == 0 and lines, completed.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


def _section(results, name):
    section = results[name]
    assert "error" not in section, section.get("error")
    return section


def test_a_step_with_an_empty_replica_equals_the_update_computed_by_hand(results):
    section = _section(results, "update")
    assert section["iterations"] == 2
    assert max(section["differences"]) < 1e-6, section


def test_batchnorm_statistics_of_an_empty_replica_stay_finite_and_untouched(results):
    section = _section(results, "batchnorm")
    assert section["finite"]
    assert section["empty_replica_statistics_unchanged"]
    assert section["replica_0_statistics_changed"]


def test_evaluation_counts_every_example_once(results):
    section = _section(results, "evaluate")
    for student in section.values():
        found, expected = student["accuracy"]
        assert found == pytest.approx(expected, abs=1e-6)
        found, expected = student["ce"]
        assert found == pytest.approx(expected, abs=1e-5)
