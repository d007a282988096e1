"""What a training run carries from epoch to epoch: early stopping, history, and a checkpoint that
survives a kill (written to a temporary file, then renamed over the old one, as timm's CheckpointSaver)."""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from spinexr.errors import SpinexrError


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, then rename over the old one (a kill never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass
class EarlyStopping:
    """Stops after ``patience`` epochs without a validation-loss improvement of ``min_delta``; keeps a
    real copy of the best weights (``state_dict()`` alone returns references that keep changing)."""

    patience: int
    min_delta: float = 1e-4
    best_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    best_state: dict[str, torch.Tensor] | None = None

    def step(self, epoch: int, val_loss: float, model: nn.Module) -> bool:
        """Record one epoch; returns True when it is the best so far."""
        if val_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def restore(self, model: nn.Module) -> None:
        if self.best_state:
            model.load_state_dict(self.best_state)


@dataclass(frozen=True)
class FitOptions:
    """How a training run runs, whatever it trains: ``checkpoint`` written every epoch (atomically) and
    continued with ``resume``; a progress bar named ``desc``; ``max_minutes`` a time budget (None: none)
    where the trainer takes one."""

    checkpoint: Path | None = None
    progress: bool = True
    desc: str = "train"
    resume: bool = False
    max_minutes: float | None = None


class WeightAverage:
    """An exponential moving average of a model's weights and buffers, updated after every step.

    The decay warms up as ``(1 + step) / (10 + step)`` (timm's ``ModelEmaV3`` habit), so the first steps
    are not averaged with the random start; integer buffers (BatchNorm's step count) are copied.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.steps = decay, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for avg, cur in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if avg.dtype.is_floating_point:
                avg.lerp_(cur.detach(), 1.0 - d)
            else:
                avg.copy_(cur)

    def state(self) -> dict[str, Any]:
        return {"ema": self.module.state_dict(), "ema_steps": self.steps}

    def load(self, ck: dict[str, Any]) -> None:
        self.module.load_state_dict(ck["ema"])
        self.steps = int(ck["ema_steps"])


@dataclass
class TrainState:
    """The resumable state of :func:`spinexr.engine.train.fit` after ``epoch`` (-1: none yet)."""

    stopper: EarlyStopping
    batch_size: int
    epoch: int = -1
    history: list[dict[str, float]] = field(default_factory=list)
    done: bool = False

    ema: WeightAverage | None = None

    def save(self, path: Path, model: nn.Module, opt: torch.optim.Optimizer, config: dict[str, Any]) -> None:
        s = self.stopper
        save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": self.epoch,
                     "history": self.history, "best_epoch": s.best_epoch, "best_val_loss": s.best_loss,
                     "bad_epochs": s.bad_epochs, "best_state": s.best_state or {}, "batch_size": self.batch_size,
                     "done": self.done, "config": config, **(self.ema.state() if self.ema else {})}, path)

    @classmethod
    def load(cls, path: Path, model: nn.Module, opt: torch.optim.Optimizer, device: torch.device,
             patience: int, ema: WeightAverage | None = None) -> TrainState:
        """Restore model, optimiser and (when given) the weight average from ``path`` (weights only:
        nothing is unpickled)."""
        ck = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if ema is not None:
            if "ema" not in ck:
                raise SpinexrError(f"{path}: this checkpoint was written without a weight average (ema_decay 0); "
                                   "resume it with the settings it started with, or start the run again")
            ema.load(ck)
        stopper = EarlyStopping(patience, best_loss=float(ck["best_val_loss"]), best_epoch=int(ck["best_epoch"]),
                                bad_epochs=int(ck["bad_epochs"]), best_state=ck.get("best_state") or None)
        return cls(stopper=stopper, batch_size=int(ck["batch_size"]), epoch=int(ck["epoch"]),
                   history=list(ck["history"]), done=bool(ck.get("done", False)), ema=ema)
