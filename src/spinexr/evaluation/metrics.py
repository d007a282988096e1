"""Metrics with confidence intervals and calibration error (temperature scaling: :mod:`spinexr.engine.calibration`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from sklearn.metrics import (
    confusion_matrix,
    roc_auc_score,
)

from spinexr import CLASSES
from spinexr.engine.calibration import fit_temperature, nll, softmax


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """Top-label confidence vs accuracy per equal-width bin.

    Args:
        probs: (n, classes) probabilities.
        y: the true class indices.
        bins: equal-width confidence bins.
    """
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    out: dict[str, list[float]] = {"bin_lower": [], "bin_upper": [], "confidence": [], "accuracy": [], "count": []}
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        out["bin_lower"].append(float(lo))
        out["bin_upper"].append(float(hi))
        out["count"].append(float(m.sum()))
        out["confidence"].append(float(conf[m].mean()) if m.any() else float("nan"))
        out["accuracy"].append(float(correct[m].mean()) if m.any() else float("nan"))
    return out


def ece(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top label.

    Args:
        probs: (n, classes) probabilities.
        y: the true class indices.
        bins: equal-width confidence bins.
    """
    r = reliability(probs, y, bins)
    n = max(1, len(y))
    return float(sum(c / n * abs(a - f) for c, a, f in zip(r["count"], r["accuracy"], r["confidence"]) if c > 0))


def _auc(y: np.ndarray, probs: np.ndarray) -> tuple[float | None, list[float | None]]:
    per: list[float | None] = []
    for k in range(probs.shape[1]):
        pos = y == k
        per.append(float(roc_auc_score(pos, probs[:, k])) if 0 < pos.sum() < len(y) else None)
    valid = [a for a in per if a is not None]
    return (float(np.mean(valid)) if valid else None), per


# The per-class table of the report, in its order: each is one-vs-rest for that class.
PER_CLASS = ("precision", "recall", "specificity", "npv", "f1", "auc")
PER_CLASS_NAMES = {"precision": "precision (PPV)", "recall": "recall (sensitivity)", "specificity": "specificity",
                   "npv": "NPV", "f1": "F1", "auc": "AUC (one-vs-rest)"}


def _per_class_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest rates of each class from a (K, K) confusion matrix (rows true); NaN where undefined."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = cm.sum() - tp - fp - fn
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = tp / (tp + fp)
        rec = tp / (tp + fn)
        return {"precision": prec, "recall": rec, "specificity": tn / (tn + fp), "npv": tn / (tn + fn),
                "f1": 2 * tp / (2 * tp + fp + fn)}


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def compute_metrics(y: np.ndarray, probs: np.ndarray, classes: tuple[str, ...] = CLASSES) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/specificity/NPV/F1/AUC, macro-F1, ROC-AUC, ECE, NLL, confusion.

    A per-class rate whose denominator is empty (no films of the class, or none predicted as it) is
    ``None`` rather than a made-up 0. The macro-F1 counts an undefined F1 as 0, as sklearn does.

    Args:
        y: the true class indices.
        probs: (n, classes) probabilities.
        classes: the class names, in the probabilities' order.
    """
    y = np.asarray(y)
    probs = np.asarray(probs, dtype=np.float64)
    pred = probs.argmax(axis=1)
    labels = list(range(len(classes)))
    cm = confusion_matrix(y, pred, labels=labels)
    support = cm.sum(axis=1)
    rates = _per_class_from_confusion(cm)
    auc_macro, auc_per = _auc(y, probs)
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "macro_f1": float(np.mean(np.nan_to_num(rates["f1"]))),
        "auc_macro": auc_macro,
        "ece": ece(probs, y),
        "nll": nll(probs, y) if len(y) else float("nan"),
        "per_class": {c: {**{m: _finite(rates[m][k]) for m in ("precision", "recall", "specificity", "npv", "f1")},
                          "support": int(support[k]), "auc": auc_per[k]} for k, c in enumerate(classes)},
        "confusion": cm.tolist(),
    }


SCALARS = ("accuracy", "macro_f1", "auc_macro", "ece")


def _binary_auc(pos: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC by the rank-sum (Mann-Whitney) formula, ties averaged; NaN with one class only."""
    from scipy.stats import rankdata

    n_pos = int(pos.sum())
    n_neg = len(pos) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def resample_indices(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """The one bootstrap: ``n_boot`` resamples of ``range(n)`` with replacement, from one seeded stream.

    Args:
        n: the number of items.
        n_boot: the resamples.
        seed: their seed.
    """
    rng = np.random.default_rng(seed)
    for _ in range(n_boot if n else 0):
        yield rng.integers(0, n, n)


def percentile_ci(values: Iterable[float], alpha: float = 0.05) -> list[float] | None:
    """The percentile interval of bootstrap values (non-finite ones left out; None when none is left)."""
    v = np.asarray(list(values), dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    return [float(np.percentile(v, 100 * alpha / 2)), float(np.percentile(v, 100 * (1 - alpha / 2)))]


def bootstrap(stat: Callable[[np.ndarray], float], n: int, n_boot: int = 1000, seed: int = 0,
              alpha: float = 0.05) -> list[float] | None:
    """Percentile bootstrap interval of ``stat`` (a function of resampled indices) over ``n`` items.

    Args:
        stat: the statistic, a function of an array of resampled indices.
        n: the number of items.
        n_boot: the resamples.
        seed: their seed.
        alpha: 0.05 for a 95% interval.

    Returns:
        ``[low, high]``, or None where no resample gave a value.
    """
    return percentile_ci((stat(i) for i in resample_indices(n, n_boot, seed)), alpha)


def bootstrap_ci(y: np.ndarray, probs: np.ndarray, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05, classes: tuple[str, ...] = CLASSES) -> dict[str, Any]:
    """Percentile bootstrap CIs over resampled images: the scalar metrics, and under ``per_class`` each
    class's precision, recall, specificity, NPV, F1 and one-vs-rest AUC.

    A resample where a rate is undefined (say, no film of that class drawn) does not count for that
    rate; a rate undefined in every resample has no interval.

    Args:
        y: each film's true class index.
        probs: (n, classes) predicted probabilities.
        n_boot: the resamples.
        seed: their seed.
        alpha: 0.05 for 95% intervals.
        classes: the class names, in the probabilities' order.
    """
    y, probs = np.asarray(y), np.asarray(probs)
    k_cls = probs.shape[1]
    vals: dict[str, list[float]] = {k: [] for k in SCALARS}
    pc: dict[str, list[np.ndarray]] = {m: [] for m in PER_CLASS}
    n = len(y)
    pred = probs.argmax(axis=1)
    for i in resample_indices(n, n_boot, seed):
        yi, pi = y[i], probs[i]
        cm = np.bincount(yi * k_cls + pred[i], minlength=k_cls * k_cls).reshape(k_cls, k_cls)
        rates = _per_class_from_confusion(cm)
        vals["accuracy"].append(float(np.trace(cm) / n))
        # Macro-F1 as sklearn counts it: an undefined F1 is 0.
        vals["macro_f1"].append(float(np.mean(np.nan_to_num(rates["f1"]))))
        aucs = np.array([_binary_auc(yi == k, pi[:, k]) for k in range(k_cls)])
        if np.isfinite(aucs).any():
            vals["auc_macro"].append(float(np.nanmean(aucs)))
        vals["ece"].append(ece(pi, yi))
        for m in PER_CLASS:
            pc[m].append(aucs if m == "auc" else rates[m])
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    out: dict[str, Any] = {k: [float(np.percentile(v, lo)), float(np.percentile(v, hi))] for k, v in vals.items() if v}
    per_class: dict[str, dict[str, list[float] | None]] = {c: {} for c in classes}
    for m, rows in pc.items():
        a = np.array(rows).reshape(-1, k_cls)
        for k, c in enumerate(classes):
            col = a[:, k][np.isfinite(a[:, k])]
            per_class[c][m] = [float(np.percentile(col, lo)), float(np.percentile(col, hi))] if len(col) else None
    out["per_class"] = per_class
    return out


def summarize_folds(fold_metrics: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation across folds of the scalar metrics and of every per-class rate."""
    out: dict[str, dict[str, float]] = {}
    for k in SCALARS:
        v = [m[k] for m in fold_metrics if m.get(k) is not None]
        if v:
            out[k] = {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
    # Per-class spread over folds, keyed "<metric>_<class>" (f1_Scoliosis, recall_Normal, ...).
    for metric in PER_CLASS:
        for c in CLASSES:
            k = f"{metric}_{c}"
            v = [m["per_class"][c].get(metric) for m in fold_metrics if c in m.get("per_class", {})]
            v = [x for x in v if x is not None]
            if v:
                out[k] = {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
    return out


__all__ = ["PER_CLASS", "PER_CLASS_NAMES", "SCALARS", "bootstrap", "bootstrap_ci", "compute_metrics", "ece",
           "fit_temperature", "nll", "percentile_ci", "reliability", "resample_indices", "softmax", "summarize_folds"]
