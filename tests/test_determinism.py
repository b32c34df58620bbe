"""`train.enable_determinism`: op determinism and one CPU thread, set before TensorFlow starts."""

import subprocess
import sys

import pytest

BEFORE_ANY_OP = """
import warnings
warnings.simplefilter("error")  # a warning here would mean the threads were not set
from okdph_keras import train
train.enable_determinism()
import tensorflow as tf
tf.constant(1.0) + 1.0  # TensorFlow starts with the settings
from tensorflow.python.framework import config
assert config.is_op_determinism_enabled()
print("threads", tf.config.threading.get_intra_op_parallelism_threads())
print("inter-op threads", tf.config.threading.get_inter_op_parallelism_threads())
"""

AFTER_AN_OP = """
import warnings
import tensorflow as tf
from okdph_keras import train
tf.constant(1.0) + 1.0
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    train.enable_determinism()
print("threads", tf.config.threading.get_intra_op_parallelism_threads())
print("warned", any("after TensorFlow started" in str(w.message) for w in caught))
"""


def run_python(code):
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


@pytest.mark.parametrize(
    "code, expected",
    [
        (BEFORE_ANY_OP, ["threads 1", "inter-op threads 1"]),
        (AFTER_AN_OP, ["threads 0", "warned True"]),
    ],
    ids=["before_any_op", "after_an_op"],
)
def test_enable_determinism_sets_one_thread_or_warns(code, expected):
    lines = run_python(code).split("\n")
    for line in expected:
        assert line in lines
