"""Top-k predictions of image files, and `python -m okdph_keras.predict MODEL IMAGE...`."""

import argparse

import numpy as np

from okdph_keras.predict.images import load_image
from okdph_keras.predict.models import load
from okdph_keras.validation import check_integer


def predict_files(model, image_paths, top_k=5):
    """Top-k `(class name, probability)` pairs for each image file, best first.

    Args:
        model: an `ExportedModel` (see `load`).
        image_paths: JPEG, PNG, BMP or GIF files, brought to the model's input by its
            run's test-time transform (`load_image`).
        top_k: pairs per image, >= 1 (at most the number of classes).

    Returns:
        One list of pairs per image.

    Example:
        >>> predict_files(load("exports/cifar10_resnet32"), ["cat.jpg"], top_k=3)
    """
    top_k = check_integer("top_k", top_k, low=1)
    images = np.stack(
        [load_image(path, model.image_size, model.channels, model.style) for path in image_paths]
    )
    probabilities = model.probabilities(images)
    k = min(top_k, probabilities.shape[-1])
    results = []
    for row in probabilities:
        best = np.argsort(-row, kind="stable")[:k]
        results.append([(model.class_names[index], float(row[index])) for index in best])
    return results


def format_predictions(image_paths, results):
    """The text `main` prints: each path, then its ranked classes and probabilities."""
    lines = []
    for path, pairs in zip(image_paths, results):
        lines.append(path)
        width = max(len(name) for name, _ in pairs)
        for rank, (name, probability) in enumerate(pairs, start=1):
            lines.append(f"  {rank}. {name:<{width}}  {probability:.4f}")
    return "\n".join(lines)


def main(argv=None):
    """`python -m okdph_keras.predict MODEL IMAGE... [--top_k K] [--variant V]`; returns 0."""
    parser = argparse.ArgumentParser(
        prog="python -m okdph_keras.predict",
        description="Top-k classes of image files with an exported student.",
    )
    parser.add_argument("model", help="export directory, SavedModel directory or .tflite file")
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, BMP, GIF)")
    parser.add_argument(
        "--top_k", type=int, default=5, help="classes to show per image (default 5)"
    )
    parser.add_argument(
        "--variant",
        default=None,
        help="for an export directory: saved_model (default), float32, float16, dynamic_range or int8",
    )
    args = parser.parse_args(argv)
    try:
        model = load(args.model, args.variant)
        results = predict_files(model, args.images, args.top_k)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(1, f"error: {error}\n")
    print(
        f"model: {model.path} ({model.kind}, input {model.image_size}x{model.image_size}x{model.channels} uint8)"
    )
    print(format_predictions(args.images, results))
    return 0
