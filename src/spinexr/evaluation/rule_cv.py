"""The decision rule inside a cross-validation: each fold's rule fitted on its training side only, and
the out-of-fold calls decided by it.

``spinexr cv --landmarks`` (:mod:`spinexr.evaluation.decision_cv`) and the benchmarks score the rule
here: the curve line on the training side's Normal films (:func:`~spinexr.deploy.decision.fit_curve_deg`),
the view check on its films of known view (Spondylolisthesis films: lumbar views; the rest: full-spine
AP), then each held-out film decided from its out-of-fold classifier call and its measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spinexr.deploy.decision import DecisionRule, fit_curve_deg
from spinexr.geometry.view import FULL_SPINE, fit_view_check


@dataclass(frozen=True)
class OutOfFoldCalls:
    """A cross-validation's out-of-fold classifier calls.

    Args:
        truth: each film's true label.
        called: each film's label from the classifier of the fold that held it out.
        probs: those classifiers' probabilities, per film.
        folds: the fold that held each film out.
    """

    truth: list[str]
    called: list[str]
    probs: list[dict[str, float]]
    folds: list[int]


@dataclass(frozen=True)
class RuleFit:
    """How each fold's rule is fitted: ``max_rate``, the share of the training side's Normal films the
    curve line may overrule; ``keep_lumbar_out``, the share of its lumbar films the view check keeps out."""

    max_rate: float = 0.02
    keep_lumbar_out: float = 0.9


def fit_fold_rule(truth: list[str], angle: Any, view_features: Any, train: Any,
                  fit: RuleFit | None = None) -> tuple[DecisionRule, Any]:
    """The rule a fold of a cross-validation uses, fitted on its training side ``train`` (indices) only:
    the curve line on those films' Normal angles (:func:`~spinexr.deploy.decision.fit_curve_deg`) and, with
    ``view_features`` ((n, 5), :func:`spinexr.geometry.view.view_features`), the view check on those films
    (Spondylolisthesis films: lumbar views; the rest: full-spine AP). Returns ``(rule, check or None)``."""
    fit = fit or RuleFit()
    train = np.asarray(train)
    angle = np.asarray(angle, dtype=np.float64)
    rule = DecisionRule(curve_deg=fit_curve_deg(angle[[i for i in train if truth[i] == "Normal"]],
                                                max_rate=fit.max_rate))
    if view_features is None:
        return rule, None
    vf = np.asarray(view_features, dtype=np.float64)
    ok = train[np.isfinite(vf[train]).all(axis=1)]
    full = np.array([truth[i] != "Spondylolisthesis" for i in ok])
    return rule, fit_view_check(vf[ok], full, fit.keep_lumbar_out, f"{len(ok)} training films of the fold")


def fold_decisions(calls: OutOfFoldCalls, measurements: list[Any], view_features: Any = None,
                   fit: RuleFit | None = None) -> tuple[list[str], list[Any], dict[int, tuple[DecisionRule, Any]]]:
    """Each film decided out of fold: the rule of the fold holding it out (:func:`fit_fold_rule`, fitted on
    the other folds) decides it from its out-of-fold classifier call. Returns the decisions, the
    measurements as that fold's view check judged them (as given where the fold has no check), and each
    fold's ``(rule, check or None)``."""
    folds_a = np.asarray(calls.folds)
    angle = np.array([m.result.largest if m is not None and m.result is not None else np.nan for m in measurements])
    vf = None if view_features is None else np.asarray(view_features)
    judged, labels = list(measurements), [""] * len(measurements)
    rules: dict[int, tuple[DecisionRule, Any]] = {}
    for k in sorted(set(folds_a.tolist())):
        te = np.flatnonzero(folds_a == k)
        rule, check = rules[int(k)] = fit_fold_rule(calls.truth, angle, view_features, np.flatnonzero(folds_a != k), fit)
        for i in te:
            if check is not None and judged[i] is not None:
                judged[i] = check.applied(judged[i], vf[i])
            labels[i] = rule.decide(calls.called[i], calls.probs[i], judged[i]).label
    return labels, judged, rules


def rule_cv(calls: OutOfFoldCalls, measurements: list[Any], view_features: Any = None,
            fit: RuleFit | None = None) -> dict[str, Any]:
    """The rule scored out of fold on a cross-validation (:func:`fold_decisions`): for each fold, the rule
    is fitted on the other folds (the curve line on their Normal films, with ``view_features`` the view
    check too) and decides that fold's held-out films from their out-of-fold classifier calls. Returns
    the classifier's and the rule's accuracy per fold and their means, each class's recall before and
    after the rule, each film's decision, the lines used, how many decisions the rule changed (right and
    wrong), and how the view check sorted the held-out films."""
    truth, called = calls.truth, calls.called
    folds_a = np.asarray(calls.folds)
    labels, judged, rules = fold_decisions(calls, measurements, view_features, fit)
    out: dict[str, Any] = {"folds": [], "changed": 0, "changed_to_right": 0, "changed_to_wrong": 0}
    kept_full: dict[str, list[bool]] = {}
    for k, (rule, check) in rules.items():
        te = np.flatnonzero(folds_a == k)
        if check is not None:
            for i in te:
                if judged[i] is not None:
                    kept_full.setdefault(truth[i], []).append(judged[i].view == FULL_SPINE)
        before = float(np.mean([called[i] == truth[i] for i in te]))
        after = float(np.mean([labels[i] == truth[i] for i in te]))
        for i in te:
            if labels[i] != called[i]:
                out["changed"] += 1
                out["changed_to_right" if labels[i] == truth[i] else "changed_to_wrong"] += 1
        out["folds"].append({"fold": int(k), "n": int(len(te)), "curve_deg": rule.curve_deg,
                             "accuracy": before, "accuracy_with_rule": after})
    out["accuracy_mean"] = float(np.mean([f["accuracy"] for f in out["folds"]]))
    out["accuracy_with_rule_mean"] = float(np.mean([f["accuracy_with_rule"] for f in out["folds"]]))
    scored = [i for k in rules for i in np.flatnonzero(folds_a == k)]
    for key, calls_ in (("recall", called), ("recall_with_rule", labels)):
        out[key] = {c: float(np.mean([calls_[i] == c for i in scored if truth[i] == c]))
                    for c in sorted({truth[i] for i in scored})}
    seen = set(scored)
    out["decided"] = [labels[i] if i in seen else None for i in range(len(truth))]
    if kept_full:
        out["view_full_spine_rate"] = {c: float(np.mean(v)) for c, v in sorted(kept_full.items())}
    return out


__all__ = ["OutOfFoldCalls", "RuleFit", "fit_fold_rule", "fold_decisions", "rule_cv"]
