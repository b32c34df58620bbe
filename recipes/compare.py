"""Compare training methods on one dataset, several seeds each, in one command.

    python -m recipes.compare --dataset=cifar10 --methods=independent,dml,kdcl,okdph \
        --seeds=3 --output_dir=comparisons/cifar10
    python -m recipes.compare --dataset=/data/flowers --methods=independent,okdph --smoke
    python -m recipes.compare --dataset=cifar10 --methods=okdph,okdph_no_fusion,okdph_no_hwm_loss
    python -m recipes.compare --dataset=cifar10 --methods=paper --epochs=30

--dataset is a TFDS name (cifar10, cifar100, imagenet2012) or the root of a
class-per-folder image tree. Every other recipe flag (--model, --epochs,
--students, --noise_std, --data_fraction, ...) applies to every run. Methods:
okdph_keras.methods.names(). Finished runs are reused on a rerun.
"""

import os

from absl import app, flags

from okdph_keras import compare, distribute, methods
from recipes import common

FLAGS = flags.FLAGS
# dataset -> (views kind, model, image size, style, normalization); folders: the last entry.
DATASET_DEFAULTS = {
    "cifar10": ("cifar10", "resnet32", 32, "cifar", "cifar10"),
    "cifar100": ("cifar100", "resnet32", 32, "cifar", "cifar100"),
    "imagenet2012": ("imagenet", "resnet18", 224, "imagenet", "imagenet"),
    "image_folder": (None, "resnet18", 224, "imagenet", "imagenet"),
}


def main():
    common.define_flags(model=None, image_size=None, style=None, normalization=None)
    flags.DEFINE_string("dataset", None, "TFDS name or image-folder root.", required=True)
    flags.DEFINE_list(
        "methods",
        ["independent", "dml", "kdcl", "okdph"],
        f"Of {methods.names()}, or `paper` for the paper's comparison {methods.PAPER}.",
    )
    flags.DEFINE_integer("seeds", 3, "Seeds per method (--seed, --seed+1, ...).")
    flags.DEFINE_float(
        "flatness_radius", 0.05, "Relative radius of the sharpness figure (0: skip)."
    )
    FLAGS.set_default("output_dir", "comparisons")

    def run(argv):
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        dataset, data_dir = FLAGS.dataset, FLAGS.data_dir
        if os.path.isdir(dataset):
            dataset, data_dir = "image_folder", dataset
        if dataset not in DATASET_DEFAULTS and FLAGS.model is None:
            raise app.UsageError(
                f"Pass --model for dataset {dataset!r} (defaults exist for {sorted(DATASET_DEFAULTS)})."
            )
        views_kind, *defaults = DATASET_DEFAULTS.get(dataset, DATASET_DEFAULTS["image_folder"])
        for name, value in zip(("model", "image_size", "style", "normalization"), defaults):
            if getattr(FLAGS, name) is None:
                setattr(FLAGS, name, value)
        FLAGS.data_dir = data_dir
        chosen = list(methods.PAPER) if FLAGS.methods == ["paper"] else FLAGS.methods
        try:
            for name in chosen:
                methods.get(name)  # fails naming the unknown method and the known ones
            if FLAGS.seeds < 1:
                raise ValueError(f"--seeds={FLAGS.seeds} is not allowed; it must be >= 1.")
            strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.cpu_replicas)
            base = common.config_from_flags(dataset, views_kind)
        except ValueError as error:
            raise app.UsageError(str(error)) from error
        compare.compare(
            base,
            chosen,
            FLAGS.seeds,
            FLAGS.output_dir,
            flatness_radius=FLAGS.flatness_radius,
            strategy=strategy,
        )

    app.run(run)


if __name__ == "__main__":
    main()
