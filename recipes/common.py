"""Flags shared by every dataset recipe, and the flags -> Config -> run glue."""

import dataclasses

from absl import app, flags, logging

from okdph_keras import config as config_lib
from okdph_keras import distribute, hyperparameters, train
from okdph_keras.config import Config
from okdph_keras.data.views import NORMALIZATION
from okdph_keras.models import get_model

FLAGS = flags.FLAGS


_DEFINE = {
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    bool: flags.DEFINE_bool,
    str: flags.DEFINE_string,
    tuple: flags.DEFINE_list,
}


def define_flags(model, image_size, style, normalization):
    """One flag per `Config` field (same name, type and help), then the run's own flags.

    Flags left unset are None: the recipe's default for `model`, `image_size` and
    `style`, the method's for its hyperparameters, the `Config` default otherwise.
    """
    recipe_defaults = {"model": model, "image_size": image_size, "style": style}
    for field in dataclasses.fields(Config):
        if not field.metadata["flag"]:
            continue
        default = recipe_defaults.get(field.name)
        help_text = field.metadata["help"] + _default_note(field, default)
        choices = field.metadata["choices"]
        if choices:
            flags.DEFINE_enum(field.name, default, list(choices), help_text)
        else:
            _DEFINE[field.type](field.name, default, help_text)
    flags.DEFINE_enum(
        "normalization", normalization, sorted(NORMALIZATION), "Per-channel mean/std to use."
    )
    flags.DEFINE_string(
        "students",
        None,
        "Number of students M (default 2, or len(--views) - 1), or groups of one "
        "architecture each, ARCH:COUNT,... (e.g. resnet110:2,resnet32:2: method "
        "okdph_groups, one HWM per group of two or more; --model names the exported "
        "architecture, default the smallest).",
    )
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
        "deterministic",
        False,
        "Seeded op determinism on one CPU thread (slower): the same command gives "
        "bit-identical weights on the same machine.",
    )


def _default_note(field, flag_default):
    """What an unset flag means, where absl cannot say it (the flag's default is None)."""
    if flag_default is not None or field.default in (None, dataclasses.MISSING):
        return (
            "" if field.name not in hyperparameters.HYPERPARAMETERS else " (default: the method's)"
        )
    return f" (default: {field.default!r})"


def _flag_values():
    """The `Config` fields the user set on the command line, converted to the field's type."""
    values = {}
    for field in dataclasses.fields(Config):
        value = getattr(FLAGS, field.name, None) if field.metadata["flag"] else None
        if value is not None:
            item = field.metadata["item"]
            values[field.name] = tuple(item(v) for v in value) if item else value
    return values


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
    count, groups = (2, None) if FLAGS.students is None else parse_students(FLAGS.students)
    model, values = FLAGS.model, {**recipe_defaults, **_flag_values()}
    if groups:
        count = sum(c for _, c in groups)
        hwms = config_lib.num_hwms(groups)
        values.update(groups=groups, method=values.get("method", "okdph_groups"))
        if not FLAGS["model"].present:
            model = smallest_architecture(groups, FLAGS.image_size)
    else:
        hwms = 1
    if views is not None and FLAGS.students is not None and len(views) != count + hwms:
        raise app.UsageError(
            f"--students={FLAGS.students} needs {count + hwms} --views "
            f"(the {count} students, then {hwms} HWM(s)); got {len(views)}."
        )
    if views is None and groups:  # each group its dataset's student views, then the HWMs'
        views = config_lib.group_views(views_kind, groups)
    elif views is None:
        views = config_lib.default_views(views_kind, count, hwms)
    for name in ("model", "style", "image_size", "views"):
        values.pop(name, None)
    return config_lib.reference_config(
        dataset,
        model,
        views,
        FLAGS.style,
        FLAGS.image_size,
        NORMALIZATION[FLAGS.normalization],
        **values,
    )


def parse_students(text):
    """`--students`, parsed (`config.parse_students`); a bad value is a usage error."""
    try:
        return config_lib.parse_students(text)
    except ValueError as error:
        raise app.UsageError(str(error)) from error


def smallest_architecture(groups, image_size):
    """The architecture of `groups` with the fewest parameters (10 classes, RGB)."""

    def size(model):
        return get_model(model, 10, (image_size, image_size, 3)).count_params()

    return min((model for model, _ in groups), key=size)


def main(dataset, views_kind, model, image_size, style, normalization, **recipe_defaults):
    """Defines the flags with this recipe's defaults and runs it."""
    define_flags(model, image_size, style, normalization)

    def run(argv):
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        logging.set_verbosity(logging.WARNING)  # TFDS logs every file it opens
        try:
            if FLAGS.deterministic:  # before any op: it sets the CPU threads
                train.enable_determinism()
            strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.cpu_replicas)  # before any op
            config = config_from_flags(dataset, views_kind, **recipe_defaults)
        except ValueError as error:
            raise app.UsageError(str(error)) from error
        print(f"Strategy: {type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s).")
        train.run(config, strategy)

    app.run(run)
