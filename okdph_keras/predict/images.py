"""Image files to uint8 model inputs: decoding and the test-time transform, in numpy.

JPEG files are decoded by TensorFlow (as in training); PNG, BMP and GIF files by Pillow,
giving the pixels `tf.io.decode_image` gives. `transform_image` computes the run's
test-time transform in numpy, within one level of `eval_transform`.
"""

import os

import numpy as np
import PIL.Image

from okdph_keras.validation import fail

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
        fail("channels", channels, "1 or 3")
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


def _resize(image, height, width, *, antialias):
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
        fail("style", style, f"one of {_STYLES} or None")
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
