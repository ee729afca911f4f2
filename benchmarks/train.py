"""Training throughput with and without the auxiliary norm, and the share of time on data.

    python benchmarks/train.py                                   # CPU: resnet18, 32 px, gray
    python benchmarks/train.py --arch resnet50 --image-size 224 --channels 3 \\
        --batch-size 256 --device cuda --amp --channels-last     # the paper-scale GPU setting

Both runs train the same architecture (same initial weights) on the same random uint8
images through :func:`lib.training.loop.train_classifier`, half real and half synthetic per batch;
the aux run converts every BatchNorm to an auxiliary BatchNorm (:mod:`lib.nn.aux_norm`).
The first ``--warmup`` steps are excluded; images/s and the data share are measured over the
next ``--steps`` (the history row of the measured window). Prints one line per run and the
ratio aux / plain (the issue's target: overhead at most 5%, i.e. ratio >= 0.95).

On a CPU shared with other jobs, wall-clock images/s mostly measures the other jobs: the
script also reports images per CPU-second of this process over the same steps (the CPU
time of a run of ``--warmup`` steps subtracted from that of the full run), which waiting
for a core does not inflate. With several ``--threads`` that figure includes OpenMP's
spin-waiting, so compare the implementations with ``--threads 1``.

``--model-only`` leaves the data and the optimizer out: forward + backward of one fixed
batch (first half real, second half synthetic, as the trainer lays batches out), ``--steps``
times per measurement, the models alternating ``--repeats`` times. Cheap enough to repeat
often, which is what a noisy machine needs.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import timm
import torch

from lib.nn.aux_norm import convert_to_aux_norm, has_aux_norm, set_synthetic_mask
from lib.training.datasets import ImageArrayDataset
from lib.training.history import Throughput
from lib.training.loop import train_classifier


def measure(model: torch.nn.Module, real: ImageArrayDataset, synthetic: ImageArrayDataset,
            args: argparse.Namespace) -> dict[str, float]:
    def run(net: torch.nn.Module, steps: int) -> tuple[Throughput, float]:
        started, meter = time.process_time(), Throughput(warmup=args.warmup)
        train_classifier(
            net, real, synthetic, steps=steps, batch_size=args.batch_size,
            synthetic_fraction=0.5, lr=1e-3, weight_decay=0.05, label_smoothing=0.1,
            synthetic_loss_weight=1.0, seed=0, augment=tuple(args.augment),
            device=args.device, amp=args.amp, channels_last=args.channels_last,
            log_every=args.warmup, progress=False, throughput=meter)
        return meter, time.process_time() - started

    _, warmup_cpu = run(copy.deepcopy(model), args.warmup)
    meter, cpu = run(model, args.warmup + args.steps)  # timed after the warmup steps
    images = args.steps * args.batch_size
    return {"images_per_s": images / max(meter.seconds, 1e-9),
            "data_share": min(1.0, meter.data_seconds / max(meter.seconds, 1e-9)),
            "images_per_cpu_s": images / max(cpu - warmup_cpu, 1e-9)}


def measure_model(models: dict[str, torch.nn.Module], args: argparse.Namespace
                  ) -> dict[str, list[dict[str, float]]]:
    """Forward + backward of one fixed batch per model, alternating (``--model-only``)."""
    size, n = args.image_size, args.batch_size
    device = torch.device(args.device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(n, args.channels, size, size, device=device).to(memory_format=fmt)
    y = torch.randint(0, 10, (n,), device=device)
    mask = torch.arange(n, device=device) >= n // 2  # real first, then synthetic

    def steps(model: torch.nn.Module, count: int) -> None:
        for _ in range(count):
            if has_aux_norm(model):
                set_synthetic_mask(model, mask)
            model.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for model in models.values():
        model.to(device, memory_format=fmt).train()
        steps(model, args.warmup)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            wall, cpu = time.perf_counter(), time.process_time()
            steps(model, args.steps)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            images = args.steps * n
            results[name].append({"images_per_s": images / wall, "data_share": 0.0,
                                  "images_per_cpu_s": images / max(cpu, 1e-9)})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--stored-size", type=int, default=None,
                        help="size of the stored images (default: image size; smaller = resize per batch)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--num-images", type=int, default=1024)
    parser.add_argument("--augment", nargs="*", default=["crop"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--repeats", type=int, default=2, help="alternating plain/aux repeats")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--model-only", action="store_true",
                        help="time forward + backward of a fixed batch only (no data, optimizer)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    size = args.stored_size or args.image_size
    rng = np.random.default_rng(0)
    shape = (args.num_images, size, size) + ((3,) if args.channels == 3 else ())
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    labels = rng.integers(0, 10, args.num_images)
    real = ImageArrayDataset(images, labels, args.image_size, args.channels, synthetic=False)
    synthetic = ImageArrayDataset(images[::-1].copy(), labels[::-1].copy(), args.image_size,
                                  args.channels, synthetic=True)
    torch.manual_seed(0)
    base = timm.create_model(args.arch, num_classes=10, in_chans=args.channels)
    results: dict[str, list[dict[str, float]]] = {"plain": [], "aux": []}
    if args.model_only:
        models = {"plain": base, "aux": convert_to_aux_norm(copy.deepcopy(base))}
        results = measure_model(models, args)
    for _ in range(0 if args.model_only else args.repeats):
        for name in results:  # alternate so drifting machine load hits both alike
            model = copy.deepcopy(base)
            if name == "aux":
                model = convert_to_aux_norm(model)
            results[name].append(measure(model, real, synthetic, args))
    summary = {name: {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
               for name, runs in results.items()}
    for name, r in summary.items():
        print(f"{name:5s} {r['images_per_s']:9.1f} images/s   {r['images_per_cpu_s']:9.1f} "
              f"images/CPU-s   data share {r['data_share']:.1%}")
    # the median of the ratios of each alternating pair (runs close in time share the load)
    ratio, cpu_ratio = (
        float(np.median([a[key] / p[key] for a, p in zip(results["aux"], results["plain"])]))
        for key in ("images_per_s", "images_per_cpu_s")
    )
    print(f"ratio aux/plain {ratio:.3f} (overhead {1 - ratio:+.1%}); per CPU-second "
          f"{cpu_ratio:.3f} (overhead {1 - cpu_ratio:+.1%}) [medians of paired ratios]")
    print(json.dumps({"config": vars(args), "median": summary, "ratio": ratio,
                      "cpu_ratio": cpu_ratio, "runs": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
