"""Is a film a full-spine AP view? Decided from the landmark model's own measurement of it.

The Cobb angle is evidence only on a full-spine AP film. The landmark model, trained on such films,
still draws 17 ordered vertebrae on a lumbar or lateral view, so its plausibility check cannot tell
the view, and neither can its heatmap confidence alone (a line keeping 90% of KAUH's lumbar films out
also kept a third of its full-spine films out). What differs is the shape of what it draws: on a
full-spine film the vertebrae grow in height and width from T1 to L5 and look like vertebrae; squeezed
onto five lumbar vertebrae, the 17 drawn boxes grow less and are flatter, and the heatmaps are less
sure. :class:`ViewCheck` is a logistic model on five such features (:func:`view_features`), fitted on
films whose view is known (KAUH: Normal and Scoliosis films full-spine AP, Spondylolisthesis films
lumbar views), with its line set to keep a chosen share of the lumbar films out
(:func:`fit_view_check`). Its coefficients travel in the landmark model file (``view_check``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from spinexr.geometry.cobb import as_vertebrae

FEATURES = ("log_aspect", "log_height_growth", "log_width_growth", "extent", "log_confidence")
FULL_SPINE = "full-spine AP"
LUMBAR = "lumbar or lateral"


def view_features(landmarks: np.ndarray, image_height: float, confidence: float) -> np.ndarray:
    """The five features of a measured spine: the median width / height of its vertebrae, how much
    taller and wider L3-L5 are than T1-T3, the span from T1 to L5 as a share of the film height (all
    from the (17, 4, 2) corners in film pixels), and the mean heatmap peak (logs of the ratios)."""
    v = as_vertebrae(landmarks)
    height = (np.linalg.norm(v[:, 2] - v[:, 0], axis=1) + np.linalg.norm(v[:, 3] - v[:, 1], axis=1)) / 2
    width = (np.linalg.norm(v[:, 1] - v[:, 0], axis=1) + np.linalg.norm(v[:, 3] - v[:, 2], axis=1)) / 2
    height, width = np.maximum(height, 1e-6), np.maximum(width, 1e-6)
    extent = (v[16, 2:, 1].mean() - v[0, :2, 1].mean()) / max(float(image_height), 1e-6)
    return np.array([np.log(np.median(width / height)), np.log(height[-3:].mean() / height[:3].mean()),
                     np.log(width[-3:].mean() / width[:3].mean()), extent, np.log(max(float(confidence), 1e-6))])


@dataclass(frozen=True)
class ViewCheck:
    """A logistic model on standardised :func:`view_features`; a film is a full-spine AP view when
    its probability is at least ``line``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    line: float
    fitted_on: str = ""

    def probability(self, features: np.ndarray) -> float:
        z = (np.asarray(features, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.std)
        s = float(z @ np.asarray(self.coef) + self.intercept)
        return float(1.0 / (1.0 + np.exp(-np.clip(s, -60, 60))))

    def view(self, p: float) -> str:
        return FULL_SPINE if p >= self.line else LUMBAR

    def judge(self, features: np.ndarray) -> tuple[str, float]:
        """``(view, full-spine probability)`` of a film's :func:`view_features`."""
        p = self.probability(features)
        return self.view(p), p

    def applied(self, measurement: Any, features: np.ndarray) -> Any:
        """A copy of a :class:`~spinexr.deploy.measure.Measurement` with this check's ``view`` and
        ``view_probability`` for the film's :func:`view_features`."""
        view, p = self.judge(features)
        return replace(measurement, view=view, view_probability=p)

    def to_meta(self) -> dict[str, Any]:
        return {"features": list(FEATURES), **asdict(self)}

    @classmethod
    def from_meta(cls, meta: dict[str, Any] | None) -> ViewCheck | None:
        """The check a landmark model file carries (``view_check``), or None when it has none."""
        d = (meta or {}).get("view_check")
        if not d:
            return None
        if list(d.get("features", [])) != list(FEATURES):
            raise ValueError(f"view check features {d.get('features')} are not {list(FEATURES)}")
        return cls(tuple(map(float, d["mean"])), tuple(map(float, d["std"])), tuple(map(float, d["coef"])),
                   float(d["intercept"]), float(d["line"]), str(d.get("fitted_on", "")))


def fit_view_check(features: np.ndarray, full_spine: np.ndarray, keep_lumbar_out: float = 0.9,
                   fitted_on: str = "") -> ViewCheck:
    """Fit the logistic model on (n, 5) features of films whose view is known (``full_spine`` True
    for full-spine AP films) and put the line where ``keep_lumbar_out`` of the other films fall
    below it (scored on the fitting films themselves)."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(full_spine, dtype=bool)
    if y.all() or not y.any():
        raise ValueError("fitting the view check needs films of both views")
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-9)
    lr = LogisticRegression(C=1.0, max_iter=1000).fit((x - mean) / std, y)
    check = ViewCheck(tuple(mean), tuple(std), tuple(lr.coef_[0]), float(lr.intercept_[0]), 0.5, fitted_on)
    p_lumbar = np.array([check.probability(f) for f in x[~y]])
    return replace(check, line=float(np.quantile(p_lumbar, keep_lumbar_out)))
