"""Plots of a run's per-epoch accuracy and loss, one line per network."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402


def network_names(history):
    """Networks with a test accuracy in `history`: student_0.., hwm, ensemble."""
    suffix = "_accuracy"
    return sorted(
        key[len("val_"): -len(suffix)]
        for key in history
        if key.startswith("val_") and key.endswith(suffix)
    )


def plot_curves(history, path, title=""):
    """Writes a PNG: test accuracy and test cross-entropy of every network per epoch.

    Args:
        history: `{metric: [per-epoch values]}` as recorded by `fit` with
            validation on the test set (`val_student_0_accuracy`, ...).
        path: the PNG file to write.
        title: a title for the figure.
    """
    names = network_names(history)
    figure, (accuracy_axis, loss_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for name in names:
        accuracy = history[f"val_{name}_accuracy"]
        epochs = range(1, len(accuracy) + 1)
        accuracy_axis.plot(epochs, accuracy, label=name)
        loss_axis.plot(epochs, history[f"val_{name}_ce"], label=name)
    accuracy_axis.set(xlabel="epoch", ylabel="test accuracy", title="accuracy")
    loss_axis.set(xlabel="epoch", ylabel="test cross-entropy", title="loss")
    for axis in (accuracy_axis, loss_axis):
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
