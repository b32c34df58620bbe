"""`export_student`: one student of a run or `.keras` file to a verified export directory."""

import os

from okdph_keras import checkpointing
from okdph_keras.export import atomic, convert, metadata, origin, samples, settings, verify
from okdph_keras.export.convert import VARIANTS
from okdph_keras.predict import METADATA_FILE, SAVED_MODEL_DIR


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
    loaded = origin.load(source)
    if os.path.commonpath([output, loaded.path]) in (output, loaded.path):
        raise ValueError(
            f"The output {output} must not hold the source {loaded.path} or lie inside it."
        )
    resolved = settings.resolve(loaded, normalization, style, input_size)

    seed = loaded.config.seed if loaded.config else 0
    if class_names is None and loaded.kind == "run":
        class_names = loaded.sources("class names").train.class_names
    class_names = tuple(str(n) for n in (class_names or range(resolved.num_classes)))
    if len(class_names) != resolved.num_classes:
        raise ValueError(
            f"{len(class_names)} class names for a student with {resolved.num_classes} outputs."
        )

    selection, run_label, no_validation = None, None, False
    if (
        student is None
        and len(loaded.students) > 1
        and selection_data is None
        and loaded.kind == "run"
    ):
        selection_data = loaded.sources("choosing the student").validation
        no_validation = selection_data is None
        if no_validation:
            student = 0
        else:
            run_label = f"the run's validation split ({selection_data.origin})"
    if student is None and selection_data is not None:
        selection = samples.draw(
            selection_data,
            resolved,
            "selection_data",
            True,
            samples.SELECTION_EXAMPLES,
            seed,
            run_label,
        )
    index, selection_info = origin.choose_student(loaded, student, selection, resolved)
    if no_validation:
        selection_info = {
            "by": "none: the run keeps no validation split (validation_fraction=0), so student 0 "
            "is exported; pass student= or selection_data= to choose"
        }

    representative, run_label = None, None
    if "int8" in variants:
        if representative_data is None and loaded.kind == "run":
            representative_data = loaded.sources("int8 calibration").train
            run_label = f"the run's training split ({representative_data.origin})"
        if representative_data is None:
            raise ValueError(
                "The int8 variant needs representative_data (about 100-200 training images, "
                "uint8 [N, S, S, C] or a Source); pass it, or leave int8 out of variants."
            )
        representative = samples.draw(
            representative_data,
            resolved,
            "representative_data",
            False,
            samples.REPRESENTATIVE_EXAMPLES,
            seed + 1,
            run_label,
        )
    run_label = None
    if held_out is None and loaded.kind == "run":
        held_out = loaded.sources("verification").test
        run_label = f"the run's test split ({held_out.origin})"
    if held_out is None:
        raise ValueError(
            f"{source} carries no data: pass held_out=(images, labels) or a Source (CLI "
            "--dataset/--data_dir) so that every exported model is checked against Keras."
        )
    held_out = samples.draw(held_out, resolved, "held_out", True, max_held_out, seed + 2, run_label)

    info = dict(
        class_names=class_names,
        source=origin.source_info(loaded, index, source),
        selection=selection_info,
    )
    with atomic.building(output, overwrite) as directory:
        return _build(
            directory,
            loaded.students[index],
            resolved,
            variants,
            int8_io,
            representative,
            held_out,
            info,
        )


def _build(directory, model, resolved, variants, int8_io, representative, held_out, info):
    """Writes the SavedModel, the TFLite files and `metadata.json` into `directory`."""
    saved_model = os.path.join(directory, SAVED_MODEL_DIR)
    convert.write_saved_model(model, resolved, saved_model)
    files = {"saved_model": SAVED_MODEL_DIR}
    for variant in variants:
        content = convert.to_tflite(saved_model, variant, representative, int8_io)
        convert.write_bytes(os.path.join(directory, convert.tflite_file(variant)), content)
        files[variant] = convert.tflite_file(variant)
    reference = convert.reference_function(model, resolved)
    keras_accuracy, entries = verify.verify(directory, files, reference, held_out)
    described = metadata.describe(
        resolved, variants, int8_io, info, representative, held_out, keras_accuracy, entries
    )
    checkpointing.write_json_atomically(os.path.join(directory, METADATA_FILE), described)
    return described
