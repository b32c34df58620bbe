"""Export one trained student for deployment: a SavedModel and TFLite files, verified.

    python -m okdph_keras.export runs/cifar10_resnet32_m2_seed42 --output exports/cifar10_resnet32
    python -m okdph_keras.export runs/my_run --output exports/my_run --student 1 --variants float32 int8
    python -m okdph_keras.export saved_models/my_run/student.keras --output exports/mine \\
        --normalization cifar10 --style cifar --dataset cifar10 --data_dir /data/tfds

The source is a run directory (`config.json`, `state.json` and the checkpoint it names,
optionally `results.json`), or a `.keras` file holding an `OKDPH` model or one student.
One student is exported, never the multi-student model: the one chosen by `student=`, or
else the one with the best accuracy on a selection set. For a run directory the selection
set is the run's validation split (held out of its training split, see
`Config.validation_fraction`; a seeded, class-balanced sample of up to 1,000 of its
images); a run without one exports student 0 unless `student=` or `selection_data=` says
otherwise. The test split is never used to choose: it is kept for the figures below.

The export directory holds

    saved_model/                 SavedModel, signature `serving_default`
    model_float32.tflite         TFLite, float32
    model_float16.tflite         float16 weights
    model_dynamic_range.tflite   int8 weights, float activations
    model_int8.tflite            full integer (int8 weights and activations)
    metadata.json                classes, input, normalisation, source, verification

Every model takes raw images: uint8 `[B, S, S, C]` at the run's image size (after the
run's test-time transform, `okdph_keras.data.views.eval_transform`), and returns
`{"logits": [B, K], "probabilities": [B, K]}`; the cast and `(x / 255 - mean) / std` are
part of the graph. With `int8_io` the int8 model's outputs are int8 (dequantise with the
scale and zero point in `metadata.json`); its input is raw uint8 pixels either way.

Full-integer quantisation is calibrated on a seeded, class-balanced sample of about 200
training images. `metadata.json` records, for the SavedModel and every TFLite file, its
size, and its accuracy, top-1 agreement with the Keras student and largest absolute logit
difference on held-out data (the run's test split by default), all measured with the
LiteRT interpreter (`ai_edge_litert`) for the TFLite files.

Writes are atomic: everything is built in a hidden temporary directory beside the
destination (`.<name>.partial-<pid>-<random>`) and renamed into place when complete, so an
interrupted export leaves no half-written export at the destination. An existing export
is replaced only with `overwrite=True` (`--overwrite`): it is renamed aside, the new one
renamed in, and the old one deleted. Temporary directories left by killed exports are
removed by the next export to the same destination (a previous export renamed aside and
not yet replaced is put back).
"""

import argparse
import dataclasses
import os
import re
import shutil
import sys
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from okdph_keras import checkpointing, predict
from okdph_keras.config import Config
from okdph_keras.data import sources as sources_lib
from okdph_keras.data.pipeline import eval_dataset
from okdph_keras.data.views import NORMALIZATION, STYLES, eval_transform, normalize
from okdph_keras.model import OKDPH

VARIANTS = ("float32", "float16", "dynamic_range", "int8")
SAVED_MODEL_DIR = predict.SAVED_MODEL_DIR
METADATA_FILE = predict.METADATA_FILE
INPUT_NAME = "images"
REPRESENTATIVE_EXAMPLES = 200
SELECTION_EXAMPLES = 1000
BATCH_SIZE = 256
FORMAT_VERSION = 1


def tflite_file(variant):
    """The file name of a TFLite variant in an export directory."""
    return f"model_{variant}.tflite"


# --- what an export starts from ---------------------------------------------------------


@dataclasses.dataclass
class _Origin:
    """A loaded source: its students and, for a run directory, its configuration."""

    kind: str  # "run", "okdph_model" or "student_model"
    path: str
    students: list
    config: Config | None = None
    results: dict | None = None
    state: dict | None = None
    _sources: tuple | None = None

    def sources(self, needed_for):
        """The run's `train.RunSources` (training, validation, test), loaded once."""
        if self._sources is None:
            from okdph_keras import train  # noqa: PLC0415 (heavy; only for run directories)

            try:
                self._sources = train.load_sources(self.config)
            except (ValueError, OSError, ConnectionError) as error:
                raise ValueError(
                    f"The data of run {self.path} ({self.config.dataset}, data_dir="
                    f"{self.config.data_dir}) could not be loaded, and it is needed for "
                    f"{needed_for}: {error} Pass that data to export_student instead "
                    "(student=, class_names=, representative_data=, held_out=)."
                ) from error
        return self._sources


def _load_keras(path):
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 (Keras raises many kinds; name the file)
        raise ValueError(f"Could not load a Keras model from {path}: {error}") from error


def _load_origin(source):
    path = os.path.abspath(os.fspath(source))
    if not os.path.exists(path):
        raise FileNotFoundError(f"{source} does not exist: expected a run directory or a .keras file.")
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            what = "an export, not a run" if os.path.isfile(os.path.join(path, METADATA_FILE)) else "no run"
            raise ValueError(
                f"{source} holds {what}: expected a run directory (with config.json, "
                "state.json and a checkpoint) or a .keras file."
            )
        config = Config.from_json_dict(checkpointing.load_json(os.path.join(path, "config.json")))
        state = checkpointing.load_state(path)
        if state is None:
            raise ValueError(
                f"Run directory {source} holds no checkpoint yet (no {checkpointing.STATE_FILE}): "
                "train at least one epoch first."
            )
        checkpoint = os.path.join(path, state["checkpoint"])
        if not os.path.isfile(checkpoint):
            raise ValueError(f"Run directory {source} names the checkpoint {checkpoint}, which is missing.")
        model = _load_keras(checkpoint)
        if not isinstance(model, OKDPH):
            raise ValueError(f"The checkpoint {checkpoint} holds a {type(model).__name__}, not an OKDPH model.")
        results_path = os.path.join(path, "results.json")
        results = checkpointing.load_json(results_path) if os.path.isfile(results_path) else None
        if results is None:
            warnings.warn(
                f"Run {source} has not finished: exporting from its checkpoint after epoch "
                f"{state['epochs_done']} of {config.epochs}.",
                stacklevel=3,
            )
        return _Origin("run", path, list(model.students), config, results, state)
    if not path.endswith(".keras"):
        raise ValueError(f"{source} is not a run directory or a .keras file.")
    model = _load_keras(path)
    if isinstance(model, OKDPH):
        return _Origin("okdph_model", path, list(model.students))
    if isinstance(model, keras.Model):
        return _Origin("student_model", path, [model])
    raise ValueError(f"{source} holds a {type(model).__name__}, not a Keras model.")


# --- settings ---------------------------------------------------------------------------


def _check_variants(variants):
    if isinstance(variants, str):
        variants = (variants,)
    variants = tuple(variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(
            f"Unknown TFLite variant(s) {unknown or variants!r}; known variants: {list(VARIANTS)}."
        )
    return tuple(v for v in VARIANTS if v in variants)


def _parse_normalization(value, channels):
    if isinstance(value, str):
        if value not in NORMALIZATION:
            raise ValueError(
                f"Unknown normalization {value!r}; known names: {sorted(NORMALIZATION)}, or "
                "give (mean, std) with one value per channel."
            )
        value = NORMALIZATION[value]
    try:
        mean, std = (tuple(float(x) for x in part) for part in value)
    except (TypeError, ValueError):
        raise ValueError(f"normalization must be a name or (mean, std) per channel; got {value!r}.") from None
    if len(mean) != len(std) or len(mean) not in (1, channels) or min(std) <= 0:
        raise ValueError(
            f"normalization {value!r} does not fit {channels}-channel images: give {channels} "
            "means and as many positive standard deviations."
        )
    return mean, std


@dataclasses.dataclass(frozen=True)
class _Settings:
    image_size: int
    channels: int
    num_classes: int
    mean: tuple
    std: tuple
    style: str | None


def _settings(origin, normalization, style, input_size):
    model = origin.students[0]
    shape = tuple(model.input_shape)
    if len(shape) != 4:
        raise ValueError(f"The student takes inputs of shape {shape}; expected images [B, H, W, C].")
    _, height, width, channels = shape
    config = origin.config
    size = input_size or (config.image_size if config else None) or height
    if size is None:
        raise ValueError("The student takes images of any size: pass input_size (the side S of its images).")
    if (height is not None and height != size) or (width is not None and width != size):
        raise ValueError(
            f"The student takes {height}x{width} images but the input size is {size}x{size}: "
            "only square images of the student's size can be exported."
        )
    if normalization is None:
        if config is None:
            raise ValueError(
                "A .keras file does not record its normalisation: pass normalization= (a name "
                f"of {sorted(NORMALIZATION)} or (mean, std) per channel; CLI --normalization)."
            )
        normalization = config.normalization
    mean, std = _parse_normalization(normalization, channels)
    style = style or (config.style if config else None)
    if style is not None and style not in STYLES:
        raise ValueError(f"Unknown style {style!r}; expected one of {STYLES} or None.")
    return _Settings(int(size), int(channels), int(model.output_shape[-1]), mean, std, style)


# --- data -------------------------------------------------------------------------------


@dataclasses.dataclass
class _Images:
    """Raw uint8 images `[b, S, S, C]` (and int labels) in batches, from arrays or a Source."""

    batches: object  # () -> iterator of (images, labels or None)
    count: int
    description: str


def _to_uint8(images):
    return tf.cast(tf.round(tf.clip_by_value(images, 0.0, 255.0)), tf.uint8)


def _from_source(source, settings, limit, seed, description):
    sample = ""
    if limit is not None and source.num_examples > limit:
        source = sources_lib.limit_per_class(source, limit / source.num_examples, seed=seed)
        sample = f" (a class-balanced sample, seed {seed})"
    transform = eval_transform(settings.style or "cifar", settings.image_size)
    dataset = eval_dataset(source, BATCH_SIZE, transform=lambda image: _to_uint8(transform(image)))

    def batches():
        for images, labels in dataset.as_numpy_iterator():
            yield images.astype(np.uint8), labels.astype(np.int64)

    return _Images(batches, source.num_examples, f"{description}: {source.num_examples} images{sample}")


def _from_arrays(value, settings, what, need_labels, limit, seed):
    labels = None
    if isinstance(value, tuple) and len(value) == 2:
        images, labels = value
    elif need_labels:
        raise ValueError(
            f"{what} must be (images, labels) or an okdph_keras.data.Source; got {type(value).__name__}."
        )
    else:
        images = value
    images = np.asarray(images)
    expected = (settings.image_size, settings.image_size, settings.channels)
    if images.ndim != 4 or images.shape[1:] != expected or len(images) == 0:
        raise ValueError(
            f"{what} must be raw images of shape [N, {', '.join(map(str, expected))}] (pixel "
            f"values in [0, 255] at the model's input size, N >= 1); got shape {list(images.shape)}."
        )
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise ValueError(f"{what} must hold pixel values in [0, 255]; got dtype {images.dtype}.")
    if images.dtype != np.uint8:
        low, high = float(images.min()), float(images.max())
        if not (np.isfinite(low) and np.isfinite(high) and low >= 0 and high <= 255):
            raise ValueError(f"{what} must hold pixel values in [0, 255]; got values in [{low}, {high}].")
        images = np.rint(images).astype(np.uint8)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"{what}: labels must be {len(images)} integers (one per image); got "
                f"{labels.dtype} {list(labels.shape)}."
            )
        if labels.min() < 0 or labels.max() >= settings.num_classes:
            raise ValueError(f"{what}: labels must lie in [0, {settings.num_classes}).")
        labels = labels.astype(np.int64)
    sample = ""
    if limit is not None and len(images) > limit:
        keep = np.sort(np.random.default_rng(seed).permutation(len(images))[:limit])
        images, labels = images[keep], None if labels is None else labels[keep]
        sample = f" (a random sample, seed {seed})"

    def batches():
        for start in range(0, len(images), BATCH_SIZE):
            stop = start + BATCH_SIZE
            yield images[start:stop], None if labels is None else labels[start:stop]

    return _Images(batches, len(images), f"arrays passed as {what}: {len(images)} images{sample}")


def _images(value, settings, what, need_labels, limit=None, seed=0, label=None):
    if isinstance(value, sources_lib.Source):
        return _from_source(value, settings, limit, seed, label or value.origin)
    return _from_arrays(value, settings, what, need_labels, limit, seed)


# --- the student and its serving function -----------------------------------------------


def _logits(model, images, settings):
    """uint8 images -> the student's float32 logits on normalised images."""
    x = normalize(images, settings.mean, settings.std)
    return tf.cast(model(x, training=False), tf.float32)  # float16 under mixed precision


def _reference_function(model, settings):
    """uint8 images -> the Keras student's logits (no export involved)."""
    return tf.function(
        lambda images: _logits(model, images, settings),
        input_signature=[_input_spec(settings)],
        reduce_retracing=True,
    )


def _input_spec(settings):
    shape = [None, settings.image_size, settings.image_size, settings.channels]
    return tf.TensorSpec(shape, tf.uint8, name=INPUT_NAME)


def _choose_student(origin, student, selection, settings):
    count = len(origin.students)
    if student is not None:
        if isinstance(student, bool) or not isinstance(student, (int, np.integer)) or not 0 <= student < count:
            raise ValueError(
                f"student={student!r} is out of range: {origin.path} holds {count} "
                f"student{'s' if count > 1 else ''} (indices 0 to {count - 1})."
            )
        return int(student), {"by": "index given by the caller"}
    if count == 1:
        return 0, {"by": "the only network in the file"}
    if selection is None:
        raise ValueError(
            f"{origin.path} holds {count} students: pass student= (0 to {count - 1}) or "
            "selection_data= to choose one."
        )
    functions = [_reference_function(s, settings) for s in origin.students]
    correct = np.zeros(count)
    for images, labels in selection.batches():
        for m, function in enumerate(functions):
            correct[m] += np.sum(function(images).numpy().argmax(-1) == labels)
    accuracies = correct / selection.count
    best = int(np.argmax(accuracies))  # the first of equals
    return best, {
        "by": "accuracy on the selection data (the first of equals)",
        "data": selection.description,
        "accuracies": [float(a) for a in accuracies],
    }


def _write_saved_model(model, settings, path):
    def serve(images):
        logits = _logits(model, images, settings)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=[_input_spec(settings)])
    archive.write_out(path, verbose=False)


def _convert(saved_model, variant, representative, int8_io):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=["serving_default"])
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if variant == "int8":

        def examples():
            for images, _ in representative.batches():
                for image in images:
                    yield {INPUT_NAME: image[None]}

        converter.representative_dataset = examples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.uint8  # the images already are
            converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        # The converter's calibration step builds a tf.lite.Interpreter, which warns that
        # it is deprecated; verification below uses LiteRT.
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        try:
            return converter.convert()
        except Exception as error:  # noqa: BLE001 (the converter raises many kinds)
            raise RuntimeError(f"TFLite conversion to {variant} failed: {error}") from error


def _write_bytes(path, content):
    def write(temporary):
        with open(temporary, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())

    checkpointing.write_atomically(path, write)


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names
    )


def _verify(reference, models, held_out):
    """Accuracy, top-1 agreement and largest logit difference of each model vs Keras."""
    names = list(models)
    correct = dict.fromkeys(["keras", *names], 0)
    agree = dict.fromkeys(names, 0)
    difference = dict.fromkeys(names, 0.0)
    for images, labels in held_out.batches():
        expected = reference(images).numpy()
        top = expected.argmax(-1)
        correct["keras"] += int(np.sum(top == labels))
        for name in names:
            logits = models[name].logits(images)
            correct[name] += int(np.sum(logits.argmax(-1) == labels))
            agree[name] += int(np.sum(logits.argmax(-1) == top))
            difference[name] = max(difference[name], float(np.max(np.abs(logits - expected))))
    count = held_out.count
    return correct["keras"] / count, {
        name: {
            "accuracy": correct[name] / count,
            "agreement": agree[name] / count,
            "max_abs_logit_difference": difference[name],
        }
        for name in names
    }


# --- atomic directories -----------------------------------------------------------------


def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(output):
    """Removes what killed exports to `output` left beside it (their process is gone)."""
    parent, name = os.path.split(output)
    pattern = re.compile(rf"^\.{re.escape(name)}\.(partial|old)-(\d+)-[A-Za-z0-9_]+$")
    for entry in sorted(os.listdir(parent)):
        match = pattern.match(entry)
        if not match or _pid_alive(int(match.group(2))):
            continue
        path = os.path.join(parent, entry)
        if match.group(1) == "old" and not os.path.lexists(output):
            os.rename(path, output)  # killed between the two renames: put the old export back
        else:
            shutil.rmtree(path, ignore_errors=True)


def _check_output(output, overwrite):
    if not os.path.lexists(output):
        return
    if not overwrite:
        raise FileExistsError(
            f"{output} already exists; pass overwrite=True (CLI --overwrite) to replace it."
        )
    if not os.path.isdir(output) or not os.path.isfile(os.path.join(output, METADATA_FILE)):
        raise FileExistsError(
            f"{output} exists and is not an export (no {METADATA_FILE}); it is not replaced "
            "even with overwrite. Choose another output directory."
        )


def _commit(temporary, output, overwrite):
    """Renames the complete `temporary` directory to `output` (replacing an old export)."""
    _check_output(output, overwrite)
    if not os.path.lexists(output):
        os.rename(temporary, output)
        return
    parent, name = os.path.split(output)
    old = tempfile.mkdtemp(prefix=f".{name}.old-{os.getpid()}-", dir=parent)
    os.rename(output, old)  # replaces the empty directory `old`
    try:
        os.rename(temporary, output)
    except BaseException:
        os.rename(old, output)
        raise
    shutil.rmtree(old, ignore_errors=True)


# --- the export -------------------------------------------------------------------------


def export_student(
    source,
    output_dir,
    *,
    student=None,
    variants=VARIANTS,
    int8_io=False,
    representative_data=None,
    held_out=None,
    selection_data=None,
    class_names=None,
    normalization=None,
    style=None,
    input_size=None,
    max_held_out=None,
    overwrite=False,
):
    """Exports one student to a SavedModel and TFLite files, verified on held-out data.

    Args:
        source: a run directory, or a `.keras` file of an `OKDPH` model or of one student.
        output_dir: the export directory to create.
        student: index of the student to export; None: the best on the selection data.
        variants: TFLite variants, a subset of `VARIANTS`.
        int8_io: the int8 model's outputs are int8 instead of float32.
        representative_data: int8 calibration images: uint8 `[N, S, S, C]` at the input
            size, or a `Source` (a seeded sample of 200 images, test-time transform).
            Default for a run: a sample of its training split.
        held_out: verification data: `(images [N, S, S, C], labels [N])` or a `Source`
            (test-time transform). Default for a run: its test split. Required for a
            `.keras` file.
        selection_data: data that picks the student (as `held_out`; a `Source` is sampled
            to 1,000 images). Default for a run: its validation split; without one,
            student 0 is exported.
        class_names: one name per class; default: the run's, else "0", "1", ...
        normalization: a name of `NORMALIZATION` or `(mean, std)` per channel, for images
            scaled to [0, 1]; default: the run's (required for a `.keras` file).
        style: "cifar" or "imagenet", the test-time transform for `Source`s and for
            `okdph_keras.predict`; default: the run's (None for a `.keras` file: a plain
            resize).
        input_size: side S of the input images; default: the run's, else the student's.
        max_held_out: verify on at most this many held-out images (a seeded,
            class-balanced sample); None: all of them.
        overwrite: replace an existing export at `output_dir`.

    Returns:
        The metadata written to `output_dir/metadata.json`.

    Raises:
        FileNotFoundError: `source` does not exist.
        FileExistsError: `output_dir` exists and `overwrite` is False.
        ValueError: a path holding no model or run, unknown variants, a student index out
            of range, data of the wrong shape, missing settings.
        RuntimeError: a TFLite conversion failed.

    Example:
        >>> metadata = export_student("runs/cifar10_resnet32_m2_seed42", "exports/resnet32")
        >>> metadata["variants"]["int8"]["agreement"]
    """
    variants = _check_variants(variants)
    output = os.path.abspath(os.fspath(output_dir))
    if os.path.basename(output) in ("", ".", ".."):
        raise ValueError(f"output_dir {output_dir!r} must name a directory to create.")
    parent, name = os.path.split(output)
    if os.path.isdir(parent):
        _clean_stale(output)
    _check_output(output, overwrite)
    origin = _load_origin(source)
    if os.path.commonpath([output, origin.path]) in (output, origin.path):
        raise ValueError(f"The output {output} must not hold the source {origin.path} or lie inside it.")
    settings = _settings(origin, normalization, style, input_size)

    seed = origin.config.seed if origin.config else 0
    if class_names is None and origin.kind == "run":
        class_names = origin.sources("class names").train.class_names
    class_names = tuple(str(n) for n in (class_names or range(settings.num_classes)))
    if len(class_names) != settings.num_classes:
        raise ValueError(
            f"{len(class_names)} class names for a student with {settings.num_classes} outputs."
        )

    selection, run_label, no_validation = None, None, False
    if student is None and len(origin.students) > 1 and selection_data is None and origin.kind == "run":
        selection_data = origin.sources("choosing the student").validation
        no_validation = selection_data is None
        if no_validation:
            student = 0
        else:
            run_label = f"the run's validation split ({selection_data.origin})"
    if student is None and selection_data is not None:
        selection = _images(
            selection_data, settings, "selection_data", True, SELECTION_EXAMPLES, seed, run_label
        )
    index, selection_info = _choose_student(origin, student, selection, settings)
    if no_validation:
        selection_info = {
            "by": "none: the run keeps no validation split (validation_fraction=0), so student 0 "
            "is exported; pass student= or selection_data= to choose"
        }
    model = origin.students[index]

    representative, run_label = None, None
    if "int8" in variants:
        if representative_data is None and origin.kind == "run":
            representative_data = origin.sources("int8 calibration").train
            run_label = f"the run's training split ({representative_data.origin})"
        if representative_data is None:
            raise ValueError(
                "The int8 variant needs representative_data (about 100-200 training images, "
                "uint8 [N, S, S, C] or a Source); pass it, or leave int8 out of variants."
            )
        representative = _images(
            representative_data, settings, "representative_data", False, REPRESENTATIVE_EXAMPLES,
            seed + 1, run_label,
        )
    run_label = None
    if held_out is None and origin.kind == "run":
        held_out = origin.sources("verification").test
        run_label = f"the run's test split ({held_out.origin})"
    if held_out is None:
        raise ValueError(
            f"{source} carries no data: pass held_out=(images, labels) or a Source (CLI "
            "--dataset/--data_dir) so that every exported model is checked against Keras."
        )
    held_out = _images(held_out, settings, "held_out", True, max_held_out, seed + 2, run_label)

    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f".{name}.partial-{os.getpid()}-", dir=parent)
    try:
        metadata = _build(
            temporary, model, settings, variants, int8_io, representative, held_out,
            dict(
                class_names=class_names,
                source=_source_info(origin, index, source),
                selection=selection_info,
            ),
        )
        _commit(temporary, output, overwrite)
    finally:
        if os.path.exists(temporary):
            shutil.rmtree(temporary, ignore_errors=True)
    return metadata


def _source_info(origin, index, source):
    info = {
        "path": origin.path,
        "given_as": os.fspath(source),
        "kind": origin.kind,
        "num_students": len(origin.students),
        "student": index,
        "test_accuracy": None,
    }
    if origin.kind == "run":
        config = origin.config
        info.update(run_name=config.run_name, dataset=config.dataset, model=config.model,
                    epochs_done=origin.state["epochs_done"], epochs=config.epochs)
        if config.noise_std:
            info["note"] = (
                f"the run added Gaussian noise (mean {config.noise_mean}, std {config.noise_std}) "
                "to normalised test images; the exported models add none"
            )
        if origin.results:
            info["test_accuracy"] = origin.results["final_test_accuracy"][f"student_{index}"]
            info["test_accuracy_from"] = "results.json: final-epoch test accuracy of this student"
            info["run_best_student"] = origin.results.get("best_student")
        else:
            history = origin.state["history"].get(f"test_student_{index}_accuracy")
            if history:
                info["test_accuracy"] = history[-1]
                info["test_accuracy_from"] = (
                    f"state.json: test accuracy after epoch {origin.state['epochs_done']} (unfinished run)"
                )
    return info


def _build(directory, model, settings, variants, int8_io, representative, held_out, info):
    saved_model = os.path.join(directory, SAVED_MODEL_DIR)
    _write_saved_model(model, settings, saved_model)
    files = {"saved_model": SAVED_MODEL_DIR}
    for variant in variants:
        content = _convert(saved_model, variant, representative, int8_io)
        _write_bytes(os.path.join(directory, tflite_file(variant)), content)
        files[variant] = tflite_file(variant)

    loaded = {
        name: (predict.SavedModel if name == "saved_model" else predict.TFLiteModel)(
            os.path.join(directory, file)
        )
        for name, file in files.items()
    }
    keras_accuracy, checks = _verify(_reference_function(model, settings), loaded, held_out)
    variants_info = {}
    for name, file in files.items():
        entry = {"path": file, "size_bytes": _size(os.path.join(directory, file)), **checks[name]}
        if name == "saved_model":
            entry["runtime"] = f"TensorFlow {tf.__version__}"
        else:
            entry["runtime"] = "LiteRT (ai_edge_litert)"
            entry["outputs"] = {}
            for output, details in loaded[name].output_details.items():
                scale, zero_point = details["quantization"]
                entry["outputs"][output] = {"dtype": np.dtype(details["dtype"]).name}
                if scale:  # quantised: value = scale * (q - zero_point)
                    entry["outputs"][output].update(scale=float(scale), zero_point=int(zero_point))
        variants_info[name] = entry

    metadata = {
        "format_version": FORMAT_VERSION,
        "class_names": list(info["class_names"]),
        "num_classes": settings.num_classes,
        "image_size": settings.image_size,
        "channels": settings.channels,
        "style": settings.style,
        "input": {
            "name": INPUT_NAME,
            "shape": [None, settings.image_size, settings.image_size, settings.channels],
            "dtype": "uint8",
            "values": "raw pixels in [0, 255], after the test-time transform of `style` "
            "(okdph_keras.data.views.eval_transform; a plain resize when style is null)",
        },
        "normalization": {
            "mean": list(settings.mean),
            "std": list(settings.std),
            "formula": "(float(x) / 255 - mean) / std, inside the exported graph",
        },
        "outputs": {
            "logits": f"float32 [B, {settings.num_classes}]",
            "probabilities": "softmax of the logits",
            "int8_io": bool(int8_io and "int8" in variants),
        },
        "source": info["source"],
        "selection": info["selection"],
        "representative_data": representative.description if representative else None,
        "held_out": {
            "data": held_out.description,
            "examples": held_out.count,
            "keras_accuracy": keras_accuracy,
            "measured": "accuracy, top-1 agreement with the Keras student on the same uint8 "
            "images, and the largest absolute logit difference",
        },
        "variants": variants_info,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    checkpointing.write_json_atomically(os.path.join(directory, METADATA_FILE), metadata)
    _usual_permissions(directory)
    return metadata


def _usual_permissions(directory):
    """Temporary files and directories are private (0600/0700): give the export the umask's."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for root, folders, files in os.walk(directory):
        for folder in folders:
            os.chmod(os.path.join(root, folder), 0o777 & ~umask)
        for file in files:
            os.chmod(os.path.join(root, file), 0o666 & ~umask)


def format_table(metadata):
    """The variants of an export's metadata as a text table."""
    rows = [("variant", "size", "accuracy", "agreement", "max |dlogit|")]
    for name, entry in metadata["variants"].items():
        rows.append((
            name,
            f"{entry['size_bytes'] / 1e6:.3f} MB",
            f"{entry['accuracy']:.4f}",
            f"{entry['agreement']:.4f}",
            f"{entry['max_abs_logit_difference']:.2e}",
        ))
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    held_out = metadata["held_out"]
    lines.append(f"Keras student: accuracy {held_out['keras_accuracy']:.4f} on {held_out['data']}")
    return "\n".join(lines)


# --- command line -----------------------------------------------------------------------


def _normalization_argument(text):
    if text in NORMALIZATION:
        return text
    try:
        mean, std = text.split(":")
        return tuple(float(v) for v in mean.split(",")), tuple(float(v) for v in std.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a name of {sorted(NORMALIZATION)} or MEAN,MEAN,MEAN:STD,STD,STD; got {text!r}"
        ) from None


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m okdph_keras.export",
        description="Export one student of a run (or a .keras file) to a SavedModel and TFLite, verified.",
    )
    parser.add_argument("source", help="run directory, or .keras file of an OKDPH model or a student")
    parser.add_argument("--output", required=True, help="export directory to create")
    parser.add_argument("--student", type=int, default=None, help="student index (default: the best on the selection data)")
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS),
        help=f"TFLite variants, space- or comma-separated (default: {' '.join(VARIANTS)})",
    )
    parser.add_argument("--int8_io", action="store_true", help="int8 outputs for the int8 model")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export")
    parser.add_argument("--max_held_out", type=int, default=None, help="verify on at most this many test images")
    group = parser.add_argument_group("for a .keras file (a run directory records these)")
    group.add_argument("--normalization", type=_normalization_argument, default=None,
                       help=f"{' | '.join(sorted(NORMALIZATION))} | MEAN,..:STD,..")
    group.add_argument("--style", choices=STYLES, default=None, help="test-time transform (default: plain resize)")
    group.add_argument("--image_size", type=int, default=None, help="input side (default: the model's)")
    group.add_argument("--dataset", default=None,
                       help="TFDS name or image_folder: its train split calibrates int8 and picks the student, "
                       "its test split verifies")
    group.add_argument("--data_dir", default=None, help="TFDS data directory or image folder root")
    args = parser.parse_args(argv)
    variants = [v for item in args.variants for v in item.split(",") if v]
    data = {}
    try:
        if args.dataset:
            train = sources_lib.load_source(args.dataset, "train", data_dir=args.data_dir, download=False)
            test = sources_lib.load_source(args.dataset, "test", data_dir=args.data_dir, download=False)
            data = dict(representative_data=train, selection_data=train, held_out=test,
                        class_names=train.class_names)
        metadata = export_student(
            args.source, args.output, student=args.student, variants=variants, int8_io=args.int8_io,
            normalization=args.normalization, style=args.style, input_size=args.image_size,
            max_held_out=args.max_held_out, overwrite=args.overwrite, **data,
        )
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as error:
        parser.exit(1, f"error: {error}\n")
    source = metadata["source"]
    print(f"Exported student {source['student']} of {source['path']} to {os.path.abspath(args.output)}")
    if source["test_accuracy"] is not None:
        print(f"Source test accuracy of this student: {source['test_accuracy']:.4f}")
    print(format_table(metadata))
    return 0


if __name__ == "__main__":
    sys.exit(main())
