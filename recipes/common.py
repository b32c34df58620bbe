"""Flags shared by every dataset recipe, and the flags -> Config -> run glue."""

from absl import app, flags, logging

from okdph_keras import config as config_lib
from okdph_keras import distribute, methods, train
from okdph_keras.data.views import NORMALIZATION

FLAGS = flags.FLAGS


def define_flags(model, image_size, style, normalization):
    """Defines the recipe flags; defaults of None mean "the reference recipe's"."""
    flags.DEFINE_string("data_dir", None, "TFDS data directory, or the root of an image tree.")
    flags.DEFINE_string("output_dir", "runs", "Where run directories go.")
    flags.DEFINE_string(
        "run_name", None, "Run directory name (default: from dataset, model, M, seed)."
    )
    flags.DEFINE_string(
        "saved_models_dir",
        None,
        "Where the best student is exported, as <dir>/<run name>/student.keras (default saved_models, "
        "whatever --output_dir; a student another run directory exported is never overwritten).",
    )
    flags.DEFINE_string("model", model, "Student architecture (okdph_keras.models.MODELS).")
    flags.DEFINE_enum("style", style, ["cifar", "imagenet"], "Augmentation style.")
    flags.DEFINE_integer("image_size", image_size, "Side of the square training images.")
    flags.DEFINE_enum(
        "normalization", normalization, sorted(NORMALIZATION), "Per-channel mean/std to use."
    )
    flags.DEFINE_integer("epochs", None, "Epochs (default 300).")
    flags.DEFINE_integer("batch_size", None, "Global batch size (default 128).")
    flags.DEFINE_float("learning_rate", None, "SGD learning rate (default 0.1).")
    flags.DEFINE_float("momentum", None, "SGD momentum (default 0.9).")
    flags.DEFINE_list(
        "lr_decay_epochs",
        None,
        "Fractions of the epochs where lr is multiplied by --lr_decay (default 0.5,0.75).",
    )
    flags.DEFINE_float("weight_decay", None, "Coupled L2, torch-style (default 5e-4).")
    flags.DEFINE_float("omega", None, "Weight of each student's own CE (default: reference table).")
    flags.DEFINE_float("beta", None, "Weight of the KD term (default: reference table).")
    flags.DEFINE_float("temperature", None, "KD temperature (default 4).")
    flags.DEFINE_float("gamma", None, "Fusion ratio (default: reference table).")
    flags.DEFINE_integer("fusion_every", None, "Fusion interval (default: reference table).")
    flags.DEFINE_enum(
        "fusion_unit", None, ["epoch", "batch"], "Fusion interval unit (default: reference table)."
    )
    flags.DEFINE_enum("hybrid", None, ["mean", "dirichlet"], "HWM coefficients (default mean).")
    flags.DEFINE_bool(
        "hwm_gradient",
        None,
        "HWM loss reaches the students (paper; default) or not (reference code).",
    )
    flags.DEFINE_integer("students", None, "Number of students M (default 2, or len(--views) - 1).")
    flags.DEFINE_list(
        "views", None, "One view per network, students then HWM (default: the dataset's)."
    )
    flags.DEFINE_float(
        "noise_std", None, "Std of Gaussian input noise after normalisation (default 0)."
    )
    flags.DEFINE_float("noise_mean", None, "Mean of the Gaussian input noise (default 0).")
    flags.DEFINE_float(
        "data_fraction", None, "Fraction of each class used for training (default 1)."
    )
    flags.DEFINE_float(
        "validation_fraction",
        None,
        "Fraction of each training class held out to choose the exported student "
        "(default 0.1; 0 trains on the whole split, as the paper).",
    )
    flags.DEFINE_integer("seed", None, "Seed (default 42).")
    flags.DEFINE_enum("method", None, list(methods.run_names()), "Training method (default okdph).")
    flags.DEFINE_float("sam_rho", None, "SAM radius for --method=sam (default 0.05).")
    flags.DEFINE_bool("sam_adaptive", None, "ASAM instead of SAM (default False).")
    flags.DEFINE_float(
        "swa_start", None, "Fraction of the epochs after which SWA averages (default 0.75)."
    )
    flags.DEFINE_float(
        "ema_momentum", None, "Weight EMA momentum for --method=ema (default 0.999)."
    )
    flags.DEFINE_bool("smoke", False, "A seconds-long run on a tiny slice.")
    flags.DEFINE_enum(
        "strategy",
        "auto",
        list(distribute.STRATEGIES),
        "tf.distribute strategy. auto: multiworker when TF_CONFIG names a cluster, mirrored "
        "with more than one GPU, else default.",
    )
    flags.DEFINE_integer(
        "cpu_replicas",
        1,
        "Without GPUs, split the CPU into this many replicas (to try distribution).",
    )
    flags.DEFINE_bool(
        "sync_bn",
        None,
        "Synchronise BatchNorm statistics across replicas and workers (default False).",
    )
    flags.DEFINE_bool(
        "deterministic",
        False,
        "Seeded op determinism: the same command gives bit-identical weights.",
    )


def config_from_flags(dataset, views_kind, **recipe_defaults):
    """Builds the validated `Config` from the flags and the recipe's defaults.

    Args:
        dataset: the `Config.dataset`.
        views_kind: whose default views to use (`"cifar10"`, `"cifar100"`,
            `"imagenet"`), or None to follow `--style`.
        **recipe_defaults: `Config` fields where this recipe departs from the
            CIFAR reference; flags the user sets win over them.
    """
    views = FLAGS.views
    views_kind = views_kind or ("cifar10" if FLAGS.style == "cifar" else "imagenet")
    if FLAGS.smoke:  # the smoke schedule wins over the recipe's full one
        recipe_defaults = {
            k: v for k, v in recipe_defaults.items() if k not in ("epochs", "batch_size")
        }
    if views is not None and FLAGS.students is not None and len(views) != FLAGS.students + 1:
        raise app.UsageError(
            f"--students={FLAGS.students} needs {FLAGS.students + 1} --views "
            f"(students, then the HWM); got {len(views)}."
        )
    if views is None:
        views = config_lib.default_views(views_kind, FLAGS.students or 2)
    return config_lib.reference_config(
        dataset,
        FLAGS.model,
        views,
        FLAGS.style,
        FLAGS.image_size,
        NORMALIZATION[FLAGS.normalization],
        **{
            **recipe_defaults,
            **{
                k: v
                for k, v in dict(
                    data_dir=FLAGS.data_dir,
                    output_dir=FLAGS.output_dir,
                    run_name=FLAGS.run_name,
                    saved_models_dir=FLAGS.saved_models_dir,
                    epochs=FLAGS.epochs,
                    batch_size=FLAGS.batch_size,
                    learning_rate=FLAGS.learning_rate,
                    momentum=FLAGS.momentum,
                    lr_decay_epochs=FLAGS.lr_decay_epochs
                    and tuple(float(f) for f in FLAGS.lr_decay_epochs),
                    weight_decay=FLAGS.weight_decay,
                    omega=FLAGS.omega,
                    beta=FLAGS.beta,
                    temperature=FLAGS.temperature,
                    fusion_gamma=FLAGS.gamma,
                    fusion_every=FLAGS.fusion_every,
                    fusion_unit=FLAGS.fusion_unit,
                    hybrid=FLAGS.hybrid,
                    hwm_gradient=FLAGS.hwm_gradient,
                    sync_bn=FLAGS.sync_bn,
                    noise_std=FLAGS.noise_std,
                    noise_mean=FLAGS.noise_mean,
                    data_fraction=FLAGS.data_fraction,
                    validation_fraction=FLAGS.validation_fraction,
                    seed=FLAGS.seed,
                    method=FLAGS.method,
                    sam_rho=FLAGS.sam_rho,
                    sam_adaptive=FLAGS.sam_adaptive,
                    swa_start=FLAGS.swa_start,
                    ema_momentum=FLAGS.ema_momentum,
                    smoke=FLAGS.smoke or None,
                ).items()
                if v is not None
            },
        },
    )


def main(dataset, views_kind, model, image_size, style, normalization, **recipe_defaults):
    """Defines the flags with this recipe's defaults and runs it."""
    define_flags(model, image_size, style, normalization)

    def run(argv):
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        logging.set_verbosity(logging.WARNING)  # TFDS logs every file it opens
        try:
            strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.cpu_replicas)  # before any op
            config = config_from_flags(dataset, views_kind, **recipe_defaults)
        except ValueError as error:
            raise app.UsageError(str(error)) from error
        print(f"Strategy: {type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s).")
        train.run(config, strategy, deterministic=FLAGS.deterministic)

    app.run(run)
