"""Exported models: an export directory, a SavedModel or a `.tflite` file, as `ExportedModel`s.

TensorFlow is imported only for a SavedModel, LiteRT (`ai_edge_litert`) only for a
`.tflite` file.
"""

import json
import os

import numpy as np

from okdph_keras.validation import fail

METADATA_FILE = "metadata.json"
SAVED_MODEL_DIR = "saved_model"
SIGNATURE = "serving_default"
DEFAULT_VARIANT = "saved_model"


class ExportedModel:
    """A SavedModel or TFLite model that maps raw uint8 images to logits.

    Attributes:
        path: the SavedModel directory or `.tflite` file.
        kind: `"saved_model"` or `"tflite"`.
        image_size: side S of the square input images.
        channels: C, the input's channels.
        class_names: tuple of one name per class.
        style: the training run's style (`"cifar"`, `"imagenet"`), or None.
        metadata: the export's metadata (a dict), or None.
    """

    kind = None  # each subclass's

    def __init__(self, path, sizes, metadata=None):
        """`sizes`: `(S, C, K)`, the input's side and channels and the number of classes."""
        self.path = path
        self.image_size, self.channels, num_classes = sizes
        self.metadata = metadata
        names = metadata.get("class_names") if metadata else None
        self.class_names = tuple(names) if names else tuple(str(k) for k in range(num_classes))
        self.style = metadata.get("style") if metadata else None

    def outputs(self, images):
        """`{"logits": [B, K] float32, "probabilities": [B, K] float32}` for uint8 images."""
        raise NotImplementedError

    def logits(self, images):
        return self.outputs(images)["logits"]

    def probabilities(self, images):
        return self.outputs(images)["probabilities"]


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _complete(outputs):
    """Logits and probabilities from a model's outputs (one of them, or one unnamed)."""
    outputs = {name: np.asarray(value, np.float32) for name, value in outputs.items()}
    if "logits" not in outputs:
        if len(outputs) != 1 or "probabilities" in outputs:
            raise ValueError(
                f"Expected a 'logits' output (as okdph_keras.export writes); got outputs "
                f"{sorted(outputs)}."
            )
        outputs = {"logits": next(iter(outputs.values()))}
    if "probabilities" not in outputs:
        outputs["probabilities"] = _softmax(outputs["logits"])
    return {"logits": outputs["logits"], "probabilities": outputs["probabilities"]}


def _check_images(images, model):
    images = np.asarray(images)
    expected = (model.image_size, model.image_size, model.channels)
    if images.ndim != 4 or images.shape[1:] != expected or images.dtype != np.uint8:
        raise ValueError(
            f"{model.path} takes uint8 images [B, {', '.join(map(str, expected))}]; got "
            f"{images.dtype} {list(images.shape)}."
        )
    return images


def _square_size(shape, path):
    """(S, C) of an NHWC input shape with H == W == S."""
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[1] < 1:
        raise ValueError(
            f"{path} does not take square images [B, S, S, C] of a fixed size; its input "
            f"shape is {list(shape)}."
        )
    return int(shape[1]), int(shape[3])


class SavedModel(ExportedModel):
    """A SavedModel's `serving_default` signature, run with TensorFlow."""

    kind = "saved_model"

    def __init__(self, path, metadata=None):
        import tensorflow as tf  # noqa: PLC0415 (slow to import; only for SavedModels)

        try:
            loaded = tf.saved_model.load(path)
        except (OSError, ValueError, tf.errors.OpError) as error:
            raise ValueError(f"Could not load the SavedModel {path}: {error}") from None
        if SIGNATURE not in loaded.signatures:
            raise ValueError(
                f"SavedModel {path} has no {SIGNATURE!r} signature; it has "
                f"{sorted(loaded.signatures)}."
            )
        self._loaded = loaded  # keeps the function's variables alive
        self._function = loaded.signatures[SIGNATURE]
        specs = self._function.structured_input_signature[1]
        if len(specs) != 1:
            raise ValueError(
                f"SavedModel {path} takes {len(specs)} inputs; expected one image batch."
            )
        ((self._input_name, spec),) = specs.items()
        if spec.dtype != tf.uint8:
            raise ValueError(
                f"SavedModel {path} takes {spec.dtype.name} input; expected raw uint8 images "
                "with normalisation inside the model, as okdph_keras.export writes."
            )
        size, channels = _square_size(spec.shape.as_list(), path)
        outputs = self._function.structured_outputs
        num_classes = next(iter(outputs.values())).shape[-1]
        super().__init__(path, (size, channels, num_classes), metadata)

    def outputs(self, images):
        import tensorflow as tf  # noqa: PLC0415

        images = _check_images(images, self)
        results = self._function(**{self._input_name: tf.constant(images)})
        return _complete({name: value.numpy() for name, value in results.items()})


class TFLiteModel(ExportedModel):
    """A `.tflite` model run with the LiteRT interpreter.

    Args:
        path: the `.tflite` file.
        metadata: the export's metadata, or None.
        num_threads: interpreter threads (None: LiteRT's default).
    """

    kind = "tflite"

    def __init__(self, path, metadata=None, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 (only for .tflite)

        try:
            self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
        except (ValueError, RuntimeError) as error:
            raise ValueError(f"Could not load the TFLite model {path}: {error}") from None
        signatures = self.interpreter.get_signature_list()
        if signatures:
            key = SIGNATURE if SIGNATURE in signatures else next(iter(signatures))
            self.runner = self.interpreter.get_signature_runner(key)
            inputs = self.runner.get_input_details()
            outputs = self.runner.get_output_details()
        else:  # a model converted without signatures: its tensors in order
            self.runner = None
            inputs = {d["name"]: d for d in self.interpreter.get_input_details()}
            outputs = {d["name"]: d for d in self.interpreter.get_output_details()}
        if len(inputs) != 1:
            raise ValueError(
                f"TFLite model {path} takes {len(inputs)} inputs; expected one image batch."
            )
        ((self._input_name, self.input_details),) = inputs.items()
        if self.input_details["dtype"] != np.uint8:
            raise ValueError(
                f"TFLite model {path} takes {np.dtype(self.input_details['dtype']).name} input; "
                "expected raw uint8 images, as okdph_keras.export writes."
            )
        self.output_details = outputs
        size, channels = _square_size(list(self.input_details["shape"]), path)
        num_classes = int(next(iter(outputs.values()))["shape"][-1])
        super().__init__(path, (size, channels, num_classes), metadata)

    def _dequantize(self, name, value):
        scale, zero_point = self.output_details[name]["quantization"]
        if scale and np.issubdtype(value.dtype, np.integer):
            return (value.astype(np.float32) - zero_point) * scale
        return value

    def outputs(self, images):
        images = _check_images(images, self)
        if self.runner is not None:
            raw = self.runner(**{self._input_name: images})
        else:
            self.interpreter.resize_tensor_input(self.input_details["index"], images.shape)
            self.interpreter.allocate_tensors()
            self.interpreter.set_tensor(self.input_details["index"], images)
            self.interpreter.invoke()
            raw = {
                name: self.interpreter.get_tensor(d["index"])
                for name, d in self.output_details.items()
            }
        return _complete({name: self._dequantize(name, value) for name, value in raw.items()})


def _read_metadata(directory):
    path = os.path.join(directory, METADATA_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as file:
            return json.load(file)
    except (OSError, ValueError) as error:
        raise ValueError(f"Could not read the export metadata {path}: {error}") from None


def load(model_path, variant=None, num_threads=None):
    """Loads an export directory, a SavedModel directory or a `.tflite` file.

    Args:
        model_path: the path.
        variant: for an export directory, `"saved_model"` (default) or a TFLite variant
            it holds (`"float32"`, `"float16"`, `"dynamic_range"`, `"int8"`).
        num_threads: LiteRT interpreter threads, for TFLite models.

    Returns:
        An `ExportedModel`.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the path holds no model, or an unusable one.

    Example:
        >>> model = load("exports/cifar10_resnet32", variant="int8")
        >>> model.probabilities(images_uint8)
    """
    path = os.path.abspath(os.fspath(model_path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"Model path {model_path} does not exist.")
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, METADATA_FILE)):
        metadata = _read_metadata(path)
        files = metadata.get("variants", {})
        variant = variant or DEFAULT_VARIANT
        if variant not in files:
            fail(
                "variant",
                variant,
                f"one of the variants export {model_path} holds: {sorted(files)}",
            )
        path = os.path.join(path, files[variant]["path"])
        if variant == DEFAULT_VARIANT:
            return SavedModel(path, metadata)
        return TFLiteModel(path, metadata, num_threads)
    if variant is not None:
        fail("variant", variant, f"None: {model_path} is not an export directory")
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "saved_model.pb")):
        return SavedModel(path, _read_metadata(os.path.dirname(path)))
    if os.path.isfile(path) and path.endswith(".tflite"):
        return TFLiteModel(path, _read_metadata(os.path.dirname(path)), num_threads)
    raise ValueError(
        f"{model_path} holds no model: expected an export directory (with {METADATA_FILE}), "
        "a SavedModel directory (with saved_model.pb) or a .tflite file."
    )
