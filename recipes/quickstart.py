"""OKDPH quickstart on scikit-learn's digits (1797 real 8x8 images, offline).

Trains two OKDPH students (paper defaults: omega = beta = 0.8, tau = 4, mean
hybridization, Fusion gamma = 0.5 every epoch) and, beside them, one
independent student with the same architecture, optimizer, schedule, epochs,
batches, coupled weight decay and augmentation as OKDPH's student 0, so only
the interaction differs. Prints the test accuracy of every network, picks the
best OKDPH student by validation accuracy, and saves it with `results.json`.

Run from the repository root:

    python -m recipes.quickstart                  # about a minute on 2 CPU cores
    python -m recipes.quickstart --epochs=60 --seed=1 --output_dir=/tmp/qs
"""

import dataclasses
import os
import time

import keras
import numpy as np
from absl import app, flags
from sklearn import datasets, model_selection

import okdph_keras
from okdph_keras import checkpointing

FLAGS = flags.FLAGS
NUM_CLASSES = 10
INPUT_SHAPE = (8, 8, 1)


def define_flags():
    # Defined from main only, so that importing this module (the tests import
    # `load_splits`) does not claim flag names in the importer's process.
    flags.DEFINE_integer("epochs", 20, "Training epochs.")
    flags.DEFINE_integer("batch_size", 64, "Examples per batch.")
    flags.DEFINE_float("learning_rate", 0.05, "Peak SGD learning rate (cosine decay to 0).")
    flags.DEFINE_integer(
        "seed", 42, "Seed of the split, initialisation, augmentation and shuffling."
    )
    flags.DEFINE_string(
        "output_dir", "saved_models/quickstart", "Where the best student and results.json go."
    )


@dataclasses.dataclass(frozen=True)
class Config:
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    output_dir: str
    num_students: int = 2
    weight_decay: float = 5e-4
    momentum: float = 0.9
    fusion_gamma: float = 0.5


# ------------------------------------------------------------------- data
def load_splits(seed):
    """Digits scaled to [0, 1], shape [N, 8, 8, 1], split 70/10/20 stratified.

    Returns:
        `{"train": (x, y), "validation": (x, y), "test": (x, y)}`, float32 images
        and int32 labels; the same for the same seed.
    """
    digits = datasets.load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    x_rest, x_test, y_rest, y_test = model_selection.train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=seed
    )
    x_train, x_val, y_train, y_val = model_selection.train_test_split(
        x_rest, y_rest, test_size=0.125, stratify=y_rest, random_state=seed
    )
    return {"train": (x_train, y_train), "validation": (x_val, y_val), "test": (x_test, y_test)}


def make_views(seed):
    """Three mild augmentations for 8x8 digits (no flips): students, then the HWM."""
    shift = dict(height_factor=0.125, width_factor=0.125, fill_mode="constant")  # +-1 pixel

    def pipeline(name, *layers):
        return keras.Sequential(list(layers), name=name)

    return [
        pipeline("shift", keras.layers.RandomTranslation(**shift, seed=seed)),
        pipeline(
            "rotate_shift",
            keras.layers.RandomRotation(0.03, fill_mode="constant", seed=seed + 1),  # +-11 deg
            keras.layers.RandomTranslation(**shift, seed=seed + 2),
        ),
        pipeline(
            "zoom_shift",
            keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 3),
            keras.layers.RandomTranslation(**shift, seed=seed + 4),
        ),
    ]


# ----------------------------------------------------------------- models
def build_student():
    return okdph_keras.models.small_cnn(INPUT_SHAPE, NUM_CLASSES)


def make_optimizer(config, steps_per_epoch):
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=config.epochs * steps_per_epoch
    )
    return keras.optimizers.SGD(schedule, momentum=config.momentum)


class CoupledWeightDecay(keras.Model):
    """Wraps a classifier; adds `wd * 0.5 * ||theta||^2` over all its trainable
    variables to the training loss: torch's coupled `SGD(weight_decay=wd)`, as
    OKDPH applies it to each of its students."""

    def __init__(self, network, weight_decay, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.weight_decay = weight_decay

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        if training and self.weight_decay:
            loss += self.weight_decay * okdph_keras.losses.l2_penalty(self.trainable_variables)
        return loss


# ----------------------------------------------------------------- running
def train_okdph(config, splits, views, steps_per_epoch):
    model = okdph_keras.OKDPH(
        build_student,
        num_students=config.num_students,
        weight_decay=config.weight_decay,
        seed=config.seed,
    )
    model.compile(optimizer=make_optimizer(config, steps_per_epoch))
    data = okdph_keras.multi_view_dataset(
        splits["train"], views, config.batch_size, seed=config.seed
    )
    model.fit(
        data,
        epochs=config.epochs,
        validation_data=splits["validation"],
        callbacks=[okdph_keras.Fusion(gamma=config.fusion_gamma, every=1, unit="epoch")],
        shuffle=False,  # The dataset reshuffles itself every epoch.
        verbose=2,
    )
    return model


def train_independent(config, splits, view, steps_per_epoch):
    model = CoupledWeightDecay(build_student(), config.weight_decay)
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    # The same pipeline and shuffle seed as OKDPH, with student 0's view only.
    data = okdph_keras.multi_view_dataset(
        splits["train"], [view], config.batch_size, seed=config.seed
    ).map(lambda views, labels: (views[0], labels))
    model.fit(
        data,
        epochs=config.epochs,
        validation_data=splits["validation"],
        shuffle=False,  # The dataset reshuffles itself every epoch.
        verbose=2,
    )
    return model


def accuracy(model, images, labels):
    logits = keras.ops.convert_to_numpy(model(images, training=False))
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def run(config):
    start = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    splits = load_splits(config.seed)
    views = make_views(config.seed)
    steps_per_epoch = -(-len(splits["train"][1]) // config.batch_size)
    print(
        f"digits: {len(splits['train'][1])} train, {len(splits['validation'][1])} "
        f"validation, {len(splits['test'][1])} test; {config.epochs} epochs of "
        f"{steps_per_epoch} batches",
        flush=True,
    )

    print("== Independent student", flush=True)
    independent = train_independent(config, splits, views[0], steps_per_epoch)
    independent_seconds = time.perf_counter() - start

    print(f"== OKDPH, {config.num_students} students", flush=True)
    okdph = train_okdph(config, splits, views, steps_per_epoch)
    okdph_seconds = time.perf_counter() - start - independent_seconds

    x_val, y_val = splits["validation"]
    x_test, y_test = splits["test"]
    okdph_test = okdph.evaluate(x_test, y_test, batch_size=256, verbose=0, return_dict=True)
    test_accuracy = {"independent": accuracy(independent.network, x_test, y_test)}
    for m in range(config.num_students):
        test_accuracy[f"okdph_student_{m}"] = float(okdph_test[f"student_{m}_accuracy"])
    test_accuracy["okdph_hwm"] = accuracy(okdph.hybrid_model(), x_test, y_test)
    test_accuracy["okdph_ensemble"] = float(okdph_test["ensemble_accuracy"])
    validation_accuracy = [accuracy(s, x_val, y_val) for s in okdph.students]
    best = int(np.argmax(validation_accuracy))

    os.makedirs(config.output_dir, exist_ok=True)
    checkpointing.write_atomically(
        os.path.join(config.output_dir, "best_student.keras"), okdph.students[best].save
    )
    wall_seconds = time.perf_counter() - start
    results = {
        "test_accuracy": test_accuracy,
        "okdph_validation_accuracy": validation_accuracy,
        "best_student": best,
        "best_student_test_accuracy": test_accuracy[f"okdph_student_{best}"],
        "config": dataclasses.asdict(config),
        "seconds": {
            "independent": independent_seconds,
            "okdph": okdph_seconds,
            "total": wall_seconds,
        },
    }

    checkpointing.write_json_atomically(os.path.join(config.output_dir, "results.json"), results)

    print(f"\n{'network':<20}{'test accuracy':>14}")
    for name, value in test_accuracy.items():
        print(f"{name:<20}{value:>14.4f}")
    print(
        f"\nbest OKDPH student by validation accuracy: {best} "
        f"(validation {validation_accuracy[best]:.4f}); saved to {config.output_dir}"
    )
    print(
        f"wall time {wall_seconds:.1f} s (independent {independent_seconds:.1f} s, "
        f"OKDPH {okdph_seconds:.1f} s)"
    )
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    run(
        Config(
            epochs=FLAGS.epochs,
            batch_size=FLAGS.batch_size,
            learning_rate=FLAGS.learning_rate,
            seed=FLAGS.seed,
            output_dir=FLAGS.output_dir,
        )
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
