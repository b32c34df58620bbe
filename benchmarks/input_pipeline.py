"""Input pipeline speed beside the OKDPH training step, measured in one run.

    python benchmarks/input_pipeline.py                        # synthetic CIFAR-sized data
    python benchmarks/input_pipeline.py --data_dir=/tmp/cifar10-jpg   # a class-per-folder tree

Prints images per second of the 3-view CIFAR-10 pipeline (hflip, cutout,
randaugment; crop, augment, normalise) and of the OKDPH step (2 students + HWM,
in-memory batches, so the pipeline is excluded), and their ratio: above 1 the
pipeline keeps up with training.

    python benchmarks/input_pipeline.py --imagenet --imagenet_sizes=10,30

ImageNet mode: for each number of images per class, generates a class-sorted
class-per-folder tree of 400x350 JPEGs (1,000 classes) in a temp dir and, in a
subprocess of its own (so sizes do not share a peak), times the 3-view ImageNet
pipeline (hflip, randaugment, autoaugment at 224) and prints images/s per core,
peak RSS (VmHWM) and the mean number of distinct classes per batch beside the
exact expectation for a uniform shuffle (sampling without replacement).
"""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

import okdph_keras
from okdph_keras import data

flags.DEFINE_string("data_dir", None, "Image folder root (train/ ...); synthetic data if unset.")
flags.DEFINE_string("model", "resnet32", "Student architecture.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("batches", 40, "Pipeline batches to time, after warm-up.")
flags.DEFINE_integer("steps", 10, "Training steps to time, after warm-up.")
flags.DEFINE_bool("imagenet", False, "ImageNet mode on generated class-sorted folder trees.")
flags.DEFINE_list("imagenet_sizes", ["10", "30"], "ImageNet mode: images per class, one run each.")
flags.DEFINE_integer("imagenet_classes", 1000, "ImageNet mode: number of classes.")
flags.DEFINE_integer("imagenet_batches", 4, "ImageNet mode: batches of 256 timed and counted.")
flags.DEFINE_string("_imagenet_child", None, "Internal: tree to measure in this process.")
FLAGS = flags.FLAGS
IMAGENET_BATCH = 256


def write_tree(root, *, classes, per_class, distinct=64):
    """A class-sorted tree root/train/cNNNN/iNNNN.jpg of 400x350 JPEGs (`distinct` different ones)."""
    from PIL import Image  # noqa: PLC0415

    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(distinct):  # smooth noise, so the JPEGs have realistic sizes
        small = rng.integers(0, 256, size=(35, 40, 3), dtype=np.uint8)
        path = os.path.join(root, "blob.jpg")
        Image.fromarray(small).resize((400, 350), Image.BILINEAR).save(path, quality=90)
        blobs.append(open(path, "rb").read())
    os.remove(path)
    for c in range(classes):
        folder = os.path.join(root, "train", f"c{c:04d}")
        os.makedirs(folder)
        for i in range(per_class):
            with open(os.path.join(folder, f"i{i:04d}.jpg"), "wb") as file:
                file.write(blobs[(c * per_class + i) % distinct])
        if c % 250 == 249:
            print(f"  wrote {c + 1}/{classes} classes", flush=True)


def expected_distinct(classes, per_class, batch):
    """Exact E[distinct classes] in `batch` drawn without replacement from a balanced set."""
    total = classes * per_class
    absent = (
        math.exp(  # C(total - per_class, batch) / C(total, batch)
            math.lgamma(total - per_class + 1)
            - math.lgamma(total - per_class - batch + 1)
            + math.lgamma(total - batch + 1)
            - math.lgamma(total + 1)
        )
        if total - per_class >= batch
        else 0.0
    )
    return classes * (1 - absent)


def imagenet_child(root):
    """Measures one tree in this process; prints one JSON line."""
    source = data.load_source("image_folder", "train", data_dir=root)
    views = [
        data.make_view(name, "imagenet", 224, seed=k)
        for k, name in enumerate(data.DEFAULT_VIEWS["imagenet"])
    ]
    pipeline = data.multi_view_dataset(
        source, views, IMAGENET_BATCH, seed=0, normalization=data.NORMALIZATION["imagenet"]
    )
    iterator = iter(pipeline)
    distinct = [len(np.unique(next(iterator)[1].numpy()))]  # warm-up batch counts too
    start = time.perf_counter()
    for k in range(FLAGS.imagenet_batches):
        distinct.append(len(np.unique(next(iterator)[1].numpy())))
        print(f"    batch {k + 1}/{FLAGS.imagenet_batches}", file=sys.stderr, flush=True)
    rate = FLAGS.imagenet_batches * IMAGENET_BATCH / (time.perf_counter() - start)
    peak_kb = next(
        int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")
    )
    print(
        json.dumps(
            {
                "examples": source.num_examples,
                "rate": rate,
                "distinct": distinct,
                "peak_mb": peak_kb / 1024,
                "cores": len(os.sched_getaffinity(0)),
            }
        )
    )


def imagenet_main():
    classes = FLAGS.imagenet_classes
    print(
        f"ImageNet mode: {classes} classes, class-sorted folders of 400x350 JPEGs, "
        f"batch {IMAGENET_BATCH}, views {data.DEFAULT_VIEWS['imagenet']}",
        flush=True,
    )
    for per_class in map(int, FLAGS.imagenet_sizes):
        root = tempfile.mkdtemp(prefix="okdph-imagenet-")
        try:
            print(
                f"{per_class} images per class: writing {classes * per_class} files to {root}",
                flush=True,
            )
            write_tree(root, classes=classes, per_class=per_class)
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    f"--_imagenet_child={root}",
                    f"--imagenet_batches={FLAGS.imagenet_batches}",
                ],
                check=True,
                stdout=subprocess.PIPE,
                text=True,
            ).stdout
            result = json.loads(out.strip().splitlines()[-1])
        finally:
            shutil.rmtree(root, ignore_errors=True)
        expected = expected_distinct(classes, per_class, IMAGENET_BATCH)
        with_replacement = classes * (1 - (1 - 1 / classes) ** IMAGENET_BATCH)
        mean = float(np.mean(result["distinct"]))
        print(
            f"  {result['examples']} images: {result['rate'] / result['cores']:.1f} images/s per core "
            f"({result['rate']:.1f} images/s on {result['cores']} cores), peak RSS "
            f"{result['peak_mb']:.0f} MB; distinct classes per batch of {IMAGENET_BATCH}: mean "
            f"{mean:.1f} over {len(result['distinct'])} batches {result['distinct']}; uniform "
            f"expectation {expected:.1f} (exact, without replacement from {per_class} per class; "
            f"with replacement {with_replacement:.1f}); ratio {mean / expected:.3f}",
            flush=True,
        )


def images_per_second(iterator, count, batch_size):
    next(iterator)  # warm-up: tracing and the first fill of the prefetch buffer
    start = time.perf_counter()
    for _ in range(count):
        next(iterator)
    return count * batch_size / (time.perf_counter() - start)


def main(argv):
    del argv
    if FLAGS._imagenet_child:
        return imagenet_child(FLAGS._imagenet_child)
    if FLAGS.imagenet:
        return imagenet_main()
    if FLAGS.data_dir:
        source = data.load_source("image_folder", "train", data_dir=FLAGS.data_dir)
    else:
        rng = np.random.default_rng(0)
        source = data.from_arrays(
            rng.integers(0, 256, size=(10_000, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, size=10_000),
        )
    views = [
        data.make_view(name, "cifar", 32, seed=k)
        for k, name in enumerate(data.DEFAULT_VIEWS["cifar10"])
    ]
    pipeline = data.multi_view_dataset(
        source, views, FLAGS.batch_size, normalization=data.NORMALIZATION["cifar10"], epochs=1000
    )
    iterator = iter(pipeline)
    pipeline_rate = images_per_second(iterator, FLAGS.batches, FLAGS.batch_size)
    batch = next(iterator)
    del iterator  # stop its background threads before timing the step

    model = okdph_keras.OKDPH(lambda: okdph_keras.get_model(FLAGS.model, 10), num_students=2)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.1, momentum=0.9))
    in_memory = tf.data.Dataset.from_tensors(batch).repeat()
    model.make_train_function()
    step = model.train_function
    step_iterator = iter(in_memory)
    step(step_iterator)  # trace
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        step(step_iterator)
    step_rate = FLAGS.steps * FLAGS.batch_size / (time.perf_counter() - start)

    print(f"source: {source.origin}")
    print(f"3-view pipeline ({', '.join(v.name for v in views)}): {pipeline_rate:8.0f} images/s")
    print(f"OKDPH step ({FLAGS.model}, M=2, batch {FLAGS.batch_size}):  {step_rate:8.0f} images/s")
    print(
        f"pipeline / step: {pipeline_rate / step_rate:.1f}x  "
        f"(CPUs: {len(tf.config.list_physical_devices('CPU'))} device, "
        f"{tf.config.threading.get_inter_op_parallelism_threads() or 'default'} inter-op threads)"
    )


if __name__ == "__main__":
    app.run(main)
