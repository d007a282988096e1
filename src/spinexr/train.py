"""Training one model on one split: augmentation, class balance, early stopping with restore-best,
a warm-up + one-cycle/cosine schedule, bf16 autocast and channels_last on CUDA, atomic checkpoints.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from spinexr.errors import SpinexrError
from spinexr.metrics import fit_temperature
from spinexr.preprocess import AugConfig, augment, normalize
from spinexr.splits import oversample

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Optimisation settings for one model (saved with every run)."""

    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    schedule: str = "onecycle"  # onecycle | cosine
    warmup_epochs: float = 3.0
    label_smoothing: float = 0.1
    balance: str = "oversample"  # oversample | weights | none
    patience: int = 15
    val_fraction: float = 0.15
    tta_flip: bool = True
    amp: bool = True
    channels_last: bool = True
    seed: int = 0
    device: str = "auto"
    aug: AugConfig = field(default_factory=AugConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        aug = AugConfig(**d.pop("aug", {}) or {})
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise SpinexrError(f"unknown training setting(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(aug=aug, **d)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SpinexrError("--device cuda was asked for, but no CUDA device is available; use --device cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise SpinexrError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    temperature: float
    val_logits: np.ndarray
    stopped_early: bool


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int):
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = max(1, int(cfg.warmup_epochs * steps_per_epoch))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        # one-cycle: cosine anneal from peak to peak/1e4 (timm/torch OneCycle's final_div_factor)
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def _batch(x_u8: torch.Tensor, idx: torch.Tensor, device: torch.device, mean: float, std: float,
           aug: AugConfig | None, gen: torch.Generator | None, channels_last: bool) -> torch.Tensor:
    xb = x_u8[idx].to(device, non_blocking=True).float().div_(255.0)
    if aug is not None and gen is not None:
        xb = augment(xb, aug, gen)
    xb = normalize(xb, mean, std)
    if channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    return xb


@torch.no_grad()
def predict_logits(model: nn.Module, x_u8: torch.Tensor, idx: np.ndarray | None, device: torch.device,
                   mean: float, std: float, batch_size: int = 64, tta_flip: bool = False,
                   amp: bool = True) -> np.ndarray:
    """Logits for ``x_u8[idx]`` (all rows when idx is None), optionally averaged with a flipped copy."""
    model.eval()
    n = x_u8.shape[0] if idx is None else len(idx)
    ids = torch.arange(n) if idx is None else torch.as_tensor(np.asarray(idx), dtype=torch.long)
    cl = device.type == "cuda"
    use_amp = amp and device.type == "cuda"
    out = []
    for s in range(0, n, batch_size):
        xb = _batch(x_u8, ids[s:s + batch_size], device, mean, std, None, None, cl)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            lg = model(xb).float()
            if tta_flip:
                lg = 0.5 * (lg + model(torch.flip(xb, dims=[3])).float())
        out.append(lg)
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, 3), np.float32)


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, then rename over the old one (a kill never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def fit(
    model: nn.Module,
    x_u8: torch.Tensor,
    labels: np.ndarray,
    fit_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: TrainConfig,
    mean: float,
    std: float,
    checkpoint: Path | None = None,
    progress: bool = True,
    desc: str = "train",
) -> FitResult:
    """Train ``model`` on ``fit_idx`` with early stopping on ``val_idx``; restores the best weights.

    ``x_u8`` is the (N, 1, S, S) uint8 image tensor; it is moved to the device once.
    """
    from tqdm.auto import tqdm

    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    cuda = device.type == "cuda"
    cl = cfg.channels_last and cuda
    model.to(device)
    if cl:
        model.to(memory_format=torch.channels_last)
    x_dev = x_u8.to(device)  # resident for the whole run: no host round trips per batch
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=device)
    fit_idx, val_idx = np.asarray(fit_idx), np.asarray(val_idx)
    if len(fit_idx) < 2:
        raise SpinexrError("the training split has fewer than 2 images; use more data or fewer folds")

    n_classes = int(model.classifier.out_features)  # type: ignore[union-attr]
    class_w = None
    if cfg.balance == "weights":
        cnt = np.bincount(np.asarray(labels)[fit_idx], minlength=n_classes).astype(float)
        class_w = torch.tensor(len(fit_idx) / (n_classes * np.maximum(cnt, 1)), dtype=torch.float32, device=device)
    elif cfg.balance not in ("oversample", "none"):
        raise SpinexrError(f"unknown balance {cfg.balance!r}; choose oversample, weights or none")

    epoch_len = len(oversample(fit_idx, labels, np.random.default_rng(0))) if cfg.balance == "oversample" else len(fit_idx)
    bs = min(cfg.batch_size, epoch_len)
    steps = max(1, epoch_len // bs)
    decay, no_decay = [], []
    for n_, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, fused=cuda)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, steps))
    use_amp = cfg.amp and cuda

    history: list[dict[str, float]] = []
    best_loss, best_epoch, bad = float("inf"), -1, 0
    best_state: dict[str, torch.Tensor] | None = None
    stopped = False
    bar = tqdm(range(cfg.epochs), desc=desc, unit="ep", disable=not progress, leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        order = oversample(fit_idx, labels, rng) if cfg.balance == "oversample" else rng.permutation(fit_idx)
        order_t = torch.as_tensor(order[: steps * bs], dtype=torch.long)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for s in range(steps):
            ib = order_t[s * bs:(s + 1) * bs]
            xb = _batch(x_dev, ib.to(device), device, mean, std, cfg.aug, gen, cl)
            yb = y_all[ib.to(device)]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb, weight=class_w, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach() * len(ib)
            correct += (logits.detach().argmax(1) == yb).sum()
        n_seen = steps * bs
        vl = predict_logits(model, x_dev, val_idx, device, mean, std, batch_size=max(bs, 64), amp=cfg.amp)
        yv = np.asarray(labels)[val_idx]
        val_loss = float(F.cross_entropy(torch.from_numpy(vl).float(), torch.from_numpy(yv).long()).item()) if len(yv) else 0.0
        val_acc = float((vl.argmax(1) == yv).mean()) if len(yv) else 0.0
        rec = {"epoch": epoch, "train_loss": float(loss_sum.item()) / n_seen, "train_acc": float(correct.item()) / n_seen,
               "val_loss": val_loss, "val_acc": val_acc, "lr": float(sched.get_last_lr()[0]),
               "seconds": time.perf_counter() - t0}
        history.append(rec)
        bar.set_postfix(loss=f"{rec['train_loss']:.3f}", val_loss=f"{val_loss:.3f}", val_acc=f"{val_acc:.3f}")
        if val_loss < best_loss - 1e-4:
            best_loss, best_epoch, bad = val_loss, epoch, 0
            # A real copy: state_dict() returns references that keep changing as training goes on.
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
        if checkpoint is not None:
            save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "epoch": epoch, "history": history, "best_epoch": best_epoch, "best_val_loss": best_loss,
                         "bad_epochs": bad, "config": cfg.to_dict()}, checkpoint)
        if bad >= cfg.patience:
            stopped = True
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    vl = predict_logits(model, x_dev, val_idx, device, mean, std, batch_size=max(bs, 64), tta_flip=cfg.tta_flip, amp=cfg.amp)
    yv = np.asarray(labels)[val_idx]
    temp = fit_temperature(vl, yv) if len(yv) else 1.0
    del x_dev
    return FitResult(history=history, best_epoch=best_epoch, best_val_loss=best_loss, temperature=temp,
                     val_logits=vl, stopped_early=stopped)

