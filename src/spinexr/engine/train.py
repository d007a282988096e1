"""Training one model on one split, in the style of timm's train.py: :func:`fit` is a short loop over
:func:`train_one_epoch` and :func:`validate`, with an :class:`~spinexr.engine.state.EarlyStopping` and a
:class:`~spinexr.engine.state.TrainState` checkpointed every epoch.

Around it: class balance, a warm-up + one-cycle/cosine schedule, bf16 autocast and channels_last on
CUDA, the CUDA out-of-memory policy, DDP under torchrun, and finally the predictor itself
(:class:`~spinexr.models.inference.InferenceModule`) with its temperature fitted on its own outputs.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from spinexr.config import TrainConfig
from spinexr.data.augment import augment
from spinexr.data.contract import DataConfig
from spinexr.data.splits import oversample
from spinexr.engine.calibration import fit_temperature
from spinexr.engine.distributed import is_main, rank, resolve_device, world_size
from spinexr.engine.inference import run_inference, unit_batches
from spinexr.engine.state import EarlyStopping, FitOptions, TrainState, WeightAverage
from spinexr.errors import SpinexrError
from spinexr.models.inference import InferenceModule

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What :func:`fit` leaves: the history, the early-stopping outcome and the fitted predictor."""

    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    temperature: float
    stopped_early: bool
    batch_size: int
    predictor: nn.Module  # the InferenceModule: contract, model, flip TTA, temperature (no OOD yet)


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
    r = batch_size / cfg.lr_ref_batch
    return {"linear": cfg.lr * r, "sqrt": cfg.lr * math.sqrt(r), "none": cfg.lr}[cfg.lr_scaling]


def _epoch_seed(cfg: TrainConfig, epoch: int, salt: int = 0) -> int:
    """Every epoch's randomness derives from (seed, epoch, rank): a resumed run replays it exactly."""
    return (cfg.seed * 1_000_003 + epoch * 7_919 + rank() * 104_729 + salt) % (2**63)


def class_weights(cfg: TrainConfig, labels: np.ndarray, fit_idx: np.ndarray, n_classes: int,
                  device: torch.device) -> torch.Tensor | None:
    """Inverse-frequency loss weights with ``balance=weights``; None otherwise."""
    if cfg.balance != "weights":
        return None
    cnt = np.bincount(np.asarray(labels)[fit_idx], minlength=n_classes).astype(float)
    return torch.tensor(len(fit_idx) / (n_classes * np.maximum(cnt, 1)), dtype=torch.float32, device=device)


def create_optimizer(model: nn.Module, cfg: TrainConfig, fused: bool) -> torch.optim.Optimizer:
    """AdamW with no weight decay on biases and norm parameters."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, fused=fused)


def epoch_order(cfg: TrainConfig, fit_idx: np.ndarray, labels: np.ndarray, epoch: int) -> np.ndarray:
    """The epoch's sample order, the same on every rank (oversampled inside the training side only)."""
    rng = np.random.default_rng([cfg.seed, epoch])
    return oversample(fit_idx, labels, rng) if cfg.balance == "oversample" else rng.permutation(fit_idx)


def _batch(x_dev: torch.Tensor, idx: torch.Tensor, contract: DataConfig, cfg: TrainConfig,
           gen: torch.Generator, channels_last: bool) -> torch.Tensor:
    xb = augment(x_dev[idx].float().div_(255.0), cfg.aug, gen)
    xb = contract.normalize(xb)
    return xb.contiguous(memory_format=torch.channels_last) if channels_last else xb


@dataclass
class _Run:
    """What every epoch of one :func:`fit` uses."""

    train_model: nn.Module  # compiled and/or DDP-wrapped
    model: nn.Module
    opt: torch.optim.Optimizer
    x_dev: torch.Tensor
    y_dev: torch.Tensor
    yv: np.ndarray
    val_idx: np.ndarray
    cfg: TrainConfig
    contract: DataConfig
    class_w: torch.Tensor | None
    device: torch.device
    world: int
    rk: int
    ema: WeightAverage | None = None  # the weight average that validation and the saved model use

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model


def _mixed_loss(logits: torch.Tensor, y: torch.Tensor, mix: tuple[float, torch.Tensor] | None,
                cfg: TrainConfig, class_w: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy with label smoothing; under mixup the two labels weighted as their films were."""
    loss = F.cross_entropy(logits, y, weight=class_w, label_smoothing=cfg.label_smoothing)
    if mix is None:
        return loss
    lam, perm = mix
    return lam * loss + (1 - lam) * F.cross_entropy(logits, y[perm], weight=class_w, label_smoothing=cfg.label_smoothing)


def _mixup(xb: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> tuple[torch.Tensor, tuple[float, torch.Tensor] | None]:
    """Blend the batch with a shuffled copy of itself (mixup) when ``cfg.mixup_alpha`` is set; the draws
    come from the epoch's generator, so a resumed run replays them."""
    if cfg.mixup_alpha <= 0:
        return xb, None
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen, device=gen.device).item())
    lam = float(np.random.default_rng(seed).beta(cfg.mixup_alpha, cfg.mixup_alpha))
    perm = torch.randperm(xb.shape[0], generator=gen, device=gen.device).to(xb.device)
    return xb * lam + xb[perm] * (1 - lam), (lam, perm)


def train_one_epoch(run: _Run, local: torch.Tensor, bs: int, epoch: int) -> tuple[torch.Tensor, int]:
    """One pass over this rank's ``local`` sample order in batches of ``bs``.

    Returns (summed [loss, correct, images] on the device, the batch size it ended with): on CUDA
    out-of-memory with ``auto_batch`` the batch is halved and the epoch carries on. After every step
    the weight average (``ema_decay``) follows the model.
    """
    cfg, device, world, model = run.cfg, run.x_dev.device, world_size(), run.train_model
    cuda = device.type == "cuda"
    cl = cfg.channels_last and cuda
    model.train()
    torch.manual_seed(_epoch_seed(cfg, epoch, 1))  # dropout
    gen = torch.Generator(device=device)
    gen.manual_seed(_epoch_seed(cfg, epoch, 2))  # augmentation
    stats = torch.zeros(3, device=device)
    pos = 0
    while pos + bs <= len(local):
        ib = local[pos:pos + bs]
        for g in run.opt.param_groups:
            g["lr"] = scaled_lr(cfg, bs * world) * lr_factor(cfg, epoch + pos / max(1, len(local)))
        try:
            xb, mix = _mixup(_batch(run.x_dev, ib, run.contract, cfg, gen, cl), cfg, gen)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and cuda):
                logits = model(xb)
            loss = _mixed_loss(logits.float(), run.y_dev[ib], mix, cfg, run.class_w)
            run.opt.zero_grad(set_to_none=True)
            loss.backward()
            run.opt.step()
        except torch.OutOfMemoryError as e:
            run.opt.zero_grad(set_to_none=True)
            if not cfg.auto_batch or bs == 1:
                raise SpinexrError(f"CUDA out of memory at batch size {bs * world}; set --batch-size smaller "
                                   "(or --image-size)") from e
            bs //= 2
            warnings.warn(f"CUDA out of memory: batch size halved to {bs * world}; carrying on", stacklevel=2)
            if cuda:
                torch.cuda.empty_cache()
            continue
        if run.ema is not None:
            run.ema.update(run.model)
        stats += torch.stack([loss.detach() * len(ib), (logits.detach().argmax(1) == run.y_dev[ib]).sum().float(),
                              torch.tensor(float(len(ib)), device=device)])
        pos += bs
    return stats, bs


@torch.no_grad()
def validate(model: nn.Module, x_dev: torch.Tensor, y: np.ndarray, val_idx: np.ndarray, contract: DataConfig,
             cfg: TrainConfig, batch_size: int) -> tuple[float, float]:
    """(cross-entropy, accuracy) of the plain network on the validation films, for early stopping."""
    if not len(val_idx):
        return 0.0, 0.0
    model.eval()
    device = x_dev.device
    out = []
    for xb in unit_batches(x_dev, val_idx, device, batch_size):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"):
            out.append(model(contract.normalize(xb)).float())
    logits = torch.cat(out).cpu()
    yt = torch.as_tensor(y, dtype=torch.long)
    return float(F.cross_entropy(logits, yt).item()), float((logits.argmax(1) == yt).float().mean().item())


def _epoch(run: _Run, state: TrainState, epoch: int, fit_idx: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """One epoch: train on this rank's share of the epoch's order, validate on rank 0, record it in the history."""
    cfg, world, device = run.cfg, run.world, run.device
    t0 = time.perf_counter()
    order = epoch_order(cfg, fit_idx, labels, epoch)
    bs = state.batch_size
    n_use = (len(order) // (bs * world)) * bs * world
    local = torch.as_tensor(order[:n_use][run.rk::world], dtype=torch.long, device=device)
    stats, state.batch_size = train_one_epoch(run, local, bs, epoch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t_train = time.perf_counter() - t0
    if world > 1:
        torch.distributed.all_reduce(stats)
    val_loss, val_acc = (validate(run.eval_model, run.x_dev, run.yv, run.val_idx, run.contract, cfg,
                                  max(state.batch_size, 64)) if is_main() else (0.0, 0.0))
    if world > 1:  # rank 0 decides; every rank follows the same early-stopping path
        vt = torch.tensor([val_loss, val_acc], device=device)
        torch.distributed.broadcast(vt, 0)
        val_loss, val_acc = float(vt[0]), float(vt[1])
    n_tot = max(1.0, float(stats[2]))
    rec = {"epoch": epoch, "train_loss": float(stats[0]) / n_tot, "train_acc": float(stats[1]) / n_tot,
           "val_loss": val_loss, "val_acc": val_acc, "lr": float(run.opt.param_groups[0]["lr"]),
           "batch_size": state.batch_size * world, "train_images": int(n_tot), "train_seconds": t_train,
           "seconds": time.perf_counter() - t0}
    state.history.append(rec)
    return rec


@dataclass(frozen=True)
class FitSplit:
    """The films a fit reads: the (N, 1, S, S) uint8 image tensor, every film's label, and which films
    train (``fit_idx``) and which judge early stopping and the temperature (``val_idx``)."""

    x_u8: torch.Tensor
    labels: np.ndarray
    fit_idx: np.ndarray
    val_idx: np.ndarray


def _start(model: nn.Module, split: FitSplit, cfg: TrainConfig, contract: DataConfig,
           o: FitOptions) -> tuple[_Run, TrainState]:
    """Everything a fit's epochs use, on the device, and the state to start from (resumed from the
    checkpoint with ``o.resume``)."""
    device = resolve_device(cfg.device)
    cuda = device.type == "cuda"
    world, rk = world_size(), rank()
    model.to(device)
    if cfg.channels_last and cuda:
        model.to(memory_format=torch.channels_last)
    labels = split.labels
    x_dev = split.x_u8.to(device)  # resident for the whole run: no host round trips per batch
    y_dev = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=device)
    fit_idx, val_idx = np.asarray(split.fit_idx), np.asarray(split.val_idx)
    if len(fit_idx) < 2:
        raise SpinexrError("the training split has fewer than 2 images; use more data or fewer folds")
    n_classes = int(model.classifier.out_features)  # type: ignore[union-attr]
    class_w = class_weights(cfg, labels, fit_idx, n_classes, device)
    epoch_len = len(epoch_order(cfg, fit_idx, labels, 0))
    opt = create_optimizer(model, cfg, fused=cuda)
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    state = TrainState(EarlyStopping(cfg.patience), batch_size=max(1, min(cfg.batch_size, epoch_len) // world), ema=ema)
    if o.resume and o.checkpoint is not None and o.checkpoint.is_file():
        state = TrainState.load(o.checkpoint, model, opt, device, cfg.patience, ema)
        log.info("%s: resuming after epoch %d of %d", o.desc, state.epoch + 1, cfg.epochs)
    train_model: nn.Module = torch.compile(model) if cfg.compile else model  # type: ignore[assignment]
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(train_model, device_ids=[device.index] if cuda else None)
    yv = np.asarray(labels)[val_idx]
    return _Run(train_model, model, opt, x_dev, y_dev, yv, val_idx, cfg, contract, class_w, device, world, rk, ema), state


def fit(model: nn.Module, split: FitSplit, cfg: TrainConfig, contract: DataConfig,
        options: FitOptions | None = None) -> FitResult:
    """Train ``model`` on ``split.fit_idx`` with early stopping on ``split.val_idx``, restore the best
    weights, and return the predictor with its temperature fitted on its own (flip-averaged) validation logits.

    Args:
        model: a registered classifier (:func:`spinexr.models.create_model`).
        split: the films and the split (:class:`FitSplit`); the images move to the device once and stay.
        cfg: the optimisation settings.
        contract: the model's data contract (normalisation, input size).
        options: checkpoint, resume and progress (:class:`FitOptions`).

    Returns:
        the history, the early-stopping outcome and the fitted predictor (:class:`FitResult`).

    Each epoch writes the checkpoint atomically; with ``resume`` a run continues after the last
    completed epoch, and since every epoch's randomness derives from (seed, epoch, rank) a resumed
    CPU run replays exactly. Under torchrun the sample order is sharded and only rank 0 writes.
    """
    o = options or FitOptions()
    run, state = _start(model, split, cfg, contract, o)
    checkpoint, device, world = o.checkpoint, run.device, run.world
    fit_idx, val_idx, labels, x_dev, yv = np.asarray(split.fit_idx), run.val_idx, split.labels, run.x_dev, run.yv
    bar = tqdm(range(state.epoch + 1, cfg.epochs), desc=o.desc, unit="ep", disable=not o.progress or not is_main(),
               leave=False)
    opt = run.opt
    for epoch in ([] if state.done else bar):
        rec = _epoch(run, state, epoch, fit_idx, labels)
        bar.set_postfix(loss=f"{rec['train_loss']:.3f}", val_loss=f"{rec['val_loss']:.3f}", val_acc=f"{rec['val_acc']:.3f}")
        state.stopper.step(epoch, rec["val_loss"], run.eval_model)
        state.epoch = epoch
        state.done = state.stopper.should_stop or epoch == cfg.epochs - 1
        if checkpoint is not None and is_main():
            state.save(checkpoint, model, opt, cfg.to_dict())
        if state.done:
            break
    bar.close()
    state.stopper.restore(model)
    module = InferenceModule(model, contract, tta_flip=cfg.tta_flip).to(device)
    temp = fit_temperature(run_inference(module, x_dev, val_idx, device).logits, yv) if len(yv) else 1.0
    module.set_temperature(temp)
    del x_dev
    return FitResult(history=state.history, best_epoch=state.stopper.best_epoch, best_val_loss=state.stopper.best_loss,
                     temperature=temp, stopped_early=bool(state.history) and state.stopper.should_stop,
                     batch_size=state.batch_size * world, predictor=module)
