"""Metrics with confidence intervals, calibration error, and temperature scaling."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from spinexr import CLASSES


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)).mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising validation NLL (Guo et al., 2017), searched on log T in [0.05, 20]."""
    from scipy.optimize import minimize_scalar

    logits, y = np.asarray(logits, dtype=np.float64), np.asarray(y)
    if len(y) == 0:
        return 1.0
    res = minimize_scalar(lambda lt: nll(softmax(logits, float(np.exp(lt))), y),
                          bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """Top-label confidence vs accuracy per equal-width bin."""
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
    """Expected calibration error of the top label."""
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


def compute_metrics(y: np.ndarray, probs: np.ndarray, classes: tuple[str, ...] = CLASSES) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1, macro-F1, one-vs-rest ROC-AUC, ECE, NLL, confusion."""
    y = np.asarray(y)
    probs = np.asarray(probs, dtype=np.float64)
    pred = probs.argmax(axis=1)
    labels = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    auc_macro, auc_per = _auc(y, probs)
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "macro_f1": float(np.mean(f)),
        "auc_macro": auc_macro,
        "ece": ece(probs, y),
        "nll": nll(probs, y) if len(y) else float("nan"),
        "per_class": {c: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]),
                          "support": int(s[k]), "auc": auc_per[k]} for k, c in enumerate(classes)},
        "confusion": confusion_matrix(y, pred, labels=labels).tolist(),
    }


SCALARS = ("accuracy", "macro_f1", "auc_macro", "ece")


def bootstrap_ci(y: np.ndarray, probs: np.ndarray, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> dict[str, list[float]]:
    """Percentile bootstrap CIs of the scalar metrics over resampled images."""
    rng = np.random.default_rng(seed)
    y, probs = np.asarray(y), np.asarray(probs)
    vals: dict[str, list[float]] = {k: [] for k in SCALARS}
    n = len(y)
    pred = probs.argmax(axis=1)
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        yi, pi = y[i], probs[i]
        vals["accuracy"].append(float((pred[i] == yi).mean()))
        f = precision_recall_fscore_support(yi, pred[i], labels=list(range(probs.shape[1])), zero_division=0)[2]
        vals["macro_f1"].append(float(np.mean(f)))
        a, _ = _auc(yi, pi)
        if a is not None:
            vals["auc_macro"].append(a)
        vals["ece"].append(ece(pi, yi))
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    return {k: [float(np.percentile(v, lo)), float(np.percentile(v, hi))] for k, v in vals.items() if v}


def result_block(y: np.ndarray, probs: np.ndarray, fold_metrics: list[dict[str, Any]],
                 folds: list[dict[str, Any]] | None = None, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """One model's entry in metrics.json: per-fold metrics and their summary, pooled metrics, CIs."""
    return {"folds": list(folds or []), "fold_metrics": fold_metrics, "summary": summarize_folds(fold_metrics),
            "pooled": compute_metrics(y, probs), "ci95": bootstrap_ci(y, probs, n_boot=n_boot, seed=seed)}


def summarize_folds(fold_metrics: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of the scalar metrics (and per-class F1) across folds."""
    out: dict[str, dict[str, float]] = {}
    keys = list(SCALARS) + [f"f1_{c}" for c in CLASSES]
    for k in keys:
        if k.startswith("f1_"):
            v = [m["per_class"][k[3:]]["f1"] for m in fold_metrics]
        else:
            v = [m[k] for m in fold_metrics if m.get(k) is not None]
        if v:
            out[k] = {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
    return out
