"""Export one trained student for deployment: a SavedModel and TFLite files, verified.

    python -m okdph_keras.export runs/cifar10_resnet32_m2_seed42 --output exports/cifar10_resnet32
    python -m okdph_keras.export runs/my_run --output exports/my_run --student 1 --variants float32 int8
    python -m okdph_keras.export saved_models/my_run/student.keras --output exports/mine \\
        --normalization cifar10 --style cifar --dataset cifar10 --data_dir /data/tfds

The source is a run directory (`config.json`, `state.json` and the checkpoint it names,
optionally `results.json`), or a `.keras` file holding an `OKDPH` model or one student.
One student is exported, never the multi-student model: the one chosen by `student=`, or
else the one with the best accuracy on a selection set. For a run directory the selection
set is the run's validation split (held out of its training split, see
`Config.validation_fraction`; a seeded, class-balanced sample of up to 1,000 of its
images); a run without one exports student 0 unless `student=` or `selection_data=` says
otherwise. The test split is never used to choose: it is kept for the figures below.

The export directory holds

    saved_model/                 SavedModel, signature `serving_default`
    model_float32.tflite         TFLite, float32
    model_float16.tflite         float16 weights
    model_dynamic_range.tflite   int8 weights, float activations
    model_int8.tflite            full integer (int8 weights and activations)
    metadata.json                classes, input, normalisation, source, verification

Every model takes raw images: uint8 `[B, S, S, C]` at the run's image size (after the
run's test-time transform, `okdph_keras.data.views.eval_transform`), and returns
`{"logits": [B, K], "probabilities": [B, K]}`; the cast and `(x / 255 - mean) / std` are
part of the graph. With `int8_io` the int8 model's outputs are int8 (dequantise with the
scale and zero point in `metadata.json`); its input is raw uint8 pixels either way.

Full-integer quantisation is calibrated on a seeded, class-balanced sample of about 200
training images. `metadata.json` records, for the SavedModel and every TFLite file, its
size, and its accuracy, top-1 agreement with the Keras student and largest absolute logit
difference on held-out data (the run's test split by default), all measured with the
LiteRT interpreter (`ai_edge_litert`) for the TFLite files.

Writes are atomic: everything is built in a hidden temporary directory beside the
destination (`.<name>.partial-<pid>-<random>`) and renamed into place when complete, so an
interrupted export leaves no half-written export at the destination. An existing export
is replaced only with `overwrite=True` (`--overwrite`): it is renamed aside, the new one
renamed in, and the old one deleted. Temporary directories left by killed exports are
removed by the next export to the same destination (a previous export renamed aside and
not yet replaced is put back).
"""

from okdph_keras.export.build import export_student
from okdph_keras.export.cli import main
from okdph_keras.export.convert import INPUT_NAME, VARIANTS, tflite_file
from okdph_keras.export.metadata import FORMAT_VERSION, format_table
from okdph_keras.export.samples import BATCH_SIZE, REPRESENTATIVE_EXAMPLES, SELECTION_EXAMPLES
from okdph_keras.predict import METADATA_FILE, SAVED_MODEL_DIR

__all__ = [
    "BATCH_SIZE",
    "FORMAT_VERSION",
    "INPUT_NAME",
    "METADATA_FILE",
    "REPRESENTATIVE_EXAMPLES",
    "SAVED_MODEL_DIR",
    "SELECTION_EXAMPLES",
    "VARIANTS",
    "export_student",
    "format_table",
    "main",
    "tflite_file",
]
