"""The serving function (normalisation in the graph), the SavedModel and its TFLite variants."""

import warnings

import keras
import tensorflow as tf

from okdph_keras import checkpointing
from okdph_keras.data.views import normalize

VARIANTS = ("float32", "float16", "dynamic_range", "int8")
INPUT_NAME = "images"


def tflite_file(variant):
    """The file name of a TFLite variant in an export directory."""
    return f"model_{variant}.tflite"


def input_spec(settings):
    shape = [None, settings.image_size, settings.image_size, settings.channels]
    return tf.TensorSpec(shape, tf.uint8, name=INPUT_NAME)


def _logits(model, images, settings):
    """uint8 images -> the student's float32 logits on normalised images."""
    x = normalize(images, settings.mean, settings.std)
    return tf.cast(model(x, training=False), tf.float32)  # float16 under mixed precision


def reference_function(model, settings):
    """uint8 images -> the Keras student's logits (no export involved)."""
    return tf.function(
        lambda images: _logits(model, images, settings),
        input_signature=[input_spec(settings)],
        reduce_retracing=True,
    )


def write_saved_model(model, settings, path):
    def serve(images):
        logits = _logits(model, images, settings)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=[input_spec(settings)])
    archive.write_out(path, verbose=False)


def to_tflite(saved_model, *, variant, representative, int8_io):
    """The TFLite flatbuffer of `variant` (bytes), converted from the SavedModel."""
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model, signature_keys=["serving_default"]
    )
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if variant == "int8":

        def examples():
            for images, _ in representative.batches():
                for image in images:
                    yield {INPUT_NAME: image[None]}

        converter.representative_dataset = examples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.uint8  # the images already are
            converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        # The converter's calibration step builds a tf.lite.Interpreter, which warns that
        # it is deprecated; verification uses LiteRT.
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        try:
            return converter.convert()
        except Exception as error:  # noqa: BLE001 (the converter raises many kinds)
            raise RuntimeError(f"TFLite conversion to {variant} failed: {error}") from error


def write_bytes(path, content):
    """Writes a converted model's bytes atomically (a seam the tests interrupt)."""
    checkpointing.write_bytes_atomically(path, content)
