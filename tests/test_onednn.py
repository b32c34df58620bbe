"""`onednn.prefer_onednn`: TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow starts, unless set."""

import os
import subprocess
import sys

import pytest

PROGRAM = """
import os, warnings
from okdph_keras import onednn
if {tensorflow_first}:
    import tensorflow
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    print("set", onednn.prefer_onednn())
print("variable", os.environ.get("TF_ENABLE_ONEDNN_OPTS"))
print("warned", any("after TensorFlow was imported" in str(w.message) for w in caught))
print("enabled", onednn.enabled())
"""


def run(tensorflow_first, variable):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if variable is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = variable
    program = PROGRAM.format(tensorflow_first=tensorflow_first)
    completed = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout.split("\n")


@pytest.mark.parametrize(
    "tensorflow_first, variable, expected",
    [
        # TensorFlow's x86 wheels have oneDNN: on once the variable says so.
        (False, None, ["set True", "variable 1", "warned False", "enabled True"]),
        (False, "0", ["set False", "variable 0", "warned False", "enabled False"]),
        (True, None, ["set False", "variable None", "warned True"]),
    ],
    ids=["unset", "user_said_0", "too_late"],
)
def test_prefer_onednn(tensorflow_first, variable, expected):
    lines = run(tensorflow_first, variable)
    for line in expected:
        assert line in lines, lines
