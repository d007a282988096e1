"""Cross-validation of one or more models, their soft-voting ensemble, and the leaky protocol.

Protocol (``grouped``): stratified group k-fold x repeats. In each fold a validation split is carved
from the training side (stratified, group-aware) for early stopping and temperature scaling, and
oversampling draws from the training side only. Every image gets an out-of-fold prediction.

``seed-leaky`` reproduces the notebook this project grew from: oversample the whole dataset, then
split 80/10/10, and reports how many test rows are copies of training rows.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spinexr import CLASSES
from spinexr.errors import SpinexrError
from spinexr.metrics import bootstrap_ci, compute_metrics, softmax, summarize_folds
from spinexr.preprocess import PreparedData, prepare_dataset
from spinexr.splits import carve_validation, group_kfold, leaky_split
from spinexr.train import TrainConfig, fit, predict_logits, resolve_device

log = logging.getLogger(__name__)


@dataclass
class CVConfig:
    """What to cross-validate and how (saved with every run)."""

    models: list[str] = field(default_factory=lambda: ["xception", "inception_v3", "densenet121"])
    folds: int = 5
    repeats: int = 1
    attention: str = "mhsa"
    weights: str = "none"
    image_size: int | None = None
    resize: str = "letterbox"
    protocol: str = "grouped"  # grouped | seed-leaky | both
    bootstrap: int = 1000
    save_models: bool = True
    cache_dir: str | None = None
    drop_rate: float = 0.2


def model_input_size(name: str, override: int | None) -> int:
    from spinexr.models import get_model_entry

    return int(override or get_model_entry(name).input_size)


def _new_model(name: str, cfg: CVConfig, seed: int):
    import torch

    from spinexr.models import create_model

    torch.manual_seed(seed)
    return create_model(name, weights=cfg.weights, attention=cfg.attention, drop_rate=cfg.drop_rate)


def _fit_ood(model: Any, x: Any, y: np.ndarray, idx: np.ndarray, device: Any) -> Any:
    """The OOD detector on the pooled features of the training images (no augmentation)."""
    from spinexr.models import GRAY_MEAN, GRAY_STD
    from spinexr.ood import extract_features, fit_ood

    feats = extract_features(model, x, idx, device, GRAY_MEAN, GRAY_STD)
    return fit_ood(feats, y[idx])


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not history:
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0].keys()))
        w.writeheader()
        w.writerows(history)


def run_cv(source: str | Path, cfg: CVConfig, tcfg: TrainConfig, out_dir: str | Path,
           progress: bool = True, data: PreparedData | None = None) -> dict[str, Any]:
    """Run the cross-validation and write the run folder; returns what ``metrics.json`` holds."""
    from spinexr.models import GRAY_MEAN, GRAY_STD
    from spinexr.modelfile import build_metadata, save_model
    from spinexr.report import write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.protocol not in ("grouped", "seed-leaky", "both"):
        raise SpinexrError(f"unknown protocol {cfg.protocol!r}; choose grouped, seed-leaky or both")
    t_start = time.perf_counter()
    sizes = {m: model_input_size(m, cfg.image_size) for m in cfg.models}
    if data is None:
        data = prepare_dataset(source, set(sizes.values()), cfg.resize, cache_dir=cfg.cache_dir, progress=progress)
    y = data.labels
    device = resolve_device(tcfg.device)
    (out / "config.json").write_text(json.dumps({"cv": asdict(cfg), "train": tcfg.to_dict(), "source": str(source),
                                                 "device": str(device)}, indent=2))
    from spinexr.data.check import shortcut_baseline

    wh = np.array(data.image_sizes, dtype=float)
    shortcut = shortcut_baseline(wh[:, 0], wh[:, 1], y)
    results: dict[str, Any] = {
        "source": str(source), "n_images": int(len(y)), "counts": data.counts(),
        "skipped": data.skipped, "n_groups": int(len(np.unique(data.groups))),
        "near_duplicate_pairs": data.near_duplicates, "shortcut": shortcut, "device": str(device),
        "models": {}, "config": {"cv": asdict(cfg), "train": tcfg.to_dict()},
    }
    histories: dict[str, list[list[dict[str, float]]]] = {}
    oof_rows: list[dict[str, Any]] = []

    if cfg.protocol in ("grouped", "both"):
        oof = {m: np.full((cfg.repeats, len(y), len(CLASSES)), np.nan) for m in cfg.models}
        fold_metrics: dict[str, list[dict[str, Any]]] = {m: [] for m in cfg.models + ["ensemble"]}
        fold_info: dict[str, list[dict[str, Any]]] = {m: [] for m in cfg.models}
        for r in range(cfg.repeats):
            splits = group_kfold(y, data.groups, cfg.folds, seed=tcfg.seed + 1000 * r)
            for k, (tr, te) in enumerate(splits):
                assert not set(data.groups[tr]) & set(data.groups[te])
                fit_idx, val_idx = carve_validation(tr, y, data.groups, tcfg.val_fraction, seed=tcfg.seed + 1000 * r + k)
                ens = np.zeros((len(te), len(CLASSES)))
                for m in cfg.models:
                    s = sizes[m]
                    seed = tcfg.seed + 1000 * r + 17 * k
                    model = _new_model(m, cfg, seed)
                    fcfg = TrainConfig.from_dict({**tcfg.to_dict(), "seed": seed})
                    res = fit(model, data.tensors[s], y, fit_idx, val_idx, fcfg, GRAY_MEAN, GRAY_STD,
                              checkpoint=out / "checkpoints" / f"{m}_r{r}_f{k}.pt", progress=progress,
                              desc=f"{m} r{r} f{k}")
                    logits = predict_logits(model, data.tensors[s], te, device, GRAY_MEAN, GRAY_STD,
                                            tta_flip=tcfg.tta_flip, amp=tcfg.amp)
                    probs = softmax(logits, res.temperature)
                    oof[m][r, te] = probs
                    ens += probs / len(cfg.models)
                    met = compute_metrics(y[te], probs)
                    fold_metrics[m].append(met)
                    fold_info[m].append({"repeat": r, "fold": k, "best_epoch": res.best_epoch,
                                         "epochs_run": len(res.history), "temperature": res.temperature,
                                         "n_train": len(fit_idx), "n_val": len(val_idx), "n_test": len(te),
                                         "accuracy": met["accuracy"]})
                    histories.setdefault(m, []).append(res.history)
                    _write_history(out / "history" / f"{m}_r{r}_f{k}.csv", res.history)
                    log.info("%s repeat %d fold %d: acc %.3f (best epoch %d, T=%.2f)", m, r, k,
                             met["accuracy"], res.best_epoch, res.temperature)
                    if cfg.save_models and r == 0 and k == 0:
                        meta = build_metadata(model, input_size=s, mean=GRAY_MEAN, std=GRAY_STD, resize=cfg.resize,
                                              temperature=res.temperature, weights=cfg.weights,
                                              data_summary={"source": str(source), "counts": data.counts(),
                                                            "n_train": len(fit_idx), "split": "cv repeat 0 fold 0"})
                        save_model(model, meta, out / "models" / f"{m}.safetensors",
                                   ood=_fit_ood(model, data.tensors[s], y, tr, device))
                    for i, p in zip(te, probs):
                        oof_rows.append({"path": str(data.paths[i]), "label": CLASSES[y[i]], "group": data.groups[i],
                                         "repeat": r, "fold": k, "model": m,
                                         **{f"p_{c}": float(v) for c, v in zip(CLASSES, p)},
                                         "pred": CLASSES[int(np.argmax(p))]})
                fold_metrics["ensemble"].append(compute_metrics(y[te], ens))
                for i, p in zip(te, ens):
                    oof_rows.append({"path": str(data.paths[i]), "label": CLASSES[y[i]], "group": data.groups[i],
                                     "repeat": r, "fold": k, "model": "ensemble",
                                     **{f"p_{c}": float(v) for c, v in zip(CLASSES, p)},
                                     "pred": CLASSES[int(np.argmax(p))]})
        pooled_probs = {m: np.nanmean(oof[m], axis=0) for m in cfg.models}
        if len(cfg.models) > 1:
            pooled_probs["ensemble"] = np.mean([pooled_probs[m] for m in cfg.models], axis=0)
        for m, pp in pooled_probs.items():
            results["models"][m] = {
                "folds": fold_info.get(m, []),
                "fold_metrics": fold_metrics[m],
                "summary": summarize_folds(fold_metrics[m]),
                "pooled": compute_metrics(y, pp),
                "ci95": bootstrap_ci(y, pp, n_boot=cfg.bootstrap, seed=tcfg.seed),
            }
        results["pooled_probs"] = {m: pp.tolist() for m, pp in pooled_probs.items()}

    if cfg.protocol in ("seed-leaky", "both"):
        results["leaky"] = _run_leaky(data, cfg, tcfg, sizes, device, progress, histories)

    results["wall_seconds"] = time.perf_counter() - t_start
    if oof_rows:
        with open(out / "oof_predictions.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(oof_rows[0].keys()))
            w.writeheader()
            w.writerows(oof_rows)
    pooled = results.pop("pooled_probs", {})
    (out / "metrics.json").write_text(json.dumps(results, indent=2, default=float))
    write_report(out, results, data, histories, pooled)
    return results


def _run_leaky(data: PreparedData, cfg: CVConfig, tcfg: TrainConfig, sizes: dict[str, int], device: Any,
               progress: bool, histories: dict[str, list[list[dict[str, float]]]]) -> dict[str, Any]:
    from spinexr.models import GRAY_MEAN, GRAY_STD

    y = data.labels
    sp = leaky_split(y, seed=tcfg.seed)
    out: dict[str, Any] = {"test_leak_fraction": sp["test_leak"], "n_train": len(sp["train"]),
                           "n_val": len(sp["val"]), "n_test": len(sp["test"]), "models": {}}
    # Oversampled rows are copies, so training here must not oversample again.
    lcfg = TrainConfig.from_dict({**tcfg.to_dict(), "balance": "none"})
    for m in cfg.models:
        model = _new_model(m, cfg, tcfg.seed)
        x = data.tensors[sizes[m]]
        res = fit(model, x, y, sp["train"], sp["val"], lcfg, GRAY_MEAN, GRAY_STD, progress=progress,
                  desc=f"{m} leaky")
        probs = softmax(predict_logits(model, x, sp["test"], device, GRAY_MEAN, GRAY_STD, tta_flip=tcfg.tta_flip,
                                       amp=tcfg.amp), res.temperature)
        out["models"][m] = compute_metrics(y[sp["test"]], probs)
        histories.setdefault(f"{m} (leaky)", []).append(res.history)
    return out


def run_train(source: str | Path, model_name: str, cfg: CVConfig, tcfg: TrainConfig, out_dir: str | Path,
              test_fraction: float = 0.2, progress: bool = True) -> dict[str, Any]:
    """One model, one stratified group split (train / validation / test); saves ``model.safetensors``."""
    from spinexr.models import GRAY_MEAN, GRAY_STD
    from spinexr.modelfile import build_metadata, save_model
    from spinexr.report import write_report
    from spinexr.splits import holdout

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = model_input_size(model_name, cfg.image_size)
    data = prepare_dataset(source, [size], cfg.resize, cache_dir=cfg.cache_dir, progress=progress)
    y = data.labels
    device = resolve_device(tcfg.device)
    (out / "config.json").write_text(json.dumps({"model": model_name, "cv": asdict(cfg), "train": tcfg.to_dict(),
                                                 "test_fraction": test_fraction, "source": str(source)}, indent=2))
    all_idx = np.arange(len(y))
    if test_fraction > 0:
        tr, te = holdout(y, data.groups, test_fraction, seed=tcfg.seed)
    else:
        tr, te = all_idx, np.array([], dtype=int)
    fit_idx, val_idx = carve_validation(tr, y, data.groups, tcfg.val_fraction, seed=tcfg.seed)
    model = _new_model(model_name, cfg, tcfg.seed)
    t0 = time.perf_counter()
    res = fit(model, data.tensors[size], y, fit_idx, val_idx, tcfg, GRAY_MEAN, GRAY_STD,
              checkpoint=out / "checkpoint.pt", progress=progress, desc=model_name)
    _write_history(out / "history.csv", res.history)
    meta = build_metadata(model, input_size=size, mean=GRAY_MEAN, std=GRAY_STD, resize=cfg.resize,
                          temperature=res.temperature, weights=cfg.weights,
                          data_summary={"source": str(source), "counts": data.counts(), "n_train": len(fit_idx),
                                        "n_val": len(val_idx), "n_test": len(te)})
    save_model(model, meta, out / "model.safetensors",
               ood=_fit_ood(model, data.tensors[size], y, np.concatenate([fit_idx, val_idx]), device))
    results: dict[str, Any] = {
        "source": str(source), "n_images": int(len(y)), "counts": data.counts(), "skipped": data.skipped,
        "n_groups": int(len(np.unique(data.groups))), "near_duplicate_pairs": data.near_duplicates,
        "device": str(device), "train_seconds": time.perf_counter() - t0, "best_epoch": res.best_epoch,
        "temperature": res.temperature, "models": {}, "model_file": str(out / "model.safetensors"),
        "config": {"cv": asdict(cfg), "train": tcfg.to_dict()},
    }
    from spinexr.data.check import shortcut_baseline

    wh = np.array(data.image_sizes, dtype=float)
    results["shortcut"] = shortcut_baseline(wh[:, 0], wh[:, 1], y)
    pooled: dict[str, Any] = {}
    if len(te):
        probs = softmax(predict_logits(model, data.tensors[size], te, device, GRAY_MEAN, GRAY_STD,
                                       tta_flip=tcfg.tta_flip, amp=tcfg.amp), res.temperature)
        met = compute_metrics(y[te], probs)
        results["models"][model_name] = {
            "folds": [{"repeat": 0, "fold": 0, "best_epoch": res.best_epoch, "epochs_run": len(res.history),
                       "temperature": res.temperature, "n_train": len(fit_idx), "n_val": len(val_idx),
                       "n_test": len(te), "accuracy": met["accuracy"]}],
            "fold_metrics": [met], "summary": summarize_folds([met]), "pooled": met,
            "ci95": bootstrap_ci(y[te], probs, n_boot=cfg.bootstrap, seed=tcfg.seed),
        }
        pooled[model_name] = probs.tolist()
    (out / "metrics.json").write_text(json.dumps(results, indent=2, default=float))
    write_report(out, results, data, {model_name: [res.history]}, pooled, title=f"spinexr train: {model_name}",
                 y_eval=y[te])
    return results
