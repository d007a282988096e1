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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spinexr.config import LandmarkConfig
from spinexr.data.contract import DataConfig
from spinexr.data.imread import file_digest, read_image
from spinexr.data.label_check import check_labels
from spinexr.data.landmarks import load_landmark_source
from spinexr.data.splits import case_splits, fit_val_split
from spinexr.engine.distributed import resolve_device
from spinexr.engine.landmarks import LandmarkFit, fit_landmarks, predict_points, prepare_landmarks
from spinexr.engine.state import FitOptions
from spinexr.errors import DatasetError, ImageReadError
from spinexr.evaluation.landmark_report import write_landmark_report
from spinexr.evaluation.metrics import bootstrap
from spinexr.geometry.cobb import cobb_angles
from spinexr.geometry.overlay import draw_overlay
from spinexr.geometry.plausibility import implausibility
from spinexr.models.files import LANDMARK_FORMAT, load_landmark_model, raw_metadata, save_landmark_model
from spinexr.models.landmark import CODECS, LandmarkNet, parse_scales

log = logging.getLogger(__name__)


def smape(pred: np.ndarray, true: np.ndarray) -> float:
    """100 x mean over films of sum|pred - true| / sum(pred + true), over the three angles."""
    num = np.abs(pred - true).sum(axis=1)
    den = np.maximum((pred + true).sum(axis=1), 1e-9)
    return float(100 * np.mean(num / den))


def tolerance_scores(pred: np.ndarray, true: np.ndarray) -> dict[str, Any]:
    """The clinical figures on (n, 3) angles: SMAPE, the largest angle's MAE, the share of films whose
    largest angle is within 5 degrees of the reference, and the mean signed error on curves of 40 or more."""
    err = pred.max(axis=1) - true.max(axis=1)
    big = true.max(axis=1) >= 40
    return {"n": len(true), "smape": smape(pred, true), "mae_largest": float(np.abs(err).mean()),
            "within_5deg": float(np.mean(np.abs(err) <= 5)), "n_ge40": int(big.sum()),
            "mean_error_ge40": float(err[big].mean()) if big.any() else None}


def angle_metrics(pred: np.ndarray, true: np.ndarray, err_pct: np.ndarray, n_boot: int = 1000,
                  seed: int = 0) -> dict[str, Any]:
    """SMAPE, MAE of each angle and of the largest (with 95% bootstrap CIs), and the landmark error.

    Args:
        pred: (n, 3) measured angles (PT, MT, TL/L).
        true: (n, 3) true angles.
        err_pct: each film's mean landmark error as a percentage of the film's height.
        n_boot: bootstrap resamples for the intervals.
        seed: the bootstrap's seed.
    """
    n = len(true)
    big_p, big_t = pred.max(axis=1), true.max(axis=1)
    out: dict[str, Any] = {"n": int(n), "smape": smape(pred, true),
                           "smape_ci95": bootstrap(lambda i: smape(pred[i], true[i]), n, n_boot, seed),
                           "mae_largest": float(np.abs(big_p - big_t).mean()),
                           "mae_largest_ci95": bootstrap(lambda i: float(np.abs(big_p[i] - big_t[i]).mean()), n, n_boot, seed)}
    for j, name in enumerate(("pt", "mt", "tl")):
        out[f"mae_{name}"] = float(np.abs(pred[:, j] - true[:, j]).mean())
        out[f"mae_{name}_ci95"] = bootstrap(lambda i, j=j: float(np.abs(pred[i, j] - true[i, j]).mean()), n, n_boot, seed)
    out["landmark_error_pct_height"] = {"mean": float(err_pct.mean()), "median": float(np.median(err_pct)),
                                        "p90": float(np.percentile(err_pct, 90))}
    return out


@dataclass
class LandmarkCVResult:
    """A ``spinexr landmarks`` run: what its ``metrics.json`` holds. ``pooled`` (and
    ``pooled_corners_only``) are None for a final model trained on every film, with nothing held out.

    Args:
        source: the landmark set.
        n_films: films used.
        skipped: films passed over, with why.
        labels_implausible: labels the plausibility check refused.
        folds: each fold's record.
        settings: the run's settings.
        wall_seconds: how long it ran.
        pooled: the metrics over every held-out film.
        implausible_predictions: held-out spines refused.
        pooled_corners_only: the metrics read from the corners alone.
        label_check: the label check's counts.
        left_out: the films whose labels did not train, each with why (the label check's problems).
        films: fold 0's one count of the films: ``read``, ``unreadable``, ``left_out``, ``trained_on``,
            ``validated_on`` (choosing the epoch) and ``held_out`` (measured); the console, the model card
            and the model file say the same (:func:`film_count`).
    """

    source: str
    n_films: int
    skipped: dict[str, str]
    labels_implausible: int
    folds: list[dict[str, Any]]
    settings: dict[str, Any]
    wall_seconds: float
    pooled: dict[str, Any] | None = None
    implausible_predictions: int | None = None
    pooled_corners_only: dict[str, Any] | None = None
    label_check: dict[str, Any] | None = None  # spinexr.data.label_check's counts on this set
    left_out: dict[str, list[str]] | None = None
    films: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` record (keys without a value left out, as the file always had them)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class _Oof:
    """The held-out films' measurements as the folds fill them in."""

    true: np.ndarray
    pred: np.ndarray
    by_corners: np.ndarray  # the same corners read by the definition alone (centreline weight 0)
    err_pct: np.ndarray
    refused: np.ndarray
    rows: list[dict[str, Any]] = field(default_factory=list)
    points: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class LandmarkCVOptions:
    """How :func:`run_landmark_cv` runs.

    Args:
        max_minutes_per_fold: a time budget per fold (None: none).
        progress: show progress bars.
        n_boot: bootstrap resamples of the confidence intervals.
        trained: model files, by fold, an earlier run of the same settings trained (measured again, not retrained).
        resume: each fold continues from its checkpoint.
        init: a landmark model file to fine-tune from.
    """

    max_minutes_per_fold: float | None = None
    progress: bool = True
    n_boot: int = 1000
    trained: dict[int, Path] | None = None
    resume: bool = False
    init: str | Path | None = None


@dataclass
class _LandmarkCV:
    """What every fold of one landmark CV shares."""

    source: str | Path
    data: Any
    cfg: LandmarkConfig
    contract: DataConfig
    out: Path
    device: Any
    options: LandmarkCVOptions
    oof: _Oof
    label_ok: np.ndarray
    left_out: dict[str, list[str]]


def _fold_fit(run: _LandmarkCV, f: int, fit_idx: np.ndarray, val_idx: np.ndarray) -> Any:
    o, cfg = run.options, run.cfg
    if o.trained and f in o.trained:
        return _reused_fit(o.trained[f], cfg, run.contract, len(fit_idx), run.device)
    torch.manual_seed(cfg.seed + f)
    if o.init is not None:  # fine-tuning: the parent's weights, its contract kept (checked by init_settings)
        net = load_landmark_model(Path(o.init), "cpu")[0].net.train()
    else:
        net = LandmarkNet(cfg.encoder, pretrained=cfg.weights == "imagenet", out_channels=CODECS[cfg.encoding].channels)
    return fit_landmarks(net, run.data, fit_idx, val_idx, cfg, run.contract,
                         FitOptions(run.out / "checkpoints" / f"fold{f}.pt", o.progress, f"landmarks fold {f}",
                                    o.resume, o.max_minutes_per_fold))


def _measure_fold(run: _LandmarkCV, f: int, fit: Any, te: np.ndarray) -> dict[str, Any]:
    """The fold model on its held-out films: angles, refusals and corner errors into the run's ``oof``."""
    data, cfg, device, oof, label_ok = run.data, run.cfg, run.device, run.oof, run.label_ok
    recs = data.records
    pts_in, _ = predict_points(fit.predictor, data.x, te, device)
    for j, i in enumerate(te):
        r = recs[i]
        pts = data.placements[i].points_to_original(pts_in[j]).reshape(17, 4, 2)
        oof.points[i] = pts
        oof.pred[i] = cobb_angles(pts, r.height, cfg.centreline_weight).angles
        oof.by_corners[i] = cobb_angles(pts, r.height).angles
        oof.refused[i] = bool(implausibility(pts))
        oof.err_pct[i] = 100 * float(np.linalg.norm(pts - r.landmarks, axis=-1).mean()) / r.height
        oof.rows.append({"path": str(r.path), "group": r.group, "fold": f, "label_plausible": bool(label_ok[i]),
                         "implausible_prediction": bool(oof.refused[i]),
                         **{f"true_{a}": float(v) for a, v in zip(("pt", "mt", "tl"), oof.true[i])},
                         **{f"pred_{a}": float(v) for a, v in zip(("pt", "mt", "tl"), oof.pred[i])},
                         "landmark_error_pct_height": oof.err_pct[i]})
    m = angle_metrics(oof.pred[te], oof.true[te], oof.err_pct[te], n_boot=200, seed=cfg.seed)
    log.info("landmarks fold %d: SMAPE %.2f%%, largest-angle MAE %.2f deg", f, m["smape"], m["mae_largest"])
    return {"smape": m["smape"], "mae_largest": m["mae_largest"]}


def _train_info(f: int, fit: Any, fit_idx: np.ndarray, val_idx: np.ndarray, te: np.ndarray,
                trained: dict[int, Path] | None) -> dict[str, Any]:
    info = {"fold": f, "n_train": int(len(fit_idx)), "n_val": int(len(val_idx)), "n_test": int(len(te)),
            "best_epoch": fit.best_epoch, "epochs_run": len(fit.history), "stopped_by": fit.stopped_by,
            "train_seconds": float(sum(h["seconds"] for h in fit.history))}
    if not fit.history:
        info.update(best_epoch=None, epochs_run=None, train_seconds=None, reused_model=str(trained[f]))  # type: ignore[index]
    return info


def _write_oof(out: Path, oof: _Oof, recs: list) -> None:
    with open(out / "oof_angles.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(oof.rows[0].keys()))
        w.writeheader()
        w.writerows(oof.rows)
    np.savez_compressed(out / "oof_landmarks.npz", paths=np.array([str(recs[i].path) for i in oof.points]),
                        landmarks=np.stack(list(oof.points.values())))


def _usable_labels(data: Any, cfg: LandmarkConfig) -> tuple[np.ndarray, Any]:
    """Which films' labels train (with ``fix_labels``, slips fixed in ``data`` first; what is still
    implausible is left out), and the label check's report."""
    checks, label_report = check_labels(data.records)
    if not cfg.fix_labels:
        return np.array([not implausibility(r.landmarks) for r in data.records]), label_report
    for i, c in enumerate(checks):
        if c.fixes and c.usable:
            data.pts[i] = torch.as_tensor(data.placements[i].points_to_input(c.landmarks.reshape(-1, 2)),
                                          dtype=data.pts.dtype)
    return np.array([c.usable for c in checks]), label_report


def run_landmark_cv(source: str | Path, cfg: LandmarkConfig, out_dir: str | Path, folds: int | None = None,
                    **options: Any) -> LandmarkCVResult:
    """Train and test the landmark model on case-grouped folds; writes ``metrics.json``,
    ``oof_angles.csv`` and the fold-0 model file into ``out_dir``; returns the result.

    Args:
        source: an AASCE folder or a landmark CSV.
        cfg: the landmark settings.
        out_dir: the run folder.
        folds: case-grouped folds (None: ``cfg.folds``; 1: one split by ``cfg.test_fraction``).
        **options: fields of :class:`LandmarkCVOptions` (``max_minutes_per_fold``, ``progress``, ``n_boot``,
            ``trained``, ``resume``, ``init``).

    ``trained``: model files, by fold, that an earlier run of the same settings trained on that fold's
    films: they are measured again (with this run's test-time augmentation) instead of retrained. A
    file whose training films do not match the fold's is refused. With ``resume``, each fold continues
    from its checkpoint in ``out_dir/checkpoints`` (a killed background run picks up where it stopped).
    ``init``: a landmark model file to fine-tune from (``cfg`` from :func:`init_settings`); the model
    file written records it as its parent."""
    o = LandmarkCVOptions(**options)
    progress, n_boot, trained = o.progress, o.n_boot, o.trained
    parse_scales(cfg.tta_scales)  # a bad setting is refused before minutes of decoding, not after
    out = Path(out_dir)
    t_start = time.perf_counter()
    ds = load_landmark_source(source)
    contract = DataConfig(cfg.input_height, input_width=cfg.input_width)
    data = prepare_landmarks(ds, contract, progress=progress)
    recs = data.records
    groups = np.array([r.group for r in recs])
    splits = case_splits(groups, cfg.folds if folds is None else folds, cfg.seed, cfg.test_fraction)
    testing = any(len(te) for _, te in splits)
    if testing and any(r.angles is None for r in recs):
        raise DatasetError(f"{source}: measuring needs the Cobb angles (pt, mt, tl) of every film; "
                           "train a final model without a test part with --test-fraction 0")
    out.mkdir(parents=True, exist_ok=True)  # only once the data is known to be usable
    (out / "config.json").write_text(json.dumps({"verb": "landmarks cv", "source": str(source),
                                                 "landmarks": asdict(cfg), "folds": folds}, indent=2))
    true = np.array([r.angles if r.angles is not None else np.full(3, np.nan) for r in recs])
    label_ok, label_report = _usable_labels(data, cfg)
    left_out = {str(recs[i].path): label_report.excluded.get(str(recs[i].path)) or ["implausible corners"]
                for i in np.flatnonzero(~label_ok)}
    device = resolve_device(cfg.device)
    oof = _Oof(true, np.full_like(true, np.nan), np.full_like(true, np.nan), np.full(len(recs), np.nan),
               np.zeros(len(recs), dtype=bool))
    fold_rows = []
    run = _LandmarkCV(source, data, cfg, contract, out, device, o, oof, label_ok, left_out)
    films: dict[str, int] = {}
    for f, (tr, te) in enumerate(splits):
        tr = tr[label_ok[tr]]
        fit_idx, val_idx = fit_val_split(groups, tr, cfg.val_fraction, cfg.seed, f)
        fit = _fold_fit(run, f, fit_idx, val_idx)
        if f == 0:
            films = {"read": len(recs), "unreadable": len(data.skipped), "left_out": len(left_out),
                     "trained_on": int(len(fit_idx)), "validated_on": int(len(val_idx)), "held_out": int(len(te))}
            _save_fold0(run, fit, films, None if fit.history else trained[f])  # type: ignore[index]
        info = _train_info(f, fit, fit_idx, val_idx, te, trained)
        fold_rows.append({**info, **_measure_fold(run, f, fit, te)} if len(te) else info)
    res = LandmarkCVResult(str(source), len(recs), data.skipped, int((~label_ok).sum()), fold_rows, asdict(cfg),
                           time.perf_counter() - t_start, label_check={k: v for k, v in label_report.to_dict().items()
                                                                       if not k.endswith("_films")},
                           left_out=left_out, films=films)
    if testing:
        done = ~np.isnan(oof.pred).any(axis=1)
        res.pooled = angle_metrics(oof.pred[done], true[done], oof.err_pct[done], n_boot=n_boot, seed=cfg.seed)
        res.implausible_predictions = int(oof.refused[done].sum())
        if cfg.centreline_weight > 0:  # the same corners by the definition alone, side by side
            res.pooled_corners_only = angle_metrics(oof.by_corners[done], true[done], oof.err_pct[done],
                                                    n_boot=n_boot, seed=cfg.seed)
        res.wall_seconds = time.perf_counter() - t_start
    (out / "metrics.json").write_text(json.dumps(res.to_dict(), indent=2, default=float))
    if testing:
        _write_oof(out, oof, recs)
        _report(out, res.to_dict(), oof, recs)
    return res


# The contract of a landmark model: what a fine-tuned model must keep from its parent.
CONTRACT_SETTINGS = ("encoder", "input_height", "input_width", "encoding")
FINETUNE_DEFAULTS = {"epochs": 10, "warmup_epochs": 0.0, "lr_factor": 0.1}


def init_settings(init: str | Path, given: dict[str, Any]) -> LandmarkConfig:
    """The settings to fine-tune the landmark model file ``init`` with: its own, then a short schedule (10
    epochs, a tenth of its learning rate, no warm-up), then ``given`` (what the user set). A setting of
    its contract (encoder, input size, encoding) that differs from the parent's is refused."""
    meta = raw_metadata(Path(init), "landmark model file not found")
    if meta.get("format") != LANDMARK_FORMAT:
        raise DatasetError(f"{init}: not a spinexr landmark model file")
    base = {k: v for k, v in (meta.get("settings") or {}).items() if k in {f.name for f in fields(LandmarkConfig)}}
    parent = LandmarkConfig.from_dict(base)
    for k in CONTRACT_SETTINGS:
        if k in given and given[k] != getattr(parent, k):
            raise DatasetError(f"--{k.replace('_', '-')} {given[k]}: fine-tuning keeps the parent's contract "
                               f"({k} {getattr(parent, k)}); leave it out")
    tuned = {**base, "epochs": FINETUNE_DEFAULTS["epochs"], "warmup_epochs": FINETUNE_DEFAULTS["warmup_epochs"],
             "lr": parent.lr * FINETUNE_DEFAULTS["lr_factor"], "patience": FINETUNE_DEFAULTS["epochs"]}
    return LandmarkConfig.from_dict({**tuned, **given})


def parent_record(init: Path) -> dict[str, Any]:
    """What a fine-tuned model file says of its parent: the file, its SHA-256 and what it was trained on."""
    meta = raw_metadata(init, "landmark model file not found")
    return {"path": str(init), "sha256": file_digest(init),
            "training_data": meta.get("training_data") or {}, "created": meta.get("created")}


def film_count(summary: dict[str, Any]) -> str:
    """The one sentence on the films a landmark model used, from its summary (its file's ``training_data``):
    ``trained on 5 films, 1 more choosing the epoch; 2 left out (a.png: vertebrae overlap; b.png: ...)``."""
    n = summary.get("films") or {}
    text = (f"trained on {n.get('trained_on', summary.get('n_train'))} films, {n.get('validated_on', 0)} more choosing "
            f"the epoch")
    if n.get("held_out"):
        text += f", {n['held_out']} held out to measure it"
    left = summary.get("left_out") or {}
    if left:
        named = "; ".join(f"{Path(p).name}: {', '.join(why)}" for p, why in list(left.items())[:10])
        text += f"; {len(left)} left out for their labels ({named}{'; ...' if len(left) > 10 else ''})"
    if n.get("unreadable"):
        text += f"; {n['unreadable']} unreadable"
    return text


def write_finetune_card(path: Path, summary: dict[str, Any], cfg: LandmarkConfig) -> Path:
    """A short model card for a fine-tuned landmark model: its parent and its data.

    Args:
        path: the card to write.
        summary: the fine-tuning's summary (parent, source, films).
        cfg: its settings.
    """
    par = summary["parent"]
    lines = ["# Landmark model (fine-tuned)", "",
             f"- Parent: `{par['path']}` (SHA-256 `{par['sha256'][:16]}...`), trained on "
             f"{par['training_data'].get('source', 'unknown data')} ({par['training_data'].get('n_train', '?')} films).",
             f"- Fine-tuned on: `{summary['source']}` ({summary['split']}): {film_count(summary)}.",
             f"- Schedule: {cfg.epochs} epochs, peak learning rate {cfg.lr:g}, input {cfg.input_height}x{cfg.input_width} "
             f"({cfg.encoder}, {cfg.encoding}), the parent's contract kept.",
             "- Research use only; measure it on films it was not tuned on (`spinexr landmarks evaluate`)."]
    path.write_text("\n".join(lines) + "\n")
    return path


def _save_fold0(run: _LandmarkCV, fit: Any, films: dict[str, Any], reused: Path | None) -> None:
    """The fold-0 model file (with, for a fine-tuned model, a card naming its parent and data)."""
    out, cfg, source, init = run.out, run.cfg, run.source, run.options.init
    summary = {"source": str(source), "n_train": int(films["trained_on"]),
               "split": "all films" if not films["held_out"] else "fold 0", "films": films,
               "left_out": run.left_out,
               **({"reused_from": str(reused)} if reused is not None else {}),
               **({"parent": parent_record(Path(init))} if init is not None else {})}
    save_landmark_model(fit.predictor, out / "models" / "landmarks.safetensors", asdict(cfg), summary)
    if init is not None:
        write_finetune_card(out / "models" / "landmarks.md", summary, cfg)


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


def _report(out: Path, res: dict[str, Any], oof: _Oof, recs: list, n_each: int = 4) -> None:
    """report.html with the gallery of the best and worst held-out films by SMAPE."""
    rows, pred_pts, pred, true = oof.rows, oof.points, oof.pred, oof.true
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
