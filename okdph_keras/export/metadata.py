"""`metadata.json`: what an export holds, how to feed it, and how well each file did."""

import keras
import tensorflow as tf

from okdph_keras.export.convert import INPUT_NAME

FORMAT_VERSION = 1


def describe(plan, *, keras_accuracy, entries):
    """The metadata of an export.

    Args:
        plan: the export's `build.Plan` (settings, variants, samples, `info`: class names,
            source and how the student was chosen).
        keras_accuracy: the Keras student's accuracy on the held-out images.
        entries: `{variant: entry}` from `verify.verify`.
    """
    settings, info, held_out = plan.settings, plan.info, plan.held_out
    return {
        "format_version": FORMAT_VERSION,
        "class_names": list(info["class_names"]),
        "num_classes": settings.num_classes,
        "image_size": settings.image_size,
        "channels": settings.channels,
        "style": settings.style,
        "input": {
            "name": INPUT_NAME,
            "shape": [None, settings.image_size, settings.image_size, settings.channels],
            "dtype": "uint8",
            "values": "raw pixels in [0, 255], after the test-time transform of `style` "
            "(okdph_keras.data.views.eval_transform; a plain resize when style is null)",
        },
        "normalization": {
            "mean": list(settings.mean),
            "std": list(settings.std),
            "formula": "(float(x) / 255 - mean) / std, inside the exported graph",
        },
        "outputs": {
            "logits": f"float32 [B, {settings.num_classes}]",
            "probabilities": "softmax of the logits",
            "int8_io": bool(plan.int8_io and "int8" in plan.variants),
        },
        "source": info["source"],
        "selection": info["selection"],
        "representative_data": (plan.representative.description if plan.representative else None),
        "held_out": {
            "data": held_out.description,
            "examples": held_out.count,
            "keras_accuracy": keras_accuracy,
            "measured": "accuracy, top-1 agreement with the Keras student on the same uint8 "
            "images, and the largest absolute logit difference",
        },
        "variants": entries,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }


def format_table(metadata):
    """The variants of an export's metadata as a text table."""
    rows = [("variant", "size", "accuracy", "agreement", "max |dlogit|")]
    for name, entry in metadata["variants"].items():
        rows.append(
            (
                name,
                f"{entry['size_bytes'] / 1e6:.3f} MB",
                f"{entry['accuracy']:.4f}",
                f"{entry['agreement']:.4f}",
                f"{entry['max_abs_logit_difference']:.2e}",
            )
        )
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    held_out = metadata["held_out"]
    lines.append(f"Keras student: accuracy {held_out['keras_accuracy']:.4f} on {held_out['data']}")
    return "\n".join(lines)
