"""Training one model on one split: augmentation, class balance, early stopping with restore-best,
a warm-up + one-cycle/cosine schedule, bf16 autocast and channels_last on CUDA, atomic checkpoints.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

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
    lr_scaling: str = "sqrt"  # sqrt | linear | none: lr is given for lr_ref_batch images per step
    lr_ref_batch: int = 32
    compile: bool = False  # torch.compile the model (first epoch slower, later ones faster on GPU)
    auto_batch: bool = True  # on CUDA out-of-memory, halve the batch and carry on
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
    if dist_active() and torch.cuda.is_available() and name in ("auto", "cuda"):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SpinexrError("--device cuda was asked for, but no CUDA device is available; use --device cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise SpinexrError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def _batch(x_u8: torch.Tensor, idx: torch.Tensor, device: torch.device, mean: float, std: float,
           aug: AugConfig | None, gen: torch.Generator | None, channels_last: bool) -> torch.Tensor:
    xb = x_u8[idx].to(device, non_blocking=True).float().div_(255.0)
    if aug is not None and gen is not None:
        xb = augment(xb, aug, gen)
    xb = normalize(xb, mean, std)
    if channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    return xb


def eval_batches(x_u8: torch.Tensor, idx: np.ndarray | None, device: torch.device, mean: float, std: float,
                 batch_size: int = 64) -> Iterator[torch.Tensor]:
    """Normalised, un-augmented batches of ``x_u8[idx]`` (all rows when idx is None), in order."""
    n = x_u8.shape[0] if idx is None else len(idx)
    ids = torch.arange(n) if idx is None else torch.as_tensor(np.asarray(idx), dtype=torch.long)
    for s in range(0, n, batch_size):
        yield _batch(x_u8, ids[s:s + batch_size], device, mean, std, None, None, device.type == "cuda")


@torch.no_grad()
def predict_logits(model: nn.Module, x_u8: torch.Tensor, idx: np.ndarray | None, device: torch.device,
                   mean: float, std: float, batch_size: int = 64, tta_flip: bool = False,
                   amp: bool = True) -> np.ndarray:
    """Logits for ``x_u8[idx]`` (all rows when idx is None), optionally averaged with a flipped copy."""
    model.eval()
    use_amp = amp and device.type == "cuda"
    out = []
    for xb in eval_batches(x_u8, idx, device, mean, std, batch_size):
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


def dist_active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if dist_active() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if dist_active() else 1


def is_main() -> bool:
    return rank() == 0


def init_distributed() -> bool:
    """Join the process group when launched by torchrun (nccl on GPU, gloo on CPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist_active():
        return dist_active()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    torch.distributed.init_process_group(backend=backend)
    return True


def barrier() -> None:
    if dist_active():
        torch.distributed.barrier()


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    temperature: float
    val_logits: np.ndarray
    stopped_early: bool
    batch_size: int = 0


def lr_factor(cfg: TrainConfig, progress: float) -> float:
    """Learning-rate multiplier at ``progress`` epochs: linear warm-up, then cosine / one-cycle decay."""
    warm = max(cfg.warmup_epochs, 1e-8)
    if progress < warm:
        return max(progress / warm, 1e-3)
    t = min(1.0, (progress - warm) / max(1e-8, cfg.epochs - warm))
    cos = 0.5 * (1 + math.cos(math.pi * t))
    # one-cycle anneals to peak/1e4 (torch OneCycleLR's final_div_factor); cosine to zero.
    return cos if cfg.schedule == "cosine" else 1e-4 + (1 - 1e-4) * cos


def scaled_lr(cfg: TrainConfig, batch_size: int) -> float:
    """The peak learning rate for ``batch_size``: ``cfg.lr`` is given for ``cfg.lr_ref_batch``."""
    r = batch_size / max(1, cfg.lr_ref_batch)
    if cfg.lr_scaling == "linear":
        return cfg.lr * r
    if cfg.lr_scaling == "sqrt":
        return cfg.lr * math.sqrt(r)
    return cfg.lr


def _epoch_seed(cfg: TrainConfig, epoch: int, salt: int = 0) -> int:
    """Every epoch's randomness derives from (seed, epoch, rank): a resumed run replays it exactly."""
    return (cfg.seed * 1_000_003 + epoch * 7_919 + rank() * 104_729 + salt) % (2**63)


def _val_loss(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if not len(y):
        return 0.0, 0.0
    loss = float(F.cross_entropy(torch.from_numpy(logits).float(), torch.from_numpy(y).long()).item())
    return loss, float((logits.argmax(1) == y).mean())


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
    resume: bool = False,
) -> FitResult:
    """Train ``model`` on ``fit_idx`` with early stopping on ``val_idx``; restores the best weights.

    ``x_u8`` is the (N, 1, S, S) uint8 image tensor, moved to the device once and kept there.
    Each epoch writes ``checkpoint`` atomically (model, optimiser, early-stopping state, best weights,
    history, batch size); with ``resume`` a run continues after the last completed epoch. Every
    epoch's randomness derives from (seed, epoch, rank), so a resumed CPU run replays exactly. Under
    torchrun the epoch's sample order is sharded across ranks and only rank 0 writes.
    """
    from tqdm.auto import tqdm

    device = resolve_device(cfg.device)
    cuda = device.type == "cuda"
    cl = cfg.channels_last and cuda
    world, rk = world_size(), rank()
    model.to(device)
    if cl:
        model.to(memory_format=torch.channels_last)
    x_dev = x_u8.to(device)  # resident for the whole run: no host round trips per batch
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=device)
    fit_idx, val_idx = np.asarray(fit_idx), np.asarray(val_idx)
    yv = np.asarray(labels)[val_idx]
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
    bs = max(1, min(cfg.batch_size, epoch_len) // world)  # per-rank batch; the global batch is bs * world
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, fused=cuda)
    use_amp = cfg.amp and cuda

    history: list[dict[str, float]] = []
    best_loss, best_epoch, bad, start_epoch, done = float("inf"), -1, 0, 0, False
    best_state: dict[str, torch.Tensor] | None = None
    if resume and checkpoint is not None and checkpoint.is_file():
        ck = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        history, best_epoch, best_loss = list(ck["history"]), int(ck["best_epoch"]), float(ck["best_val_loss"])
        bad, start_epoch, done = int(ck["bad_epochs"]), int(ck["epoch"]) + 1, bool(ck.get("done", False))
        best_state = ck.get("best_state") or None
        bs = int(ck.get("batch_size", bs))
        log.info("%s: resuming after epoch %d of %d", desc, start_epoch, cfg.epochs)

    train_model: nn.Module = model
    if cfg.compile:
        train_model = torch.compile(model)  # type: ignore[assignment]
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(train_model, device_ids=[device.index] if cuda else None)

    gen = torch.Generator(device=device)
    bar = tqdm(range(start_epoch, cfg.epochs), desc=desc, unit="ep", disable=not progress or not is_main(), leave=False)
    for epoch in ([] if done else bar):
        t0 = time.perf_counter()
        train_model.train()
        torch.manual_seed(_epoch_seed(cfg, epoch, 1))  # dropout
        gen.manual_seed(_epoch_seed(cfg, epoch, 2))  # augmentation
        rng = np.random.default_rng([cfg.seed, epoch])  # the same order on every rank, then sharded
        order = oversample(fit_idx, labels, rng) if cfg.balance == "oversample" else rng.permutation(fit_idx)
        n_use = (len(order) // (bs * world)) * bs * world
        local = torch.as_tensor(order[:n_use][rk::world], dtype=torch.long, device=device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        pos, n_seen = 0, 0
        t_train = time.perf_counter()
        while pos + bs <= len(local):
            ib = local[pos:pos + bs]
            for g in opt.param_groups:
                g["lr"] = scaled_lr(cfg, bs * world) * lr_factor(cfg, epoch + pos / max(1, len(local)))
            try:
                xb = _batch(x_dev, ib, device, mean, std, cfg.aug, gen, cl)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    logits = train_model(xb)
                loss = F.cross_entropy(logits.float(), y_all[ib], weight=class_w, label_smoothing=cfg.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            except torch.OutOfMemoryError as e:
                opt.zero_grad(set_to_none=True)
                if not cfg.auto_batch or bs == 1:
                    raise SpinexrError(f"CUDA out of memory at batch size {bs * world}; set --batch-size smaller "
                                       "(or --image-size)") from e
                bs //= 2
                warnings.warn(f"CUDA out of memory: batch size halved to {bs * world}; carrying on", stacklevel=2)
                if cuda:
                    torch.cuda.empty_cache()
                continue
            loss_sum += loss.detach() * len(ib)
            correct += (logits.detach().argmax(1) == y_all[ib]).sum()
            pos += bs
            n_seen += len(ib)
        if cuda:
            torch.cuda.synchronize()
        t_train = time.perf_counter() - t_train
        stats = torch.stack([loss_sum, correct.float(), torch.tensor(float(n_seen), device=device)])
        if world > 1:
            torch.distributed.all_reduce(stats)
        val_loss, val_acc = 0.0, 0.0
        if is_main():
            vl = predict_logits(model, x_dev, val_idx, device, mean, std, batch_size=max(bs, 64), amp=cfg.amp)
            val_loss, val_acc = _val_loss(vl, yv)
        if world > 1:  # rank 0 decides; every rank follows the same early-stopping path
            vt = torch.tensor([val_loss, val_acc], device=device)
            torch.distributed.broadcast(vt, 0)
            val_loss, val_acc = float(vt[0]), float(vt[1])
        n_tot = max(1.0, float(stats[2]))
        rec = {"epoch": epoch, "train_loss": float(stats[0]) / n_tot, "train_acc": float(stats[1]) / n_tot,
               "val_loss": val_loss, "val_acc": val_acc, "lr": float(opt.param_groups[0]["lr"]),
               "batch_size": bs * world, "train_images": int(n_tot), "train_seconds": t_train,
               "seconds": time.perf_counter() - t0}
        history.append(rec)
        bar.set_postfix(loss=f"{rec['train_loss']:.3f}", val_loss=f"{val_loss:.3f}", val_acc=f"{val_acc:.3f}")
        if val_loss < best_loss - 1e-4:
            best_loss, best_epoch, bad = val_loss, epoch, 0
            # A real copy: state_dict() returns references that keep changing as training goes on.
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
        done = bad >= cfg.patience or epoch == cfg.epochs - 1
        if checkpoint is not None and is_main():
            save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                         "history": history, "best_epoch": best_epoch, "best_val_loss": best_loss,
                         "bad_epochs": bad, "best_state": best_state or {}, "batch_size": bs, "done": done,
                         "config": cfg.to_dict()}, checkpoint)
        if done:
            break
    bar.close()
    if best_state:
        model.load_state_dict(best_state)
    vl = predict_logits(model, x_dev, val_idx, device, mean, std, batch_size=max(bs, 64), tta_flip=cfg.tta_flip, amp=cfg.amp)
    temp = fit_temperature(vl, yv) if len(yv) else 1.0
    del x_dev
    return FitResult(history=history, best_epoch=best_epoch, best_val_loss=best_loss, temperature=temp,
                     val_logits=vl, stopped_early=bool(history) and bad >= cfg.patience, batch_size=bs * world)
