"""Plots of a run's per-epoch accuracy and loss, one line per network."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402


def network_names(history):
    """Networks with a test accuracy in `history`: student_0.., hwm, ensemble."""
    suffix = "_accuracy"
    return sorted(
        key[len("test_") : -len(suffix)]
        for key in history
        if key.startswith("test_") and key.endswith(suffix)
    )


def plot_curves(history, path, title=""):
    """Writes a PNG: accuracy and cross-entropy of every network per epoch.

    Test figures are solid lines; validation figures, when the run has a
    validation split, are dashed lines of the same colour. A run with adaptive
    fusion (a `fusion_signal` in `history`) gets a third panel: the signal per
    epoch, marked where the epoch `fused`.

    Args:
        history: `{metric: [per-epoch values]}` as a run records it
            (`test_student_0_accuracy`, `val_student_0_accuracy`, ...).
        path: the PNG file to write.
        title: a title for the figure.
    """
    fusion = "fusion_signal" in history
    figure, (accuracy_axis, loss_axis, *signal_axis) = plt.subplots(
        1, 3 if fusion else 2, figsize=(16 if fusion else 11, 4)
    )
    for index, name in enumerate(network_names(history)):
        colour = f"C{index % 10}"
        for split, style in (("test", "-"), ("val", "--")):
            if f"{split}_{name}_accuracy" not in history:
                continue
            accuracy = history[f"{split}_{name}_accuracy"]
            epochs = range(1, len(accuracy) + 1)
            label = f"{name} ({'test' if split == 'test' else 'validation'})"
            accuracy_axis.plot(epochs, accuracy, style, color=colour, label=label)
            loss_axis.plot(epochs, history[f"{split}_{name}_ce"], style, color=colour, label=label)
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    if fusion:
        _plot_fusion(signal_axis[0], history["fusion_signal"], history["fused"])
    for axis in (accuracy_axis, loss_axis):
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    save_figure(figure, path, title=title, legend_size="x-small")


def _plot_fusion(axis, signal, fused):
    """The fusion signal per epoch, a marker on every epoch that fused."""
    epochs = range(1, len(signal) + 1)
    axis.plot(epochs, signal, color="C0", label="max_m |θ_m − θ_h| / |θ_h|")
    fused_epochs = [e for e, f in zip(epochs, fused) if f]
    axis.plot(fused_epochs, [signal[e - 1] for e in fused_epochs], "o", color="C3", label="fused")
    axis.set(xlabel="epoch", ylabel="relative distance", title="fusion signal")
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


def save_figure(figure, path, *, title="", legend_size="small"):
    """Grids and legends every axis of `figure`, titles it, writes the PNG `path`, closes it.

    Example:
        >>> figure, axis = plt.subplots()
        >>> axis.plot([0, 1], [1, 0], label="loss")
        >>> save_figure(figure, "loss.png", title="a run")
    """
    for axis in figure.axes:
        axis.grid(alpha=0.3)
        axis.legend(fontsize=legend_size)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
