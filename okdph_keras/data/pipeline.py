"""Multi-view `tf.data` pipelines: one augmented view of each batch per network."""

import tensorflow as tf


def multi_view_dataset(
    images,
    labels,
    views,
    batch_size,
    shuffle=True,
    seed=None,
    drop_remainder=False,
):
    """Batches of `(views, labels)` where each network sees its own view.

    Augmentation runs on whole batches (parallel `map`, then `prefetch`).

    Args:
        images: array or tensor `[N, H, W, C]` (float, already scaled).
        labels: integer array `[N]`.
        views: a list with one entry per network (M students, then the HWM):
            a callable applied to a float batch `[B, H, W, C]` (a Keras
            preprocessing layer or `keras.Sequential` of them), or None for the
            unchanged batch. Create the layers outside this function.
        batch_size: examples per batch, >= 1.
        shuffle: reshuffle the examples every epoch.
        seed: shuffle seed.
        drop_remainder: drop the last, smaller batch.

    Returns:
        A `tf.data.Dataset` of `(tuple of len(views) batches, labels)`.

    Example:
        >>> flip = keras.layers.RandomFlip("horizontal")
        >>> data = multi_view_dataset(x, y, [flip, flip, None], batch_size=128)
    """
    if not views:
        raise ValueError("multi_view_dataset needs at least one view.")
    for index, view in enumerate(views):
        if view is not None and not callable(view):
            raise ValueError(
                f"views[{index}] must be a callable (e.g. a Keras preprocessing "
                f"layer) or None; got {view!r}."
            )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}.")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels.")

    def make_views(batch, batch_labels):
        batch = tf.cast(batch, tf.float32)
        return tuple(batch if view is None else view(batch) for view in views), batch_labels

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(make_views, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
