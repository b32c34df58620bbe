"""TensorFlow's oneDNN CPU kernels: whether they are on, and turning them on by default.

TensorFlow's Linux x86 wheels turn oneDNN on by default only on CPUs it deems to benefit
(those with AVX-512 and beyond); on others, such as an AVX2-only AMD EPYC, they stay off
unless `TF_ENABLE_ONEDNN_OPTS=1`, and convolutions train in Eigen's kernels. On such a
machine a ResNet-32 training step ran about twice as fast with oneDNN (README, Speed).
The recipes call `prefer_onednn()` before TensorFlow is imported; in your own program,
set `TF_ENABLE_ONEDNN_OPTS=1` in the environment (or call it first thing).
"""

import os
import sys
import warnings

VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def prefer_onednn():
    """Turns oneDNN's CPU kernels on, unless `TF_ENABLE_ONEDNN_OPTS` is already set.

    TensorFlow reads the variable when it is imported, so call this before; called
    after, it changes nothing, and warns if oneDNN is then off.

    Returns:
        True if this call set the variable.

    Example:
        >>> from okdph_keras import onednn
        >>> onednn.prefer_onednn()  # first thing, before `import tensorflow` or `keras`
    """
    if VARIABLE in os.environ:
        return False
    if "tensorflow" in sys.modules:
        if enabled():  # TensorFlow turned them on itself: nothing is lost
            return False
        warnings.warn(
            f"prefer_onednn() was called after TensorFlow was imported, which reads {VARIABLE} "
            "on import: oneDNN's CPU kernels stay off. Call it before importing "
            f"TensorFlow or Keras, or set {VARIABLE}=1 in the environment.",
            stacklevel=2,
        )
        return False
    os.environ[VARIABLE] = "1"
    return True


def enabled():
    """Whether this TensorFlow runs oneDNN's CPU kernels (False if the build cannot say)."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # noqa: PLC0415 (private)

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return False
