"""Top-k predictions for image files with an exported student.

    python -m okdph_keras.predict exports/cifar10_resnet32 cat.jpg dog.png --top_k 3
    python -m okdph_keras.predict exports/cifar10_resnet32/model_int8.tflite cat.jpg
    python -m okdph_keras.predict exports/cifar10_resnet32/saved_model cat.jpg

MODEL is one of:

- an export directory written by `okdph_keras.export` (it holds `metadata.json`):
  the SavedModel by default, or the TFLite file of `--variant`;
- a SavedModel directory (`saved_model.pb`);
- a `.tflite` file, run with the LiteRT interpreter (`ai_edge_litert`).

A SavedModel or `.tflite` file inside an export directory takes its class names, input
size and test-time transform from the export's `metadata.json`; without one, classes are
numbered and images are resized to the model's input size.

Each image file is decoded (JPEG, PNG, BMP or GIF, first frame), brought to the model's
input size by the run's test-time transform (`okdph_keras.data.views.eval_transform` of
the style named in the metadata; a plain bilinear resize when none is named), rounded to
uint8, and fed as raw pixels: normalisation is part of the exported graph. The models
return logits and probabilities; int8 outputs are dequantised with their scale and zero
point.

Nothing here imports Keras or the training code, and TensorFlow only where it is needed:
for a SavedModel, and to decode JPEG files (TensorFlow's JPEG decoder, which training
used, and Pillow's differ by a few levels). PNG, BMP and GIF files are decoded with Pillow
and the test-time transform is computed in numpy (`transform_image`, within one level of
`eval_transform`), so a `.tflite` model and PNG images need only LiteRT, numpy and Pillow.
"""

from okdph_keras.predict.cli import format_predictions, main, predict_files
from okdph_keras.predict.images import load_image, transform_image
from okdph_keras.predict.models import (
    DEFAULT_VARIANT,
    METADATA_FILE,
    SAVED_MODEL_DIR,
    SIGNATURE,
    ExportedModel,
    SavedModel,
    TFLiteModel,
    load,
)

__all__ = [
    "DEFAULT_VARIANT",
    "METADATA_FILE",
    "SAVED_MODEL_DIR",
    "SIGNATURE",
    "ExportedModel",
    "SavedModel",
    "TFLiteModel",
    "format_predictions",
    "load",
    "load_image",
    "main",
    "predict_files",
    "transform_image",
]
