"""The decision that answers to the curve, inside a cross-validation (``spinexr cv --landmarks``).

``predict`` and ``serve`` run the classifier together with the landmark model: on a full-spine AP
film the measured Cobb angle can overrule the classifier's label (:mod:`spinexr.deploy.decision`).
A cross-validation of the classifier alone scores only half of that. With a landmark model given,
every film is measured once (the landmark model never trains here: it must not have seen these
films), and each fold's rule is fitted on that fold's training side only (the curve line on its
Normal films, the view check on its films of known view: :func:`~spinexr.evaluation.rule_cv.fit_fold_rule`).
The run then reports, per model, the accuracy of the classifier and of the decision side by side on
the same out-of-fold calls, and the framing stress test run through the decision as well as
through the classifier (the cut or widened film is measured again, as ``predict`` would measure it).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from spinexr import CLASSES
from spinexr.data.imread import read_image
from spinexr.deploy import decision as decision_rule
from spinexr.deploy.measure import SpineMeasurer
from spinexr.evaluation.rule_cv import OutOfFoldCalls, RuleFit, fit_fold_rule, rule_cv
from spinexr.geometry.view import spine_view_features

log = logging.getLogger(__name__)


# Raise when SpineMeasurer.judge_refined changes: stored folds measured with a refiner are then scored again.
REFINED_JUDGEMENT_VERSION = 3  # 3: the view check reads both stages of a refined spine


def evidence_digest(landmark_model: str | Path, refiner: str | Path | None = None) -> str:
    """Which landmark model file (and vertebra refiner) and which version of the rule a stored fold's
    decision figures came from: a fold stored under other files or rule version is run through the
    decision again."""

    h = hashlib.sha256(f"rule v{decision_rule.RULE_VERSION}".encode())  # read at call time, never copied
    if refiner is not None:  # how a refined spine is judged (SpineMeasurer.judge_refined) is part of its evidence
        h.update(f"refined spines judged v{REFINED_JUDGEMENT_VERSION}".encode())
    for path in (landmark_model, refiner):
        if path is None:
            continue
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


class CurveEvidence:
    """A landmark model's measurement of every film of a dataset, made once, and the fold rules
    fitted from it. Films measured later (the framing test's cut and widened films) are cached by
    their pixels, so each is measured once for all the models and folds that see it."""

    def __init__(self, landmark_model: str | Path, data: Any, device: str = "cpu", max_rate: float = 0.02,
                 keep_lumbar_out: float = 0.9, progress: bool = True, refiner: str | Path | None = None) -> None:


        self.path = Path(landmark_model)
        self.measurer = SpineMeasurer(self.path, device=device, refiner=refiner)
        self.digest = evidence_digest(self.path, refiner)
        self.max_rate, self.keep_lumbar_out = max_rate, keep_lumbar_out
        self.truth = [CLASSES[int(i)] for i in data.labels]
        self.measurements: list[Any] = []
        feats = []
        for p in tqdm(data.paths, desc="measuring the spines", unit="film", disable=not progress, leave=False):
            img, _ = read_image(p)
            m = self.measurer.measure(img)
            self.measurements.append(m)
            feats.append(spine_view_features(m.landmarks, img.shape[0], m.confidence, m.first_stage))
        self.view_features = np.asarray(feats, dtype=np.float64)
        self.angle = np.array([m.result.largest if m.result is not None else np.nan for m in self.measurements])
        self._cache: dict[bytes, Any] = {}

    def measure(self, film: np.ndarray) -> Any:
        """The measurement of a decoded film (cached by its pixels and shape)."""
        a = np.ascontiguousarray(film)
        key = hashlib.blake2b(a.tobytes(), digest_size=16, key=str(a.shape).encode()).digest()
        if key not in self._cache:
            self._cache[key] = self.measurer.measure(a)
        return self._cache[key]

    def fold(self, te: np.ndarray) -> FoldDecision:
        """The rule of the fold holding out ``te``, fitted on every other film."""

        train = np.setdiff1d(np.arange(len(self.truth)), np.asarray(te))
        rule, check = fit_fold_rule(self.truth, self.angle, self.view_features, train,
                                    RuleFit(self.max_rate, self.keep_lumbar_out))
        return FoldDecision(self, rule, check)

    def score(self, probs: np.ndarray, folds: np.ndarray) -> dict[str, Any]:
        """The decision on out-of-fold classifier probabilities ((n, classes); ``folds``: each film's
        fold), side by side with the classifier: :func:`spinexr.evaluation.rule_cv.rule_cv`."""

        called = [CLASSES[int(j)] for j in np.asarray(probs).argmax(axis=1)]
        pd = [dict(zip(CLASSES, map(float, p))) for p in probs]
        return rule_cv(OutOfFoldCalls(self.truth, called, pd, list(np.asarray(folds))), self.measurements,
                       self.view_features, RuleFit(self.max_rate, self.keep_lumbar_out))


@dataclass
class FoldDecision:
    evidence: CurveEvidence
    rule: Any  # DecisionRule
    check: Any  # ViewCheck or None

    def decide(self, films: list[np.ndarray], probs: np.ndarray) -> list[str]:
        """The decision on each film from the classifier's probabilities for it: the film is measured
        and its view judged with this fold's check, as ``predict`` does with a landmark model file."""

        out = []
        for film, p in zip(films, np.asarray(probs)):
            m = self.evidence.measure(film)
            if self.check is not None:
                m = self.check.applied(m, self.check.read(m.landmarks, film.shape[0], m.confidence, m.first_stage))
            pd = dict(zip(CLASSES, map(float, p)))
            out.append(self.rule.decide(CLASSES[int(np.argmax(p))], pd, m).label)
        return out

    def predict_fn(self, predict: Any) -> Any:
        """A ``predict`` (films -> probabilities) turned into the decision's one-hot answers, for
        :func:`spinexr.data.framing.framing_stress`."""

        def decided(films: list[np.ndarray]) -> np.ndarray:
            labels = self.decide(films, predict(films))
            return np.eye(len(CLASSES))[[CLASSES.index(c) for c in labels]]

        return decided


def summarize(scores: list[dict[str, Any]], framing: dict[str, Any] | None) -> dict[str, Any]:
    """One model's decision over the repeats: mean accuracies, changes added up, each repeat's
    per-fold lines, and the framing stress test through the decision (summed over folds)."""
    out: dict[str, Any] = {
        "accuracy_mean": float(np.mean([s["accuracy_mean"] for s in scores])),
        "accuracy_with_rule_mean": float(np.mean([s["accuracy_with_rule_mean"] for s in scores])),
        "changed": int(sum(s["changed"] for s in scores)),
        "changed_to_right": int(sum(s["changed_to_right"] for s in scores)),
        "changed_to_wrong": int(sum(s["changed_to_wrong"] for s in scores)),
        "curve_deg": [f["curve_deg"] for s in scores for f in s["folds"]],
        "repeats": scores,
    }
    rates = [s["view_full_spine_rate"] for s in scores if s.get("view_full_spine_rate")]
    if rates:
        out["view_full_spine_rate"] = {c: float(np.mean([r[c] for r in rates if c in r])) for c in rates[0]}
    if framing:
        out["framing"] = framing
    return out
