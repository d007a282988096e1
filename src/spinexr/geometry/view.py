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

Where a vertebra refiner reads each vertebra again, the refined corners are vertebra-shaped even on a
lumbar film, so the check reads the whole-spine model's drawing (the five features of the first stage)
and adds the refined vertebrae's proportions and growth (:data:`TWO_STAGE_FEATURES`). Out of fold on
KAUH's case-grouped folds with the bundled models, that let 10.1% of the lumbar films through against
12.7% for the refined corners' five features, kept 1.2% of the full-spine films out against 1.5%, and
passed 98.0% of held-out AASCE films against 96.9% (``benchmarks/results/view_check_bundled.json``).
A check records which features it reads; one fitted on a single stage's features (every landmark file
without a refiner, and earlier files) reads the corners the angles come from, as before.

A check has a second, higher line for films the classifier calls Spondylolisthesis
(``spondylolisthesis_line``): that call is the classifier's own evidence of a lumbar view, so the
decision overrules it only where the check is surer than on nearly all the lumbar films it was fitted
on (``keep_lumbar_calls_out``, 99%). With the one line, a few lumbar films that the refiner measured
at 25-51° crossed it and were called Scoliosis (:mod:`spinexr.deploy.decision`). A check without
this line (earlier files) judges every call against ``line``, as before.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from spinexr.geometry.cobb import as_vertebrae

FEATURES = ("log_aspect", "log_height_growth", "log_width_growth", "extent", "log_confidence")
# The first stage's five and the refined corners' shape (their first three): a check on a two-stage measurer.
TWO_STAGE_FEATURES = FEATURES + tuple(f"refined_{f}" for f in FEATURES[:3])
FULL_SPINE = "full-spine AP"
LUMBAR = "lumbar or lateral"


def _shape(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(17, 4) vertebra corners -> each vertebra's mean height and width (pixels)."""
    v = as_vertebrae(landmarks)
    height = (np.linalg.norm(v[:, 2] - v[:, 0], axis=1) + np.linalg.norm(v[:, 3] - v[:, 1], axis=1)) / 2
    width = (np.linalg.norm(v[:, 1] - v[:, 0], axis=1) + np.linalg.norm(v[:, 3] - v[:, 2], axis=1)) / 2
    return np.maximum(height, 1e-6), np.maximum(width, 1e-6)


def _proportions(landmarks: np.ndarray) -> list[float]:
    height, width = _shape(landmarks)
    return [float(np.log(np.median(width / height))), float(np.log(height[-3:].mean() / height[:3].mean())),
            float(np.log(width[-3:].mean() / width[:3].mean()))]


def view_features(landmarks: np.ndarray, image_height: float, confidence: float,
                  refined: np.ndarray | None = None) -> np.ndarray:
    """The five features of a measured spine: the median width / height of its vertebrae, how much
    taller and wider L3-L5 are than T1-T3, the span from T1 to L5 as a share of the film height (all
    from the (17, 4, 2) corners in film pixels), and the mean heatmap peak (logs of the ratios). With
    ``refined`` (the second stage's corners of the same film; ``landmarks`` then the first stage's),
    the refined vertebrae's three proportions follow (:data:`TWO_STAGE_FEATURES`).

    Args:
        landmarks: (17, 4, 2) corners in film pixels (the first stage's where ``refined`` is given).
        image_height: the film's height in pixels.
        confidence: the mean heatmap peak.
        refined: the second stage's corners of the same film, or None.
    """
    v = as_vertebrae(landmarks)
    extent = (v[16, 2:, 1].mean() - v[0, :2, 1].mean()) / max(float(image_height), 1e-6)
    five = [*_proportions(landmarks), float(extent), float(np.log(max(float(confidence), 1e-6)))]
    return np.array(five if refined is None else five + _proportions(refined))


def spine_view_features(corners: np.ndarray, image_height: float, confidence: float,
                        first: np.ndarray | None = None) -> np.ndarray:
    """A measurement's features as a check is fitted on them: with ``first`` (the first stage's corners of
    a film whose ``corners`` were refined) :data:`TWO_STAGE_FEATURES`, else the five of ``corners``.

    Args:
        corners: (17, 4, 2) corners the angles are read from, in film pixels.
        image_height: the film's height in pixels.
        confidence: the mean heatmap peak.
        first: the first stage's corners where ``corners`` were refined, or None.
    """
    if first is None:
        return view_features(corners, image_height, confidence)
    return view_features(first, image_height, confidence, refined=corners)


@dataclass(frozen=True)
class ViewCheck:
    """A logistic model on standardised :func:`view_features`; a film is a full-spine AP view when
    its probability is at least ``line``.

    Args:
        mean: the features' means.
        std: their standard deviations.
        coef: the logistic coefficients.
        intercept: its intercept.
        line: the probability a full-spine AP view reaches.
        fitted_on: what it was fitted on.
        features: what it reads (FEATURES or TWO_STAGE_FEATURES).
        spondylolisthesis_line: the line for a film called Spondylolisthesis.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    line: float
    fitted_on: str = ""
    features: tuple[str, ...] = FEATURES  # what it reads: FEATURES, or TWO_STAGE_FEATURES
    # The line a film called Spondylolisthesis must reach to count as full-spine AP; None: ``line``, as for any call.
    spondylolisthesis_line: float | None = None

    def read(self, corners: np.ndarray, image_height: float, confidence: float,
             first: np.ndarray | None = None) -> np.ndarray | None:
        """A measured film's features as this check reads them (``corners``: those the angles are read
        from; ``first``: the first stage's, where they were refined). None where a two-stage check meets a
        film measured by the first stage alone: the check does not judge it.

        Args:
            corners: (17, 4, 2) corners the angles are read from, in film pixels.
            image_height: the film's height in pixels.
            confidence: the mean heatmap peak.
            first: the first stage's corners where ``corners`` were refined, or None.
        """
        if tuple(self.features) == FEATURES:
            return view_features(corners, image_height, confidence)
        return None if first is None else spine_view_features(corners, image_height, confidence, first)

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

    def applied(self, measurement: Any, features: np.ndarray | None) -> Any:
        """A copy of a :class:`~spinexr.deploy.measure.Measurement` with this check's ``view`` and
        ``view_probability`` for the film's features (:meth:`read`); the measurement as it is for None."""
        if features is None:
            return measurement
        view, p = self.judge(features)
        return replace(measurement, view=view, view_probability=p, spondylolisthesis_view_line=self.spondylolisthesis_line)

    def to_meta(self) -> dict[str, Any]:
        return {**asdict(self), "features": list(self.features)}

    @classmethod
    def from_meta(cls, meta: dict[str, Any] | None) -> ViewCheck | None:
        """The check a landmark model file carries (``view_check``), or None when it has none."""
        d = (meta or {}).get("view_check")
        if not d:
            return None
        names = tuple(d.get("features", []))
        if names not in (FEATURES, TWO_STAGE_FEATURES):
            raise ValueError(f"view check features {list(names)} are neither {list(FEATURES)} nor {list(TWO_STAGE_FEATURES)}")
        if not len(d["mean"]) == len(d["std"]) == len(d["coef"]) == len(names):
            raise ValueError(f"view check: {len(names)} features but {len(d['coef'])} coefficients")
        spond = d.get("spondylolisthesis_line")
        if spond is not None and not 0.0 <= float(spond) <= 1.0:
            raise ValueError(f"view check: spondylolisthesis_line {spond} is not a probability")
        return cls(tuple(map(float, d["mean"])), tuple(map(float, d["std"])), tuple(map(float, d["coef"])),
                   float(d["intercept"]), float(d["line"]), str(d.get("fitted_on", "")), names,
                   None if spond is None else float(spond))


def fit_view_check(features: np.ndarray, full_spine: np.ndarray, keep_lumbar_out: float = 0.9,
                   fitted_on: str = "", keep_lumbar_calls_out: float = 0.99) -> ViewCheck:
    """Fit the logistic model on (n, 5) features of films whose view is known (``full_spine`` True
    for full-spine AP films; (n, 8): :data:`TWO_STAGE_FEATURES`) and put the line where
    ``keep_lumbar_out`` of the other films fall below it, and the line for Spondylolisthesis calls
    where ``keep_lumbar_calls_out`` of them do (never below the first; both scored on the fitting
    films themselves).

    Args:
        features: (n, 5) or (n, 8) features of films whose view is known.
        full_spine: True for the full-spine AP films.
        keep_lumbar_out: the share of the other films the line keeps below it.
        fitted_on: what the films were, for the manifest.
        keep_lumbar_calls_out: the same share for the line that judges Spondylolisthesis calls.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(full_spine, dtype=bool)
    names = {len(FEATURES): FEATURES, len(TWO_STAGE_FEATURES): TWO_STAGE_FEATURES}.get(x.shape[-1])
    if x.ndim != 2 or names is None:
        raise ValueError(f"view features must be (films, {len(FEATURES)}) or (films, {len(TWO_STAGE_FEATURES)}); "
                         f"got {x.shape}")
    if y.all() or not y.any():
        raise ValueError("fitting the view check needs films of both views")
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-9)
    lr = LogisticRegression(C=1.0, max_iter=1000).fit((x - mean) / std, y)
    check = ViewCheck(tuple(mean), tuple(std), tuple(lr.coef_[0]), float(lr.intercept_[0]), 0.5, fitted_on, names)
    p_lumbar = np.array([check.probability(f) for f in x[~y]])
    line = float(np.quantile(p_lumbar, keep_lumbar_out))
    return replace(check, line=line, spondylolisthesis_line=max(line, float(np.quantile(p_lumbar, keep_lumbar_calls_out))))
