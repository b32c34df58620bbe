"""Every exported file, run as it will be deployed, checked against the Keras student."""

import os

import numpy as np
import tensorflow as tf

from okdph_keras import predict


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def _measure(reference, models, held_out):
    """Accuracy, top-1 agreement and largest logit difference of each model vs Keras."""
    names = list(models)
    correct = dict.fromkeys(["keras", *names], 0)
    agree = dict.fromkeys(names, 0)
    difference = dict.fromkeys(names, 0.0)
    for images, labels in held_out.batches():
        expected = reference(images).numpy()
        top = expected.argmax(-1)
        correct["keras"] += int(np.sum(top == labels))
        for name in names:
            logits = models[name].logits(images)
            correct[name] += int(np.sum(logits.argmax(-1) == labels))
            agree[name] += int(np.sum(logits.argmax(-1) == top))
            difference[name] = max(difference[name], float(np.max(np.abs(logits - expected))))
    count = held_out.count
    return correct["keras"] / count, {
        name: {
            "accuracy": correct[name] / count,
            "agreement": agree[name] / count,
            "max_abs_logit_difference": difference[name],
        }
        for name in names
    }


def verify(directory, *, files, reference, held_out):
    """Runs each exported file on the held-out images: the SavedModel with TensorFlow, the
    TFLite files with LiteRT (`ai_edge_litert`), as `okdph_keras.predict` does.

    Args:
        directory: the export being built.
        files: `{variant: path relative to directory}`, "saved_model" for the SavedModel.
        reference: uint8 images -> the Keras student's logits.
        held_out: `samples.Images` with labels.

    Returns:
        (the Keras student's accuracy, `{variant: metadata entry}`), the entry holding the
        path, size, accuracy, agreement, largest logit difference, runtime and, for TFLite,
        the output types (with scale and zero point when quantised).
    """
    loaded = {
        name: (predict.SavedModel if name == "saved_model" else predict.TFLiteModel)(
            os.path.join(directory, file)
        )
        for name, file in files.items()
    }
    keras_accuracy, checks = _measure(reference, loaded, held_out)
    entries = {}
    for name, file in files.items():
        entry = {"path": file, "size_bytes": _size(os.path.join(directory, file)), **checks[name]}
        if name == "saved_model":
            entry["runtime"] = f"TensorFlow {tf.__version__}"
        else:
            entry["runtime"] = "LiteRT (ai_edge_litert)"
            entry["outputs"] = {}
            for output, details in loaded[name].output_details.items():
                scale, zero_point = details["quantization"]
                entry["outputs"][output] = {"dtype": np.dtype(details["dtype"]).name}
                if scale:  # quantised: value = scale * (q - zero_point)
                    entry["outputs"][output].update(scale=float(scale), zero_point=int(zero_point))
        entries[name] = entry
    return keras_accuracy, entries
