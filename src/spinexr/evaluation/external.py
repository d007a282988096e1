"""``spinexr evaluate``: a trained model file measured on another dataset (an external test).

The model file's own predictor runs (its contract, flip and temperature), so the figures describe
exactly what ``predict`` and ``serve`` return for those films.

External sets rarely hold every class (a scoliosis clinic's films are all Scoliosis), so
:func:`external_metrics` reports what such a set can show: each present class's sensitivity with a
Wilson interval, the confusion rows that exist, one-vs-rest AUCs only between classes that are both
present, and what could not be measured and why. With true Cobb angles (``--angles``) it adds the
share called Scoliosis in each severity band and how well the scoliosis evidence (P(Scoliosis), and
the measured angle when a landmark model runs) follows the true largest angle (Spearman, with a
bootstrap interval).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from spinexr import CLASSES
from spinexr.data.dataset import prepare_dataset
from spinexr.data.imread import read_image
from spinexr.data.landmarks import read_aasce
from spinexr.engine.distributed import resolve_device
from spinexr.engine.inference import run_inference
from spinexr.errors import DatasetError, SpinexrError
from spinexr.evaluation._common import write_csv
from spinexr.evaluation.metrics import _binary_auc, bootstrap, compute_metrics
from spinexr.evaluation.report import write_report
from spinexr.evaluation.results import RunResult, model_result
from spinexr.geometry.cobb import BAND_RANGES, severity_band
from spinexr.pipeline import Pipeline, PipelineSpec


def wilson(k: int, n: int, z: float = 1.96) -> list[float] | None:
    """Wilson score interval of a proportion k/n (sound at 0% and 100%, unlike the bootstrap).

    Args:
        k: the successes.
        n: the trials.
        z: the normal quantile (1.96: 95%).
    """
    if n == 0:
        return None
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [max(0.0, c - h), min(1.0, c + h)]


def _spearman(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> dict[str, Any] | None:
    """Spearman's rho with a percentile bootstrap interval; None where it is undefined (a constant side)."""
    from scipy.stats import rankdata

    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None

    def rho(i: np.ndarray) -> float:
        ra, rb = rankdata(a[i]), rankdata(b[i])
        sa, sb = ra.std(), rb.std()
        return float(((ra - ra.mean()) * (rb - rb.mean())).mean() / (sa * sb)) if sa > 0 and sb > 0 else math.nan

    ci = bootstrap(rho, len(a), n_boot, seed)
    return {"rho": rho(np.arange(len(a))), "ci95": ci, "n": int(len(a))}


def external_metrics(y: np.ndarray, probs: np.ndarray, true_angle: np.ndarray | None = None,
                     measured_angle: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0,
                     classes: tuple[str, ...] = CLASSES) -> dict[str, Any]:
    """What a set that may hold only some classes can show (see the module docstring).

    ``true_angle`` / ``measured_angle``: the largest Cobb angle per film, NaN where unknown.

    Args:
        y: each film's true class index.
        probs: (n, classes) predicted probabilities.
        true_angle: the largest true Cobb angle of each film (NaN where unknown).
        measured_angle: the largest measured angle of each film (NaN where unknown).
        n_boot: bootstrap resamples for the intervals.
        seed: the bootstrap's seed.
        classes: the class names, in the probabilities' order.
    """

    y, probs = np.asarray(y), np.asarray(probs, dtype=np.float64)
    pred = probs.argmax(axis=1)
    present = [k for k in range(len(classes)) if (y == k).any()]
    out: dict[str, Any] = {"n": int(len(y)), "classes_present": [classes[k] for k in present],
                           "complete": len(present) == len(classes), "per_class": {}, "auc": {}, "not_measured": []}
    for k in present:
        m = y == k
        hit = int((pred[m] == k).sum())
        out["per_class"][classes[k]] = {"n": int(m.sum()), "sensitivity": hit / int(m.sum()),
                                        "sensitivity_ci95": wilson(hit, int(m.sum())),
                                        "called": {classes[j]: int((pred[m] == j).sum()) for j in range(len(classes))}}
    absent = [classes[k] for k in range(len(classes)) if k not in present]
    if absent:
        out["not_measured"].append(f"no {', '.join(absent)} films: their sensitivity, every class's specificity "
                                   "and precision against them, and AUCs involving them")
    if len(present) >= 2:
        sub = np.isin(y, present)
        for k in present:
            out["auc"][classes[k]] = _binary_auc(y[sub] == k, probs[sub, k])
    else:
        out["not_measured"].append("ROC-AUC and macro-F1: they need films of at least two classes")
    if true_angle is not None:
        ta = np.asarray(true_angle, dtype=np.float64)
        known = np.isfinite(ta)
        out["angles"] = {"n_with_angle": int(known.sum())}
        if known.any():
            sco = classes.index("Scoliosis")
            called = pred == sco
            band_of = np.array([severity_band(a) if np.isfinite(a) else "" for a in ta])
            bands = []
            for name, rng in BAND_RANGES.items():
                m = band_of == name
                k_, n_ = int(called[m].sum()), int(m.sum())
                bands.append({"band": name, "range": rng, "n": n_,
                              "called_scoliosis": k_ / n_ if n_ else None, "ci95": wilson(k_, n_)})
            out["angles"]["by_band"] = bands
            ge25 = known & (ta >= 25)
            out["angles"]["called_scoliosis_ge25"] = (float(called[ge25].mean()) if ge25.any() else None)
            out["angles"]["spearman_p_scoliosis"] = _spearman(probs[:, sco], ta, n_boot, seed)
            lt10 = known & (ta < 10)
            out["angles"]["auc_lt10_vs_ge25"] = (_binary_auc(ta[lt10 | ge25] >= 25, probs[lt10 | ge25, sco])
                                                if lt10.any() and ge25.any() else None)
            if measured_angle is not None:
                ma = np.asarray(measured_angle, dtype=np.float64)
                both = known & np.isfinite(ma)
                out["angles"]["spearman_measured_angle"] = _spearman(ma, ta, n_boot, seed)
                out["angles"]["mae_measured_largest"] = float(np.abs(ma[both] - ta[both]).mean()) if both.any() else None
    return out


def read_angles(source: str | Path) -> dict[str, float]:
    """The true largest Cobb angle per film, keyed by resolved path and by file name.

    ``source``: a CSV with a ``path`` column and ``largest`` (or ``cobb``) or ``pt,mt,tl`` columns,
    paths relative to the CSV; or a landmark data set (the AASCE folder or a landmark CSV with
    angles), whose records carry the three angles.
    """
    src = Path(source)
    if not src.exists():
        raise DatasetError(f"{src}: angles file not found; pass a CSV with path and largest (or pt,mt,tl) columns")
    if src.is_dir():
        recs = read_aasce(src).records
        pairs = [(r.path, float(np.max(r.angles))) for r in recs if r.angles is not None]
        return _keyed(pairs)
    with open(src, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = [(c or "").strip().lower() for c in (reader.fieldnames or [])]
        keys = next((c for c in (["largest"], ["cobb"], ["pt", "mt", "tl"]) if all(k in cols for k in c)), None)
        if "path" not in cols or keys is None:
            raise DatasetError(f"{src}: an angles CSV needs the columns path and largest (or cobb, or pt,mt,tl); "
                               f"found {reader.fieldnames}")
        pairs = []
        for i, row in enumerate(reader, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            try:
                vals = [float(row[k]) for k in keys]
            except ValueError:
                raise DatasetError(f"{src}, line {i}: {', '.join(row[k] for k in keys)!r} is not a number of "
                                   "degrees") from None
            if not all(math.isfinite(v) and 0 <= v <= 180 for v in vals):
                raise DatasetError(f"{src}, line {i}: Cobb angles must be between 0 and 180 degrees")
            rel = Path(row["path"])
            pairs.append((rel if rel.is_absolute() else src.parent / rel, max(vals)))
    if not pairs:
        raise DatasetError(f"{src}: no angles in the file")
    return _keyed(pairs)


def _keyed(pairs: list[tuple[Path, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for p, v in pairs:
        out[str(Path(p).resolve())] = v
        out.setdefault(Path(p).name, v)
    return out


def angles_for(paths: list[Path], table: dict[str, float]) -> np.ndarray:
    """Each film's true largest angle from :func:`read_angles` (by path, else by file name), NaN if none."""
    return np.array([table.get(str(Path(p).resolve()), table.get(Path(p).name, math.nan)) for p in paths])


def evaluate_model(model: PipelineSpec | str | Path, source: str | Path, out_dir: str | Path, bootstrap: int = 1000,
                   cache_dir: str | None = None, progress: bool = True, angles: str | Path | None = None) -> RunResult:
    """Predict every readable image of ``source`` and write metrics, predictions and a report.

    Args:
        model: the pipeline's spec (a classifier model file or a bundle, its landmark model, the device:
            ``auto`` picks CUDA when there is one), or the model file or bundle alone.
        source: a folder or manifest of labelled films (another hospital's, even one class).
        out_dir: the run folder.
        bootstrap: resamples of the confidence intervals.
        cache_dir: keep decoded films here between runs.
        progress: show progress bars.
        angles: true Cobb angles (see :func:`read_angles`); the measured largest angle of the bundle's
            landmark model (or the spec's) is scored against them too, with the decision ``predict`` returns.
    """
    spec = model if isinstance(model, PipelineSpec) else PipelineSpec(source=str(model), device="auto")
    model_path = spec.source
    dev = resolve_device(spec.device)
    pipeline = Pipeline.load(spec.replace(device=str(dev)))
    module, meta = pipeline.predictor.module, pipeline.predictor.meta
    if module is None:
        raise SpinexrError(f"{model_path}: evaluate runs the .safetensors model file (the ONNX export has no "
                           "PyTorch graph to batch); give the model file or a bundle")
    contract = module.contract
    out = Path(out_dir)
    data = prepare_dataset(source, [contract.input_size], contract.resize, cache_dir=cache_dir, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    table = read_angles(angles) if angles is not None else None
    res = run_inference(module, data.tensors[contract.input_size], None, dev)
    probs = res.probs.astype(np.float64)
    y = data.labels
    name = meta["architecture"]
    true_angle = angles_for(data.paths, table) if table is not None else None
    measured = decided = None
    if pipeline.measurer is not None:
        measured, decided = _measure(pipeline, data.paths, probs, progress)
    ext = external_metrics(y, probs, true_angle, measured, n_boot=bootstrap)
    if decided is not None:  # what predict and serve return with this landmark model: the decision
        onehot = np.eye(len(CLASSES))[[CLASSES.index(d) for d in decided]]
        ext["with_decision"] = external_metrics(y, onehot, true_angle, n_boot=bootstrap)
        ext["with_decision"]["accuracy"] = float(np.mean(onehot.argmax(axis=1) == y))
    run = RunResult(verb="evaluate", data=data.summary(), device=str(dev), model_file=str(model_path), model_meta=meta,
                    models={name: model_result(y, probs, [compute_metrics(y, probs)], n_boot=bootstrap)},
                    external=ext)
    thr = (meta.get("ood") or {}).get("threshold")
    write_csv(out / "predictions.csv", [
        {"path": str(p), "label": CLASSES[yy], **{f"p_{c}": f"{v:.6f}" for c, v in zip(CLASSES, pr)},
         "pred": CLASSES[int(pr.argmax())], "ood_score": f"{sc:.3f}" if thr is not None else "",
         "ood": str(bool(sc > thr)).lower() if thr is not None else "",
         **({"true_largest_cobb": "" if not np.isfinite(ta) else f"{ta:.2f}"} if true_angle is not None else {}),
         **({"measured_largest_cobb": "" if not np.isfinite(ma) else f"{ma:.2f}", "decision": dd}
            if measured is not None else {})}
        for p, yy, pr, sc, ta, ma, dd in zip(data.paths, y, probs, res.ood_scores,
                                             true_angle if true_angle is not None else [math.nan] * len(y),
                                             measured if measured is not None else [math.nan] * len(y),
                                             decided if decided is not None else [""] * len(y))])
    (out / "metrics.json").write_text(json.dumps(run.to_dict(), indent=2, default=float))
    write_report(out, run, data, {}, {name: probs}, title=f"spinexr evaluate: {name}")
    return run


def _measure(pipeline: Pipeline, paths: list[Path], probs: np.ndarray, progress: bool) -> tuple[np.ndarray, list[str]]:
    """The largest Cobb angle the pipeline's landmark model measures on each film (NaN where its spine
    is implausible), and the decision (its rule, :mod:`spinexr.deploy.decision`) that ``predict`` returns."""
    assert pipeline.rule is not None
    angles, decided = [], []
    for p, pr in zip(tqdm(paths, desc="measuring", unit="film", disable=not progress), probs):
        img, _ = read_image(p)
        m = pipeline.measure(img)
        angles.append(m.result.largest if m.result is not None else math.nan)
        label = CLASSES[int(pr.argmax())]
        decided.append(pipeline.rule.decide(label, dict(zip(CLASSES, map(float, pr))), m).label)
    return np.array(angles), decided
