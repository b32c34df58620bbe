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

import argparse
import json
import os
import sys

import numpy as np
import PIL.Image

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

    def __init__(self, path, kind, image_size, channels, num_classes, metadata=None):
        self.path = path
        self.kind = kind
        self.image_size = image_size
        self.channels = channels
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
        super().__init__(path, "saved_model", size, channels, num_classes, metadata)

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
        super().__init__(path, "tflite", size, channels, num_classes, metadata)

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
            raise ValueError(
                f"Export {model_path} has no variant {variant!r}; it has {sorted(files)}."
            )
        path = os.path.join(path, files[variant]["path"])
        if variant == DEFAULT_VARIANT:
            return SavedModel(path, metadata)
        return TFLiteModel(path, metadata, num_threads)
    if variant is not None:
        raise ValueError(
            f"variant={variant!r} applies to export directories only; {model_path} is not one."
        )
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "saved_model.pb")):
        return SavedModel(path, _read_metadata(os.path.dirname(path)))
    if os.path.isfile(path) and path.endswith(".tflite"):
        return TFLiteModel(path, _read_metadata(os.path.dirname(path)), num_threads)
    raise ValueError(
        f"{model_path} holds no model: expected an export directory (with {METADATA_FILE}), "
        "a SavedModel directory (with saved_model.pb) or a .tflite file."
    )


_STYLES = ("cifar", "imagenet")
_GREY = (9797, 19234, 3737)  # libpng's RGB -> grey weights (/ 32768), as tf.io.decode_image's


def _decode(path, channels):
    """The uint8 `[H, W, C]` pixels of an image file, as `tf.io.decode_image` gives them."""
    with open(path, "rb") as file:
        data = file.read()
    if data[:3] == b"\xff\xd8\xff":  # JPEG: decoded as in training, by TensorFlow
        import tensorflow as tf  # noqa: PLC0415 (slow to import; only for JPEG files)

        try:
            return tf.io.decode_image(data, channels=channels, expand_animations=False).numpy()
        except (tf.errors.OpError, ValueError) as error:
            raise ValueError(getattr(error, "message", str(error))) from None
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; got {channels}")
    with PIL.Image.open(path) as image:  # the first frame
        if image.format not in ("PNG", "BMP", "GIF"):
            raise ValueError(f"a {image.format} file")
        if image.mode.startswith("I"):  # 16-bit grey: the high byte, as libpng's strip_16
            grey = np.asarray(image).astype(np.int64) >> 8
        elif image.mode in ("1", "L", "LA"):
            grey = np.asarray(image.convert("L"))
        else:
            grey, pixels = None, np.asarray(image.convert("RGB"))
    if grey is not None:
        return np.repeat(grey.astype(np.uint8)[..., None], channels, axis=-1)
    if channels == 1:
        pixels = (pixels.astype(np.int32) @ np.array(_GREY, np.int32) >> 15)[..., None]
    return pixels.astype(np.uint8)


def _resize_weights(in_size, out_size, antialias):
    """`(indices, weights)`, each `[out_size, K]`, of a bilinear resize along one axis.

    As `tf.image.resize(..., "bilinear")`: half-pixel centres, a triangle filter (widened
    by the scale when shrinking with `antialias`), weights normalised over the pixels
    inside the image, in float32.
    """
    inverse_scale = np.float32(1) / (np.float32(out_size) / np.float32(in_size))
    kernel_scale = max(inverse_scale, np.float32(1)) if antialias else np.float32(1)
    centres = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * inverse_scale
    first = np.clip(np.ceil(centres - kernel_scale - 0.5), 0, in_size - 1).astype(np.int64)
    positions = first[:, None] + np.arange(int(np.ceil(2 * kernel_scale)) + 1)
    distances = (positions.astype(np.float32) + np.float32(0.5) - centres[:, None]) * (
        1 / kernel_scale
    )
    weights = np.maximum(np.float32(0), 1 - np.abs(distances))
    weights[positions >= in_size] = 0
    weights *= np.float32(1) / weights.sum(axis=1, keepdims=True, dtype=np.float32)
    return np.minimum(positions, in_size - 1), weights


def _resize(image, height, width, antialias):
    """A float32 `[H, W, C]` image resized to `[height, width, C]`, rows then columns."""
    for axis, size in ((0, height), (1, width)):
        indices, weights = _resize_weights(image.shape[axis], size, antialias)
        image = np.moveaxis(image, axis, 0)
        resized = np.zeros((size, *image.shape[1:]), np.float32)
        for k in range(indices.shape[1]):
            resized += weights[:, k, None, None] * image[indices[:, k]]
        image = np.moveaxis(resized, 0, axis)
    return image


def transform_image(image, image_size, style=None):
    """The test-time transform of a uint8 `[H, W, C]` image, in numpy: uint8 `[S, S, C]`.

    `eval_transform(style, S)` rounded to uint8 (to within one level): "cifar": images
    not S x S are resized (bilinear, no antialiasing); "imagenet": the shorter side is
    resized (antialiased) to round(S * 256 / 224), then the central S x S crop is taken.
    None: an antialiased bilinear resize to S x S.
    """
    if style is not None and style not in _STYLES:
        raise ValueError(f"Unknown style {style!r}; expected one of {_STYLES}.")
    image = image.astype(np.float32)
    if style is None:
        image = _resize(image, image_size, image_size, antialias=True)
    elif style == "cifar":
        if image.shape[:2] != (image_size, image_size):
            image = _resize(image, image_size, image_size, antialias=False)
    else:
        shape = np.array(image.shape[:2])
        resized = round(image_size * 256 / 224) * shape // shape.min()
        image = _resize(image, *resized, antialias=True)
        top, left = np.round((resized - image_size) / 2).astype(int)
        image = image[top : top + image_size, left : left + image_size]
    return np.rint(np.clip(image, 0, 255)).astype(np.uint8)


def load_image(path, image_size, channels=3, style=None):
    """Decodes an image file to uint8 `[S, S, C]` with the run's test-time transform.

    Args:
        path: a JPEG, PNG, BMP or GIF file.
        image_size: S.
        channels: C (1 or 3; colour images become grey and back as needed).
        style: `"cifar"` or `"imagenet"` for `eval_transform(style, S)`; None for a
            plain bilinear resize to S x S (see `transform_image`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be decoded, naming it.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Image file {path} does not exist.")
    try:
        image = _decode(path, channels)
    except (OSError, ValueError, PIL.UnidentifiedImageError) as error:
        raise ValueError(
            f"Could not decode image file {path} (not a valid JPEG, PNG, BMP or GIF): {error}"
        ) from None
    return transform_image(image, image_size, style)


def predict_files(model, image_paths, top_k=5):
    """Top-k `(class name, probability)` pairs for each image file, best first."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1; got {top_k!r}.")
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
    lines = []
    for path, pairs in zip(image_paths, results):
        lines.append(path)
        width = max(len(name) for name, _ in pairs)
        for rank, (name, probability) in enumerate(pairs, start=1):
            lines.append(f"  {rank}. {name:<{width}}  {probability:.4f}")
    return "\n".join(lines)


def main(argv=None):
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


if __name__ == "__main__":
    sys.exit(main())
