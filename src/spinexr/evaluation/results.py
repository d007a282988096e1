"""Typed results of a run: what a fold, a model and a whole run measured.

The verbs build these objects; the CLI, the demo, the report and the benchmarks read their fields.
Numbers stay numbers and flags stay booleans until :meth:`RunResult.to_dict` writes ``metrics.json``.
The metric blocks themselves (``pooled``, ``fold_metrics``) are the dictionaries of
:func:`spinexr.evaluation.metrics.compute_metrics`, keyed by metric name. The JSON keeps the keys of
schema 1 and adds ``"schema": "spinexr-run/2"``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from spinexr.data.dataset import DataSummary
from spinexr.evaluation.metrics import bootstrap_ci, compute_metrics, summarize_folds

SCHEMA = "spinexr-run/2"


@dataclass
class FoldInfo:
    """One model trained on one fold: how training went and how big each side was."""

    repeat: int
    fold: int
    best_epoch: int
    epochs_run: int
    temperature: float
    n_train: int
    n_val: int
    n_test: int
    accuracy: float
    batch_size: int = 0
    tta_flip: bool = False


@dataclass
class FoldResult:
    """A finished fold of one model, stored in ``folds/`` so a resumed run can reuse it."""

    info: FoldInfo
    metrics: dict[str, Any]
    probs: list[list[float]]
    history: list[dict[str, float]]
    explain: dict[str, Any] | None = None
    framing: dict[str, Any] | None = None  # the framing stress test on this fold's held-out films
    framing_decision: dict[str, Any] | None = None  # the same through the decision (cv --landmarks)
    decision_landmarks: str | None = None  # landmark model file and rule (evidence_digest) framing_decision used

    def to_dict(self) -> dict[str, Any]:
        return {"info": asdict(self.info), "metrics": self.metrics, "probs": self.probs, "history": self.history,
                "explain": self.explain, "framing": self.framing, "framing_decision": self.framing_decision,
                "decision_landmarks": self.decision_landmarks}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FoldResult:
        return cls(info=FoldInfo(**d["info"]), metrics=d["metrics"], probs=d["probs"], history=d["history"],
                   explain=d.get("explain"), framing=d.get("framing"), framing_decision=d.get("framing_decision"),
                   decision_landmarks=d.get("decision_landmarks"))


@dataclass
class ModelResult:
    """One model (or the ensemble) over all folds: per-fold metrics and their spread, pooled
    out-of-fold metrics with bootstrap CIs, and the explanation figures of fold 0."""

    folds: list[FoldInfo]
    fold_metrics: list[dict[str, Any]]
    summary: dict[str, dict[str, float]]
    pooled: dict[str, Any]
    ci95: dict[str, Any]
    explanations: dict[str, Any] | None = None
    framing: dict[str, Any] | None = None  # the framing stress test, summed over folds
    decision: dict[str, Any] | None = None  # the decision that answers to the curve (cv --landmarks)

    @property
    def n_folds(self) -> int:
        return len(self.fold_metrics)

    def to_dict(self) -> dict[str, Any]:
        d = {"folds": [asdict(f) for f in self.folds], "fold_metrics": self.fold_metrics, "summary": self.summary,
             "pooled": self.pooled, "ci95": self.ci95}
        if self.explanations:
            d["explanations"] = self.explanations
        if self.framing:
            d["framing"] = self.framing
        if self.decision:
            d["decision"] = self.decision
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelResult:
        known = {f for f in FoldInfo.__dataclass_fields__}
        return cls(folds=[FoldInfo(**{k: v for k, v in f.items() if k in known}) for f in d.get("folds", [])],
                   fold_metrics=d.get("fold_metrics", []), summary=d.get("summary", {}), pooled=d["pooled"],
                   ci95=d.get("ci95", {}), explanations=d.get("explanations"), framing=d.get("framing"),
                   decision=d.get("decision"))


def model_result(y: np.ndarray, probs: np.ndarray, fold_metrics: list[dict[str, Any]],
                 folds: list[FoldInfo] | None = None, n_boot: int = 1000, seed: int = 0) -> ModelResult:
    """Pool, bootstrap and summarise one model's predictions."""

    return ModelResult(folds=list(folds or []), fold_metrics=fold_metrics, summary=summarize_folds(fold_metrics),
                       pooled=compute_metrics(y, probs), ci95=bootstrap_ci(y, probs, n_boot=n_boot, seed=seed))


@dataclass
class LeakyResult:
    """The notebook's protocol (oversample, then split), for comparison only."""

    test_leak_fraction: float
    n_train: int
    n_val: int
    n_test: int
    models: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class RunResult:
    """A `cv`, `train` or `evaluate` run: what ``metrics.json`` holds."""

    verb: str
    data: DataSummary
    device: str
    models: dict[str, ModelResult] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    leaky: LeakyResult | None = None
    wall_seconds: float = 0.0
    model_file: str | None = None  # train: the model it wrote; evaluate: the model it measured
    model_meta: dict[str, Any] | None = None  # evaluate: the measured model's metadata
    best_epoch: int | None = None  # train
    temperature: float | None = None  # train
    external: dict[str, Any] | None = None  # evaluate: what a set with some classes (and angles) can show

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema": SCHEMA, "verb": self.verb, **asdict(self.data), "device": self.device,
                             "models": {m: r.to_dict() for m, r in self.models.items()}, "config": self.config,
                             "wall_seconds": self.wall_seconds}
        if self.leaky is not None:
            d["leaky"] = asdict(self.leaky)
        for k in ("model_file", "best_epoch", "temperature", "external"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.model_meta is not None:
            d["model"] = self.model_meta
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        """Read ``metrics.json`` back, of schema 2 or of schema 1 (written before the schema key)."""
        if d.get("schema", "spinexr-run/1") not in ("spinexr-run/1", SCHEMA):
            raise ValueError(f"unknown metrics.json schema {d.get('schema')!r}")
        data = DataSummary(**{k: d.get(k) for k in DataSummary.__dataclass_fields__})
        lk = d.get("leaky")
        return cls(verb=d.get("verb", ""), data=data, device=d.get("device", ""),
                   models={m: ModelResult.from_dict(r) for m, r in d.get("models", {}).items()},
                   config=d.get("config", {}), leaky=LeakyResult(**lk) if lk else None,
                   wall_seconds=float(d.get("wall_seconds", 0.0)), model_file=d.get("model_file"),
                   model_meta=d.get("model"), best_epoch=d.get("best_epoch"), temperature=d.get("temperature"),
                   external=d.get("external"))


def sum_framing(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Add up per-fold framing stress counts (see :func:`spinexr.data.framing.framing_stress`)."""
    parts = [p for p in parts if p]
    if not parts:
        return None
    out: dict[str, Any] = {}
    for key in parts[0]:
        n = sum(p[key]["n"] for p in parts)
        ch = sum(p[key]["changed"] for p in parts)
        to: dict[str, int] = {}
        for p in parts:
            for c, v in p[key]["to"].items():
                to[c] = to.get(c, 0) + v
        out[key] = {"n": n, "changed": ch, "rate": ch / n if n else None, "to": to}
    return out
