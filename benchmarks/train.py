"""Training throughput with and without the auxiliary norm, and the share of time on data.

    python benchmarks/train.py                                   # CPU: resnet18, 32 px, gray
    python benchmarks/train.py --arch resnet50 --image-size 224 --channels 3 \\
        --batch-size 256 --device cuda --amp --channels-last     # the paper-scale GPU setting

Both runs train the same architecture (same initial weights) on the same random uint8
images through :func:`lib.train.train_classifier`, half real and half synthetic per batch;
the aux run converts every BatchNorm to an auxiliary BatchNorm (:mod:`lib.nn.aux_norm`).
The first ``--warmup`` steps are excluded; images/s and the data share are measured over the
next ``--steps`` (the history row of the measured window). Prints one line per run and the
ratio aux / plain (the issue's target: overhead at most 5%, i.e. ratio >= 0.95).
"""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import timm
import torch

from lib.nn.aux_norm import convert_to_aux_norm
from lib.train import ImageArrayDataset, train_classifier


def measure(model: torch.nn.Module, real: ImageArrayDataset, synthetic: ImageArrayDataset,
            args: argparse.Namespace) -> dict[str, float]:
    history = train_classifier(
        model, real, synthetic, steps=args.warmup + args.steps, batch_size=args.batch_size,
        synthetic_fraction=0.5, lr=1e-3, weight_decay=0.05, label_smoothing=0.1,
        synthetic_loss_weight=1.0, seed=0, augment=tuple(args.augment), device=args.device,
        amp=args.amp, channels_last=args.channels_last, log_every=args.warmup, progress=False)
    last = history[-1]  # the window after the warmup steps
    return {"images_per_s": last["images_per_s"], "data_share": last["data_share"]}


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
    args = parser.parse_args(argv)

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
    for _ in range(args.repeats):  # alternate so drifting machine load hits both alike
        for name in results:
            model = copy.deepcopy(base)
            if name == "aux":
                model = convert_to_aux_norm(model)
            results[name].append(measure(model, real, synthetic, args))
    summary = {name: {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
               for name, runs in results.items()}
    for name, r in summary.items():
        print(f"{name:5s} {r['images_per_s']:9.1f} images/s   data share {r['data_share']:.1%}")
    ratio = summary["aux"]["images_per_s"] / summary["plain"]["images_per_s"]
    print(f"ratio aux/plain {ratio:.3f} (overhead {1 - ratio:+.1%})")
    print(json.dumps({"config": vars(args), "median": summary, "ratio": ratio}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
