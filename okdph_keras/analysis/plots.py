"""Figures of the analyses: interpolation curves and landscape contours (PNG, Agg)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from okdph_keras.curves import save_figure  # noqa: E402


def plot_interpolation(curves, path, title=""):
    """Writes a PNG of loss and accuracy along one or more paths between two networks.

    Args:
        curves: `{label: Curve}`; each curve's positions are rescaled to [0, 1]
            (start to end), so a line and a path through the HWM share the axis.
        path: the PNG file to write.
        title: a title for the figure.

    Example:
        >>> plot_interpolation({"line": line, "through HWM": through}, "interpolation.png")
    """
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for label, curve in curves.items():
        fraction = (curve.positions - curve.positions[0]) / (
            curve.positions[-1] - curve.positions[0]
        )
        loss_axis.plot(fraction, curve.loss, marker=".", label=label)
        accuracy_axis.plot(fraction, curve.accuracy, marker=".", label=label)
    loss_axis.set(xlabel="fraction of the path (start to end)", ylabel="loss", title="loss")
    accuracy_axis.set(
        xlabel="fraction of the path (start to end)", ylabel="accuracy", title="accuracy"
    )
    save_figure(figure, path, title=title)


def plot_landscape(landscape, path, title="", levels=20):
    """Writes a PNG: filled contours of the loss over the grid, the network at the centre.

    Args:
        landscape: a `Landscape`.
        path: the PNG file to write.
        title: a title for the figure.
        levels: number of contour levels.

    Example:
        >>> plot_landscape(landscape_2d(student, (x, y)), "landscape.png")
    """
    figure, axis = plt.subplots(figsize=(6, 5))
    loss = np.asarray(landscape.loss).T  # contour wants [y (beta), x (alpha)]
    filled = axis.contourf(landscape.alphas, landscape.betas, loss, levels=levels, cmap="viridis")
    axis.contour(landscape.alphas, landscape.betas, loss, levels=levels, colors="k", linewidths=0.3)
    figure.colorbar(filled, ax=axis, label="loss")
    axis.plot([0.0], [0.0], marker="*", color="red", markersize=10, label="network")
    axis.set(xlabel="direction 1 (alpha)", ylabel="direction 2 (beta)", title=title, aspect="equal")
    axis.legend(fontsize="small", loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
