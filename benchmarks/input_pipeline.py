"""Input pipeline speed beside the OKDPH training step, measured in one run.

    python benchmarks/input_pipeline.py                        # synthetic CIFAR-sized data
    python benchmarks/input_pipeline.py --data_dir=/tmp/cifar10-jpg   # a class-per-folder tree

Prints images per second of the 3-view CIFAR-10 pipeline (hflip, cutout,
randaugment; crop, augment, normalise) and of the OKDPH step (2 students + HWM,
in-memory batches, so the pipeline is excluded), and their ratio: above 1 the
pipeline keeps up with training.
"""

import time

from absl import app, flags
import numpy as np
import tensorflow as tf

import okdph_keras
from okdph_keras import data

flags.DEFINE_string("data_dir", None, "Image folder root (train/ ...); synthetic data if unset.")
flags.DEFINE_string("model", "resnet32", "Student architecture.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("batches", 40, "Pipeline batches to time, after warm-up.")
flags.DEFINE_integer("steps", 10, "Training steps to time, after warm-up.")
FLAGS = flags.FLAGS


def images_per_second(iterator, count, batch_size):
    next(iterator)  # warm-up: tracing and the first fill of the prefetch buffer
    start = time.perf_counter()
    for _ in range(count):
        next(iterator)
    return count * batch_size / (time.perf_counter() - start)


def main(argv):
    del argv
    if FLAGS.data_dir:
        source = data.load_source("image_folder", "train", data_dir=FLAGS.data_dir)
    else:
        rng = np.random.default_rng(0)
        source = data.from_arrays(
            rng.integers(0, 256, size=(10_000, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, size=10_000),
        )
    views = [data.make_view(name, "cifar", 32, seed=k) for k, name in enumerate(data.DEFAULT_VIEWS["cifar10"])]
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
    print(f"pipeline / step: {pipeline_rate / step_rate:.1f}x  (CPUs: {len(tf.config.list_physical_devices('CPU'))} device, "
          f"{tf.config.threading.get_inter_op_parallelism_threads() or 'default'} inter-op threads)")


if __name__ == "__main__":
    app.run(main)
