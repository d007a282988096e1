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
from spinexr.metrics import compute_metrics, result_block, softmax
from spinexr.preprocess import PreparedData, prepare_dataset
from spinexr.splits import carve_validation, group_kfold, leaky_split
from spinexr.train import TrainConfig, barrier, fit, is_main, predict_logits, resolve_device

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
    explain: bool = True  # Grad-CAM gallery and faithfulness for fold 0 in the report


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


def _explain_fold(model: Any, data: PreparedData, te: np.ndarray, probs: np.ndarray, size: int, plots: Path,
                  name: str, n_each: int = 4) -> dict[str, Any]:
    """A gallery of correct and misclassified test images with Grad-CAM overlays, and faithfulness."""
    import torch

    from spinexr.errors import ImageReadError
    from spinexr.explain import cam_ready, explain, faithfulness, overlay
    from spinexr.imread import read_image
    from spinexr.models import GRAY_MEAN, GRAY_STD
    from spinexr.preprocess import fit_to_square
    from spinexr.report import plot_gallery
    from spinexr.splits import take_in_turns

    model = model.to("cpu").eval()
    cam_model = cam_ready(model)
    y = data.labels
    pred = probs.argmax(1)
    def pick(ok: bool) -> list[int]:
        """Up to ``n_each`` positions, taking the classes in turn so every class is shown."""
        return take_in_turns([[i for i, j in enumerate(te) if (pred[i] == y[j]) == ok and y[j] == c]
                              for c in range(len(CLASSES))], n_each)

    right, wrong = pick(True), pick(False)
    items = []
    for i in right + wrong:
        j = te[i]
        try:
            img, _ = read_image(data.paths[j])
        except ImageReadError as e:  # the file changed since it was decoded: show the others
            log.warning("Grad-CAM gallery: leaving out %s", e)
            continue
        x8, pl = fit_to_square(img, size, "letterbox")
        x = (torch.from_numpy(x8.astype(np.float32) / 255.0)[None, None] - GRAY_MEAN) / GRAY_STD
        heat, _ = explain(cam_model, x, "gradcam", int(pred[i]))
        mark = "correct" if pred[i] == y[j] else "WRONG"
        items.append((overlay(img, pl.to_original(heat)),
                      f"{mark}: true {CLASSES[y[j]][:6]}, pred {CLASSES[pred[i]][:6]} ({probs[i].max():.2f})"))
    info: dict[str, Any] = {}
    if items:
        plot_gallery(items, plots / f"gallery_{name}.png", f"{name}: Grad-CAM on correct and misclassified test images")
        info["gallery"] = f"plots/gallery_{name}.png"
    idx = te[: min(8, len(te))]
    xs = data.tensors[size][torch.as_tensor(idx)].float().div(255.0)
    xs = (xs - GRAY_MEAN) / GRAY_STD
    info["faithfulness"] = faithfulness(model, xs, "gradcam", steps=10)
    return info


def _oof_rows(data: PreparedData, te: np.ndarray, probs: np.ndarray, r: int, k: int, model: str) -> list[dict[str, Any]]:
    """Out-of-fold prediction rows for one model on one test fold."""
    y = data.labels
    return [{"path": str(data.paths[i]), "label": CLASSES[y[i]], "group": data.groups[i], "repeat": r, "fold": k,
             "model": model, **{f"p_{c}": float(v) for c, v in zip(CLASSES, p)}, "pred": CLASSES[int(np.argmax(p))]}
            for i, p in zip(te, probs)]


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not history:
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0].keys()))
        w.writeheader()
        w.writerows(history)


def run_cv(source: str | Path, cfg: CVConfig, tcfg: TrainConfig, out_dir: str | Path,
           progress: bool = True, data: PreparedData | None = None, resume: bool = False) -> dict[str, Any]:
    """Run the cross-validation and write the run folder; returns what ``metrics.json`` holds.

    Each finished fold is stored in ``folds/``; with ``resume`` those are reused and the first
    unfinished fold continues from its last epoch checkpoint. Under torchrun every rank trains and
    rank 0 alone evaluates and writes.
    """
    from spinexr.report import write_report

    out = Path(out_dir)
    if cfg.protocol not in ("grouped", "seed-leaky", "both"):
        raise SpinexrError(f"unknown protocol {cfg.protocol!r}; choose grouped, seed-leaky or both")
    t_start = time.perf_counter()
    sizes = {m: model_input_size(m, cfg.image_size) for m in cfg.models}
    if data is None:
        data = prepare_dataset(source, set(sizes.values()), cfg.resize, cache_dir=cfg.cache_dir, progress=progress)
    out.mkdir(parents=True, exist_ok=True)  # only once the data is known to be usable
    y = data.labels
    device = resolve_device(tcfg.device)
    if is_main() and not resume:
        (out / "config.json").write_text(json.dumps({"verb": "cv", "cv": asdict(cfg), "train": tcfg.to_dict(),
                                                     "source": str(source), "device": str(device)}, indent=2))
    results: dict[str, Any] = {
        **data.summary(), "source": str(source), "device": str(device),
        "models": {}, "config": {"cv": asdict(cfg), "train": tcfg.to_dict()},
    }
    histories: dict[str, list[list[dict[str, float]]]] = {}
    explain_info: dict[str, dict[str, Any]] = {}
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
                    fr = _run_fold(m, r, k, tr, te, fit_idx, val_idx, data, cfg, tcfg, sizes[m], out, device,
                                   source, progress, resume)
                    if fr is None:  # not rank 0 under torchrun: training only
                        continue
                    probs = np.asarray(fr["probs"])
                    oof[m][r, te] = probs
                    ens += probs / len(cfg.models)
                    fold_metrics[m].append(fr["metrics"])
                    fold_info[m].append(fr["info"])
                    histories.setdefault(m, []).append(fr["history"])
                    if fr.get("explain"):
                        explain_info[m] = fr["explain"]
                    oof_rows += _oof_rows(data, te, probs, r, k, m)
                if not is_main():
                    continue
                fold_metrics["ensemble"].append(compute_metrics(y[te], ens))
                oof_rows += _oof_rows(data, te, ens, r, k, "ensemble")
    if cfg.protocol in ("grouped", "both") and is_main():
        pooled_probs = {m: np.nanmean(oof[m], axis=0) for m in cfg.models}
        if len(cfg.models) > 1:
            pooled_probs["ensemble"] = np.mean([pooled_probs[m] for m in cfg.models], axis=0)
        for m, pp in pooled_probs.items():
            results["models"][m] = result_block(y, pp, fold_metrics[m], fold_info.get(m), cfg.bootstrap, tcfg.seed)
        for m, info in explain_info.items():
            results["models"][m]["explanations"] = info
        results["pooled_probs"] = {m: pp.tolist() for m, pp in pooled_probs.items()}

    if cfg.protocol in ("seed-leaky", "both"):
        results["leaky"] = _run_leaky(data, cfg, tcfg, sizes, device, progress, histories, out, resume)

    barrier()
    if not is_main():
        return {}
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


def _run_fold(m: str, r: int, k: int, tr: np.ndarray, te: np.ndarray, fit_idx: np.ndarray, val_idx: np.ndarray,
              data: PreparedData, cfg: CVConfig, tcfg: TrainConfig, s: int, out: Path, device: Any,
              source: str | Path, progress: bool, resume: bool) -> dict[str, Any] | None:
    """Train and evaluate one model on one fold, or load the stored result of a finished fold."""
    from spinexr.models import GRAY_MEAN, GRAY_STD
    from spinexr.modelfile import build_metadata, save_model

    done_file = out / "folds" / f"{m}_r{r}_f{k}.json"
    if resume and done_file.is_file():
        log.info("%s repeat %d fold %d: finished earlier, reusing %s", m, r, k, done_file)
        return json.loads(done_file.read_text())
    y = data.labels
    seed = tcfg.seed + 1000 * r + 17 * k
    model = _new_model(m, cfg, seed)
    fcfg = TrainConfig.from_dict({**tcfg.to_dict(), "seed": seed})
    res = fit(model, data.tensors[s], y, fit_idx, val_idx, fcfg, GRAY_MEAN, GRAY_STD,
              checkpoint=out / "checkpoints" / f"{m}_r{r}_f{k}.pt", progress=progress, desc=f"{m} r{r} f{k}",
              resume=resume)
    if not is_main():
        return None
    logits = predict_logits(model, data.tensors[s], te, device, GRAY_MEAN, GRAY_STD, tta_flip=tcfg.tta_flip, amp=tcfg.amp)
    probs = softmax(logits, res.temperature)
    met = compute_metrics(y[te], probs)
    info = {"repeat": r, "fold": k, "best_epoch": res.best_epoch, "epochs_run": len(res.history),
            "temperature": res.temperature, "n_train": len(fit_idx), "n_val": len(val_idx), "n_test": len(te),
            "accuracy": met["accuracy"], "batch_size": res.batch_size}
    _write_history(out / "history" / f"{m}_r{r}_f{k}.csv", res.history)
    log.info("%s repeat %d fold %d: acc %.3f (best epoch %d, T=%.2f)", m, r, k, met["accuracy"], res.best_epoch,
             res.temperature)
    fr: dict[str, Any] = {"probs": probs.tolist(), "metrics": met, "info": info, "history": res.history}
    if cfg.explain and r == 0 and k == 0:
        fr["explain"] = _explain_fold(model, data, te, probs, s, out / "plots", m)
    if cfg.save_models and r == 0 and k == 0:
        meta = build_metadata(model, input_size=s, mean=GRAY_MEAN, std=GRAY_STD, resize=cfg.resize,
                              temperature=res.temperature, weights=cfg.weights,
                              data_summary={"source": str(source), "counts": data.counts(), "n_train": len(fit_idx),
                                            "split": "cv repeat 0 fold 0"})
        save_model(model, meta, out / "models" / f"{m}.safetensors", ood=_fit_ood(model, data.tensors[s], y, tr, device))
    done_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = done_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(fr, default=float))
    tmp.replace(done_file)
    return fr


def _run_leaky(data: PreparedData, cfg: CVConfig, tcfg: TrainConfig, sizes: dict[str, int], device: Any,
               progress: bool, histories: dict[str, list[list[dict[str, float]]]], out: Path,
               resume: bool = False) -> dict[str, Any]:
    from spinexr.models import GRAY_MEAN, GRAY_STD

    y = data.labels
    run_dir = out
    sp = leaky_split(y, seed=tcfg.seed)
    out: dict[str, Any] = {"test_leak_fraction": sp["test_leak"], "n_train": len(sp["train"]),
                           "n_val": len(sp["val"]), "n_test": len(sp["test"]), "models": {}}
    # Oversampled rows are copies, so training here must not oversample again.
    lcfg = TrainConfig.from_dict({**tcfg.to_dict(), "balance": "none"})
    for m in cfg.models:
        done_file = run_dir / "folds" / f"{m}_leaky.json"
        if resume and done_file.is_file():
            stored = json.loads(done_file.read_text())
            out["models"][m] = stored["metrics"]
            histories.setdefault(f"{m} (leaky)", []).append(stored["history"])
            continue
        model = _new_model(m, cfg, tcfg.seed)
        x = data.tensors[sizes[m]]
        res = fit(model, x, y, sp["train"], sp["val"], lcfg, GRAY_MEAN, GRAY_STD, progress=progress,
                  desc=f"{m} leaky", checkpoint=run_dir / "checkpoints" / f"{m}_leaky.pt", resume=resume)
        if not is_main():
            continue
        probs = softmax(predict_logits(model, x, sp["test"], device, GRAY_MEAN, GRAY_STD, tta_flip=tcfg.tta_flip,
                                       amp=tcfg.amp), res.temperature)
        out["models"][m] = compute_metrics(y[sp["test"]], probs)
        histories.setdefault(f"{m} (leaky)", []).append(res.history)
        done_file.parent.mkdir(parents=True, exist_ok=True)
        done_file.write_text(json.dumps({"metrics": out["models"][m], "history": res.history}, default=float))
    return out


def run_train(source: str | Path, model_name: str, cfg: CVConfig, tcfg: TrainConfig, out_dir: str | Path,
              test_fraction: float = 0.2, progress: bool = True, resume: bool = False) -> dict[str, Any]:
    """One model, one stratified group split (train / validation / test); saves ``model.safetensors``.

    With ``resume`` training continues from ``checkpoint.pt`` after its last completed epoch.
    """
    from spinexr.models import GRAY_MEAN, GRAY_STD
    from spinexr.modelfile import build_metadata, save_model
    from spinexr.report import write_report
    from spinexr.splits import holdout

    out = Path(out_dir)
    size = model_input_size(model_name, cfg.image_size)
    data = prepare_dataset(source, [size], cfg.resize, cache_dir=cfg.cache_dir, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    y = data.labels
    device = resolve_device(tcfg.device)
    if is_main() and not resume:
        (out / "config.json").write_text(json.dumps({"verb": "train", "model": model_name, "cv": asdict(cfg),
                                                     "train": tcfg.to_dict(), "test_fraction": test_fraction,
                                                     "source": str(source)}, indent=2))
    all_idx = np.arange(len(y))
    if test_fraction > 0:
        tr, te = holdout(y, data.groups, test_fraction, seed=tcfg.seed)
    else:
        tr, te = all_idx, np.array([], dtype=int)
    fit_idx, val_idx = carve_validation(tr, y, data.groups, tcfg.val_fraction, seed=tcfg.seed)
    model = _new_model(model_name, cfg, tcfg.seed)
    t0 = time.perf_counter()
    res = fit(model, data.tensors[size], y, fit_idx, val_idx, tcfg, GRAY_MEAN, GRAY_STD,
              checkpoint=out / "checkpoint.pt", progress=progress, desc=model_name, resume=resume)
    if not is_main():
        barrier()
        return {}
    _write_history(out / "history.csv", res.history)
    meta = build_metadata(model, input_size=size, mean=GRAY_MEAN, std=GRAY_STD, resize=cfg.resize,
                          temperature=res.temperature, weights=cfg.weights,
                          data_summary={"source": str(source), "counts": data.counts(), "n_train": len(fit_idx),
                                        "n_val": len(val_idx), "n_test": len(te)})
    save_model(model, meta, out / "model.safetensors",
               ood=_fit_ood(model, data.tensors[size], y, np.concatenate([fit_idx, val_idx]), device))
    results: dict[str, Any] = {
        **data.summary(), "source": str(source), "device": str(device), "train_seconds": time.perf_counter() - t0, "best_epoch": res.best_epoch,
        "temperature": res.temperature, "models": {}, "model_file": str(out / "model.safetensors"),
        "config": {"cv": asdict(cfg), "train": tcfg.to_dict()},
    }
    pooled: dict[str, Any] = {}
    if len(te):
        probs = softmax(predict_logits(model, data.tensors[size], te, device, GRAY_MEAN, GRAY_STD,
                                       tta_flip=tcfg.tta_flip, amp=tcfg.amp), res.temperature)
        met = compute_metrics(y[te], probs)
        info = {"repeat": 0, "fold": 0, "best_epoch": res.best_epoch, "epochs_run": len(res.history),
                "temperature": res.temperature, "n_train": len(fit_idx), "n_val": len(val_idx), "n_test": len(te),
                "accuracy": met["accuracy"]}
        results["models"][model_name] = result_block(y[te], probs, [met], [info], cfg.bootstrap, tcfg.seed)
        pooled[model_name] = probs.tolist()
    (out / "metrics.json").write_text(json.dumps(results, indent=2, default=float))
    write_report(out, results, data, {model_name: [res.history]}, pooled, title=f"spinexr train: {model_name}",
                 y_eval=y[te])
    barrier()
    return results
