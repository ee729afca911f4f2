"""Checkpoints: the resumable state of a training run, and the trained classifier's file.

:class:`RunState` is what :func:`lib.training.loop.train_classifier` saves and resumes
(model, optimizer, scheduler, loss scaler, step, history and the run's settings);
:func:`save_checkpoint` writes a finished model with its metadata, and
:func:`load_plain_timm` loads either file into a plain timm model.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from lib.io import write_torch
from lib.nn.aux_norm import strip_aux
from lib.nn.schedule import lr_factor
from lib.training.distributed import is_main_process
from lib.training.history import HistoryWindow, without_timings
from lib.training.recipe import RunConfig, param_groups


def save_checkpoint(model: nn.Module, path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Write ``{"state_dict", "meta"}`` atomically; aux branches kept (see load_plain_timm).

    Under DDP only rank 0 writes (every process holds the same weights after
    :func:`lib.training.loop.train_classifier`); the others return at once.
    """
    if is_main_process():
        _save_state(path, {"state_dict": model.state_dict(), "meta": meta})


def load_plain_timm(
    path: str | os.PathLike, arch: str, num_classes: int, in_chans: int, **kwargs: Any
) -> nn.Module:
    """A plain ``timm`` model (eval mode) with the main-branch weights of a checkpoint.

    Accepts files of :func:`save_checkpoint` and of
    :func:`lib.training.loop.train_classifier`; the auxiliary branches are dropped, and the
    rest must match the architecture exactly (strict load).
    ``kwargs`` go to ``timm.create_model`` (e.g. ``img_size`` of a ViT).
    """
    import timm

    import lib.nn.mini_cnn  # noqa: F401  (registers the small 8x8 architectures with timm)
    import lib.nn.mini_vit  # noqa: F401  (registers the small 8x8 ViT with timm)

    state = torch.load(path, map_location="cpu", weights_only=True)
    key = "state_dict" if "state_dict" in state else "model"
    if key not in state:
        raise ValueError(f"{os.fspath(path)!r} holds no 'state_dict' or 'model' entry")
    model = timm.create_model(
        arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs
    )
    model.load_state_dict(strip_aux(state[key]), strict=True)
    return model.eval()


@dataclass
class RunState:
    """The mutable state of one training run: what a checkpoint holds."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    cfg: RunConfig
    scaler: torch.amp.GradScaler = field(
        default_factory=lambda: torch.amp.GradScaler("cpu", enabled=False)
    )
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    window: HistoryWindow = field(default_factory=HistoryWindow)

    @classmethod
    def start(
        cls,
        model: nn.Module,
        cfg: RunConfig,
        checkpoint_path: str | os.PathLike | None,
        device: torch.device,
        scaler: torch.amp.GradScaler | None = None,
    ) -> RunState:
        """A fresh run, or the one saved at ``checkpoint_path`` when that file exists."""
        optimizer = new_optimizer(param_groups(model, cfg.weight_decay), cfg)
        run = cls(model, optimizer, new_scheduler(optimizer, cfg), cfg)
        if scaler is not None:
            run.scaler = scaler
        state = None if checkpoint_path is None else _load_resume(checkpoint_path, cfg, device)
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            run.scheduler.load_state_dict(state["scheduler"])
            if run.scaler.is_enabled() and state.get("scaler"):
                run.scaler.load_state_dict(state["scaler"])
            run.step, run.history = state["step"], without_timings(state["history"])
            run.window = HistoryWindow(state["window"])
        return run

    def save(self, path: str | os.PathLike) -> None:
        _save_state(
            path,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
                "step": self.step,
                "history": self.history,
                "window": self.window.state,
                "config": asdict(self.cfg),
            },
        )


def new_optimizer(groups: list[dict[str, Any]], cfg: RunConfig) -> torch.optim.Optimizer:
    """The run's optimizer over ``groups``: AdamW, or SGD with Nesterov momentum."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def new_scheduler(optimizer: torch.optim.Optimizer,
                  cfg: RunConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The run's learning-rate schedule: linear warmup, then cosine or constant."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.steps, cfg.warmup_steps, cfg.schedule)
    )


def _load_resume(
    path: str | os.PathLike, cfg: RunConfig, device: torch.device
) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None; refuses one written by another configuration."""
    if not os.path.exists(path):
        return None
    state = torch.load(path, map_location=device, weights_only=True)
    saved = state.get("config", {})
    differ = sorted(k for k, v in asdict(cfg).items() if saved.get(k) != v)
    if differ:
        detail = ", ".join(
            f"{k}: checkpoint {saved.get(k)!r} vs now {getattr(cfg, k)!r}" for k in differ
        )
        raise ValueError(f"cannot resume {os.fspath(path)!r}: the run's settings differ ({detail})")
    return state


def _save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    write_torch(path, state)
