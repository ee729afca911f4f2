"""Time per training step of the mini world's two architectures: mini_vit vs mini_cnn.

    python benchmarks/archs.py                        # batch 64, 1 thread, auxiliary norm on
    python benchmarks/archs.py --no-aux-norm --repeats 9

Each model trains through :func:`lib.training.loop.train_classifier` (the loop of the train
stage and every sweep run) on the same random 8x8 one-channel images, half real and half
synthetic per batch, with the mini profile's recipe (AdamW, cosine, ``crop``); with the
auxiliary norm (the study's default) mini_cnn gets auxiliary BatchNorms and mini_vit
auxiliary LayerNorms (``aux_layernorm="aux"``). The models alternate ``--repeats`` times, so
both see the same load on a shared machine; each measurement is ``--steps`` steps after
``--warmup`` untimed ones. Prints the median milliseconds per step of each, wall clock and
CPU time of this process (which waiting for a core does not inflate), and the ratio
mini_vit / mini_cnn.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from lib.backends.classifier import create_classifier
from lib.training.datasets import ImageArrayDataset
from lib.training.history import Throughput
from lib.training.loop import train_classifier

ARCHS = ("mini_cnn", "mini_vit")


def step_times(arch: str, real: ImageArrayDataset, synthetic: ImageArrayDataset,
               args: argparse.Namespace) -> tuple[float, float]:
    """Seconds per step (wall, CPU) of ``--steps`` steps of ``arch`` after the warmup."""
    def run(steps: int) -> tuple[Throughput, float]:
        torch.manual_seed(0)
        model = create_classifier("timm", arch=arch, num_classes=10, in_chans=1,
                                  aux_norm=args.aux_norm, aux_layernorm="aux")
        started, meter = time.process_time(), Throughput(warmup=args.warmup)
        train_classifier(model, real, synthetic, steps=steps, batch_size=args.batch_size,
                         synthetic_fraction=0.5, lr=3e-3, weight_decay=0.05,
                         label_smoothing=0.1, synthetic_loss_weight=1.0, seed=0,
                         augment=("crop",), log_every=args.warmup, progress=False,
                         throughput=meter)
        return meter, time.process_time() - started

    _, warmup_cpu = run(args.warmup)
    meter, cpu = run(args.warmup + args.steps)
    return meter.seconds / args.steps, (cpu - warmup_cpu) / args.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-aux-norm", dest="aux_norm", action="store_false")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)

    def images(n: int, synthetic: bool) -> ImageArrayDataset:
        return ImageArrayDataset(rng.integers(0, 256, (n, 8, 8), dtype=np.uint8),
                                 rng.integers(0, 10, n), 8, 1, synthetic=synthetic)

    real, synthetic = images(1024, False), images(1024, True)
    wall: dict[str, list[float]] = {a: [] for a in ARCHS}
    cpu: dict[str, list[float]] = {a: [] for a in ARCHS}
    for _ in range(args.repeats):
        for arch in ARCHS:
            w, c = step_times(arch, real, synthetic, args)
            wall[arch].append(w)
            cpu[arch].append(c)
    med = {a: (statistics.median(wall[a]) * 1e3, statistics.median(cpu[a]) * 1e3)
           for a in ARCHS}
    print(f"batch {args.batch_size}, {args.threads} thread(s), aux_norm {args.aux_norm}, "
          f"{args.steps} steps x {args.repeats} repeats (medians)")
    for arch in ARCHS:
        print(f"{arch:9s} {med[arch][0]:7.2f} ms/step wall  {med[arch][1]:7.2f} ms/step CPU")
    print(f"ratio mini_vit / mini_cnn: {med['mini_vit'][0] / med['mini_cnn'][0]:.2f} wall, "
          f"{med['mini_vit'][1] / med['mini_cnn'][1]:.2f} CPU")


if __name__ == "__main__":
    main()
