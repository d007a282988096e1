"""Pieces every run shares: a model's contract, training it into a predictor with its OOD detector,
saving the model file, and the rows and figures written per fold."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spinexr import CLASSES
from spinexr.config import CVConfig, TrainConfig
from spinexr.data.contract import DataConfig
from spinexr.data.dataset import PreparedData
from spinexr.data.imread import read_image
from spinexr.data.splits import take_in_turns
from spinexr.engine.distributed import is_main, resolve_device
from spinexr.engine.inference import extract_features
from spinexr.engine.train import FitOptions, FitSplit, fit
from spinexr.errors import ImageReadError
from spinexr.evaluation.report import plot_gallery
from spinexr.explain import cam_ready, explain_image, faithfulness, overlay
from spinexr.models import create_model, get_model_entry
from spinexr.models.files import build_metadata, save_model
from spinexr.models.ood import fit_ood

log = logging.getLogger(__name__)


def model_contract(name: str, cfg: CVConfig) -> DataConfig:
    """The registry's data contract of ``name`` with the run's input size and resize mode."""

    return get_model_entry(name).data_config.with_(input_size=cfg.image_size, resize=cfg.resize)


def new_model(name: str, cfg: CVConfig, seed: int) -> Any:
    torch.manual_seed(seed)
    return create_model(name, weights=cfg.weights, attention=cfg.attention, drop_rate=cfg.drop_rate)


@dataclass(frozen=True)
class TrainJob:
    """One model trained on one split of a prepared dataset (:func:`train_predictor`).

    Args:
        name: the registered model.
        cfg: the run's settings (attention, weights, drop rate, contract).
        tcfg: the optimisation settings (its seed replaced by ``seed``).
        contract: the model's data contract.
        data: the prepared dataset.
        fit_idx: the films trained on.
        val_idx: the films that judge early stopping and fit the temperature.
        ood_idx: the films the OOD detector is fitted on (None: no detector).
        seed: the seed of this model's initialisation and training.
        options: checkpoint, resume and progress.
    """

    name: str
    cfg: CVConfig
    tcfg: TrainConfig
    contract: DataConfig
    data: PreparedData
    fit_idx: np.ndarray
    val_idx: np.ndarray
    ood_idx: np.ndarray | None = None
    seed: int = 0
    options: FitOptions = field(default_factory=FitOptions)


def train_predictor(job: TrainJob) -> Any:
    """Train ``job.name`` and return its FitResult, whose predictor carries an OOD detector fitted on the
    pooled features of ``job.ood_idx`` (the training side, unaugmented) when that is given."""

    model = new_model(job.name, job.cfg, job.seed)
    x = job.data.tensors[job.contract.input_size]
    res = fit(model, FitSplit(x, job.data.labels, job.fit_idx, job.val_idx),
              TrainConfig.from_dict({**job.tcfg.to_dict(), "seed": job.seed}), job.contract, job.options)
    if job.ood_idx is not None and is_main():
        dev = resolve_device(job.tcfg.device)
        feats = extract_features(model, job.contract, x, job.ood_idx, dev)
        res.predictor.set_ood(fit_ood(feats, job.data.labels[job.ood_idx]))
    return res


def save_predictor(module: Any, cfg: CVConfig, path: Path, data_summary: dict[str, Any]) -> Path:
    """Write the model file of a trained predictor (weights, contract, flip, temperature, OOD)."""

    meta = build_metadata(module.model, contract=module.contract, tta_flip=module.tta_flip,
                          temperature=float(module.temperature), weights=cfg.weights, data_summary=data_summary)
    return save_model(module.model, meta, path, ood=module.ood)


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(path, history)


def oof_rows(data: PreparedData, te: np.ndarray, probs: np.ndarray, r: int, k: int, model: str) -> list[dict[str, Any]]:
    """Out-of-fold prediction rows for one model on one test fold."""
    y = data.labels
    return [{"path": str(data.paths[i]), "label": CLASSES[y[i]], "group": data.groups[i], "repeat": r, "fold": k,
             "model": model, **{f"p_{c}": float(v) for c, v in zip(CLASSES, p)}, "pred": CLASSES[int(np.argmax(p))]}
            for i, p in zip(te, probs)]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)


def explain_fold(module: Any, data: PreparedData, te: np.ndarray, probs: np.ndarray, plots: Path, name: str,
                 n_each: int = 4) -> dict[str, Any]:
    """A gallery of correct and misclassified test films with Grad-CAM overlays, and faithfulness.

    The films are fitted by the predictor's own data contract, as they are at training and in
    deployment; a file that changed since it was decoded is left out with a warning.
    """
    contract: DataConfig = module.contract
    model = module.model.to("cpu").eval()
    cam_model = cam_ready(model)
    y = data.labels
    pred = probs.argmax(1)

    def pick(ok: bool) -> list[int]:
        """Up to ``n_each`` positions, taking the classes in turn so every class is shown."""
        return take_in_turns([[i for i, j in enumerate(te) if (pred[i] == y[j]) == ok and y[j] == c]
                              for c in range(len(CLASSES))], n_each)

    items = []
    for i in pick(True) + pick(False):
        j = te[i]
        try:
            img, _ = read_image(data.paths[j])
        except ImageReadError as e:
            log.warning("Grad-CAM gallery: leaving out %s", e)
            continue
        heat, _ = explain_image(cam_model, contract, img, "gradcam", int(pred[i]))
        mark = "correct" if pred[i] == y[j] else "WRONG"
        items.append((overlay(img, heat), f"{mark}: true {CLASSES[y[j]]}, pred {CLASSES[pred[i]]} ({probs[i].max():.2f})"))
    info: dict[str, Any] = {}
    if items:
        plot_gallery(items, plots / f"gallery_{name}.png", f"{name}: Grad-CAM on correct and misclassified test images")
        info["gallery"] = f"plots/gallery_{name}.png"
    idx = te[: min(8, len(te))]
    xs = contract.normalize(data.tensors[contract.input_size][torch.as_tensor(idx)].float().div(255.0))
    info["faithfulness"] = faithfulness(model, xs, "gradcam", steps=10)
    return info
