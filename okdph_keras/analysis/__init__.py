"""Loss-landscape analysis of OKDPH students and their hybrid-weight model.

Every function takes a `keras.Model` mapping images to logits, data as a
`tf.data.Dataset` of `(images, labels)` batches or a pair of arrays, and an
optional `loss_fn(labels, logits)` (default: mean sparse softmax
cross-entropy). Networks run in inference mode through `stateless_call`, so
no model's variables change. Command line: `python -m okdph_keras.analysis`.

Example:
    >>> from okdph_keras import analysis
    >>> a, b = okdph.students
    >>> line = analysis.interpolate(a, b, (x_test, y_test))
    >>> path = analysis.interpolate_through([a, okdph.hybrid_model(), b], (x_test, y_test))
    >>> grid = analysis.landscape_2d(a, (x_test, y_test), span=1.0, resolution=21)
    >>> analysis.perturbation_sharpness(a, (x_test, y_test), radius=0.05).mean_increase
    >>> analysis.top_hessian_eigenvalue(a, (x_test[:512], y_test[:512])).eigenvalue
"""

from okdph_keras.analysis.directions import filter_normalized_direction
from okdph_keras.analysis.evaluation import Evaluation, evaluate
from okdph_keras.analysis.hessian import HessianEigenvalue, top_hessian_eigenvalue
from okdph_keras.analysis.interpolation import Curve, interpolate, interpolate_through, loss_barrier
from okdph_keras.analysis.landscape import Landscape, landscape_2d
from okdph_keras.analysis.plots import plot_interpolation, plot_landscape
from okdph_keras.analysis.sharpness import Sharpness, perturbation_sharpness

__all__ = [
    "Curve",
    "Evaluation",
    "HessianEigenvalue",
    "Landscape",
    "Sharpness",
    "evaluate",
    "filter_normalized_direction",
    "interpolate",
    "interpolate_through",
    "landscape_2d",
    "loss_barrier",
    "perturbation_sharpness",
    "plot_interpolation",
    "plot_landscape",
    "top_hessian_eigenvalue",
]
