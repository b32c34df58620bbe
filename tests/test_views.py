"""Augmentation views and AutoAugment/RandAugment ops against independent numpy references."""

import numpy as np
import pytest
import tensorflow as tf

from okdph_keras.data import autoaugment as aa
from okdph_keras.data.views import (
    DEFAULT_VIEWS,
    NORMALIZATION,
    VIEW_NAMES,
    eval_transform,
    make_view,
    normalize,
)

BATCH = 16


@pytest.fixture
def images(rng):
    """Non-symmetric random uint8 images in [1, 255] (zeros only come from the views)."""
    return rng.integers(1, 256, size=(BATCH, 16, 16, 3)).astype("uint8")


def crop_batch(view, images):
    return tf.stack([view.crop(image) for image in images])


def float_batch(rng, size=16, batch=8):
    return rng.integers(0, 256, size=(batch, size, size, 3)).astype("float32")


def gray(x):
    return x @ np.array([0.299, 0.587, 0.114], "float32")


def blend(degenerate, x, factor):
    return np.clip(degenerate + factor * (x - degenerate), 0, 255)


def run_op(name, x, magnitude):
    return aa.apply_op(name, tf.constant(x), tf.fill([len(x)], float(magnitude))).numpy()


# ---------------------------------------------------------------- every view, both styles
@pytest.mark.parametrize("name", VIEW_NAMES)
def test_cifar_view_shapes_range_and_change(name, images):
    view = make_view(name, "cifar", image_size=16, seed=0)
    crops = crop_batch(view, images)
    out = view.augment(crops).numpy()
    assert out.shape == (BATCH, 16, 16, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255
    if name == "none":
        np.testing.assert_array_equal(out, images.astype("float32"))
    else:
        assert not np.array_equal(crops.numpy(), images)  # padded random crop moved some
        assert not np.array_equal(out, crops.numpy())  # the batched augmentation acted


@pytest.mark.parametrize("name", VIEW_NAMES)
def test_imagenet_view_shapes_range_and_change(name, rng):
    sizes = [(20, 28), (24, 16), (17, 17), (30, 22)] * 2
    sources = [rng.integers(1, 256, size=(h, w, 3)).astype("uint8") for h, w in sizes]
    view = make_view(name, "imagenet", image_size=12, seed=0)
    crops = crop_batch(view, sources)
    out = view.augment(crops).numpy()
    assert out.shape == (len(sources), 12, 12, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255
    centre = np.stack([eval_transform("imagenet", 12)(s).numpy() for s in sources])
    if name == "none":
        np.testing.assert_array_equal(out, centre)
    else:
        assert not np.allclose(crops.numpy(), centre)  # random resized crops
        assert not np.array_equal(out, crops.numpy())


def test_views_work_inside_tf_data(rng):
    sources = [rng.integers(0, 256, size=(18 + i, 20, 3)).astype("uint8") for i in range(6)]
    data = tf.data.Dataset.from_generator(
        lambda: iter(sources), output_signature=tf.TensorSpec([None, None, 3], tf.uint8)
    )
    for name in ("hflip+rot", "cutout", "randaugment", "autoaugment"):
        view = make_view(name, "imagenet", image_size=8, seed=1)
        batches = data.map(view.crop, num_parallel_calls=2).batch(3, drop_remainder=True)
        batches = batches.map(view.augment)
        assert batches.element_spec.shape == (3, 8, 8, 3)  # static shapes survive
        out = np.concatenate(list(batches.as_numpy_iterator()))
        assert out.shape == (6, 8, 8, 3) and out.min() >= 0 and out.max() <= 255


# ---------------------------------------------------------------- individual views
def test_hflip_is_identity_or_mirror_and_both_happen(images):
    view = make_view("hflip", image_size=16, seed=0)
    crops = crop_batch(view, images).numpy()
    out = view.augment(crops).numpy()
    flipped = [np.array_equal(o, c[:, ::-1]) for o, c in zip(out, crops)]
    kept = [np.array_equal(o, c) for o, c in zip(out, crops)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert any(flipped) and any(kept)


def test_cifar_crop_is_a_window_of_the_zero_padded_image(images):
    view = make_view("hflip", image_size=16, seed=3)
    padded = np.pad(images[0], [(4, 4), (4, 4), (0, 0)]).astype("float32")
    for _ in range(5):
        crop = view.crop(images[0]).numpy()
        windows = [padded[i : i + 16, j : j + 16] for i in range(9) for j in range(9)]
        assert any(np.array_equal(crop, w) for w in windows)


def test_cutout_zeroes_one_square_of_half_the_image_side(rng):
    side = 8  # image_size 16 // 2
    x = rng.integers(1, 256, size=(64, 16, 16, 3)).astype("float32")
    view = make_view("cutout", image_size=16, seed=0)
    out = view.augment(x).numpy()
    inside = 0
    for o, original in zip(out, x):
        zero = o == 0
        assert (zero.all(-1) == zero.any(-1)).all()  # all channels together
        rows, cols = np.nonzero(zero[..., 0])
        assert rows.size > 0
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert zero[..., 0].sum() == height * width and height <= side and width <= side
        rest = ~zero
        assert np.array_equal(o[rest], original[rest]) or np.array_equal(
            o[rest], original[:, ::-1][rest]
        )
        inside += height == side and width == side
    assert inside > 5  # some holes fully inside: exactly side x side


def test_hflip_rot_rotates_by_at_most_15_degrees():
    x = np.zeros((32, 32, 32, 3), "float32")
    x[:, 15:17, :] = 255.0  # a horizontal bar through the centre
    out = make_view("hflip+rot", image_size=32, seed=0).augment(x).numpy()[..., 0]
    slopes = []
    for image in out:
        ys, xs = np.nonzero(image > 0)
        slopes.append(np.polyfit(xs - 15.5, ys - 15.5, 1)[0])
    angles = np.degrees(np.arctan(np.abs(slopes)))
    assert angles.max() <= 16 and angles.max() > 5


def test_eval_transform_imagenet_resizes_and_centre_crops():
    height, width = 300, 400
    ys, xs = np.mgrid[:height, :width].astype("float64")
    image = np.stack([xs * 255 / (width - 1), ys * 255 / (height - 1), np.zeros_like(xs)], -1)
    out = eval_transform("imagenet", 224)(np.round(image).astype("uint8")).numpy()
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    # Shorter side to 256 (300x400 -> 256x341), then a centre crop at (16, 58).
    scale_y, scale_x = height / 256, width / 341
    expected_x = ((58 + np.arange(224) + 0.5) * scale_x - 0.5) * 255 / (width - 1)
    expected_y = ((16 + np.arange(224) + 0.5) * scale_y - 0.5) * 255 / (height - 1)
    np.testing.assert_allclose(out[100, :, 0], expected_x, atol=1.0)
    np.testing.assert_allclose(out[:, 100, 1], expected_y, atol=1.0)


def test_eval_transform_cifar_only_converts_images_of_the_right_size(images):
    size = images.shape[1]
    out = eval_transform("cifar", size)(images[0]).numpy()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, images[0])
    # Images of another size (a folder of photos in CIFAR style) are resized.
    constant = np.full((3 * size, 2 * size, 3), 77, np.uint8)
    resized = eval_transform("cifar", size)(constant).numpy()
    assert resized.shape == (size, size, 3)
    np.testing.assert_allclose(resized, 77.0, atol=1e-3)


def test_normalize_matches_numpy(rng):
    x = float_batch(rng)
    mean, std = NORMALIZATION["cifar100"]
    np.testing.assert_allclose(
        normalize(x, mean, std).numpy(), (x / 255 - np.array(mean)) / np.array(std), atol=1e-5
    )


def test_default_views_are_known():
    assert set(DEFAULT_VIEWS) == set(NORMALIZATION) == {"cifar10", "cifar100", "imagenet"}
    assert all(len(v) == 3 and set(v) <= set(VIEW_NAMES) for v in DEFAULT_VIEWS.values())


def test_unknown_names_and_styles_raise():
    with pytest.raises(ValueError, match="randaugment"):
        make_view("mixup")
    with pytest.raises(ValueError, match="imagenet"):
        make_view("hflip", style="svhn")
    with pytest.raises(ValueError, match="cifar"):
        eval_transform("svhn")


def test_seeding(images):
    first, second = (make_view("autoaugment", image_size=16, seed=7) for _ in range(2))
    crops = crop_batch(first, images)
    np.testing.assert_array_equal(crops, crop_batch(second, images))
    np.testing.assert_array_equal(first.augment(crops), second.augment(crops))
    assert not np.array_equal(first.augment(crops), first.augment(crops))  # stream moves on
    seed = tf.constant([3, 4])
    np.testing.assert_array_equal(first.augment(crops, seed), second.augment(crops, seed))
    other = make_view("randaugment", image_size=16, seed=7)
    assert not np.array_equal(other.augment(crops, seed), first.augment(crops, seed))


# ---------------------------------------------------------------- AutoAugment ops
def test_imagenet_policy_table():
    assert len(aa.IMAGENET_POLICY) == 25
    for sub_policy in aa.IMAGENET_POLICY:
        assert len(sub_policy) == 2
        for op, probability, level in sub_policy:
            assert op in aa.OP_NAMES and op != "Identity" and 0 <= probability <= 1
            has_magnitude = op not in ("AutoContrast", "Equalize", "Invert")
            assert (level in range(10)) if has_magnitude else level is None


def test_magnitude_bins_follow_torchvision():
    assert [aa.magnitude("Posterize", i, 10) for i in range(10)] == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    np.testing.assert_allclose(
        [aa.magnitude("Solarize", i, 10) for i in range(10)], np.linspace(255, 0, 10)
    )
    # RandAugment default, bin 9 of 31.
    assert aa.magnitude("Rotate", 9, 31) == pytest.approx(9.0)
    assert aa.magnitude("ShearX", 9, 31) == pytest.approx(0.09)
    assert aa.magnitude("Color", 9, 31) == pytest.approx(0.27)
    assert aa.magnitude("Posterize", 9, 31) == 7
    assert aa.magnitude("Solarize", 9, 31) == pytest.approx(178.5)


def test_pixel_ops_match_closed_forms(rng):
    x = float_batch(rng)
    np.testing.assert_array_equal(run_op("Invert", x, 0), 255 - x)
    np.testing.assert_array_equal(run_op("Solarize", x, 113.3), np.where(x >= 113.3, 255 - x, x))
    np.testing.assert_array_equal(
        run_op("Posterize", x, 5), (x.astype("uint8") & 0b11111000).astype("float32")
    )
    for m in (0.6, -0.8):
        np.testing.assert_allclose(run_op("Brightness", x, m), blend(0, x, 1 + m), atol=1e-3)
        np.testing.assert_allclose(
            run_op("Color", x, m), blend(gray(x)[..., None], x, 1 + m), atol=1e-3
        )
        mean = gray(x).mean(axis=(1, 2))[:, None, None, None]
        np.testing.assert_allclose(run_op("Contrast", x, m), blend(mean, x, 1 + m), atol=1e-3)


def test_sharpness_blends_with_pils_smooth_filter(rng):
    x = float_batch(rng)
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], "float32") / 13
    smooth = x.copy()
    for i in range(1, 15):
        for j in range(1, 15):
            smooth[:, i, j] = np.einsum("bhwc,hw->bc", x[:, i - 1 : i + 2, j - 1 : j + 2], kernel)
    np.testing.assert_allclose(run_op("Sharpness", x, 0.7), blend(smooth, x, 1.7), atol=1e-3)


def test_autocontrast_and_equalize_match_pil_algorithms(rng):
    x = np.floor(float_batch(rng) * 0.4 + 60)  # low contrast, integer values
    x[0, ..., 1] = 7.0  # a constant channel is left alone
    low, high = x.min(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True)
    expected = np.where(high > low, (x - low) * 255 / np.maximum(high - low, 1), x)
    np.testing.assert_allclose(run_op("AutoContrast", x, 0), expected, atol=1e-3)

    def equalize_channel(channel):  # ImageOps.equalize
        histogram = np.bincount(channel.astype(int).ravel(), minlength=256)
        nonzero = histogram[histogram > 0]
        step = (nonzero.sum() - nonzero[-1]) // 255
        if step == 0:
            return channel
        lut = (np.concatenate([[0], np.cumsum(histogram)[:-1]]) + step // 2) // step
        return np.minimum(lut, 255)[channel.astype(int)]

    expected = np.stack(
        [np.stack([equalize_channel(image[..., c]) for c in range(3)], -1) for image in x]
    )
    np.testing.assert_array_equal(run_op("Equalize", x, 0), expected)


def test_geometric_ops_match_numpy(rng):
    x = float_batch(rng)
    np.testing.assert_array_equal(run_op("Rotate", x, 90), np.rot90(x, 1, axes=(1, 2)))
    shifted = np.zeros_like(x)
    shifted[:, :, 3:] = x[:, :, :-3]  # int(0.2 * 16) = 3 pixels right
    np.testing.assert_array_equal(run_op("TranslateX", x, 0.2), shifted)
    shifted = np.zeros_like(x)
    shifted[:, :-3] = x[:, 3:]  # 3 pixels up
    np.testing.assert_array_equal(run_op("TranslateY", x, -0.2), shifted)
    # ShearX about the top-left corner: output (y, x) reads input x' = x + m y (PIL affine).
    m, sheared = 0.27, np.zeros_like(x)
    for row in range(16):
        for col in range(16):
            source = int(np.floor(col + 0.5 + m * (row + 0.5)))
            if source < 16:
                sheared[:, row, col] = x[:, row, source]
    np.testing.assert_array_equal(run_op("ShearX", x, m), sheared)


@pytest.mark.parametrize("augment", [aa.auto_augment, aa.rand_augment])
def test_policies_draw_per_image_and_stay_in_range(augment, rng):
    x = float_batch(rng, batch=32)
    out = augment(tf.constant(x), tf.constant([1, 2])).numpy()
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255
    assert np.any(out != x, axis=(1, 2, 3)).mean() > 0.5
    np.testing.assert_array_equal(out, augment(tf.constant(x), tf.constant([1, 2])).numpy())


# ------------------------------------------------------------ empty batches and groups
@pytest.fixture
def ops_refusing_empty_batches(monkeypatch):
    """Every op fails if it is run on an empty batch (CPU kernels disagree there)."""

    def refusing(op):
        def checked(images, magnitudes):
            size = tf.debugging.assert_positive(tf.shape(images)[0], message="op ran on 0 images")
            with tf.control_dependencies([size]):
                return op(tf.identity(images), magnitudes)

        return checked

    monkeypatch.setattr(aa, "_OPS", {name: refusing(op) for name, op in aa._OPS.items()})
    # A fresh trace, so that the patched ops are the ones in the graph.
    monkeypatch.setattr(
        aa, "_grouped_ops", tf.function(aa._grouped_ops.python_function, autograph=False)
    )


@pytest.mark.parametrize("augment", [aa.auto_augment, aa.rand_augment])
def test_no_op_runs_on_an_empty_group(augment, rng, ops_refusing_empty_batches):
    # Two images draw at most two of the ops: every other op's group is empty.
    x = float_batch(rng, batch=2)
    for seed in range(4):
        out = augment(tf.constant(x), tf.constant([seed, 7])).numpy()
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255


@pytest.mark.parametrize("name", VIEW_NAMES)
def test_every_view_passes_an_empty_batch_through_unrun(name, ops_refusing_empty_batches):
    empty = tf.zeros([0, 16, 16, 3])
    view = make_view(name, image_size=16, seed=0)
    assert tuple(view.augment(empty, seed=tf.constant([1, 2])).shape) == (0, 16, 16, 3)
    traced = tf.function(lambda x: view.augment(x, seed=[1, 2]))
    assert tuple(traced(empty).shape) == (0, 16, 16, 3)
