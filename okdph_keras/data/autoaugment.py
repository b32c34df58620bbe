"""AutoAugment (ImageNet policy) and RandAugment on float batches, torchvision semantics.

Every op takes a batch `[B, H, W, C]` float32 in [0, 255] and one magnitude per image
`[B]`, and returns the same shape. Each image of a batch gets its own ops, magnitudes and
signs; images are grouped by op (`tf.dynamic_partition`), so every op runs once per
slot on just the images that drew it; an op whose group is empty is skipped, never run on
an empty batch (kernels disagree there: oneDNN's depthwise convolution on Intel CPUs
returns the unshrunk shape for an empty batch). Geometric ops use nearest-neighbour sampling and
fill with 0, as torchvision's defaults do. Values are not rounded to integers between ops
(torchvision works on uint8 PIL images); Posterize and Equalize quantise by definition.
"""

import math

import numpy as np
import tensorflow as tf

# Ops whose magnitude torchvision negates with probability 1/2.
SIGNED_OPS = (
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
)
OP_NAMES = ("Identity", *SIGNED_OPS, "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert")
# RandAugment draws from every op but Invert.
RANDAUGMENT_OPS = OP_NAMES[:-1]

# torchvision's AutoAugmentPolicy.IMAGENET: (op, probability, magnitude bin of 10).
IMAGENET_POLICY = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)


def magnitude(op, level, num_bins):
    """torchvision's magnitude of `op` at bin `level` of `num_bins` (unsigned).

    Translations are a fraction of the image side; Brightness/Color/Contrast/Sharpness
    give `m` for the enhancement factor `1 + m`; Posterize gives bits; Solarize the
    threshold; ops without a magnitude give 0.

    Example:
        >>> magnitude("Rotate", 9, 31)   # RandAugment's default: 9 degrees
        9.0
    """
    fraction = level / (num_bins - 1)
    if op in ("ShearX", "ShearY"):
        return 0.3 * fraction
    if op in ("TranslateX", "TranslateY"):
        return 150.0 / 331.0 * fraction
    if op == "Rotate":
        return 30.0 * fraction
    if op in ("Brightness", "Color", "Contrast", "Sharpness"):
        return 0.9 * fraction
    if op == "Posterize":
        return float(8 - round(level / ((num_bins - 1) / 4)))
    if op == "Solarize":
        return 255.0 * (1.0 - fraction)
    return 0.0


def _per_image(values):
    return tf.reshape(values, [-1, 1, 1, 1])


def _blend(degenerate, images, factor):
    """PIL's ImageEnhance: degenerate + factor * (images - degenerate), clipped."""
    return tf.clip_by_value(degenerate + _per_image(factor) * (images - degenerate), 0.0, 255.0)


def _grayscale(images):
    return tf.reduce_sum(images * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)


def _affine(images, matrices):
    """Resamples each image at `matrices @ (x, y, 1)` (nearest, fill 0).

    Args:
        images: `[B, H, W, C]` float32.
        matrices: `[B, 2, 3]`, mapping output to input points in continuous pixel
            coordinates (origin at the top-left corner, pixel centres at i + 0.5).

    Returns:
        The resampled batch, same shape.
    """
    linear, offset = matrices[:, :, :2], matrices[:, :, 2]
    # TF indexes pixel centres at integers: shift the origin by half a pixel.
    offset = offset + tf.reduce_sum(linear, axis=2) * 0.5 - 0.5
    flat = tf.concat([linear[:, 0], offset[:, :1], linear[:, 1], offset[:, 1:]], axis=1)
    transforms = tf.pad(flat, [[0, 0], [0, 2]])
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )


def rotate(images, degrees):
    """Rotates each image counter-clockwise about its centre by `degrees` `[B]`."""
    radians = degrees * (math.pi / 180.0)
    cos, sin = tf.cos(radians), tf.sin(radians)
    height, width = (tf.cast(tf.shape(images)[i], tf.float32) for i in (1, 2))
    cx, cy = width / 2.0, height / 2.0
    rows = [
        tf.stack([cos, -sin, cx - cos * cx + sin * cy], axis=1),
        tf.stack([sin, cos, cy - sin * cx - cos * cy], axis=1),
    ]
    return _affine(images, tf.stack(rows, axis=1))


def _shear(images, m, axis):
    one, zero = tf.ones_like(m), tf.zeros_like(m)
    # Shear about the top-left corner: x_in = x + m y (ShearX) or y_in = y + m x (ShearY).
    rows = [[one, m if axis == "x" else zero, zero], [m if axis == "y" else zero, one, zero]]
    return _affine(images, tf.stack([tf.stack(row, axis=1) for row in rows], axis=1))


def _translate(images, fraction, axis):
    side = tf.cast(tf.shape(images)[2 if axis == "x" else 1], tf.float32)
    pixels = tf.cast(tf.cast(fraction * side, tf.int32), tf.float32)  # truncated, as int()
    one, zero = tf.ones_like(fraction), tf.zeros_like(fraction)
    dx, dy = (-pixels, zero) if axis == "x" else (zero, -pixels)
    rows = [[one, zero, dx], [zero, one, dy]]
    return _affine(images, tf.stack([tf.stack(row, axis=1) for row in rows], axis=1))


def _sharpness(images, m):
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, tf.shape(images)[-1], 1])
    smooth = tf.nn.depthwise_conv2d(images, kernel, [1, 1, 1, 1], "VALID")
    # PIL's SMOOTH filter keeps the one-pixel border.
    border = [[0, 0], [1, 1], [1, 1], [0, 0]]
    interior = tf.pad(tf.ones_like(smooth[:1, ..., :1]), border)
    degenerate = tf.pad(smooth, border) + images * (1.0 - interior)
    return _blend(degenerate, images, 1.0 + m)


def _posterize(images, bits):
    step = _per_image(tf.pow(2.0, 8.0 - bits))
    return tf.floor(images / step) * step


def _solarize(images, threshold):
    return tf.where(images >= _per_image(threshold), 255.0 - images, images)


def _autocontrast(images):
    low = tf.reduce_min(images, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(images, axis=[1, 2], keepdims=True)
    scale = tf.math.divide_no_nan(255.0, high - low)
    return tf.where(high > low, tf.clip_by_value((images - low) * scale, 0.0, 255.0), images)


def _equalize(images):
    """PIL's ImageOps.equalize, per image and channel (values floored to 0..255 bins)."""
    shape = tf.shape(images)
    channels = tf.transpose(images, [0, 3, 1, 2])  # [B, C, H, W]
    values = tf.reshape(
        tf.cast(tf.clip_by_value(channels, 0.0, 255.0), tf.int32), [shape[0] * shape[3], -1]
    )
    histogram = tf.math.bincount(values, minlength=256, maxlength=256, axis=-1)
    last_count = tf.gather(histogram, tf.reduce_max(values, axis=1), batch_dims=1)
    step = (tf.shape(values)[1] - last_count) // 255  # pixels not in the top bin / 255
    cumulative = tf.cumsum(histogram, axis=1, exclusive=True)
    lut = (cumulative + step[:, None] // 2) // tf.maximum(step[:, None], 1)
    lut = tf.where(step[:, None] > 0, tf.minimum(lut, 255), tf.range(256)[None])
    equalized = tf.cast(tf.gather(lut, values, batch_dims=1), tf.float32)
    return tf.transpose(tf.reshape(equalized, tf.shape(channels)), [0, 2, 3, 1])


_OPS = {
    "Identity": lambda x, m: x,
    "ShearX": lambda x, m: _shear(x, m, "x"),
    "ShearY": lambda x, m: _shear(x, m, "y"),
    "TranslateX": lambda x, m: _translate(x, m, "x"),
    "TranslateY": lambda x, m: _translate(x, m, "y"),
    "Rotate": rotate,
    "Brightness": lambda x, m: _blend(tf.zeros_like(x), x, 1.0 + m),
    "Color": lambda x, m: _blend(_grayscale(x), x, 1.0 + m),
    "Contrast": lambda x, m: _blend(
        tf.reduce_mean(_grayscale(x), axis=[1, 2, 3], keepdims=True), x, 1.0 + m
    ),
    "Sharpness": _sharpness,
    "Posterize": _posterize,
    "Solarize": _solarize,
    "AutoContrast": lambda x, m: _autocontrast(x),
    "Equalize": lambda x, m: _equalize(x),
    "Invert": lambda x, m: 255.0 - x,
}


def apply_op(name, images, magnitudes):
    """Applies op `name` (one of OP_NAMES) to every image with its signed magnitude `[B]`."""
    return _OPS[name](images, tf.cast(magnitudes, tf.float32))


@tf.function(autograph=False, reduce_retracing=True)  # no autograph: it is slow here
def _grouped_ops(images, op_ids, magnitudes):
    count = len(OP_NAMES)
    positions = tf.dynamic_partition(tf.range(tf.shape(images)[0]), op_ids, count)
    groups = tf.dynamic_partition(images, op_ids, count)
    group_magnitudes = tf.dynamic_partition(magnitudes, op_ids, count)
    outputs = [
        _apply_if_any(name, group, m) for name, group, m in zip(OP_NAMES, groups, group_magnitudes)
    ]
    return tf.dynamic_stitch(positions, outputs)


def _apply_if_any(name, images, magnitudes):
    """`apply_op` on a non-empty batch; an empty one is returned as it is, unrun."""
    return tf.cond(
        tf.shape(images)[0] > 0, lambda: apply_op(name, images, magnitudes), lambda: images
    )


def _apply_ops(images, op_ids, magnitudes):
    """Image b gets op OP_NAMES[op_ids[b]] with magnitudes[b]; each op runs once.

    An empty batch is returned unchanged without running anything.
    """
    grouped = tf.cond(
        tf.shape(images)[0] > 0,
        lambda: _grouped_ops(images, op_ids, magnitudes),
        lambda: images,
    )
    return tf.ensure_shape(grouped, images.shape)


def _signs(op_ids, seed):
    signed = tf.constant([name in SIGNED_OPS for name in OP_NAMES])
    flip = tf.random.stateless_uniform(tf.shape(op_ids), seed) < 0.5
    return tf.where(tf.gather(signed, op_ids) & flip, -1.0, 1.0)


def _policy_tables():
    ops = [[OP_NAMES.index(op) for op, _, _ in sub] for sub in IMAGENET_POLICY]
    probs = [[p for _, p, _ in sub] for sub in IMAGENET_POLICY]
    mags = [[magnitude(op, level or 0, 10) for op, _, level in sub] for sub in IMAGENET_POLICY]
    return (np.array(ops, np.int32), np.array(probs, np.float32), np.array(mags, np.float32))


_POLICY_OPS, _POLICY_PROBS, _POLICY_MAGNITUDES = _policy_tables()


def auto_augment(images, seed):
    """torchvision's `AutoAugment(AutoAugmentPolicy.IMAGENET)`, one sub-policy per image.

    Args:
        images: `[B, H, W, C]` float32 in [0, 255] (C = 3).
        seed: stateless seed, int tensor of shape `[2]`.

    Returns:
        The augmented batch, same shape, float32 in [0, 255].

    Example:
        >>> out = auto_augment(images, seed=tf.constant([1, 2]))
    """
    seeds = tf.random.experimental.stateless_split(seed, 5)
    batch = tf.shape(images)[0]
    policy = tf.random.stateless_uniform([batch], seeds[0], 0, len(IMAGENET_POLICY), tf.int32)
    for slot in range(2):
        op_ids = tf.gather(_POLICY_OPS[:, slot], policy)
        applied = tf.random.stateless_uniform([batch], seeds[1 + 2 * slot]) < tf.gather(
            _POLICY_PROBS[:, slot], policy
        )
        op_ids = tf.where(applied, op_ids, OP_NAMES.index("Identity"))
        magnitudes = tf.gather(_POLICY_MAGNITUDES[:, slot], policy)
        magnitudes *= _signs(op_ids, seeds[2 + 2 * slot])
        images = _apply_ops(images, op_ids, magnitudes)
    return images


def rand_augment(images, seed, num_ops=2, level=9, num_bins=31):
    """torchvision's `RandAugment(num_ops, magnitude=level, num_magnitude_bins=num_bins)`.

    Each image draws `num_ops` ops uniformly from RANDAUGMENT_OPS (Identity included),
    all at the fixed magnitude bin `level`, with a random sign where torchvision has one.

    Args:
        images: `[B, H, W, C]` float32 in [0, 255] (C = 3).
        seed: stateless seed, int tensor of shape `[2]`.
        num_ops: ops applied in sequence to each image.
        level: magnitude bin, 0 .. num_bins - 1 (torchvision default: 9 of 31 bins).
        num_bins: number of magnitude bins.

    Returns:
        The augmented batch, same shape, float32 in [0, 255].

    Example:
        >>> out = rand_augment(images, seed=tf.constant([1, 2]))
    """
    table = tf.constant([magnitude(op, level, num_bins) for op in OP_NAMES], tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 2 * num_ops)
    batch = tf.shape(images)[0]
    for i in range(num_ops):
        op_ids = tf.random.stateless_uniform(
            [batch], seeds[2 * i], 0, len(RANDAUGMENT_OPS), tf.int32
        )
        magnitudes = tf.gather(table, op_ids) * _signs(op_ids, seeds[2 * i + 1])
        images = _apply_ops(images, op_ids, magnitudes)
    return images
