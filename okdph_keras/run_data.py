"""A run's data: its sources (training, validation, test) and their `tf.data` pipelines."""

import dataclasses
import os
from typing import NamedTuple

from okdph_keras import methods
from okdph_keras.data import sources
from okdph_keras.data import views as views_lib
from okdph_keras.data.pipeline import eval_dataset, multi_view_dataset

SMOKE_EXAMPLES = {"train": 64, "validation": 32, "test": 32}


class RunSources(NamedTuple):
    """A run's data: training, validation (None without a held-out split) and test."""

    train: sources.Source
    validation: sources.Source | None
    test: sources.Source


def load_sources(config):
    """The run's `RunSources`: training, validation and test.

    The validation split is `config.validation_fraction` of every class of the
    training split, held out by a seeded permutation (`sources.split_per_class`);
    `data_fraction` then limits what remains. A `data_dir` holding a `train/`
    folder is read as a class-per-folder tree whatever the dataset's name, so
    ImageNet's own train/ and val/ folders work. Smoke runs take a tiny slice.
    """
    dataset = config.dataset
    if config.data_dir and os.path.isdir(os.path.join(config.data_dir, "train")):
        dataset = "image_folder"
    train = sources.load_source(dataset, "train", data_dir=config.data_dir)
    test = sources.load_source(dataset, "test", data_dir=config.data_dir)
    validation = None
    if config.validation_fraction > 0:
        validation, train = sources.split_per_class(
            train, config.validation_fraction, seed=config.seed
        )
        if train is None:
            raise ValueError(
                f"validation_fraction={config.validation_fraction} holds out every training "
                f"example of {dataset} (each class keeps at least one for validation); "
                "lower it, or pass 0 to train on the whole training split."
            )
    if config.data_fraction < 1.0:
        train = sources.limit_per_class(train, config.data_fraction, seed=config.seed)
    if config.smoke:
        train, test = _take(train, SMOKE_EXAMPLES["train"]), _take(test, SMOKE_EXAMPLES["test"])
        validation = validation and _take(validation, SMOKE_EXAMPLES["validation"])
    return RunSources(train, validation, test)


def _take(source, count):
    return dataclasses.replace(
        source, dataset=source.dataset.take(count), num_examples=min(count, source.num_examples)
    )


def make_datasets(config, data, initial_epoch=0, replicas=1):
    """(multi-view training dataset from `initial_epoch` on, validation, test).

    Validation is None when `data.validation` is. With several replicas, an
    evaluation split smaller than one batch is batched by a multiple of the
    replicas, because Keras cannot start `fit`/`evaluate` on a first batch
    that does not split evenly; a training split that small is refused.
    """
    if replicas > 1 and data.train.num_examples < config.batch_size:
        raise ValueError(
            f"batch_size={config.batch_size} is larger than the {data.train.num_examples} training "
            f"examples: under {replicas} replicas the first batch must be full. Lower --batch_size."
        )
    train = _training_batches(config, data, initial_epoch)
    noise = dict(noise_mean=config.noise_mean, noise_std=config.noise_std)

    def evaluation(source):
        batch_size = config.batch_size
        if source and source.num_examples < batch_size:
            batch_size = max(replicas, source.num_examples // replicas * replicas)
        return source and eval_dataset(
            source,
            batch_size,
            transform=views_lib.eval_transform(config.style, config.image_size),
            normalization=config.normalization,
            seed=config.seed,
            **noise,
        )

    return train, evaluation(data.validation), evaluation(data.test)


def _training_batches(config, data, initial_epoch):
    """The multi-view training batches of epochs `initial_epoch` to `config.epochs - 1`."""
    views = [
        views_lib.make_view(name, config.style, config.image_size, seed=config.seed + index)
        for index, name in enumerate(config.views)
    ]
    return multi_view_dataset(
        data.train,
        views,
        config.batch_size,
        seed=config.seed,
        normalization=config.normalization,
        noise_mean=config.noise_mean,
        noise_std=config.noise_std,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
    )


def batchnorm_batches(config, data, steps_per_epoch):
    """The last epoch's training batches, on which SWA and EMA recompute BatchNorm; else None.

    The same batches however often the run was interrupted and resumed, so a
    resumed run ends with the statistics an uninterrupted one does.
    """
    if not methods.get(config.method).averages_weights:
        return None
    return _training_batches(config, data, config.epochs - 1).take(steps_per_epoch)
