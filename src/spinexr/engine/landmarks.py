"""Training the landmark model: films and corners resident on the device, augmented together, the
codec's loss, early stopping on the validation landmark error, a checkpoint each epoch, and an
optional wall-clock budget (the reduced CPU recipe trains for a fixed time)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from spinexr.config import LandmarkConfig
from spinexr.data.augment import augment_landmarks
from spinexr.data.contract import DataConfig, Placement
from spinexr.data.imread import read_image
from spinexr.engine.distributed import resolve_device
from spinexr.engine.inference import unit_batches
from spinexr.engine.state import EarlyStopping, FitOptions, TrainState
from spinexr.errors import ImageReadError, SpinexrError
from spinexr.models.landmark import LandmarkNet, LandmarkPredictor, make_codec

log = logging.getLogger(__name__)


@dataclass
class LandmarkData:
    """A landmark set decoded once and fitted by the contract: uint8 films, corners in input pixels."""

    x: torch.Tensor  # (N, 1, H, W) uint8
    pts: torch.Tensor  # (N, 68, 2) float32, input pixels
    placements: list[Placement]
    records: list  # LandmarkRecord, in the same order
    skipped: dict[str, str]


def prepare_landmarks(ds: object, contract: DataConfig, progress: bool = True) -> LandmarkData:
    """Decode every film of a :class:`~spinexr.data.landmarks.LandmarkSet`; unreadable ones are skipped."""


    xs, ps, pls, recs = [], [], [], []
    skipped = dict(getattr(ds, "skipped", {}))
    for r in tqdm(ds.records, desc="decoding", unit="film", disable=not progress):  # type: ignore[attr-defined]
        try:
            img, _ = read_image(r.path)
        except ImageReadError as e:
            skipped[str(r.path)] = e.reason
            continue
        if img.shape != (r.height, r.width):  # landmarks are in the film's own pixels: sizes must agree
            skipped[str(r.path)] = f"decoded {img.shape[1]}x{img.shape[0]}, labels say {r.width}x{r.height}"
            continue
        x8, pl = contract.to_input(img)
        xs.append(x8)
        ps.append(pl.points_to_input(r.landmarks.reshape(-1, 2)))
        pls.append(pl)
        recs.append(r)
    if not xs:
        raise SpinexrError("none of the landmark films could be read")
    return LandmarkData(torch.from_numpy(np.stack(xs)[:, None]), torch.as_tensor(np.stack(ps), dtype=torch.float32),
                        pls, recs, skipped)


@dataclass
class LandmarkFit:
    history: list[dict[str, float]]
    best_epoch: int
    best_val_error: float
    predictor: LandmarkPredictor
    stopped_by: str  # "epochs", "early stopping" or "time budget"


def _lr(cfg: LandmarkConfig, progress: float, horizon: float) -> float:
    """Warm-up, then a cosine decay that reaches its floor at ``horizon`` epochs."""
    if progress < cfg.warmup_epochs:
        return cfg.lr * max(progress / max(cfg.warmup_epochs, 1e-8), 1e-3)
    t = min(1.0, (progress - cfg.warmup_epochs) / max(1e-8, horizon - cfg.warmup_epochs))
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def predict_points(predictor: LandmarkPredictor, x_u8: torch.Tensor, idx: np.ndarray | None,
                   device: torch.device, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """((n, 68, 2) input-pixel corners, (n, 68) heatmap peaks) for ``x_u8[idx]``."""
    predictor.eval()
    pts, conf = [], []
    for xb in unit_batches(x_u8, idx, device, batch_size):
        p, c = predictor(xb)
        pts.append(p.cpu())
        conf.append(c.cpu())
    return torch.cat(pts).numpy(), torch.cat(conf).numpy()


@dataclass
class _LandmarkRun:
    """What every epoch of :func:`fit_landmarks` uses."""

    net: LandmarkNet
    opt: torch.optim.Optimizer
    codec: Any
    x_dev: torch.Tensor
    p_dev: torch.Tensor
    cfg: LandmarkConfig
    contract: DataConfig
    gen: torch.Generator


def _train_epoch(run: _LandmarkRun, order: np.ndarray, bs: int, epoch: int, horizon: float) -> np.ndarray:
    """One pass over ``order`` in batches of ``bs``; returns the summed (loss, l1, tilt, js) of its steps."""
    n_steps = max(1, len(order) // bs)
    sums = np.zeros(4)
    for s in range(n_steps):
        ib = torch.as_tensor(order[s * bs:(s + 1) * bs], device=run.x_dev.device)
        for g in run.opt.param_groups:
            g["lr"] = _lr(run.cfg, epoch + s / n_steps, horizon)
        xb, pb = augment_landmarks(run.x_dev[ib].float().div_(255.0), run.p_dev[ib], run.cfg, run.gen)
        loss, parts = run.codec.loss(run.net(run.contract.normalize(xb)), pb)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        sums += [float(loss.detach()), parts["l1"], parts["tilt"], parts["js"]]
    return sums


def _landmark_epoch(run: _LandmarkRun, fit_idx: np.ndarray, bs: int, epoch: int, horizon: float) -> dict[str, Any]:
    """One epoch's training (its order and randomness from (seed, epoch)) and its record, before validation."""
    cfg = run.cfg
    t0 = time.perf_counter()
    run.net.train()
    torch.manual_seed(cfg.seed * 1_000_003 + epoch)
    run.gen.manual_seed(cfg.seed * 7_919 + epoch)
    order = np.random.default_rng([cfg.seed, epoch]).permutation(fit_idx)
    n_steps = max(1, len(order) // bs)
    sums = _train_epoch(run, order, bs, epoch, horizon)
    # Plain floats: the checkpoint is read back with torch.load(weights_only=True), which refuses numpy scalars.
    mean = [float(x) for x in sums / n_steps]
    return {"epoch": epoch, "horizon": horizon, "loss": mean[0], "l1": mean[1], "tilt": mean[2], "js": mean[3],
            "val_error": float("nan"), "lr": float(run.opt.param_groups[0]["lr"]), "seconds": time.perf_counter() - t0}


def _val_error(predictor: LandmarkPredictor, x_dev: torch.Tensor, data: LandmarkData, val_idx: np.ndarray,
               height: int) -> float:
    """Mean corner error on the validation films, as a share of the input height (NaN without any)."""
    if not len(val_idx):
        return float("nan")
    pred, _ = predict_points(predictor, x_dev, val_idx, x_dev.device)
    return float(np.linalg.norm(pred - data.pts[val_idx].numpy(), axis=-1).mean() / height)


def fit_landmarks(net: LandmarkNet, data: LandmarkData, fit_idx: np.ndarray, val_idx: np.ndarray,
                  cfg: LandmarkConfig, contract: DataConfig, options: FitOptions | None = None) -> LandmarkFit:
    """Train ``net`` on ``fit_idx``; keep the weights with the lowest validation landmark error.

    Args:
        net: the landmark network.
        data: the prepared films and their corners.
        fit_idx: the films trained on.
        val_idx: the films that judge early stopping.
        cfg: the landmark settings.
        contract: the input contract (size, normalisation).
        options: checkpoint, resume, progress and the time budget (:class:`~spinexr.engine.state.FitOptions`).

    Each epoch writes ``checkpoint`` atomically; with ``resume`` a run continues after its last completed
    epoch. Every epoch's randomness derives from (seed, epoch), so a resumed run without a time budget
    ends where an uninterrupted one does; with one, the time already spent counts against it."""
    o = options or FitOptions(desc="landmarks")
    checkpoint, progress, desc, max_minutes, resume = o.checkpoint, o.progress, o.desc, o.max_minutes, o.resume
    device = resolve_device(cfg.device)
    net.to(device)
    x_dev, p_dev = data.x.to(device), data.pts.to(device)
    codec = make_codec(cfg.encoding, contract.height, contract.width, angle_weight=cfg.angle_weight,
                       js_weight=cfg.js_weight)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    fit_idx, val_idx = np.asarray(fit_idx), np.asarray(val_idx)
    bs = max(1, min(cfg.batch_size, len(fit_idx)))
    state = TrainState(EarlyStopping(cfg.patience), batch_size=bs)
    if resume and checkpoint is not None and checkpoint.is_file():
        state = TrainState.load(checkpoint, net, opt, device, cfg.patience)
        log.info("%s: resuming after epoch %d of %d", desc, state.epoch + 1, cfg.epochs)
    gen = torch.Generator(device=device)
    t_start = time.perf_counter() - sum(h["seconds"] for h in state.history)  # a resumed run's time counts
    stopped_by = "early stopping" if state.done and state.stopper.should_stop else "epochs"
    # Validation each epoch runs the zoom 1 alone (with the flip): the deployed zooms would triple its cost.
    val_predictor = LandmarkPredictor(net, contract, cfg.encoding, tta_flip=cfg.tta_flip)
    predictor = LandmarkPredictor(net, contract, cfg.encoding, tta_flip=cfg.tta_flip, tta_scales=cfg.tta_scales)
    # With a time budget the schedule must end when the time does: after the first epochs the
    # horizon becomes the number of epochs that fit, so the learning rate anneals in time.
    horizon = float(cfg.epochs)
    run = _LandmarkRun(net, opt, codec, x_dev, p_dev, cfg, contract, gen)
    bar = tqdm(range(state.epoch + 1, cfg.epochs), desc=desc, unit="ep", disable=not progress, leave=False)
    for epoch in ([] if state.done else bar):
        if max_minutes is not None and epoch >= 2:
            per_epoch = (time.perf_counter() - t_start) / epoch
            horizon = float(min(cfg.epochs, max(epoch + 1, int(max_minutes * 60 / per_epoch))))
        rec = _landmark_epoch(run, fit_idx, bs, epoch, horizon)
        t_val = time.perf_counter()
        rec["val_error"] = val_err = _val_error(val_predictor, x_dev, data, val_idx, contract.height)
        rec["seconds"] += time.perf_counter() - t_val  # an epoch's time includes its validation
        state.history.append(rec)
        bar.set_postfix(loss=f"{rec['loss']:.4f}", val=f"{val_err:.4f}")
        state.stopper.step(epoch, val_err if len(val_idx) else rec["loss"], net)
        state.epoch = epoch
        over_time = max_minutes is not None and (time.perf_counter() - t_start) / 60 > max_minutes
        state.done = state.stopper.should_stop or epoch == cfg.epochs - 1 or over_time
        if checkpoint is not None:
            state.save(checkpoint, net, opt, cfg.to_dict())
        if state.done:
            stopped_by = ("time budget" if over_time else "early stopping" if state.stopper.should_stop else "epochs")
            break
    bar.close()
    state.stopper.restore(net)
    return LandmarkFit(state.history, state.stopper.best_epoch, state.stopper.best_loss, predictor.eval(), stopped_by)
