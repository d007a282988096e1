"""``spinexr landmarks train --stage refiner``: the vertebra refiner (the landmark model's second stage,
:mod:`spinexr.models.refine`) trained to ship.

It trains on every film of a landmark set whose labelled corners are plausible (a tenth of the cases,
grouped by case, choose the epoch; nothing is held out to measure: the refiner's held-out figures come
from ``benchmarks/aasce_refine.py`` on a landmark run's split), and writes ``models/refiner.safetensors``
with its recipe and data, and ``metrics.json`` with the training record. A bundle takes it with
``spinexr bundle create ... --refiner``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spinexr.data.landmarks import load_landmark_source
from spinexr.data.splits import fit_val_split
from spinexr.engine.refine import RefineConfig, fit_refiner, prepare_refine_data
from spinexr.engine.state import FitOptions
from spinexr.errors import DatasetError
from spinexr.geometry.plausibility import implausibility
from spinexr.models.files import save_refiner_model
from spinexr.models.landmark import LandmarkNet
from spinexr.models.refine import VertebraRefiner

VAL_FRACTION = 0.1


def train_refiner(source: str | Path, cfg: RefineConfig, out_dir: str | Path, options: FitOptions | None = None,
                  passes: int = 1) -> dict[str, Any]:
    """Train the refiner to ship on every plausible film of ``source`` and write it to ``out_dir``.

    Args:
        source: an AASCE folder or a landmark CSV.
        cfg: the refiner's recipe.
        out_dir: the run folder (``models/refiner.safetensors``, ``metrics.json``, ``checkpoint.pt``).
        options: resume, progress and a time budget (the checkpoint is the run folder's).
        passes: how many times the refiner reads its crops when it measures (recorded in the file).

    Returns:
        what ``metrics.json`` holds: the data, the recipe, the epochs run, the best epoch and the time.
    """
    o = options or FitOptions(desc="refiner")
    t0 = time.perf_counter()
    recs = load_landmark_source(source).records
    groups = np.array([r.group for r in recs])
    ok = np.array([i for i, r in enumerate(recs) if not implausibility(r.landmarks)])
    if len(ok) < 2:
        raise DatasetError(f"{source}: fewer than 2 films with plausible labelled corners; the refiner needs more")
    fit_idx, val_idx = fit_val_split(groups, ok, VAL_FRACTION, cfg.seed, 0)
    data = prepare_refine_data([recs[i] for i in np.concatenate([fit_idx, val_idx])], cfg.film_height)
    fit_pos, val_pos = np.arange(len(fit_idx)), np.arange(len(fit_idx), len(fit_idx) + len(val_idx))
    out = Path(out_dir)
    (out / "models").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    refiner = VertebraRefiner(LandmarkNet(cfg.encoder, out_channels=4), crop=cfg.crop, span=cfg.span,
                              film_height=cfg.film_height, iterations=passes)
    fit = fit_refiner(refiner, data, fit_pos, val_pos, cfg,
                      FitOptions(out / "checkpoint.pt", o.progress, o.desc, o.resume, o.max_minutes))
    summary = {"source": str(source), "n_train": len(fit_idx), "n_val": len(val_idx), "split": "all films",
               "labels_implausible_left_out": int(len(recs) - len(ok)), "train_seconds": fit["train_seconds"],
               "epochs_run": len(fit["history"]), "best_epoch": fit["best_epoch"], "passes": passes}
    save_refiner_model(refiner, out / "models" / "refiner.safetensors", cfg.to_dict(), summary)
    record = {"verb": "landmarks train --stage refiner", **summary, "refiner_settings": cfg.to_dict(),
              "training": {k: v for k, v in fit.items() if k != "history"}, "history": fit["history"],
              "wall_seconds": time.perf_counter() - t0}
    (out / "metrics.json").write_text(json.dumps(record, indent=2, default=float))
    return record


__all__ = ["VAL_FRACTION", "train_refiner"]
