"""The PyTorch half of benchmarks/vs_pytorch.py: the reference OKDPH's step, timed on the CPU.

    /work/torchenv/bin/python benchmarks/pytorch_side.py --configs=single,reference_okdph --steps=10

Runs in the separate PyTorch environment (setup in vs_pytorch.py's docstring) and imports no
TensorFlow and nothing of okdph_keras: the networks and the OKDPH step come from the reference
checkout (tianlizhang/OKDPH, `--reference_dir`), imported, not copied. Configurations, each on
one fixed random batch in memory (labels random over 10 classes), on the CPU:

  single           one ResNet-32 (the reference's `models.model_dict["resnet32"]`), a plain
                   loop: zero_grad, forward, cross-entropy, backward, SGD step.
  reference_okdph  the reference's own `train()` (src/OKDPH.py, lines 61-105) on M=2 ResNet-32
                   students and the HWM, built as its `main()` does (lines 112-125), with its
                   CIFAR-10 ResNet-32 settings (src/OKDPH.sh, line 1): omega 0.8, beta 0.8, T 4,
                   mean HWM, fusion every epoch (so none inside the step). Per batch it rebuilds
                   the HWM from the students' state_dicts (update_hwm, lines 33-47), runs the
                   three networks on their three views and, per student, backpropagates
                   (retain_graph) CE + KD toward the detached mean of all three outputs + the
                   HWM's CE, then steps that student's SGD. The HWM is a load_state_dict copy, so
                   its CE reaches no student: its backward pass runs once per student, into HWM
                   gradients that nothing uses. Its tqdm progress bar stays (on stderr).

Both use the reference's optimizer settings, SGD(lr 0.1, momentum 0.9, weight_decay 5e-4)
(OKDPH.py, lines 171-173). The batch is fed through a generator that stamps time.perf_counter()
between steps (torch on the CPU is synchronous), so consecutive step times add up exactly to the
wall time of the steps they cover. One line per configuration: `PYTORCH_RESULT {json}`.
"""

import argparse
import copy
import importlib
import json
import os
import statistics
import sys
import time
import types

import torch

RESULT_TAG = "PYTORCH_RESULT "
CONFIGS = ("single", "reference_okdph")
# OKDPH.py's argparse defaults (lines 171-185) with OKDPH.sh's CIFAR-10 ResNet-32 line
# (--omega 0.8 --beta 0.8 --gamma 0.5 --interval 1_epoch), as its __main__ block parses them.
REFERENCE_ARGS = dict(
    lr=0.1,
    mom=0.9,
    wd=5e-4,
    omega=0.8,
    beta=0.8,
    gamma=0.5,
    hwm="mean",
    T=4.0,
    gap=1,
    level="epoch",
)
NUM_CLASSES, NUM_STUDENTS, IMAGE_SHAPE = 10, 2, (3, 32, 32)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference_dir", default="/work/okdph_ref")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {CONFIGS}")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    args = parser.parse_args()
    args.configs = args.configs.split(",")
    unknown = sorted(set(args.configs) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configurations {unknown}; known: {list(CONFIGS)}")
    return args


def import_reference(reference_dir):
    """The reference's src/OKDPH.py as a module (its argument parsing is under __main__)."""
    source = os.path.join(reference_dir, "src")
    if not os.path.isfile(os.path.join(source, "OKDPH.py")):
        sys.exit(
            f"No src/OKDPH.py under --reference_dir={reference_dir}: check out tianlizhang/OKDPH there."
        )
    sys.path.insert(0, source)
    return importlib.import_module("OKDPH")


def timed(batch, count, seconds):
    """Yields `batch` `count` times, appending to `seconds` each step's time (yield to yield)."""
    last = time.perf_counter()
    for _ in range(count):
        yield batch
        now = time.perf_counter()
        seconds.append(now - last)
        last = now


def single_step(ref, settings):
    """A plain loop over batches for one reference ResNet-32; returns (run, batch)."""
    model = ref.model_dict["resnet32"](num_classes=NUM_CLASSES)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=settings.lr, momentum=settings.mom, weight_decay=settings.wd
    )
    model.train()

    def run(batches):
        for images, labels in batches:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()

    return run, torch.randn(settings.batch_size, *IMAGE_SHAPE)


def reference_okdph_step(ref, settings):
    """The reference's train() over its students and HWM; returns (run, batch)."""
    nets, opts = [], []
    for _ in range(NUM_STUDENTS):  # OKDPH.py lines 114-124, without the LR scheduler
        model = ref.model_dict["resnet32"](num_classes=NUM_CLASSES).to(settings.device)
        optimizer = torch.optim.SGD(
            model.parameters(), lr=settings.lr, momentum=settings.mom, weight_decay=settings.wd
        )
        if nets:  # not --diff_init: the same initialisation
            model.load_state_dict(nets[0].state_dict())
        nets.append(model)
        opts.append(optimizer)
    nets.append(copy.deepcopy(nets[0]).to(settings.device))  # line 125, the HWM

    def run(batches):
        ref.train(settings, nets, batches, opts)

    # [B, views, C, H, W] as its CIFAR dataset stacks them: one view per student, one for the HWM.
    return run, torch.randn(settings.batch_size, NUM_STUDENTS + 1, *IMAGE_SHAPE)


def measure(ref, config, args):
    settings = types.SimpleNamespace(
        **REFERENCE_ARGS, device=torch.device("cpu"), batch_size=args.batch_size
    )
    ref.utils.set_random_seed(seed=42)  # as OKDPH.py's __main__ (line 192)
    build = single_step if config == "single" else reference_okdph_step
    run, images = build(ref, settings)
    labels = torch.randint(0, NUM_CLASSES, (args.batch_size,))
    run(timed((images, labels), args.warmup, []))
    seconds = []
    run(timed((images, labels), args.steps, seconds))
    median = statistics.median(seconds)
    return dict(
        config=config,
        images_per_second=args.batch_size / median,
        median_step_s=median,
        step_seconds=seconds,
        batch_size=args.batch_size,
        warmup=args.warmup,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
    )


def main():
    args = parse_args()
    ref = import_reference(args.reference_dir)
    torch.set_num_threads(args.threads)
    for config in args.configs:
        print(RESULT_TAG + json.dumps(measure(ref, config, args)), flush=True)


if __name__ == "__main__":
    main()
