#!/usr/bin/env bash
# Checks okdph-keras on a GPU machine and writes every figure to one file (and to stdout).
#
# Usage, from anywhere after the README's install:
#   bash benchmarks/gpu_check.sh [OUTPUT_FILE] [--dry_run]     # OUTPUT_FILE: ./gpu_check.txt
#   GPU_CHECK_DRY_RUN=1 bash benchmarks/gpu_check.sh /tmp/gpu_check_dry.txt
#
# Sections, in this order (each one's command, output, status and seconds go to the file):
#   1. devices: TensorFlow and Keras versions, every GPU TensorFlow sees (name, compute
#      capability) and nvidia-smi's view. Stops here, with a message, if TensorFlow sees
#      no GPU (unless --dry_run).
#   2. python -m benchmarks.throughput (resnet32, batch 128, 32x32x3, 3 epochs x 10 steps
#      per configuration, the first epoch discarded; every configuration in a fresh
#      process) for single, okdph_m2, okdph_m2_nohwm, okdph_m4 with --jit_compile=true,
#      then the same with --jit_compile=false;
#   3. single and okdph_m2 with --precision=mixed_float16 (n/a below compute capability
#      7.0), then with --precision=mixed_bfloat16;
#   4. okdph_m2 with --strategy=mirrored over every visible GPU, global batch 128 per GPU;
#   5. python -m benchmarks.input_pipeline: images/s of the 3-view CIFAR pipeline (synthetic
#      uint8 images, batch 128) beside images/s of the OKDPH M=2 step, and their ratio;
#   6. the image-folder recipe end to end (recipes.image_folder --smoke, --strategy=auto:
#      MirroredStrategy when there are several GPUs, --precision=mixed_float16) on 120
#      generated PNGs, then a check that every loss in its history.csv is finite.
# Every throughput table has a "last loss" column and the command fails if one is not finite.
#
# Time: about 5-10 minutes on one GPU (an estimate, not measured here: most of it is the
# start-up and tracing / XLA compilation of 13 benchmark processes, one per configuration
# and run, plus the pipeline and recipe ones; the timed steps themselves take seconds).
#
# --dry_run (or GPU_CHECK_DRY_RUN=1): runs every section on the CPU with tiny settings
# (small_cnn, batch 8, 2 epochs x 2 steps; the pipeline section's step is resnet32 at batch
# 8), so that the script itself can be checked on a machine without a GPU: about 3 minutes
# on 2 cores. mixed_float16 then reports "n/a" in the throughput tables (the recipe smoke
# still runs it, on the CPU), and mirrored runs on one CPU replica. The figures mean nothing
# there.
#
# A failing section is recorded as FAILED (with its exit status) and the script goes on to
# the next one; the summary at the end of the file lists every section, and the exit status
# is 1 if any failed.
set -euo pipefail

output=gpu_check.txt
dry_run="${GPU_CHECK_DRY_RUN:-0}"
for argument in "$@"; do
    case "$argument" in
        --dry_run | --dry-run) dry_run=1 ;;
        -h | --help)
            sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        -*)
            echo "gpu_check: unknown option $argument (usage: bash benchmarks/gpu_check.sh [OUTPUT_FILE] [--dry_run])" >&2
            exit 2
            ;;
        *) output="$argument" ;;
    esac
done
[[ "$dry_run" == 1 ]] || dry_run=0

# The output file's absolute path (relative to the caller's directory), then the repository.
mkdir -p "$(dirname "$output")"
output="$(cd "$(dirname "$output")" && pwd)/$(basename "$output")"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
: >"$output"
started=$SECONDS
failed=0
summary=()

log() { printf '%s\n' "$*" | tee -a "$output"; }

# section TITLE COMMAND [ARGUMENTS...]: runs the command, its stdout and stderr to the screen
# and the file, and records OK or FAILED (exit status) and the seconds it took.
section() {
    local title="$1" start=$SECONDS status=0 result
    shift
    log ""
    log "=== $title"
    log "\$ $*"
    "$@" 2>&1 | tee -a "$output" || status=$?
    if ((status == 0)); then
        result=OK
    else
        result="FAILED (exit $status)"
        failed=$((failed + 1))
    fi
    log "--- $title: $result, $((SECONDS - start)) s"
    summary+=("$(printf '%-52s %s, %d s' "$title" "$result" $((SECONDS - start)))")
}

log "gpu_check: $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname), repository $(pwd)" \
    "($(git rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout'))"
log "command: bash benchmarks/gpu_check.sh $output$( ((dry_run)) && echo ' --dry_run')"

# ------------------------------------------------------------------- 1. devices
cat >"$work/devices.py" <<'EOF'
import shutil, subprocess, sys

import keras
import tensorflow as tf

print("TensorFlow", tf.__version__, "Keras", keras.__version__, "Python", sys.version.split()[0])
print("built with CUDA:", tf.test.is_built_with_cuda(), tf.sysconfig.get_build_info().get("cuda_version", ""))
gpus = tf.config.list_physical_devices("GPU")
for gpu in gpus:
    details = tf.config.experimental.get_device_details(gpu)
    capability = details.get("compute_capability")
    print(f"{gpu.name}: {details.get('device_name', '?')}, compute capability "
          f"{'.'.join(map(str, capability)) if capability else '?'}")
print("CPUs:", [d.name for d in tf.config.list_physical_devices("CPU")], "GPUs:", len(gpus))
if shutil.which("nvidia-smi"):
    query = "name,compute_cap,driver_version,memory.total,memory.used,utilization.gpu"
    print(subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv"],
                         capture_output=True, text=True).stdout.strip())
else:
    print("nvidia-smi: not found")
with open(sys.argv[1], "w") as file:
    file.write(str(len(gpus)))
EOF
section "devices" python "$work/devices.py" "$work/gpu_count"
gpus="$(cat "$work/gpu_count" 2>/dev/null || echo 0)"
if ((gpus == 0)); then
    if ((!dry_run)); then
        log ""
        log "gpu_check: STOPPED: TensorFlow sees no GPU (see the devices section above). Check the"
        log "CUDA install (pip install 'tensorflow[and-cuda]', nvidia-smi, CUDA_VISIBLE_DEVICES), or"
        log "run with --dry_run to try every section on the CPU."
        exit 1
    fi
    log ""
    log "gpu_check: DRY RUN on the CPU (TensorFlow sees no GPU): tiny settings, figures meaningless."
elif ((dry_run)); then
    log ""
    log "gpu_check: DRY RUN with tiny settings although TensorFlow sees $gpus GPU(s)."
fi

# The sizes: a few seconds of timed steps per configuration on a GPU; tiny on a dry run.
# (input_pipeline.py builds its model at the model's default input shape: resnet32 is the
# smallest one at 32x32x3, small_cnn's default is 8x8x1.)
if ((dry_run)); then
    size=(--model=small_cnn --steps=2 --epochs=2)
    batch=8
    mirrored_batch=8
    pipeline=(--model=resnet32 --batch_size=8 --batches=2 --steps=2)
    recipe=(--model=small_cnn --batch_size=8)
else
    size=(--model=resnet32 --steps=10 --epochs=3)
    batch=128
    mirrored_batch=$((128 * gpus)) # 128 per GPU, as in the single-GPU rows
    pipeline=(--model=resnet32 --batch_size=128 --batches=20 --steps=20)
    recipe=(--model=resnet32 --batch_size=32)
fi
throughput=(python -m benchmarks.throughput "${size[@]}")
four=single,okdph_m2,okdph_m2_nohwm,okdph_m4

# ------------------------------------------------------------------- 2.-4. throughput
section "throughput, XLA on (jit_compile=true)" \
    "${throughput[@]}" --batch_size=$batch --configs=$four --jit_compile=true
section "throughput, XLA off (jit_compile=false)" \
    "${throughput[@]}" --batch_size=$batch --configs=$four --jit_compile=false
section "throughput, mixed_float16" \
    "${throughput[@]}" --batch_size=$batch --configs=single,okdph_m2 --precision=mixed_float16
section "throughput, mixed_bfloat16" \
    "${throughput[@]}" --batch_size=$batch --configs=single,okdph_m2 --precision=mixed_bfloat16
section "throughput, MirroredStrategy over $((gpus > 0 ? gpus : 1)) device(s)" \
    "${throughput[@]}" --batch_size=$mirrored_batch --configs=okdph_m2 --strategy=mirrored

# ------------------------------------------------------------------- 5. input pipeline
section "input pipeline beside the step" python -m benchmarks.input_pipeline "${pipeline[@]}"

# ------------------------------------------------------------------- 6. image-folder recipe
cat >"$work/images.py" <<'EOF'
import sys

import numpy as np
import tensorflow as tf

rng = np.random.default_rng(0)
for split, count in (("train", 40), ("test", 10)):
    for label in range(3):
        folder = f"{sys.argv[1]}/{split}/class_{label}"
        tf.io.gfile.makedirs(folder)
        for i in range(count):
            image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            tf.io.write_file(f"{folder}/{i}.png", tf.io.encode_png(image))
print(f"wrote {3 * 50} PNGs (3 classes, 40 train + 10 test each) under {sys.argv[1]}")
EOF
cat >"$work/finite.py" <<'EOF'
import csv, glob, math, sys

paths = glob.glob(f"{sys.argv[1]}/*/history.csv")
if not paths:
    sys.exit(f"no history.csv under {sys.argv[1]}: the recipe did not train")
bad = []
for path in paths:
    rows = list(csv.DictReader(open(path)))
    columns = [c for c in rows[0] if "loss" in c] if rows else []
    if not columns:
        sys.exit(f"{path}: no loss column in {list(rows[0]) if rows else 'an empty file'}")
    for epoch, row in enumerate(rows):
        losses = {c: float(row[c]) for c in columns if row[c] not in ("", None)}
        print(f"{path} epoch {epoch}: " + ", ".join(f"{c} {v:.4f}" for c, v in losses.items()))
        bad += [(path, epoch, c) for c, v in losses.items() if not math.isfinite(v)]
if bad:
    sys.exit(f"NOT FINITE: {bad}")
print("every loss finite: OK")
EOF
section "recipe smoke: generated PNGs" python "$work/images.py" "$work/data"
section "recipe smoke: image_folder, mixed_float16" \
    python -m recipes.image_folder --smoke --strategy=auto --precision=mixed_float16 \
    --data_dir="$work/data" "${recipe[@]}" --style=cifar --image_size=32 --normalization=cifar10 \
    --output_dir="$work/runs" --saved_models_dir="$work/saved"
section "recipe smoke: finite losses" python "$work/finite.py" "$work/runs"

# ------------------------------------------------------------------- summary
log ""
log "=== summary ($( ((dry_run)) && echo 'DRY RUN, CPU, tiny settings' || echo "$gpus GPU(s)"); $((SECONDS - started)) s in all)"
for line in "${summary[@]}"; do
    log "  $line"
done
if ((failed)); then
    log "gpu_check: $failed section(s) FAILED"
    exit 1
fi
log "gpu_check: OK"
