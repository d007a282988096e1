"""Measuring a landmark model: case-grouped cross-validation (or one held-out split) on a landmark set,
with the Cobb angles measured on the predicted corners against the labelled ones.

Metrics, on the held-out films: SMAPE over the three angles (the AASCE challenge's: 100 x mean over
films of sum|pred - true| / sum(pred + true)), the mean absolute error of each angle and of the
largest, each with a 95% bootstrap interval, the landmark error as a share of the film height, and
how many predicted spines the plausibility check refused. Films whose *labelled* corners fail that
check (the AASCE set holds about 28, with L5 above L4) are left out of training, never out of testing.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from spinexr.config import LandmarkConfig
from spinexr.data.contract import DataConfig
from spinexr.data.imread import read_image
from spinexr.data.landmarks import read_aasce, read_landmark_csv
from spinexr.deploy.modelfile import load_landmark_model, save_landmark_model
from spinexr.engine.distributed import resolve_device
from spinexr.engine.landmarks import LandmarkFit, fit_landmarks, predict_points, prepare_landmarks
from spinexr.errors import DatasetError, ImageReadError
from spinexr.evaluation.landmark_report import write_landmark_report
from spinexr.geometry.cobb import cobb_angles
from spinexr.geometry.overlay import draw_overlay
from spinexr.geometry.plausibility import implausibility
from spinexr.models.landmark import CODECS, LandmarkNet, parse_scales

log = logging.getLogger(__name__)


def load_landmark_source(source: str | Path) -> Any:
    """An AASCE folder or a plain landmark CSV."""

    p = Path(source)
    if p.is_dir():
        return read_aasce(p)
    if p.suffix.lower() == ".csv":
        return read_landmark_csv(p)
    raise DatasetError(f"{p}: give an AASCE folder (images/, labels/) or a landmark CSV (path,x1..x68,y1..y68)")


def smape(pred: np.ndarray, true: np.ndarray) -> float:
    """100 x mean over films of sum|pred - true| / sum(pred + true), over the three angles."""
    num = np.abs(pred - true).sum(axis=1)
    den = np.maximum((pred + true).sum(axis=1), 1e-9)
    return float(100 * np.mean(num / den))


def _boot(fn: Any, n: int, n_boot: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    vals = [fn(rng.integers(0, n, n)) for _ in range(n_boot)]
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]


def angle_metrics(pred: np.ndarray, true: np.ndarray, err_pct: np.ndarray, n_boot: int = 1000,
                  seed: int = 0) -> dict[str, Any]:
    """SMAPE, MAE of each angle and of the largest (with 95% bootstrap CIs), and the landmark error."""
    n = len(true)
    big_p, big_t = pred.max(axis=1), true.max(axis=1)
    out: dict[str, Any] = {"n": int(n), "smape": smape(pred, true),
                           "smape_ci95": _boot(lambda i: smape(pred[i], true[i]), n, n_boot, seed),
                           "mae_largest": float(np.abs(big_p - big_t).mean()),
                           "mae_largest_ci95": _boot(lambda i: float(np.abs(big_p[i] - big_t[i]).mean()), n, n_boot, seed)}
    for j, name in enumerate(("pt", "mt", "tl")):
        out[f"mae_{name}"] = float(np.abs(pred[:, j] - true[:, j]).mean())
        out[f"mae_{name}_ci95"] = _boot(lambda i, j=j: float(np.abs(pred[i, j] - true[i, j]).mean()), n, n_boot, seed)
    out["landmark_error_pct_height"] = {"mean": float(err_pct.mean()), "median": float(np.median(err_pct)),
                                        "p90": float(np.percentile(err_pct, 90))}
    return out


def case_splits(groups: np.ndarray, folds: int, seed: int, test_fraction: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Case-grouped folds, or with ``folds`` < 2 one split holding out ``test_fraction`` of the cases
    (0: no test part, every film trains: the final model)."""
    cases = np.unique(groups)
    rng = np.random.default_rng(seed)
    order = rng.permutation(cases)
    if folds < 2 and test_fraction == 0:
        return [(np.arange(len(groups)), np.array([], dtype=int))]
    if folds < 2:
        n_test = max(1, int(round(test_fraction * len(cases))))
        parts = [order[:n_test]]
    else:
        parts = np.array_split(order, folds)
    idx = np.arange(len(groups))
    return [(idx[~np.isin(groups, p)], idx[np.isin(groups, p)]) for p in parts]


def fit_val_split(groups: np.ndarray, tr: np.ndarray, val_fraction: float, seed: int, fold: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A fold's training side ``tr`` split by case into the films that fit and the validation films
    that choose the epoch (``val_fraction`` of its cases), as every landmark CV run draws them."""
    n_val = max(1, int(round(val_fraction * len(np.unique(groups[tr])))))
    val_cases = np.random.default_rng(seed + 1 + fold).permutation(np.unique(groups[tr]))[:n_val]
    return tr[~np.isin(groups[tr], val_cases)], tr[np.isin(groups[tr], val_cases)]


def run_landmark_cv(source: str | Path, cfg: LandmarkConfig, out_dir: str | Path, folds: int | None = None,
                    max_minutes_per_fold: float | None = None, progress: bool = True, n_boot: int = 1000,
                    trained: dict[int, Path] | None = None) -> dict[str, Any]:
    """Train and test the landmark model on case-grouped folds; writes ``metrics.json``,
    ``oof_angles.csv`` and the fold-0 model file into ``out_dir``; returns the metrics.

    ``trained``: model files, by fold, that an earlier run of the same settings trained on that fold's
    films: they are measured again (with this run's test-time augmentation) instead of retrained. A
    file whose training films do not match the fold's is refused."""

    parse_scales(cfg.tta_scales)  # a bad setting is refused before minutes of decoding, not after
    out = Path(out_dir)
    t_start = time.perf_counter()
    ds = load_landmark_source(source)
    contract = DataConfig(cfg.input_height, input_width=cfg.input_width)
    data = prepare_landmarks(ds, contract, progress=progress)
    recs = data.records
    groups = np.array([r.group for r in recs])
    k = cfg.folds if folds is None else folds
    splits = case_splits(groups, k, cfg.seed, cfg.test_fraction)
    testing = any(len(te) for _, te in splits)
    if testing and any(r.angles is None for r in recs):
        raise DatasetError(f"{source}: measuring needs the Cobb angles (pt, mt, tl) of every film; "
                           "train a final model without a test part with --test-fraction 0")
    out.mkdir(parents=True, exist_ok=True)  # only once the data is known to be usable
    (out / "config.json").write_text(json.dumps({"verb": "landmarks cv", "source": str(source),
                                                 "landmarks": asdict(cfg), "folds": folds}, indent=2))
    true = np.array([r.angles if r.angles is not None else np.full(3, np.nan) for r in recs])
    label_ok = np.array([not implausibility(r.landmarks) for r in recs])
    device = resolve_device(cfg.device)
    pred = np.full_like(true, np.nan)
    by_corners = np.full_like(true, np.nan)  # the same corners read by the definition alone (centreline weight 0)
    err_pct = np.full(len(recs), np.nan)
    refused = np.zeros(len(recs), dtype=bool)
    fold_rows, rows = [], []
    pred_pts: dict[int, np.ndarray] = {}
    for f, (tr, te) in enumerate(splits):
        tr = tr[label_ok[tr]]
        fit_idx, val_idx = fit_val_split(groups, tr, cfg.val_fraction, cfg.seed, f)
        import torch

        if trained and f in trained:
            fit = _reused_fit(trained[f], cfg, contract, len(fit_idx), device)
        else:
            torch.manual_seed(cfg.seed + f)
            net = LandmarkNet(cfg.encoder, pretrained=cfg.weights == "imagenet",
                              out_channels=CODECS[cfg.encoding].channels)
            fit = fit_landmarks(net, data, fit_idx, val_idx, cfg, contract, checkpoint=out / "checkpoints" / f"fold{f}.pt",
                                progress=progress, desc=f"landmarks fold {f}", max_minutes=max_minutes_per_fold)
        if f == 0:
            save_landmark_model(fit.predictor, out / "models" / "landmarks.safetensors", asdict(cfg),
                                {"source": str(source), "n_train": int(len(fit_idx)),
                                 "split": "all films" if not len(te) else "fold 0",
                                 **({} if fit.history else {"reused_from": str(trained[f])})})
        train_info = {"fold": f, "n_train": int(len(fit_idx)), "n_val": int(len(val_idx)), "n_test": int(len(te)),
                      "best_epoch": fit.best_epoch, "epochs_run": len(fit.history), "stopped_by": fit.stopped_by,
                      "train_seconds": float(sum(h["seconds"] for h in fit.history))}
        if not fit.history:
            train_info.update(best_epoch=None, epochs_run=None, train_seconds=None, reused_model=str(trained[f]))
        if not len(te):  # the final model: nothing held out to measure
            fold_rows.append(train_info)
            continue
        pts_in, _ = predict_points(fit.predictor, data.x, te, device)
        for j, i in enumerate(te):
            r = recs[i]
            pts = data.placements[i].points_to_original(pts_in[j]).reshape(17, 4, 2)
            pred_pts[i] = pts
            pred[i] = cobb_angles(pts, r.height, cfg.centreline_weight).angles
            by_corners[i] = cobb_angles(pts, r.height).angles
            refused[i] = bool(implausibility(pts))
            err_pct[i] = 100 * float(np.linalg.norm(pts - r.landmarks, axis=-1).mean()) / r.height
            rows.append({"path": str(r.path), "group": r.group, "fold": f, "label_plausible": bool(label_ok[i]),
                         "implausible_prediction": bool(refused[i]),
                         **{f"true_{a}": float(v) for a, v in zip(("pt", "mt", "tl"), true[i])},
                         **{f"pred_{a}": float(v) for a, v in zip(("pt", "mt", "tl"), pred[i])},
                         "landmark_error_pct_height": err_pct[i]})
        m = angle_metrics(pred[te], true[te], err_pct[te], n_boot=200, seed=cfg.seed)
        fold_rows.append({**train_info, "smape": m["smape"], "mae_largest": m["mae_largest"]})
        log.info("landmarks fold %d: SMAPE %.2f%%, largest-angle MAE %.2f deg", f, m["smape"], m["mae_largest"])
    if not testing:
        res = {"source": str(source), "n_films": len(recs), "skipped": data.skipped,
               "labels_implausible": int((~label_ok).sum()), "folds": fold_rows, "settings": asdict(cfg),
               "wall_seconds": time.perf_counter() - t_start}
        (out / "metrics.json").write_text(json.dumps(res, indent=2, default=float))
        return res
    done = ~np.isnan(pred).any(axis=1)
    res = {"source": str(source), "n_films": len(recs), "skipped": data.skipped,
           "labels_implausible": int((~label_ok).sum()), "folds": fold_rows, "settings": asdict(cfg),
           "pooled": angle_metrics(pred[done], true[done], err_pct[done], n_boot=n_boot, seed=cfg.seed),
           "implausible_predictions": int(refused[done].sum()), "wall_seconds": time.perf_counter() - t_start}
    if cfg.centreline_weight > 0:  # the same corners by the definition alone, side by side
        res["pooled_corners_only"] = angle_metrics(by_corners[done], true[done], err_pct[done], n_boot=n_boot,
                                                   seed=cfg.seed)
    (out / "metrics.json").write_text(json.dumps(res, indent=2, default=float))
    with open(out / "oof_angles.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    np.savez_compressed(out / "oof_landmarks.npz", paths=np.array([str(recs[i].path) for i in pred_pts]),
                        landmarks=np.stack(list(pred_pts.values())))
    _report(out, res, rows, recs, pred_pts, pred, true)
    return res


def _reused_fit(path: Path, cfg: LandmarkConfig, contract: DataConfig, n_fit: int, device: Any) -> Any:
    """A fold's model file from an earlier run, as a fit without history, predicting with ``cfg``'s
    test-time augmentation; refused unless its encoder, input and training-film count are the fold's."""

    predictor, meta = load_landmark_model(path, device)
    got = (meta.get("encoder"), predictor.contract.height, predictor.contract.width,
           (meta.get("training_data") or {}).get("n_train"))
    want = (cfg.encoder, contract.height, contract.width, n_fit)
    if got != want:
        raise DatasetError(f"{path}: trained as (encoder, height, width, training films) {got}, but this fold "
                           f"needs {want}; retrain instead of reusing it")
    predictor.tta_flip, predictor.tta_scales = cfg.tta_flip, parse_scales(cfg.tta_scales)
    return LandmarkFit([], -1, float("nan"), predictor.eval(), "reused")


def _report(out: Path, res: dict[str, Any], rows: list[dict[str, Any]], recs: list, pred_pts: dict[int, np.ndarray],
            pred: np.ndarray, true: np.ndarray, n_each: int = 4) -> None:
    """report.html with the gallery of the best and worst held-out films by SMAPE."""

    weight = res["settings"]["centreline_weight"]
    idx = np.array(list(pred_pts))
    per = np.abs(pred[idx] - true[idx]).sum(1) / np.maximum((pred[idx] + true[idx]).sum(1), 1e-9) * 100
    order = idx[np.argsort(per)]
    picks = list(order[:n_each]) + [i for i in order[::-1][:n_each] if i not in order[:n_each]]
    gallery = []
    for i in picks:
        try:
            img, _ = read_image(recs[i].path)
        except ImageReadError as e:
            log.warning("landmark gallery: leaving out %s", e)
            continue
        v = pred_pts[i]
        refused = implausibility(v)
        drawn = draw_overlay(img, v, None if refused else cobb_angles(v, img.shape[0], weight), refused)
        gallery.append((drawn, f"true largest {true[i].max():.1f}°, predicted {pred[i].max():.1f}°"))
    write_landmark_report(out, res, rows, gallery)
