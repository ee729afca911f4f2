"""Speed and recognizability of the mini text-to-image generators (e.g. the UNet and the DiT).

    python benchmarks/generators.py --model unet=outputs/zoo/t2i --model dit=outputs/zoo/t2i-dit \\
        --judge outputs/sweep/real/full-real-mna-aux0-s0/model.pt --json generators.json

Each generator (a pipeline folder, served by the ``mini`` backend as the ``generate`` stage
serves it: DDIM with ``--steps`` steps, guidance ``--guidance``, one CPU generator per image)
makes ``--per-class`` images of every class of ``--classes`` from the prompt "the digit
{name}" (the class names: "the digit zero", ...). Image k of every class and generator comes
from seed k, so all generators start from the same noise. The images are judged by a
real-only classifier (``--judge``: a checkpoint of the train stage or of a real-only sweep
run): accuracy overall and per class, and recognizability as the study defines it (the mean
per-class F1, :mod:`lib.analysis.quality`).

Speed: the generators take turns batch by batch (``--batch-size`` images each, after one
warm-up batch each), so they share the machine's load; images/s is each one's images over
its own summed time (one torch thread unless ``--threads``; text encoding included, as in
the stage). ``--train-steps N`` also times N training steps of each folder's denoiser
(forward, backward and AdamW at ``--train-batch`` on random inputs and text states),
again taking turns step by step.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.analysis.quality import per_class_f1  # noqa: E402
from lib.backends.t2i import create_t2i  # noqa: E402
from lib.training.checkpoints import load_plain_timm  # noqa: E402
from lib.training.datasets import ImageArrayDataset  # noqa: E402
from lib.training.evaluation import predict  # noqa: E402


def class_prompts(classes: pd.DataFrame, per_class: int) -> tuple[list[str], list[int], np.ndarray]:
    """Prompts, seeds and labels: ``per_class`` of "the digit {name}" per class, seeds 0..n-1."""
    prompts, seeds, labels = [], [], []
    for row in classes.sort_values("label").itertuples():
        prompts += [f"the digit {row.name}"] * per_class
        seeds += list(range(per_class))
        labels += [int(row.label)] * per_class
    return prompts, seeds, np.asarray(labels)


def sample_in_turns(models: dict[str, Any], prompts: list[str], seeds: list[int],
                    args: argparse.Namespace) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Every model's images (uint8 ``[N, 8, 8]``) and seconds, batch by batch in turns."""
    gen = {"steps": args.steps, "guidance_scale": args.guidance, "height": 8, "width": 8}
    for t2i in models.values():  # warm-up: first-call allocations, lazy imports
        t2i.generate(prompts[: args.batch_size], None, seeds[: args.batch_size], **gen)
    images: dict[str, list[np.ndarray]] = {name: [] for name in models}
    seconds = dict.fromkeys(models, 0.0)
    for start in range(0, len(prompts), args.batch_size):
        batch = slice(start, start + args.batch_size)
        for name, t2i in models.items():
            t0 = time.perf_counter()
            out, _ = t2i.generate(prompts[batch], None, seeds[batch], **gen)
            seconds[name] += time.perf_counter() - t0
            images[name] += [np.asarray(im) for im in out]
    return {name: np.stack(ims) for name, ims in images.items()}, seconds


def judge_images(images: np.ndarray, labels: np.ndarray, judge: Any, meta: dict,
                 num_classes: int) -> dict[str, Any]:
    """Accuracy, per-class accuracy and mean per-class F1 of the judge on ``images``."""
    ds = ImageArrayDataset(images, labels, meta["image_size"], meta["in_chans"], synthetic=True)
    probs, _ = predict(judge, ds, batch_size=512, device="cpu")
    predicted = probs.argmax(axis=1)
    per_class = [float(np.mean(predicted[labels == c] == c)) for c in range(num_classes)]
    return {"accuracy": float(np.mean(predicted == labels)), "per_class_accuracy": per_class,
            "recognizability": float(np.mean(per_class_f1(labels, predicted, num_classes))),
            "predicted_counts": np.bincount(predicted, minlength=num_classes).tolist()}


def train_speed(models: dict[str, Any], steps: int, batch: int) -> dict[str, float]:
    """Training steps/s of each pipeline's denoiser on random data, step by step in turns."""
    from lib.mini.denoisers import denoise

    nets = {name: t2i.pipe.denoiser.train().requires_grad_(True) for name, t2i in models.items()}
    opts = {name: torch.optim.AdamW(net.parameters(), lr=1e-4) for name, net in nets.items()}
    g = torch.Generator().manual_seed(0)
    seconds = dict.fromkeys(nets, 0.0)
    for step in range(steps + 1):  # step 0: warm-up, not timed
        x = torch.randn(batch, 1, 8, 8, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        states = torch.randn(batch, 32, 384, generator=g)
        mask = (torch.arange(32) < torch.randint(3, 20, (batch, 1), generator=g)).long()
        for name, net in nets.items():
            t0 = time.perf_counter()
            loss = torch.nn.functional.mse_loss(denoise(net, x, t, states, mask), x)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            if step:
                seconds[name] += time.perf_counter() - t0
    return {name: steps / s for name, s in seconds.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", required=True, metavar="NAME=FOLDER",
                   help="a generator's pipeline folder (repeat for each)")
    p.add_argument("--judge", type=Path, required=True, help="a real-only classifier checkpoint")
    p.add_argument("--classes", type=Path, default=ROOT / "outputs/classes/classes.parquet")
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-steps", type=int, default=0)
    p.add_argument("--train-batch", type=int, default=128)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    folders = dict(m.split("=", 1) for m in args.model)
    models = {name: create_t2i("mini", model=str(Path(f).resolve())) for name, f in folders.items()}
    classes = pd.read_parquet(args.classes)
    prompts, seeds, labels = class_prompts(classes, args.per_class)
    meta = torch.load(args.judge, map_location="cpu", weights_only=True)["meta"]
    judge = load_plain_timm(args.judge, meta["arch"], meta["num_classes"], meta["in_chans"])
    images, seconds = sample_in_turns(models, prompts, seeds, args)
    results: dict[str, Any] = {}
    for name, t2i in models.items():
        results[name] = {
            "folder": folders[name],
            "params": sum(q.numel() for q in t2i.pipe.denoiser.parameters()),
            "images": len(prompts), "images_per_s": len(prompts) / seconds[name],
            "seconds_per_image": seconds[name] / len(prompts),
            **judge_images(images[name], labels, judge, meta, len(classes)),
        }
    if args.train_steps:
        for name, rate in train_speed(models, args.train_steps, args.train_batch).items():
            results[name]["train_steps_per_s"] = rate
    names = classes.sort_values("label")["name"].tolist()
    table = pd.DataFrame({n: r["per_class_accuracy"] for n, r in results.items()}, index=names)
    print(table.round(3).to_string())
    for name, r in results.items():
        print(f"{name}: {r['params']:,} parameters, {r['images_per_s']:.1f} images/s "
              f"({1000 * r['seconds_per_image']:.1f} ms/image), accuracy {r['accuracy']:.3f}, "
              f"recognizability (mean F1) {r['recognizability']:.3f}"
              + (f", {r['train_steps_per_s']:.2f} train steps/s" if "train_steps_per_s" in r
                 else ""))
    if args.json:
        args.json.write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
