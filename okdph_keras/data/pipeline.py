"""Multi-view `tf.data` pipelines: one augmented view of each batch per network.

A view is applied in two stages: `crop` on each example (a random crop or
random resized crop, before batching, so images may differ in size) and
`augment` on whole batches (flips, RandAugment, AutoAugment, ...). Then
every view is normalised, and optional Gaussian noise is added.

Shuffling is a uniform permutation of the whole split every epoch, at any size:
the indices are shuffled, then the encoded items (file paths, or in-memory
arrays) are gathered and only then decoded, so the shuffle holds 8 bytes per
example and decoded images are bounded by the map's parallelism, the batch
and a bounded prefetch. TFDS records cannot be indexed: a TFDS split is
shuffled at file level with a seed per epoch, then in a buffer of encoded
records bounded in bytes (`tfds_source.RECORD_BUFFER_BYTES`; uniform only when it
holds the whole split). Any other stream (a `Source` whose dataset was
replaced) is shuffled in a buffer of `MAX_SHUFFLE_BUFFER` encoded examples.

Every random draw (shuffle, crops, augmentations, noise) is seeded by
`(seed, epoch, position)`, so the batches do not depend on thread timing, and
with `epochs` given a run resumed at epoch k sees the batches an uninterrupted
run would have seen.
"""

import numpy as np
import tensorflow as tf

from okdph_keras.data.source import Source, parts_of
from okdph_keras.data.views import normalize
from okdph_keras.validation import check_integer, check_number, fail

AUTOTUNE = tf.data.AUTOTUNE
MAX_SHUFFLE_BUFFER = 50_000  # examples of a stream that is neither arrays nor TFDS files
PREFETCH_BATCHES = 2
_GRAPH_SEED = 87654321


class _BatchedCallable:
    """Adapts a plain callable on float batches (a Keras layer, say) to a view."""

    def __init__(self, function):
        self.function = function

    def crop(self, image, seed=None):
        return tf.cast(image, tf.float32)

    def augment(self, images, seed=None):
        return images if self.function is None else self.function(images)


def _as_view(index, view):
    if hasattr(view, "crop") and hasattr(view, "augment"):
        return view
    if view is None or callable(view):
        return _BatchedCallable(view)
    fail(
        f"views[{index}]",
        view,
        "an okdph_keras.data.views.View, a callable on float batches (such as a Keras "
        "preprocessing layer) or None",
    )


def _examples(data):
    """(unbatched dataset, number of examples, epoch builder) of a Source or (images, labels).

    The epoch builder maps `(shuffle, shuffle_seed)` to the decoded examples of one
    epoch, shuffled before decoding (see the module docstring).
    """
    if isinstance(data, Source):
        # A known length lets Keras size epochs, and checks the source's count.
        def count(dataset):
            return dataset.apply(tf.data.experimental.assert_cardinality(data.num_examples))

        parts = parts_of(data)
        if isinstance(parts.encoded, tuple):
            return (
                count(data.dataset),
                data.num_examples,
                _indexed_epochs(parts.encoded, parts.decode, count),
            )

        def stream_epoch(shuffle, shuffle_seed):
            encoded = parts.encoded
            if shuffle and parts.records is not None:  # TFDS files
                encoded = parts.records.shuffled(shuffle_seed)
            elif shuffle:
                encoded = encoded.shuffle(
                    max(1, min(data.num_examples, MAX_SHUFFLE_BUFFER)),
                    seed=shuffle_seed,
                    reshuffle_each_iteration=False,
                )
            return count(parts.decode(encoded))

        return count(data.dataset), data.num_examples, stream_epoch
    images, labels = data
    shape = tuple(getattr(images, "shape", None) or np.shape(images))
    if len(shape) != 4:
        raise ValueError(f"images must be an array [N, H, W, C]; got shape {shape}.")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels.")
    examples = tf.data.Dataset.from_tensor_slices((images, labels))
    return (
        examples,
        len(images),
        _indexed_epochs((images, labels), lambda pairs: pairs, lambda dataset: dataset),
    )


def _indexed_epochs(arrays, decode, count):
    """Epoch builder over indexable encoded `arrays`: shuffle indices, gather, then decode."""
    num_examples = len(arrays[1])
    tensors = tuple(tf.constant(np.asarray(array)) for array in arrays)

    def epoch(shuffle, shuffle_seed):
        order = tf.data.Dataset.range(num_examples)
        if shuffle:  # a uniform permutation of all indices: 8 bytes per example
            order = order.shuffle(
                max(1, num_examples), seed=shuffle_seed, reshuffle_each_iteration=False
            )
        pairs = order.map(lambda index: tuple(tf.gather(t, index) for t in tensors))
        return count(decode(pairs))

    return epoch


def _check_finishing(examples, *, normalization, noise_mean, noise_std):
    """Fails unless `normalization` fits the images' channels and the noise is sane."""
    check_number("noise_mean", noise_mean)
    check_number("noise_std", noise_std, low=0)
    if normalization is None:
        return
    try:
        mean, std = (np.asarray(values, np.float64) for values in normalization)
    except (TypeError, ValueError):
        mean = std = None
    if mean is None or mean.ndim != 1 or mean.shape != std.shape or not len(mean):
        fail("normalization", normalization, "(mean, std) with one value per channel each")
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        fail("normalization", normalization, "finite values, every std > 0")
    channels = examples.element_spec[0].shape[-1]
    if channels is not None and len(mean) not in (1, channels):
        fail(
            "normalization",
            normalization,
            f"(mean, std) of {channels} values each (or 1, for all): the images have "
            f"{channels} channels",
        )


def _stateless_seed(seed, stream, epoch, index):
    """A stateless seed `[2]` for one random stream at one position of one epoch."""
    return tf.stack(
        [tf.cast(seed, tf.int64) * 1009 + stream, tf.cast(epoch, tf.int64) * 1_000_000_007 + index]
    )


def _finish(images, *, normalization, noise_mean, noise_std, seed):
    """Normalises a float batch in [0, 255] and adds seeded Gaussian noise."""
    if normalization is not None:
        images = normalize(images, *normalization)
    if noise_std:
        images += noise_mean + noise_std * tf.random.stateless_normal(tf.shape(images), seed=seed)
    return images


def multi_view_dataset(
    data,
    views,
    batch_size,
    *,
    shuffle=True,
    seed=0,
    drop_remainder=False,
    normalization=None,
    noise_mean=0.0,
    noise_std=0.0,
    epochs=None,
    initial_epoch=0,
):
    """Batches of `(views, labels)` where each network sees its own view.

    Args:
        data: a `Source`, or a pair `(images [N, H, W, C], labels [N])`.
        views: one entry per network (M students, then the HWM): a `View`
            from `okdph_keras.data.views.make_view`, a callable applied to
            float batches (e.g. a Keras preprocessing layer, created once
            outside this function), or None for the unchanged images.
        batch_size: examples per batch (the global batch under a strategy).
        shuffle: shuffle the examples every epoch.
        seed: integer seed of the shuffling, the views' random draws and the
            noise.
        drop_remainder: drop each epoch's last, smaller batch.
        normalization: optional `(mean, std)` per channel for images scaled
            to [0, 1]; views produce values in [0, 255]. None leaves the
            values as the views return them.
        noise_mean, noise_std: Gaussian noise added after normalisation.
        epochs: if given, the dataset holds epochs `initial_epoch` to
            `epochs - 1` back to back, each seeded by `(seed, epoch)`; pass
            `steps_per_epoch` to `fit`. If None, one epoch, shuffled and
            augmented afresh (and reproducibly from `seed`) each time it is
            iterated.
        initial_epoch: the first epoch, when resuming.

    Returns:
        A `tf.data.Dataset` of `(tuple of len(views) float batches, labels)`.

    Example:
        >>> flip = keras.layers.RandomFlip("horizontal")
        >>> data = multi_view_dataset((x, y), [flip, flip, None], batch_size=128)
    """
    if not views:
        fail("views", views, "a list of at least one view")
    views = [_as_view(index, view) for index, view in enumerate(views)]
    check_integer("batch_size", batch_size, low=1)
    examples, _, epoch_examples = _examples(data)
    _check_finishing(
        examples, normalization=normalization, noise_mean=noise_mean, noise_std=noise_std
    )

    num_views = len(views)

    def crop_all(epoch, index, example):
        image, label = example
        crops = tuple(
            view.crop(image, seed=_stateless_seed(seed, k, epoch, index))
            for k, view in enumerate(views)
        )
        return crops, label

    def augment_all(epoch, index, batch):
        crops, labels = batch
        outputs = tuple(
            _finish(
                view.augment(crop, seed=_stateless_seed(seed, num_views + k, epoch, index)),
                normalization=normalization,
                noise_mean=noise_mean,
                noise_std=noise_std,
                seed=_stateless_seed(seed, 2 * num_views + k, epoch, index),
            )
            for k, (view, crop) in enumerate(zip(views, crops))
        )
        return outputs, labels

    def one_epoch(epoch):
        # Traced inside flat_map: fixing this function graph's seed makes the order
        # depend on (seed, epoch) alone, whatever TF's global seed (a global seed
        # of 0 would even make a tensor op seed fail in TF's seed handling).
        tf.compat.v1.get_default_graph().seed = _GRAPH_SEED
        dataset = epoch_examples(shuffle, tf.cast(seed, tf.int64) * 7919 + epoch)
        dataset = dataset.enumerate().map(
            lambda index, example: crop_all(epoch, index, example),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder).enumerate()
        return dataset.map(
            lambda index, batch: augment_all(epoch, index, batch),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )

    if epochs is None:  # a fresh, seeded epoch identity each time it is iterated
        epoch_ids = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    else:
        epoch_ids = tf.data.Dataset.range(initial_epoch, epochs)
    dataset = epoch_ids.flat_map(one_epoch)
    # TF 2.21's map-and-batch fusion fails inside flat_map ("can't delete
    # node(s) with retained fanouts").
    options = tf.data.Options()
    options.experimental_optimization.map_and_batch_fusion = False
    return dataset.with_options(options).prefetch(PREFETCH_BATCHES)


def eval_dataset(
    data,
    batch_size,
    *,
    transform=None,
    normalization=None,
    noise_mean=0.0,
    noise_std=0.0,
    seed=0,
):
    """Batches of `(images, labels)` for evaluation, in the data's order.

    Args:
        data: a `Source`, or a pair `(images, labels)`.
        batch_size: examples per batch.
        transform: optional callable on one example returning a float image
            in [0, 255] (`okdph_keras.data.views.eval_transform`); None casts
            to float.
        normalization, noise_mean, noise_std: as in `multi_view_dataset`;
            the noise is seeded by `seed`, the same on every pass.

    Returns:
        A `tf.data.Dataset` of `(float images, labels)`.
    """
    check_integer("batch_size", batch_size, low=1)
    examples, _, _ = _examples(data)
    _check_finishing(
        examples, normalization=normalization, noise_mean=noise_mean, noise_std=noise_std
    )
    transform = transform or (lambda image: tf.cast(image, tf.float32))
    dataset = examples.map(
        lambda image, label: (transform(image), label), num_parallel_calls=AUTOTUNE
    )
    dataset = dataset.batch(batch_size).enumerate()
    dataset = dataset.map(
        lambda index, batch: (
            _finish(
                batch[0],
                normalization=normalization,
                noise_mean=noise_mean,
                noise_std=noise_std,
                seed=_stateless_seed(seed, 0, 0, index),
            ),
            batch[1],
        ),
        num_parallel_calls=AUTOTUNE,
    )
    return dataset.prefetch(AUTOTUNE)
