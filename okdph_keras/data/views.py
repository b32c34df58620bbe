"""Per-network augmentation views: a random crop per example, then batched augmentation.

A view follows the reference code's torchvision transforms. CIFAR style: every view but
"none" starts with a random crop from the image zero-padded by 4 pixels; ImageNet style:
with a random resized crop. Then, on batches: "hflip" flips; "hflip+rot" flips and
rotates by up to 15 degrees; "cutout" flips and zeroes one square; "randaugment" and
"autoaugment" apply torchvision's RandAugment (2 ops, magnitude 9 of 31 bins) and
AutoAugment (ImageNet policy) with no flip, as the reference does. Images stay in
[0, 255] until `normalize`.
"""

import functools
import math
import random
import zlib

import tensorflow as tf

from okdph_keras.data.autoaugment import auto_augment, rand_augment, rotate
from okdph_keras.validation import check_choice

VIEW_NAMES = ("none", "hflip", "hflip+rot", "cutout", "randaugment", "autoaugment")
STYLES = ("cifar", "imagenet")
DEFAULT_VIEWS = {
    "cifar10": ("hflip", "cutout", "randaugment"),
    "cifar100": ("hflip+rot", "cutout", "randaugment"),
    "imagenet": ("hflip", "randaugment", "autoaugment"),
}
NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
_DEFAULT_SIZE = {"cifar": 32, "imagenet": 224}
_CIFAR_PADDING = 4


class View:
    """One network's augmentation: `crop` one example, then `augment` a batch.

    Create views once, outside `tf.data` map functions (each holds a
    `tf.random.Generator`). Both methods take an optional stateless `seed` (int tensor of
    shape `[2]`); without one they draw it from the view's generator.

    Example:
        >>> view = make_view("cutout", seed=0)
        >>> data = data.map(view.crop).batch(128).map(view.augment)
    """

    def __init__(self, name, crop, random_crop, steps, seed):
        self.name = name
        self._crop = crop
        self._random_crop = random_crop
        self._steps = steps
        self._generator = tf.random.Generator.from_seed(seed)

    def _seed(self, seed):
        if seed is None:
            return self._generator.make_seeds(1)[:, 0]
        return tf.convert_to_tensor(seed)

    def crop(self, image, seed=None):
        """`[H, W, C]` uint8 (any H, W in ImageNet style) -> `[S, S, C]` float32 in [0, 255]."""
        if self._random_crop:
            return self._crop(image, self._seed(seed))
        return self._crop(image)

    def augment(self, images, seed=None):
        """`[B, S, S, C]` float32 in [0, 255] -> same shape, float32 in [0, 255]."""
        images = tf.convert_to_tensor(images, tf.float32)
        if not self._steps:
            return images
        seeds = tf.random.experimental.stateless_split(self._seed(seed), len(self._steps))

        def run_steps():
            augmented = images
            for index, step in enumerate(self._steps):
                augmented = step(augmented, seeds[index])
            return augmented

        # Nothing runs on an empty batch: kernels disagree there between CPUs.
        return tf.cond(tf.shape(images)[0] > 0, run_steps, lambda: images)

    def __repr__(self):
        return f"View({self.name!r})"


def _to_float(image):
    return tf.cast(image, tf.float32)


def _to_float_sized(image, size):
    """Float image of side `size`: CIFAR-sized data as is, anything else resized."""
    image = _to_float(image)
    if image.shape[0] == size and image.shape[1] == size:
        return image
    channels = image.shape[-1]
    return tf.ensure_shape(tf.image.resize(image, [size, size]), [size, size, channels])


def _pad_crop(image, seed, size):
    image = _to_float_sized(image, size)
    padding = [[_CIFAR_PADDING, _CIFAR_PADDING], [_CIFAR_PADDING, _CIFAR_PADDING], [0, 0]]
    padded = tf.pad(image, padding)
    crop = tf.image.stateless_random_crop(padded, [size, size, tf.shape(image)[-1]], seed)
    return tf.ensure_shape(crop, [size, size, image.shape[-1]])


def _random_resized_crop(image, seed, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts=10):
    """torchvision's RandomResizedCrop: `attempts` tries, else a ratio-clamped centre crop."""
    image = _to_float(image)
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 3)
    area = height * width * tf.random.stateless_uniform([attempts], seeds[0], *scale)
    log_ratio = tf.random.stateless_uniform(
        [attempts], seeds[1], math.log(ratio[0]), math.log(ratio[1])
    )
    crop_w = tf.round(tf.sqrt(area * tf.exp(log_ratio)))
    crop_h = tf.round(tf.sqrt(area / tf.exp(log_ratio)))
    fits = (crop_w >= 1) & (crop_w <= width) & (crop_h >= 1) & (crop_h <= height)
    first = tf.reduce_min(tf.where(fits, tf.range(attempts), attempts))
    found = first < attempts
    index = tf.minimum(first, attempts - 1)
    crop_h = tf.where(found, crop_h[index], tf.minimum(height, tf.round(width / ratio[0])))
    crop_w = tf.where(found, crop_w[index], tf.minimum(width, tf.round(height * ratio[1])))
    free = tf.stack([height - crop_h, width - crop_w])
    offsets = tf.where(
        found, tf.floor(tf.random.stateless_uniform([2], seeds[2]) * (free + 1)), free // 2
    )
    offsets, crop_size = tf.cast(offsets, tf.int32), tf.cast(tf.stack([crop_h, crop_w]), tf.int32)
    crop = tf.slice(image, tf.concat([offsets, [0]], 0), tf.concat([crop_size, [-1]], 0))
    resized = tf.image.resize(crop, [size, size], "bilinear", antialias=True)
    return tf.clip_by_value(tf.ensure_shape(resized, [size, size, image.shape[-1]]), 0.0, 255.0)


def _resize_centre_crop(image, size):
    """Shorter side to `size * 256 / 224` (256 for 224), then the central `size` square."""
    image = _to_float(image)
    shape = tf.shape(image)[:2]
    resize_to = round(size * 256 / 224)
    new_shape = resize_to * shape // tf.reduce_min(shape)  # torchvision: int(256 * long / short)
    resized = tf.image.resize(image, new_shape, "bilinear", antialias=True)
    offsets = tf.cast(tf.round(tf.cast(new_shape - size, tf.float32) / 2.0), tf.int32)
    crop = tf.slice(resized, tf.concat([offsets, [0]], 0), [size, size, -1])
    return tf.clip_by_value(tf.ensure_shape(crop, [size, size, image.shape[-1]]), 0.0, 255.0)


def _flip(images, seed):
    flip = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed) < 0.5
    return tf.where(flip, tf.reverse(images, axis=[2]), images)


def _rotate(images, seed, degrees=15.0):
    angles = tf.random.stateless_uniform([tf.shape(images)[0]], seed, -degrees, degrees)
    return rotate(images, angles)


def _cutout(images, seed, side):
    """Zeroes a `side` x `side` square per image, centre anywhere, clipped at the borders."""
    shape = tf.shape(images)
    uniform = tf.random.stateless_uniform([shape[0], 2], seed)
    centres = tf.cast(tf.floor(uniform * tf.cast(shape[1:3], tf.float32)), tf.int32)
    low, high = centres - side // 2, centres + side // 2

    def inside(axis_size, dim):
        positions = tf.range(axis_size)[None, :]
        return (positions >= low[:, dim : dim + 1]) & (positions < high[:, dim : dim + 1])

    hole = inside(shape[1], 0)[:, :, None] & inside(shape[2], 1)[:, None, :]
    return tf.where(hole[..., None], 0.0, images)


def _view_steps(name, cutout_side):
    return {
        "none": [],
        "hflip": [_flip],
        "hflip+rot": [_flip, _rotate],
        "cutout": [_flip, functools.partial(_cutout, side=cutout_side)],
        "randaugment": [rand_augment],
        "autoaugment": [auto_augment],
    }[name]


def make_view(name, style="cifar", image_size=None, seed=None):
    """Builds the view `name` (one of VIEW_NAMES).

    Args:
        name: view name, one of VIEW_NAMES.
        style: "cifar" (pad-4 random crop; "none" only converts to float; images
            that are not S x S are first resized) or "imagenet" (random resized crop;
            "none" is `eval_transform`).
        image_size: output side S; None: 32 for "cifar", 224 for "imagenet". The cutout
            square is S // 2 (CIFAR, 16 at 32 px) or round(S * 32 / 224) (ImageNet, 32 at
            224 px), as in the reference.
        seed: integer; the view's random stream is derived from (seed, name), so views
            of different names never share draws. None: drawn from Python's `random`
            (reproducible after `keras.utils.set_random_seed`).

    Returns:
        A `View`.

    Example:
        >>> views = [make_view(n, seed=i) for i, n in enumerate(DEFAULT_VIEWS["cifar10"])]
    """
    check_choice("style", style, STYLES)
    check_choice("name", name, VIEW_NAMES)
    size = image_size or _DEFAULT_SIZE[style]
    if style == "cifar":
        crop = (
            functools.partial(_to_float_sized, size=size)
            if name == "none"
            else functools.partial(_pad_crop, size=size)
        )
        cutout_side = size // 2
    else:
        crop = (
            eval_transform(style, size)
            if name == "none"
            else functools.partial(_random_resized_crop, size=size)
        )
        cutout_side = max(1, round(size * 32 / 224))
    if seed is None:
        seed = random.randrange(2**31)
    return View(
        name,
        crop,
        name != "none",
        _view_steps(name, cutout_side),
        [seed, zlib.crc32(name.encode())],
    )


def eval_transform(style="cifar", image_size=None):
    """The test-time transform of one example: uint8 `[H, W, C]` -> float32 in [0, 255].

    Args:
        style: "cifar" (float conversion; images not S x S are resized) or "imagenet"
            (shorter side resized to
            S * 256 / 224, then the central S x S crop).
        image_size: S; None: 32 for "cifar", 224 for "imagenet".

    Returns:
        A function of one image.

    Example:
        >>> test = test.map(eval_transform("imagenet")).batch(256)
    """
    check_choice("style", style, STYLES)
    if style == "cifar":
        return functools.partial(_to_float_sized, size=image_size or _DEFAULT_SIZE[style])
    return functools.partial(_resize_centre_crop, size=image_size or _DEFAULT_SIZE[style])


def normalize(images, mean, std):
    """`(images / 255 - mean) / std` per channel, float32 (any leading dimensions).

    Example:
        >>> x = normalize(batch, *NORMALIZATION["cifar10"])
    """
    images = tf.cast(images, tf.float32)
    return (images / 255.0 - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
