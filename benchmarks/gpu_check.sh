#!/usr/bin/env bash
# Checks okdph-keras on a GPU machine in about a minute:
#   1. the devices TensorFlow sees;
#   2. OKDPH training steps (resnet32, M=2, batch 128) on one GPU, float32 and mixed_float16,
#      with images/s and a finite loss;
#   3. the image-folder recipe end to end with --smoke and --strategy=auto (MirroredStrategy
#      over every visible GPU when there are several), on generated images.
# Usage: bash benchmarks/gpu_check.sh   (from the repository root, after the README's install)
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python - "$work" <<'EOF'
import sys, time
import numpy as np
import tensorflow as tf
import keras
import okdph_keras

gpus = tf.config.list_physical_devices("GPU")
print("TensorFlow", tf.__version__, "Keras", keras.__version__, "GPUs:", [g.name for g in gpus])
if not gpus:
    sys.exit("No GPU visible to TensorFlow: check the CUDA install (pip install 'tensorflow[and-cuda]').")

for policy in ("float32", "mixed_float16"):
    keras.mixed_precision.set_global_policy(policy)
    model = okdph_keras.OKDPH(lambda: okdph_keras.get_model("resnet32", 10), num_students=2, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    views = np.random.default_rng(0).normal(size=(128, 3, 32, 32, 3)).astype("float32")
    labels = np.random.default_rng(1).integers(0, 10, size=128)
    data = tf.data.Dataset.from_tensors((views, labels)).repeat()
    model.fit(data, steps_per_epoch=5, epochs=1, verbose=0)  # trace and warm up
    start = time.perf_counter()
    history = model.fit(data, steps_per_epoch=30, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    loss = history.history["loss"][-1]
    print(f"{policy}: {30 * 128 / seconds:.0f} images/s, loss {loss:.3f}", "OK" if np.isfinite(loss) else "NOT FINITE")

keras.mixed_precision.set_global_policy("float32")
rng = np.random.default_rng(0)
for split, count in (("train", 40), ("test", 10)):
    for label in range(3):
        folder = f"{sys.argv[1]}/data/{split}/class_{label}"
        tf.io.gfile.makedirs(folder)
        for i in range(count):
            image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            tf.io.write_file(f"{folder}/{i}.png", tf.io.encode_png(image))
EOF

python -m recipes.image_folder --smoke --strategy=auto --data_dir="$work/data" --model=resnet32 \
    --style=cifar --image_size=32 --normalization=cifar10 --batch_size=32 \
    --output_dir="$work/runs" --saved_models_dir="$work/saved"
echo "gpu_check: OK"
