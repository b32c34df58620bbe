"""`onednn.prefer_onednn`: TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow starts, unless set."""

import os
import subprocess
import sys

import pytest

PROGRAM = """
import os, warnings
from okdph_keras import onednn
if {imported_with} is not None:  # TensorFlow imported with oneDNN so, then the variable unset
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = {imported_with!r}
    import tensorflow
    del os.environ["TF_ENABLE_ONEDNN_OPTS"]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    print("set", onednn.prefer_onednn())
print("variable", os.environ.get("TF_ENABLE_ONEDNN_OPTS"))
print("warned", any("after TensorFlow was imported" in str(w.message) for w in caught))
print("enabled", onednn.enabled())
"""


def run(imported_with, variable):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if variable is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = variable
    program = PROGRAM.format(imported_with=imported_with)
    completed = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout.split("\n")


@pytest.mark.parametrize(
    "imported_with, variable, expected",
    [
        # TensorFlow's x86 wheels have oneDNN: on once the variable says so.
        (None, None, ["set True", "variable 1", "warned False", "enabled True"]),
        (None, "0", ["set False", "variable 0", "warned False", "enabled False"]),
        # Too late: TensorFlow already chose; a warning only if it chose off.
        ("0", None, ["set False", "variable None", "warned True", "enabled False"]),
        ("1", None, ["set False", "variable None", "warned False", "enabled True"]),
    ],
    ids=["unset", "user_said_0", "too_late_and_off", "too_late_but_on"],
)
def test_prefer_onednn(imported_with, variable, expected):
    lines = run(imported_with, variable)
    for line in expected:
        assert line in lines, lines
