"""Training the vertebra refiner (:mod:`spinexr.models.refine`): each film resized once to the
refiner's height, crops cut around the *labelled* vertebrae with the frame jittered (centre, turn,
scale) as much as a whole-spine model's corners miss by, the four corners' heatmap loss, early
stopping on the validation films' corner error, a checkpoint each epoch and an optional wall-clock
budget (the learning rate anneals to it)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from spinexr.data.contract import fit_to_box
from spinexr.data.imread import read_image
from spinexr.engine.state import EarlyStopping, FitOptions, TrainState
from spinexr.errors import ImageReadError, SpinexrError
from spinexr.models.refine import MIRROR4, VertebraRefiner, cut_crops, frames, from_crop, refiner_box, to_crop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefineConfig:
    """The refiner's recipe (saved with every run)."""

    encoder: str = "resnet18"
    crop: int = 96
    span: float = 1.3
    film_height: int = 1024
    epochs: int = 60
    batch_size: int = 32  # vertebrae per step
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    patience: int = 12
    jitter_centre: float = 0.12  # of the half side, standard deviation
    jitter_deg: float = 6.0
    jitter_scale: float = 0.1  # log-scale standard deviation
    flip: bool = True
    intensity: float = 0.2
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RefineData:
    """Films at the refiner's height (float [0, 1], one tensor each) and their corners in its pixels."""

    films: list[torch.Tensor]  # (1, 1, film_height, W_i)
    corners: torch.Tensor  # (N, 17, 4, 2)
    placements: list  # Placement: film pixels <-> the resized film's
    records: list
    skipped: dict[str, str]


def prepare_refine_data(records: list, film_height: int, corners: list[np.ndarray] | None = None,
                        progress: bool = True) -> RefineData:
    """Decode ``records`` (LandmarkRecord) at ``film_height``; ``corners`` (film pixels) replaces each
    record's own landmarks where given (fixed labels)."""
    films, pts, pls, recs, skipped = [], [], [], [], {}
    for k, r in enumerate(tqdm(records, desc="decoding", unit="film", disable=not progress)):
        try:
            img, _ = read_image(r.path)
        except ImageReadError as e:
            skipped[str(r.path)] = e.reason
            continue
        x8, pl = fit_to_box(img, *refiner_box(*img.shape, film_height), "stretch")
        films.append(torch.from_numpy(x8.astype(np.float32) / 255.0)[None, None])
        lm = r.landmarks if corners is None else corners[k]
        pts.append(pl.points_to_input(np.asarray(lm).reshape(-1, 2)).reshape(17, 4, 2))
        pls.append(pl)
        recs.append(r)
    if not films:
        raise SpinexrError("none of the refiner's films could be read")
    return RefineData(films, torch.as_tensor(np.stack(pts), dtype=torch.float32), pls, recs, skipped)


def jittered_frames(corners: torch.Tensor, cfg: RefineConfig, gen: torch.Generator) -> torch.Tensor:
    """(N, 17, 4, 2) corners -> (N, 17, 5) frames moved, turned and scaled at random."""
    fr = frames(corners, cfg.span)
    n = fr.shape[:2]
    half = fr[..., 4]
    shift = torch.randn(*n, 2, generator=gen) * cfg.jitter_centre * half[..., None]
    turn = torch.randn(*n, generator=gen) * math.radians(cfg.jitter_deg)
    cos, sin = torch.cos(turn), torch.sin(turn)
    ey = torch.stack([cos * fr[..., 2] - sin * fr[..., 3], sin * fr[..., 2] + cos * fr[..., 3]], dim=-1)
    scale = torch.exp(torch.randn(*n, generator=gen) * cfg.jitter_scale)
    return torch.cat([fr[..., :2] + shift, ey, (half * scale)[..., None]], dim=-1)


def sample_batch(data: RefineData, items: np.ndarray, cfg: RefineConfig, gen: torch.Generator,
                 augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``items`` (film, vertebra) pairs -> ((B, 1, S, S) crops in [0, 1], (B, 4, 2) corners in crop pixels)."""
    crops, targets = [], []
    for film_i, vert in items:
        c = data.corners[film_i][None]
        fr = jittered_frames(c, cfg, gen)[0, vert][None]
        crops.append(cut_crops(data.films[film_i], fr, cfg.crop))
        targets.append(to_crop(c[0, vert][None], fr, cfg.crop))
    x, y = torch.cat(crops), torch.cat(targets)
    if augment and cfg.flip:
        flip = torch.rand(len(x), generator=gen) < 0.5
        x[flip] = x[flip].flip(-1)
        yf = y[flip][:, MIRROR4]
        y[flip] = torch.stack([(cfg.crop - 1) - yf[..., 0], yf[..., 1]], dim=-1)
    if augment and cfg.intensity > 0:
        b = len(x)
        a = cfg.intensity
        contrast = 1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * a
        bright = (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * a / 2
        gamma = torch.exp((torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * a * 1.5)
        x = ((x.clamp(0, 1) ** gamma - 0.5) * contrast + 0.5 + bright).clamp(0, 1)
    return x, y


def _lr(cfg: RefineConfig, progress: float, horizon: float) -> float:
    if progress < cfg.warmup_epochs:
        return cfg.lr * max(progress / max(cfg.warmup_epochs, 1e-8), 1e-3)
    t = min(1.0, (progress - cfg.warmup_epochs) / max(1e-8, horizon - cfg.warmup_epochs))
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def val_error(refiner: VertebraRefiner, data: RefineData, idx: np.ndarray, cfg: RefineConfig) -> float:
    """Mean corner error (share of the film height) on ``idx``'s vertebrae, each cut from a frame
    jittered the same way every epoch (seeded), read with the refiner as deployed (one pass)."""
    if not len(idx):
        return float("nan")
    refiner.eval()
    gen = torch.Generator().manual_seed(12345)
    errs = []
    for i in idx:
        c = data.corners[i][None]
        fr = jittered_frames(c, cfg, gen)[0]
        crops = cut_crops(data.films[i], fr, cfg.crop)
        pts = from_crop(refiner.read_crops(crops), fr, cfg.crop)
        errs.append(float((pts - c[0]).norm(dim=-1).mean()) / cfg.film_height)
    return float(np.mean(errs))


def _refine_epoch(refiner: VertebraRefiner, opt: torch.optim.Optimizer, data: RefineData, order: np.ndarray,
                  at: tuple[int, float, int], cfg: RefineConfig, gen: torch.Generator) -> float:
    """One pass over ``order``'s (film, vertebra) pairs; ``at``: (epoch, schedule horizon, batch size);
    the mean loss."""
    epoch, horizon, bs = at
    n_steps = max(1, len(order) // bs)
    total = 0.0
    for s in range(n_steps):
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, epoch + s / n_steps, horizon)
        x, y = sample_batch(data, order[s * bs:(s + 1) * bs], cfg, gen)
        loss, _ = refiner.codec.loss(refiner.net((x - refiner.mean) / refiner.std), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach())
    return total / n_steps


def fit_refiner(refiner: VertebraRefiner, data: RefineData, fit_idx: np.ndarray, val_idx: np.ndarray,
                cfg: RefineConfig, options: FitOptions | None = None) -> dict[str, Any]:
    """Train ``refiner.net`` on the vertebrae of ``fit_idx``; keeps the weights with the lowest
    validation corner error. Returns the run's record (history, best epoch, how it stopped).

    Args:
        refiner: the refiner whose network trains (its ``cfg`` is ``cfg``).
        data: the films and their reference corners.
        fit_idx: the films whose vertebrae train.
        val_idx: the films that judge early stopping.
        cfg: the refiner's settings.
        options: checkpoint, resume, progress and the time budget (:class:`~spinexr.engine.state.FitOptions`).
    """
    o = options or FitOptions(desc="refiner")
    checkpoint, max_minutes, resume, progress = o.checkpoint, o.max_minutes, o.resume, o.progress
    net = refiner.net
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    items = np.array([(i, v) for i in np.asarray(fit_idx) for v in range(17)])
    bs = max(1, min(cfg.batch_size, len(items)))
    state = TrainState(EarlyStopping(cfg.patience), batch_size=bs)
    if resume and checkpoint is not None and checkpoint.is_file():
        state = TrainState.load(checkpoint, net, opt, torch.device("cpu"), cfg.patience)
        log.info("refiner: resuming after epoch %d", state.epoch + 1)
    t_start = time.perf_counter() - sum(h["seconds"] for h in state.history)
    horizon, stopped_by = float(cfg.epochs), "epochs"
    gen = torch.Generator()
    bar = tqdm(range(state.epoch + 1, cfg.epochs), desc="refiner", unit="ep", disable=not progress, leave=False)
    for epoch in ([] if state.done else bar):
        if max_minutes is not None and epoch >= 2:
            per_epoch = (time.perf_counter() - t_start) / epoch
            horizon = float(min(cfg.epochs, max(epoch + 1, int(max_minutes * 60 / per_epoch))))
        t0 = time.perf_counter()
        net.train()
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)
        gen.manual_seed(cfg.seed * 7_919 + epoch)
        order = items[np.random.default_rng([cfg.seed, epoch]).permutation(len(items))]
        loss = _refine_epoch(refiner, opt, data, order, (epoch, horizon, bs), cfg, gen)
        err = val_error(refiner, data, np.asarray(val_idx), cfg)
        rec = {"epoch": epoch, "horizon": horizon, "loss": loss, "val_error": err,
               "lr": float(opt.param_groups[0]["lr"]), "seconds": time.perf_counter() - t0}
        state.history.append(rec)
        bar.set_postfix(loss=f"{rec['loss']:.4f}", val=f"{err:.5f}")
        log.info("refiner epoch %d: loss %.4f, val corner error %.5f of the height", epoch, rec["loss"], err)
        state.stopper.step(epoch, err if len(val_idx) else rec["loss"], net)
        state.epoch = epoch
        over_time = max_minutes is not None and (time.perf_counter() - t_start) / 60 > max_minutes
        state.done = state.stopper.should_stop or epoch == cfg.epochs - 1 or over_time
        if checkpoint is not None:
            state.save(checkpoint, net, opt, cfg.to_dict())
        if state.done:
            stopped_by = "time budget" if over_time else "early stopping" if state.stopper.should_stop else "epochs"
            break
    bar.close()
    state.stopper.restore(net)
    refiner.eval()
    return {"history": state.history, "best_epoch": state.stopper.best_epoch,
            "best_val_error": state.stopper.best_loss, "stopped_by": stopped_by,
            "train_seconds": float(sum(h["seconds"] for h in state.history))}
