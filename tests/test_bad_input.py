"""Bad input and faults: every kind fails fast, with a clear error, leaving no outputs.

One table: each case sets up (untimed), then returns the call that must fail. The test
checks the exception type, the message (a regex, and in `NAMES` a literal piece naming
the bad value and one saying what is allowed), that
the call fails within `MAX_SECONDS`, and that the run's `output_dir` and
`saved_models_dir` hold nothing afterwards. Runs use a tiny class-per-folder PNG tree
built once for the module.
"""

import functools
import os
import shutil
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds  # noqa: F401  (imported here so its import time is not a case's)
from helpers import IMAGE_SHAPE, NUM_CLASSES, tiny_student

from okdph_keras import OKDPH, run_data, train
from okdph_keras.config import Config, validate
from okdph_keras.data import from_arrays, load_source, make_view, multi_view_dataset
from okdph_keras.models import get_model

MAX_SECONDS = 10.0
CLASSES = ("cat", "dog")
IS_ROOT = os.geteuid() == 0


def write_pngs(folder, count, shape=(8, 8, 3), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        image = rng.integers(0, 256, size=shape, dtype=np.uint8)
        (folder / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    """train/<class>/*.png (3 each) and test/<class>/*.png (2 each), 8x8 RGB."""
    root = tmp_path_factory.mktemp("images")
    for seed, (split, count) in enumerate((("train", 3), ("test", 2))):
        for k, name in enumerate(CLASSES):
            write_pngs(root / split / name, count, seed=10 * seed + k)
    return root


class Context:
    """What a case needs: a private directory, the shared tree, and its run's outputs."""

    def __init__(self, tmp_path, image_tree):
        self.tmp_path = tmp_path
        self.image_tree = image_tree
        self.output_dir = tmp_path / "runs"
        self.saved_models_dir = tmp_path / "saved_models"

    def config(self, **overrides):
        values = dict(
            dataset="image_folder",
            data_dir=str(self.image_tree),
            model="small_cnn",
            views=("hflip", "cutout", "none"),
            style="cifar",
            image_size=8,
            normalization=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
            epochs=1,
            batch_size=4,
            output_dir=str(self.output_dir),
            saved_models_dir=str(self.saved_models_dir),
            run_name="bad_input",
        )
        values.update(overrides)
        return Config(**values)

    def run(self, **overrides):
        """The failing call: `train.run` of the base config with `overrides`."""
        config = self.config(**overrides)
        return lambda: train.run(config)

    def tree_copy(self):
        root = self.tmp_path / "tree"
        shutil.copytree(self.image_tree, root)
        return root

    def unwritable_dir(self):
        """A path no one can create files in: a 0o500 directory, or (as root) under a file."""
        if IS_ROOT:  # root writes anywhere: a path under a regular file fails for everyone
            blocker = self.tmp_path / "a_file"
            blocker.write_text("not a directory")
            return blocker / "outputs"
        folder = self.tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o500)
        return folder

    def leftovers(self):
        found = []
        for root in (self.output_dir, self.saved_models_dir):
            if os.path.isdir(root):
                for directory, folders, files in os.walk(root):
                    found += [os.path.join(directory, f) for f in files + folders]
        return found


# --- OKDPH.fit inputs --------------------------------------------------------------------


def linear_student():
    """The cheapest student to trace and compile: the checks do not depend on it."""
    return keras.Sequential(
        [keras.Input(IMAGE_SHAPE), keras.layers.Flatten(), keras.layers.Dense(NUM_CLASSES)]
    )


def okdph(**compile_options):
    model = OKDPH(linear_student, num_students=2)
    model.compile(optimizer=keras.optimizers.SGD(0.1), **compile_options)
    return model


@functools.cache
def shared_okdph():
    """One compiled OKDPH for the label cases, so that they share one traced step
    (a failing step changes no variable)."""
    return okdph()


def arrays(num=8, labels=None, channels=IMAGE_SHAPE[-1]):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, size=(num, *IMAGE_SHAPE[:2], channels)).astype("float32")
    views = np.stack([images, images[:, ::-1], images[:, :, ::-1]], axis=1)  # [B, 3, H, W, C]
    if labels is None:
        labels = rng.integers(0, NUM_CLASSES, size=num)
    return views, np.asarray(labels)


def fit_call(model, x, y):
    return lambda: model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)


def labels_with(bad_value):
    labels = np.arange(8) % NUM_CLASSES
    labels[5] = bad_value
    return labels


def fit_views_tuple_of_2(ctx):
    views, labels = arrays()
    return fit_call(okdph(), (views[:, 0], views[:, 1]), labels)


def fit_views_tensor_of_4(ctx):
    views, labels = arrays()
    return fit_call(okdph(), np.concatenate([views, views[:, :1]], axis=1), labels)


def fit_label_equal_to_num_classes(ctx):
    views, _ = arrays()
    return fit_call(shared_okdph(), views, labels_with(NUM_CLASSES))


def fit_label_negative(ctx):
    views, _ = arrays()
    return fit_call(shared_okdph(), views, labels_with(-1))


def evaluate_label_out_of_range(ctx):
    views, _ = arrays()
    model = shared_okdph()
    return lambda: model.evaluate(views, labels_with(NUM_CLASSES), batch_size=4, verbose=0)


def fit_label_out_of_range_mirrored(ctx):
    """A distributed dataset reaches the step unchecked (with a warning): the step's
    own check refuses the batch."""
    views, _ = arrays()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = okdph()
    dataset = tf.data.Dataset.from_tensor_slices((views, labels_with(NUM_CLASSES))).batch(4)
    distributed = strategy.experimental_distribute_dataset(dataset)
    return lambda: model.fit(distributed, epochs=1, verbose=0)


def fit_label_out_of_range_dataset_jit(ctx):
    """XLA drops the step's check; the dataset's labels are checked on the input."""
    views, _ = arrays()
    model = okdph(jit_compile=True)
    dataset = tf.data.Dataset.from_tensor_slices((views, labels_with(NUM_CLASSES))).batch(4)
    return lambda: model.fit(dataset, epochs=1, verbose=0)


def fit_one_hot_labels(ctx):
    views, labels = arrays()
    return fit_call(okdph(), views, keras.utils.to_categorical(labels, NUM_CLASSES))


def fit_images_of_rank_3(ctx):
    views, labels = arrays()
    return fit_call(okdph(), views[:, 0, ..., 0], labels)  # [B, H, W]


def fit_images_with_3_channels(ctx):
    views, labels = arrays(channels=3)  # the students take 1 channel
    return fit_call(okdph(), views, labels)


# --- OKDPH construction ------------------------------------------------------------------


def okdph_single_student(ctx):
    return lambda: OKDPH([tiny_student()])


def okdph_heterogeneous_shapes(ctx):
    students = [tiny_student(width=4), tiny_student(width=6)]
    return lambda: OKDPH(students)


def okdph_heterogeneous_variable_count(ctx):
    students = [tiny_student(batch_norm=True), tiny_student(batch_norm=False)]
    return lambda: OKDPH(students)


def okdph_unknown_hybrid(ctx):
    return lambda: OKDPH(tiny_student, hybrid="median")


# --- registries and data -----------------------------------------------------------------


def unknown_model_name(ctx):
    return lambda: get_model("resnet9000", num_classes=10)


def unknown_view_name(ctx):
    return lambda: make_view("vflip", "cifar", 8, seed=0)


def unknown_tfds_dataset(ctx):
    return lambda: load_source("cifar11", "train", data_dir=str(ctx.tmp_path / "tfds"))


def pipeline_images_of_rank_3(ctx):
    images, labels = np.zeros((8, 8, 8), np.float32), np.zeros(8, np.int64)
    return lambda: multi_view_dataset((images, labels), [None, None, None], batch_size=4)


def pipeline_normalization_length(ctx):
    source = from_arrays(np.zeros((4, 8, 8, 3), np.uint8), np.arange(4) % 2)
    views = [make_view(name, "cifar", 8, seed=0) for name in ("hflip", "cutout", "none")]
    return lambda: multi_view_dataset(
        source, views, batch_size=4, normalization=((0.5, 0.5), (0.2, 0.2))
    )


def pipeline_negative_noise_std(ctx):
    source = from_arrays(np.zeros((4, 8, 8, 3), np.uint8), np.arange(4) % 2)
    return lambda: multi_view_dataset(source, [None, None, None], batch_size=4, noise_std=-0.1)


# --- train.run ---------------------------------------------------------------------------


def run_with(**overrides):
    return lambda ctx: ctx.run(**overrides)


def run_missing_data_dir(ctx):
    return ctx.run(data_dir=str(ctx.tmp_path / "no_such_folder"))


def run_data_dir_without_class_folders(ctx):
    root = ctx.tmp_path / "empty_tree"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    return ctx.run(data_dir=str(root))


def run_class_folders_without_images(ctx):
    root = ctx.tmp_path / "imageless_tree"
    for split in ("train", "test"):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            (root / split / name / "notes.txt").write_text("no images here")
    return ctx.run(data_dir=str(root))


def run_corrupt_image(ctx):
    root = ctx.tree_copy()
    (root / "train" / "dog" / "1.png").write_bytes(b"<html>404 Not Found</html>")
    return ctx.run(data_dir=str(root))


def run_unknown_tfds_dataset(ctx):
    return ctx.run(dataset="cifar11", data_dir=str(ctx.tmp_path / "tfds"))


def run_unwritable_output_dir(ctx):
    ctx.output_dir = ctx.unwritable_dir()
    return ctx.run(output_dir=str(ctx.output_dir))


def run_unwritable_saved_models_dir(ctx):
    ctx.saved_models_dir = ctx.unwritable_dir()
    return ctx.run(saved_models_dir=str(ctx.saved_models_dir))


def run_normalization_length(ctx):
    return ctx.run(normalization=((0.5, 0.5), (0.25, 0.25)))  # the images are RGB


RANGE = r"it must be a number in"
CASES = [
    # Options out of range (train.run validates before touching anything).
    pytest.param(
        run_with(omega=1.5),
        ValueError,
        rf"omega=1.5 is not allowed; {RANGE} \[0, 1\]",
        id="omega_above_1",
    ),
    pytest.param(
        run_with(beta=-0.5),
        ValueError,
        r"beta=-0.5 is not allowed; it must be a finite number >= 0",
        id="beta_negative",
    ),
    pytest.param(
        run_with(temperature=0.0),
        ValueError,
        r"temperature=0.0 is not allowed; it must be a finite number > 0",
        id="temperature_zero",
    ),
    pytest.param(
        run_with(batch_size=0),
        ValueError,
        r"batch_size=0 is not allowed; it must be an integer >= 1",
        id="batch_size_0",
    ),
    pytest.param(
        run_with(epochs=0),
        ValueError,
        r"epochs=0 is not allowed; it must be an integer >= 1",
        id="epochs_0",
    ),
    pytest.param(
        run_with(learning_rate=-0.1),
        ValueError,
        r"learning_rate=-0.1 is not allowed; it must be a finite number >= 0",
        id="learning_rate_negative",
    ),
    pytest.param(
        run_with(fusion_gamma=1.5),
        ValueError,
        rf"fusion_gamma=1.5 is not allowed; {RANGE} \[0, 1\]",
        id="fusion_gamma_above_1",
    ),
    pytest.param(
        run_with(fusion_every=0),
        ValueError,
        r"fusion_every=0 is not allowed; it must be an integer >= 1",
        id="fusion_every_0",
    ),
    pytest.param(
        run_with(data_fraction=0.0),
        ValueError,
        rf"data_fraction=0.0 is not allowed; {RANGE} \(0, 1\]",
        id="data_fraction_0",
    ),
    pytest.param(
        run_with(validation_fraction=1.0),
        ValueError,
        rf"validation_fraction=1.0 is not allowed; {RANGE} \[0, 1\)",
        id="validation_fraction_1",
    ),
    pytest.param(
        run_with(lr_decay_epochs=(0.5, 1.5)),
        ValueError,
        r"lr_decay_epochs=\(0.5, 1.5\) is not allowed; it must be a tuple of fractions of the epochs in \(0, 1\)",
        id="lr_decay_epochs_above_1",
    ),
    pytest.param(
        run_with(noise_std=-0.1),
        ValueError,
        r"noise_std=-0.1 is not allowed; it must be a finite number >= 0",
        id="noise_std_negative",
    ),
    pytest.param(
        run_with(run_name="a/b"),
        ValueError,
        r"run_name='a/b' is not allowed; it must be a plain directory name",
        id="run_name_with_slash",
    ),
    pytest.param(
        run_with(model="resnet9000"),
        ValueError,
        r"model='resnet9000' is not allowed; it must be one of \(.*'small_cnn'",
        id="run_unknown_model",
    ),
    pytest.param(
        run_with(views=("hflip", "vflip", "none")),
        ValueError,
        r"view='vflip' is not allowed; it must be one of \(.*'hflip'",
        id="run_unknown_view",
    ),
    pytest.param(
        run_with(hybrid="median"),
        ValueError,
        r"hybrid='median' is not allowed; it must be one of \('mean', 'dirichlet'\)",
        id="run_unknown_hybrid",
    ),
    pytest.param(
        run_with(views=("hflip", "none")),
        ValueError,
        r"views=\('hflip', 'none'\) is not allowed; it must be one view per network: at least 2 students",
        id="run_single_student",
    ),
    pytest.param(
        run_with(normalization=((0.5, 0.5, 0.5), (0.25, 0.25))),
        ValueError,
        r"normalization=.* is not allowed; it must be \(mean, std\) with one finite value per channel each",
        id="normalization_mean_std_lengths_differ",
    ),
    pytest.param(
        run_with(normalization=((0.5,), (0.0,))),
        ValueError,
        r"normalization=.* is not allowed; it must be .*, every std > 0",
        id="normalization_std_zero",
    ),
    # Data (train.run loads the data before it writes anything).
    pytest.param(
        run_missing_data_dir,
        FileNotFoundError,
        r"Image folder root .*no_such_folder does not exist; expected layout: <root>/train/<class>/",
        id="missing_data_dir",
    ),
    pytest.param(
        run_data_dir_without_class_folders,
        ValueError,
        r"No class folders in .*empty_tree/train; expected layout",
        id="data_dir_without_class_folders",
    ),
    pytest.param(
        run_class_folders_without_images,
        ValueError,
        r"No images in class folders under .*imageless_tree/train "
        r"\(class folders: \['cat', 'dog'\]; image files end in \.jpg",
        id="class_folders_without_images",
    ),
    pytest.param(
        run_corrupt_image,
        ValueError,
        r"Could not read or decode image file .*train/dog/1\.png",
        id="corrupt_image",
    ),
    pytest.param(
        run_unknown_tfds_dataset,
        ValueError,
        r"Unknown dataset 'cifar11': not a TFDS dataset name\. Image-classification names include cifar10",
        id="run_unknown_tfds_dataset",
    ),
    pytest.param(
        run_unwritable_output_dir,
        ValueError,
        r"Cannot write output_dir='.*': .* is not a writable directory",
        id="unwritable_output_dir",
    ),
    pytest.param(
        run_unwritable_saved_models_dir,
        ValueError,
        r"Cannot write saved_models_dir='.*': .* is not a writable directory",
        id="unwritable_saved_models_dir",
    ),
    pytest.param(
        run_normalization_length,
        ValueError,
        r"normalization=\(\(0.5, 0.5\), \(0.25, 0.25\)\) is not allowed; "
        r"it must be \(mean, std\) of 3 values each \(or 1, for all\): the images have 3 channels",
        id="run_normalization_wrong_length",
    ),
    # OKDPH.
    pytest.param(
        okdph_single_student,
        ValueError,
        r"OKDPH needs at least 2 students; got 1",
        id="okdph_single_student",
    ),
    pytest.param(
        okdph_heterogeneous_shapes,
        ValueError,
        r"homogeneous .* trainable_variables\[0\] differs: "
        r"student 0 has .*\(3, 3, 1, 4\).*student 1 has .*\(3, 3, 1, 6\)",
        id="okdph_heterogeneous_shapes",
    ),
    pytest.param(
        okdph_heterogeneous_variable_count,
        ValueError,
        r"homogeneous .*differs: student 0 has .*batch_normalization.*student 1 has ",
        id="okdph_heterogeneous_variable_count",
    ),
    pytest.param(
        okdph_unknown_hybrid,
        ValueError,
        r"hybrid='median' is not allowed; it must be one of \('mean', 'dirichlet'\)",
        id="okdph_unknown_hybrid",
    ),
    pytest.param(
        fit_views_tuple_of_2,
        ValueError,
        r"OKDPH takes 3 views, one per network \(student_0, student_1, hwm\); got 2",
        id="fit_tuple_of_2_views",
    ),
    pytest.param(
        fit_views_tensor_of_4,
        ValueError,
        r"takes 3 views, one per network \(student_0, student_1, hwm\) on axis 1 of a "
        r"\[B, 3, \.\.\.\] tensor; got shape \(\w+, 4, 8, 8, 1\)",
        id="fit_tensor_of_4_views",
    ),
    pytest.param(
        fit_label_equal_to_num_classes,
        tf.errors.InvalidArgumentError,
        r"labels must be class indices in \[0, 5\) \(the students output 5 logits\); "
        r"got label\] \[5\] \[at index\] \[5\]",
        id="fit_label_equal_to_num_classes",
    ),
    pytest.param(
        fit_label_negative,
        tf.errors.InvalidArgumentError,
        r"labels must be class indices in \[0, 5\) \(the students output 5 logits\); "
        r"got label\] \[-1\] \[at index\] \[5\]",
        id="fit_label_negative",
    ),
    pytest.param(
        evaluate_label_out_of_range,
        tf.errors.InvalidArgumentError,
        r"labels must be class indices in \[0, 5\) \(the students output 5 logits\); got label\] \[5\] "
        r"\[at index\] \[5\]",
        id="evaluate_label_out_of_range",
    ),
    pytest.param(
        fit_label_out_of_range_mirrored,
        tf.errors.InvalidArgumentError,
        r"labels must be class indices in \[0, 5\) \(the students output 5 logits\); got label\] \[5\] "
        r"\[at batch position\] \[1\]",
        id="fit_label_out_of_range_mirrored",
    ),
    pytest.param(
        fit_label_out_of_range_dataset_jit,
        tf.errors.InvalidArgumentError,
        r"labels must be class indices in \[0, 5\) \(the students output 5 logits\); got label\] \[5\] "
        r"\[at batch position\] \[1\]",
        id="fit_label_out_of_range_dataset_jit",
    ),
    pytest.param(
        fit_one_hot_labels,
        ValueError,
        r"integer class indices of shape \[B\]; got labels of shape \(\w+, 5\) "
        r"\(one-hot labels are not supported: pass their argmax",
        id="fit_one_hot_labels",
    ),
    pytest.param(
        fit_images_of_rank_3,
        ValueError,
        r"OKDPH expected images of rank 4 .* or rank 5 .*; got shape \(\w+, 8, 8\)",
        id="fit_images_of_rank_3",
    ),
    pytest.param(
        fit_images_with_3_channels,
        ValueError,
        r"OKDPH's students take images of shape \(8, 8, 1\) \(\[B, H, W, C\], 1 channel\(s\)\); "
        r"view 0 has shape \(\w+, 8, 8, 3\)",
        id="fit_images_with_wrong_channels",
    ),
    # Registries and data, called directly.
    pytest.param(
        unknown_model_name,
        ValueError,
        r"name='resnet9000' is not allowed; it must be one of \(.*'resnet32'",
        id="get_model_unknown_name",
    ),
    pytest.param(
        unknown_view_name,
        ValueError,
        r"name='vflip' is not allowed; it must be one of \('none', 'hflip'",
        id="make_view_unknown_name",
    ),
    pytest.param(
        unknown_tfds_dataset,
        ValueError,
        r"Unknown dataset 'cifar11': not a TFDS dataset name",
        id="load_source_unknown_tfds_dataset",
    ),
    pytest.param(
        pipeline_images_of_rank_3,
        ValueError,
        r"images must be an array \[N, H, W, C\]; got shape \(8, 8, 8\)",
        id="pipeline_images_of_rank_3",
    ),
    pytest.param(
        pipeline_normalization_length,
        ValueError,
        r"normalization=\(\(0.5, 0.5\), \(0.2, 0.2\)\) is not allowed; "
        r"it must be \(mean, std\) of 3 values each \(or 1, for all\): the images have 3 channels",
        id="pipeline_normalization_wrong_length",
    ),
    pytest.param(
        pipeline_negative_noise_std,
        ValueError,
        r"noise_std=-0.1 is not allowed; it must be a finite number >= 0",
        id="pipeline_noise_std_negative",
    ),
]


# For every case: a literal piece of the message that names the bad value, and one that
# says what is allowed (both checked with `in`, on top of the case's regex). "{tmp_path}",
# "{output_dir}" and "{saved_models_dir}" stand for the case's own paths.
LABEL = "class indices in [0, 5) (the students output 5 logits)"
NAMES = {
    "omega_above_1": ("omega=1.5", "[0, 1]"),
    "beta_negative": ("beta=-0.5", "a finite number >= 0"),
    "temperature_zero": ("temperature=0.0", "a finite number > 0"),
    "batch_size_0": ("batch_size=0", "an integer >= 1"),
    "epochs_0": ("epochs=0", "an integer >= 1"),
    "learning_rate_negative": ("learning_rate=-0.1", "a finite number >= 0"),
    "fusion_gamma_above_1": ("fusion_gamma=1.5", "[0, 1]"),
    "fusion_every_0": ("fusion_every=0", "an integer >= 1"),
    "data_fraction_0": ("data_fraction=0.0", "in (0, 1]"),
    "validation_fraction_1": ("validation_fraction=1.0", "in [0, 1)"),
    "lr_decay_epochs_above_1": ("lr_decay_epochs=(0.5, 1.5)", "fractions of the epochs in (0, 1)"),
    "noise_std_negative": ("noise_std=-0.1", "a finite number >= 0"),
    "run_name_with_slash": ("run_name='a/b'", "a plain directory name"),
    "run_unknown_model": ("model='resnet9000'", "'small_cnn'"),
    "run_unknown_view": ("view='vflip'", "'hflip'"),
    "run_unknown_hybrid": ("hybrid='median'", "('mean', 'dirichlet')"),
    "run_single_student": ("views=('hflip', 'none')", "at least 2 students, then the HWM"),
    "normalization_mean_std_lengths_differ": (
        "normalization=((0.5, 0.5, 0.5), (0.25, 0.25))",
        "one finite value per channel each",
    ),
    "normalization_std_zero": ("normalization=((0.5,), (0.0,))", "every std > 0"),
    "missing_data_dir": ("{tmp_path}/no_such_folder", "<root>/train/<class>/*.jpg"),
    "data_dir_without_class_folders": ("{tmp_path}/empty_tree/train", "<root>/train/<class>/*.jpg"),
    "class_folders_without_images": (
        "{tmp_path}/imageless_tree/train",
        "image files end in .jpg, .jpeg, .png",
    ),
    "corrupt_image": ("{tmp_path}/tree/train/dog/1.png", "JPEG, JPEG XL, PNG"),
    "run_unknown_tfds_dataset": ("'cifar11'", "cifar10, cifar100"),
    "unwritable_output_dir": ("{output_dir}", "writable"),
    "unwritable_saved_models_dir": (
        "saved_models_dir='{saved_models_dir}'",
        "is not a writable directory",
    ),
    "run_normalization_wrong_length": (
        "normalization=((0.5, 0.5), (0.25, 0.25))",
        "(mean, std) of 3 values each (or 1, for all)",
    ),
    "okdph_single_student": ("got 1", "at least 2 students"),
    "okdph_heterogeneous_shapes": (
        "(3, 3, 1, 6)",
        "homogeneous (same variables, shapes and dtypes",
    ),
    "okdph_heterogeneous_variable_count": (
        "student 1 has conv2d",
        "homogeneous (same variables, shapes and dtypes",
    ),
    "okdph_unknown_hybrid": ("hybrid='median'", "('mean', 'dirichlet')"),
    "fit_tuple_of_2_views": ("got 2", "takes 3 views, one per network (student_0, student_1, hwm)"),
    "fit_tensor_of_4_views": (", 4, 8, 8, 1)", "hwm) on axis 1 of a [B, 3, ...] tensor"),
    "fit_label_equal_to_num_classes": ("got label] [5]", LABEL),
    "fit_label_negative": ("got label] [-1]", LABEL),
    "evaluate_label_out_of_range": ("got label] [5]", LABEL),
    "fit_label_out_of_range_mirrored": ("got label] [5]", LABEL),
    "fit_label_out_of_range_dataset_jit": ("got label] [5]", LABEL),
    "fit_one_hot_labels": (", 5) (one-hot labels", "integer class indices of shape [B]"),
    "fit_images_of_rank_3": (", 8, 8).", "rank 4 (one batch shared by every network) or rank 5"),
    "fit_images_with_wrong_channels": (
        "view 0 has shape (4, 8, 8, 3)",
        "images of shape (8, 8, 1)",
    ),
    "get_model_unknown_name": ("'resnet9000'", "'resnet32'"),
    "make_view_unknown_name": ("name='vflip'", "one of ('none', 'hflip'"),
    "load_source_unknown_tfds_dataset": ("'cifar11'", "cifar10, cifar100"),
    "pipeline_images_of_rank_3": ("got shape (8, 8, 8)", "an array [N, H, W, C]"),
    "pipeline_normalization_wrong_length": (
        "normalization=((0.5, 0.5), (0.2, 0.2))",
        "(mean, std) of 3 values each (or 1, for all)",
    ),
    "pipeline_noise_std_negative": ("noise_std=-0.1", "a finite number >= 0"),
}
# Messages that do not yet say what is allowed (library code outside these tests); the
# test fails once such a message does, so that the entry is removed.
KNOWN_GAPS = {}


def expected_pieces(case_id, ctx):
    paths = {
        "{tmp_path}": ctx.tmp_path,
        "{output_dir}": ctx.output_dir,
        "{saved_models_dir}": ctx.saved_models_dir,
    }
    pieces = []
    for piece in NAMES[case_id]:
        for token, path in paths.items():
            piece = piece.replace(token, str(path))
        pieces.append(piece)
    return pieces


@pytest.mark.parametrize("case, error, message", CASES)
def test_bad_input_fails_fast_and_clearly(case, error, message, tmp_path, image_tree, request):
    case_id = request.node.callspec.id
    ctx = Context(tmp_path, image_tree)
    call = case(ctx)
    start = time.perf_counter()
    try:
        with pytest.raises(error, match=message) as raised:
            call()
        elapsed = time.perf_counter() - start
        assert elapsed < MAX_SECONDS, f"took {elapsed:.1f} s to fail"
        assert ctx.leftovers() == []
        text = str(raised.value)
        bad, allowed = expected_pieces(case_id, ctx)
        assert bad in text, f"the message does not name the bad value {bad!r}: {text}"
        if case_id in KNOWN_GAPS:
            assert allowed not in text, (
                f"{case_id} now says what is allowed: remove it from KNOWN_GAPS"
            )
            pytest.xfail(KNOWN_GAPS[case_id])
        assert allowed in text, f"the message does not say what is allowed ({allowed!r}): {text}"
    finally:
        for path in (tmp_path / "read_only",):
            if path.exists():
                path.chmod(0o700)  # so that pytest can clean up


def test_table_covers_enough_kinds():
    ids = [case.id for case in CASES]
    assert len(ids) >= 24
    assert len(set(ids)) == len(ids)
    # Every case says which bad value its message must name and what it must allow.
    assert set(NAMES) == set(ids)
    for case_id, (bad, allowed) in NAMES.items():
        assert bad.strip() and allowed.strip() and bad != allowed, case_id
    assert set(KNOWN_GAPS) <= set(ids)


def test_the_base_config_is_valid_and_loads(tmp_path, image_tree):
    """The runs above fail because of their one bad value, not the base config."""
    config = Context(tmp_path, image_tree).config()
    validate(config)
    data = run_data.load_sources(config)
    assert data.train.image_shape == (8, 8, 3) and data.train.num_classes == len(CLASSES)
    datasets = run_data.make_datasets(config, data)
    views, labels = next(iter(datasets[0]))
    assert len(views) == 3 and views[0].shape[1:] == (8, 8, 3)
    assert not os.path.exists(config.output_dir) and not os.path.exists(config.saved_models_dir)


def test_the_base_fit_inputs_train(tmp_path):
    """The OKDPH cases above fail because of their one bad input."""
    views, labels = arrays()
    history = shared_okdph().fit(views, labels, batch_size=4, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


def test_a_batch_with_a_bad_label_changes_no_variable():
    """The losses, hence the update, wait for the step's own label check (what the
    multi-worker loop and any input `fit` cannot check rely on)."""
    model = okdph()
    before = [v.numpy().copy() for v in model.variables]
    views, _ = arrays()
    step = tf.function(model.train_step)  # not fit(), which checks the arrays first
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"got label\] \[5\] \[at batch position\] \[0\]"
    ):
        step((tf.constant(views), tf.fill([8], NUM_CLASSES)))
    for variable, value in zip(model.variables, before):
        np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)
