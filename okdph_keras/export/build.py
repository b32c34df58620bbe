"""`export_student`: one student of a run or `.keras` file to a verified export directory.

The export runs in named steps: load the source, resolve the settings, name the classes,
choose the student, draw the calibration and held-out samples (all before anything is
written), then build and verify the files in a temporary directory (`_build`).
"""

import dataclasses
import os
import warnings

import keras

from okdph_keras import checkpointing, rundir
from okdph_keras.export import atomic, convert, metadata, origin, samples, settings, verify
from okdph_keras.export.convert import VARIANTS
from okdph_keras.predict import METADATA_FILE, SAVED_MODEL_DIR
from okdph_keras.student_copy import plain_student
from okdph_keras.validation import fail

# For a run, the default of each data argument: (the run's split, what it is needed for).
RUN_DEFAULTS = {
    "selection_data": ("validation", "choosing the student"),
    "representative_data": ("train", "int8 calibration"),
    "held_out": ("test", "verification"),
}
SPLIT_NAMES = {"train": "training", "validation": "validation", "test": "test"}
REMEDY = (
    "Pass that data to export_student instead (student=, class_names=, representative_data=, "
    "held_out=)."
)
NO_VALIDATION = {
    "by": "none: the run keeps no validation split (validation_fraction=0), so student 0 "
    "is exported; pass student= or selection_data= to choose"
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything an export is built from, resolved and checked before anything is written.

    Attributes:
        student: the Keras student to export.
        settings: the export's `settings.Settings`.
        variants: the TFLite variants, in `VARIANTS` order.
        int8_io: the int8 model has int8 outputs.
        representative: the int8 calibration `samples.Images`, or None without int8.
        held_out: the verification `samples.Images`.
        info: `class_names`, `source` and `selection` (how the student was chosen).
    """

    student: keras.Model
    settings: settings.Settings
    variants: tuple
    int8_io: bool
    representative: samples.Images | None
    held_out: samples.Images
    info: dict


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
    variants = settings.check_variants(variants)
    output = atomic.prepare(output_dir, overwrite)
    loaded = _load(source, output)
    resolved = settings.resolve(
        loaded, normalization=normalization, style=style, input_size=input_size
    )
    seed = loaded.config.seed if loaded.config else 0
    names = _class_names(loaded, resolved, class_names)
    index, selection = _choose_student(
        loaded, resolved, student=student, data=selection_data, seed=seed
    )
    plan = Plan(
        student=plain_student(loaded.students[index]),
        settings=resolved,
        variants=variants,
        int8_io=int8_io,
        representative=_representative(
            loaded, resolved, variants=variants, data=representative_data, seed=seed + 1
        ),
        held_out=_held_out(loaded, resolved, data=held_out, limit=max_held_out, seed=seed + 2),
        info={
            "class_names": names,
            "source": origin.source_info(loaded, index, source),
            "selection": selection,
        },
    )
    with atomic.building(output, overwrite) as directory:
        return _build(directory, plan)


def _load(source, output):
    """The `rundir.Origin` of `source`, which must not hold `output`; warns of unfinished runs."""
    loaded = rundir.load(source)
    if os.path.commonpath([output, loaded.path]) in (output, loaded.path):
        raise ValueError(
            f"The output {output} must not hold the source {loaded.path} or lie inside it."
        )
    if loaded.kind == "run" and loaded.results is None:
        warnings.warn(
            f"Run {source} has not finished: exporting from its checkpoint after epoch "
            f"{loaded.state['epochs_done']} of {loaded.config.epochs}.",
            stacklevel=3,  # export_student's caller
        )
    return loaded


def _sample(loaded, resolved, data, *, what, limit, seed):
    """`samples.Images` of the caller's `data`, else of the run's split; None without either."""
    label = None
    if data is None and loaded.kind == "run":
        split, needed_for = RUN_DEFAULTS[what]
        data = getattr(loaded.sources(needed_for, REMEDY), split)
        label = None if data is None else f"the run's {SPLIT_NAMES[split]} split ({data.origin})"
    if data is None:
        return None
    need_labels = what != "representative_data"
    return samples.draw(
        data, resolved, what=what, need_labels=need_labels, limit=limit, seed=seed, label=label
    )


def _class_names(loaded, resolved, class_names):
    """One name per class: the caller's, else the run's, else "0", "1", ..."""
    if class_names is None and loaded.kind == "run":
        class_names = loaded.sources("class names", REMEDY).train.class_names
    names = tuple(str(n) for n in (class_names or range(resolved.num_classes)))
    if len(names) != resolved.num_classes:
        fail(
            "class_names",
            class_names,
            f"{resolved.num_classes} names, one per output of the student",
        )
    return names


def _choose_student(loaded, resolved, *, student, data, seed):
    """`(index, how it was chosen)`; a run's default selection data is its validation split."""
    selection = None
    if student is None and (len(loaded.students) > 1 or data is not None):
        limit = samples.SELECTION_EXAMPLES
        selection = _sample(loaded, resolved, data, what="selection_data", limit=limit, seed=seed)
        if selection is None and loaded.kind == "run":
            return 0, NO_VALIDATION
    return origin.choose_student(loaded, student=student, selection=selection, settings=resolved)


def _representative(loaded, resolved, *, variants, data, seed):
    """The int8 calibration sample (None without int8); a run's default is its training split."""
    if "int8" not in variants:
        return None
    limit = samples.REPRESENTATIVE_EXAMPLES
    sample = _sample(loaded, resolved, data, what="representative_data", limit=limit, seed=seed)
    if sample is None:
        raise ValueError(
            "The int8 variant needs representative_data (about 100-200 training images, "
            "uint8 [N, S, S, C] or a Source); pass it, or leave int8 out of variants."
        )
    return sample


def _held_out(loaded, resolved, *, data, limit, seed):
    """The verification sample; a run's default is its test split."""
    sample = _sample(loaded, resolved, data, what="held_out", limit=limit, seed=seed)
    if sample is None:
        raise ValueError(
            f"{loaded.path} carries no data: pass held_out=(images, labels) or a Source (CLI "
            "--dataset/--data_dir) so that every exported model is checked against Keras."
        )
    return sample


def _build(directory, plan):
    """Writes the SavedModel, the TFLite files and `metadata.json` into `directory`."""
    saved_model = os.path.join(directory, SAVED_MODEL_DIR)
    convert.write_saved_model(plan.student, plan.settings, saved_model)
    files = {"saved_model": SAVED_MODEL_DIR}
    for variant in plan.variants:
        content = convert.to_tflite(
            saved_model, variant=variant, representative=plan.representative, int8_io=plan.int8_io
        )
        convert.write_bytes(os.path.join(directory, convert.tflite_file(variant)), content)
        files[variant] = convert.tflite_file(variant)
    reference = convert.reference_function(plan.student, plan.settings)
    keras_accuracy, entries = verify.verify(
        directory, files=files, reference=reference, held_out=plan.held_out
    )
    described = metadata.describe(plan, keras_accuracy=keras_accuracy, entries=entries)
    checkpointing.write_json_atomically(os.path.join(directory, METADATA_FILE), described)
    return described
