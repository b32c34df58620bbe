"""Size, single-image latency and accuracy of every exported variant of a student, in one run.

    python benchmarks/export.py --source=runs/cifar10_resnet32_m2_seed42
    python benchmarks/export.py --source=saved_models/x/student.keras --normalization=cifar10 \
        --style=cifar --dataset=cifar10 --data_dir=/data/tfds
    python benchmarks/export.py                 # trains a small OKDPH run on synthetic data first

Exports the student with `okdph_keras.export.export_student` (SavedModel and TFLite
float32, float16, dynamic-range and int8) into a temporary directory, then times each model
on one image at a time: LiteRT (`ai_edge_litert`) for the TFLite files, TensorFlow for the
SavedModel; the median of `--runs` calls after `--warmup` calls. Accuracy and top-1
agreement with the Keras student are the export's own verification (on the run's test split
or `--dataset`'s). Without `--source`, a 2-student OKDPH run of `--arch` is trained for
`--epochs` on synthetic, learnable images (a patch of the class's colour on dark noise) and
exported; its accuracy then only shows that the variants agree.
"""

import os
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from okdph_keras import export, predict, train
from okdph_keras.config import Config
from okdph_keras.data import load_source
from okdph_keras.data.views import NORMALIZATION

flags.DEFINE_string(
    "source", None, "Run directory or .keras file; unset: train a small run on synthetic data."
)
flags.DEFINE_integer("student", None, "Student index (default: the best on the selection data).")
flags.DEFINE_string("normalization", None, "For a .keras file: a name of NORMALIZATION.")
flags.DEFINE_enum(
    "style", None, ["cifar", "imagenet"], "For a .keras file: its test-time transform."
)
flags.DEFINE_string(
    "dataset",
    None,
    "For a .keras file: TFDS name or image_folder (train: int8 calibration, test: verification).",
)
flags.DEFINE_string(
    "data_dir", None, "For a .keras file: TFDS data directory or image folder root."
)
flags.DEFINE_integer("max_held_out", None, "Verify on at most this many test images.")
flags.DEFINE_integer("runs", 200, "Timed single-image calls per model, after warm-up.")
flags.DEFINE_integer("warmup", 20, "Untimed calls per model first.")
flags.DEFINE_integer("threads", 1, "LiteRT interpreter threads.")
flags.DEFINE_string("arch", "resnet32", "Synthetic run only: the student architecture.")
flags.DEFINE_integer("epochs", 3, "Synthetic run only: training epochs.")
FLAGS = flags.FLAGS

CLASSES = ("blue", "green", "red")


def synthetic_run(root):
    """Trains a 2-student OKDPH run on 32x32 colour patches in `root`; returns its directory."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 200), ("test", 100)):
        for label, name in enumerate(CLASSES):
            folder = os.path.join(root, "data", split, name)
            os.makedirs(folder)
            for index in range(count):
                image = rng.integers(0, 90, size=(32, 32, 3))
                row, column = rng.integers(0, 32 - 10, size=2)
                colour = rng.integers(0, 60, size=3)
                colour[2 - label] = rng.integers(190, 256)  # blue, green, red
                image[row : row + 10, column : column + 10] = colour
                png = tf.io.encode_png(image.astype(np.uint8))
                tf.io.write_file(os.path.join(folder, f"{index:04d}.png"), png)
    config = Config(
        dataset="image_folder",
        data_dir=os.path.join(root, "data"),
        model=FLAGS.arch,
        views=("hflip", "cutout", "none"),
        style="cifar",
        image_size=32,
        normalization=NORMALIZATION["cifar10"],
        epochs=FLAGS.epochs,
        batch_size=32,
        learning_rate=0.05,
        seed=1,
        output_dir=os.path.join(root, "runs"),
        run_name="synthetic",
        saved_models_dir=os.path.join(root, "saved"),
    )
    train.run(config)
    return os.path.join(root, "runs", "synthetic")


def median_latency_ms(call):
    for _ in range(FLAGS.warmup):
        call()
    times = []
    for _ in range(FLAGS.runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def tflite_call(model, image):
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    # A fresh interpreter driven tensor by tensor: a signature runner resizes and
    # allocates on every call.
    interpreter = Interpreter(model_path=model.path, num_threads=FLAGS.threads)
    index = model.input_details["index"]
    interpreter.resize_tensor_input(index, image.shape)
    interpreter.allocate_tensors()
    outputs = [details["index"] for details in model.output_details.values()]

    def call():
        interpreter.set_tensor(index, image)
        interpreter.invoke()
        return [interpreter.get_tensor(i) for i in outputs]

    return call


def saved_model_call(model, image):
    images = tf.constant(image)
    return lambda: model._function(**{model._input_name: images})  # noqa: SLF001 (the raw signature)


def main(argv):
    del argv
    workdir = tempfile.mkdtemp(prefix="okdph_export_benchmark_")
    source = FLAGS.source
    if source is None:
        print(
            f"No --source given: training a 2-student {FLAGS.arch} OKDPH run for {FLAGS.epochs} "
            f"epochs on synthetic 32x32 colour-patch images (3 classes) in {workdir}."
        )
        start = time.perf_counter()
        source = synthetic_run(workdir)
        print(f"Trained in {time.perf_counter() - start:.0f} s.")
    data = {}
    if FLAGS.dataset:
        train_source = load_source(FLAGS.dataset, "train", data_dir=FLAGS.data_dir, download=False)
        data = dict(
            representative_data=train_source,
            selection_data=train_source,
            held_out=load_source(FLAGS.dataset, "test", data_dir=FLAGS.data_dir, download=False),
            class_names=train_source.class_names,
        )
    output = os.path.join(workdir, "export")
    start = time.perf_counter()
    metadata = export.export_student(
        source,
        output,
        student=FLAGS.student,
        normalization=FLAGS.normalization,
        style=FLAGS.style,
        max_held_out=FLAGS.max_held_out,
        **data,
    )
    export_seconds = time.perf_counter() - start

    size = metadata["image_size"]
    image = np.random.default_rng(0).integers(
        0, 256, (1, size, size, metadata["channels"]), dtype=np.uint8
    )
    rows = []
    for name, entry in metadata["variants"].items():
        model = predict.load(output, variant=name, num_threads=FLAGS.threads)
        if name == "saved_model":
            latency, runtime = median_latency_ms(saved_model_call(model, image)), "TensorFlow"
        else:
            latency, runtime = (
                median_latency_ms(tflite_call(model, image)),
                f"LiteRT, {FLAGS.threads} thread(s)",
            )
        rows.append(
            (
                name,
                f"{entry['size_bytes'] / 1e6:.3f} MB",
                f"{latency:.3f} ms",
                runtime,
                f"{entry['accuracy']:.4f}",
                f"{entry['agreement']:.4f}",
            )
        )

    src = metadata["source"]
    print(
        f"\nStudent {src['student']} of {src['path']} ({src.get('model', 'a .keras file')}, "
        f"{size}x{size}x{metadata['channels']}, {metadata['num_classes']} classes); export took "
        f"{export_seconds:.0f} s."
    )
    print(
        f"Latency: one image, median of {FLAGS.runs} calls after {FLAGS.warmup}. Accuracy and "
        f"agreement with the Keras student (accuracy {metadata['held_out']['keras_accuracy']:.4f}) "
        f"on {metadata['held_out']['data']}.\n"
    )
    header = ("variant", "size", "latency", "runtime", "accuracy", "agreement")
    widths = [max(len(row[k]) for row in [header, *rows]) for k in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    print(f"\nExport kept in {output}.")


if __name__ == "__main__":
    app.run(main)
