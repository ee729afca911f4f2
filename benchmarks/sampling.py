"""Speed and quality of the mini text-to-image model's sampling, before and after.

    python benchmarks/sampling.py --judge outputs/sweep/real/full-real-mna-aux0-s0/model.pt

"Before" is the generate stage as it ran until 2026-11-27: DDIM with 20 steps, every prompt
(and the empty negative prompt) run through MiniLM in every call. "After" runs each distinct
text through MiniLM once (the pipeline keeps it) with the solvers and step counts given. Each
method generates the same prompts through the stage's own code (:func:`lib.generation.core.
generate`, one thread, batches of ``--batch-size``, PNG shards) once per generation seed;
the images/s are of those runs, all in this process, so they share the machine's state.

Quality is measured as the study measures it (:mod:`lib.analysis.quality`): recognizability
= mean per-class F1 of a real-only classifier (``--judge``, a checkpoint of the train stage or
a real-only sweep run) on the generated images; diversity = mean per-class std of the mini
CLIP's normalised image embeddings (``--clip``). The seed-to-seed spread of "before" is the
yardstick: a faster method is "within spread" when its mean is within two standard
deviations (over seeds) of before's mean.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.analysis.quality import per_class_diversity, per_class_f1  # noqa: E402
from lib.backends.t2i import create_t2i  # noqa: E402
from lib.generation.core import generate  # noqa: E402
from lib.mini.text import encode_text  # noqa: E402
from lib.shards import iter_samples  # noqa: E402
from lib.training.checkpoints import load_plain_timm  # noqa: E402
from lib.training.datasets import ImageArrayDataset  # noqa: E402
from lib.training.evaluation import predict  # noqa: E402


def uncached_encoder(pipe: Any) -> Any:
    """The pipeline's text encoding as it was before the cache: the whole batch, every call."""
    def encode_prompt(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        states, mask = encode_text(pipe.text_encoder, pipe.tokenizer, prompts,
                                   pipe.config.max_length, pad_to_max=True)
        return states.to(dtype=pipe.unet.dtype), mask
    return encode_prompt


def run_method(name: str, scheduler: str | None, steps: int, cached: bool, prompts: pd.DataFrame,
               seed: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    t2i = create_t2i("mini", model=str(args.model), scheduler=scheduler)
    if not cached:
        t2i.pipe.encode_prompt = uncached_encoder(t2i.pipe)
    out = folder / f"{name}-s{seed}"
    start = time.perf_counter()
    summary = generate(prompts, out, t2i, seed=seed, steps=steps, guidance_scale=args.guidance,
                       height=8, width=8, batch_size=args.batch_size, shard_size=1024,
                       max_retries=0, progress=False)
    seconds = time.perf_counter() - start
    return {"method": name, "seed": seed, "images": summary["generated"],
            "images_per_s": summary["generated"] / seconds, "folder": out}


def quality(folder: Path, classes: dict[str, int], judge: Any, meta: dict, scorer: Any
            ) -> dict[str, float]:
    ims, labels = [], []
    for s in iter_samples(folder):
        ims.append(s["image"].convert("RGB"))
        labels.append(classes[s["meta"]["class_id"]])
    labels = np.asarray(labels)
    ds = ImageArrayDataset(np.stack([np.asarray(i) for i in ims]), labels, meta["image_size"],
                           meta["in_chans"], synthetic=True)
    probs, _ = predict(judge, ds, batch_size=512, device="cpu")
    n = len(classes)
    f1 = per_class_f1(labels, probs.argmax(axis=1), n)
    emb = scorer.encode_images(ims).numpy()
    div = per_class_diversity(emb, labels, n)
    return {"recognizability": float(np.mean(f1)), "diversity": float(np.nanmean(div))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=ROOT / "outputs/zoo/t2i")
    p.add_argument("--clip", type=Path, default=ROOT / "outputs/zoo/clip")
    p.add_argument("--judge", type=Path, required=True, help="a real-only classifier checkpoint")
    p.add_argument("--prompts", type=Path, default=ROOT / "outputs/prompts/prompts.parquet")
    p.add_argument("--n", type=int, default=1024, help="prompts (the first in id order)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, nargs="+", default=[6, 8, 10],
                   help="step counts of the multistep solver")
    p.add_argument("--solver", nargs="+", default=["DPMSolverMultistepScheduler"],
                   help="diffusers scheduler class names tried at each of --steps")
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # as the stage's workers

    prompts = pd.read_parquet(args.prompts).sort_values("id").head(args.n)
    classes = {c: i for i, c in enumerate(sorted(prompts["class_id"].unique()))}
    meta = torch.load(args.judge, map_location="cpu", weights_only=True)["meta"]
    judge = load_plain_timm(args.judge, meta["arch"], meta["num_classes"], meta["in_chans"])
    from lib.backends.clip import create_clip

    scorer = create_clip("open_clip", model=str(args.clip), device="cpu")
    methods = [("DDIM-20 (before)", None, 20, False), ("DDIM-20 + text cache", None, 20, True)]
    methods += [(f"{solver.replace('Scheduler', '')}-{k} + text cache", solver, k, True)
                for solver in args.solver for k in args.steps]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for name, scheduler, steps, cached in methods:
                row = run_method(name, scheduler, steps, cached, prompts, seed, args, Path(tmp))
                row |= quality(row.pop("folder"), classes, judge, meta, scorer)
                rows.append(row)
                print(f"{name:<40} seed {seed}: {row['images_per_s']:7.1f} images/s, "
                      f"recognizability {row['recognizability']:.3f}, "
                      f"diversity {row['diversity']:.4f}", flush=True)
    table = pd.DataFrame(rows)
    summary = table.groupby("method", sort=False).agg(
        images_per_s=("images_per_s", "mean"), recognizability=("recognizability", "mean"),
        recognizability_std=("recognizability", "std"), diversity=("diversity", "mean"),
        diversity_std=("diversity", "std"))
    before = summary.iloc[0]
    summary["speedup"] = summary["images_per_s"] / before["images_per_s"]
    for m in ("recognizability", "diversity"):
        summary[f"{m}_within_spread"] = (summary[m] - before[m]).abs() <= 2 * before[f"{m}_std"]
    print(summary.round(4).to_string())
    if args.json:
        args.json.write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()},
                                         "runs": table.to_dict(orient="records"),
                                         "summary": summary.reset_index().to_dict(
                                             orient="records")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
