"""One film's result, typed and immutable: what the classifier said, what the landmark model measured,
what the decision made of both, and where it came from.

:class:`Classification` is the classifier's answer alone (:class:`~spinexr.deploy.predictor.Predictor`);
:class:`Prediction` is the whole film's result, built once by the pipeline from a classification, the
file's own checks, the :class:`~spinexr.deploy.measure.Measurement` and the
:class:`~spinexr.deploy.decision.Decision`. Nothing changes it in place: an output that adds to it (the
file it drew, the service's timings) makes a changed copy (:meth:`Prediction.with_file`,
:meth:`Prediction.with_timing`). :meth:`Prediction.to_document` is its one wire format
(:mod:`spinexr.deploy.document`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from spinexr.deploy.decision import Decision, DecisionRule
from spinexr.deploy.document import SCHEMA
from spinexr.deploy.measure import Measurement
from spinexr.errors import ImageReadError
from spinexr.geometry.curves import orientation_of
from spinexr.models.ood import input_checks

NOT_ANALYSED = "not_analysed"
OUTSIDE = "outside_intended_use"
# The files an output may draw beside a film, as the document's ``files`` names them.
FILE_KINDS = ("heatmap", "overlay")


class Frozen(Mapping[str, Any]):
    """A read-only mapping (probabilities, model facts, timings) that pickles, unlike ``MappingProxyType``.

    Args:
        items: the entries (copied).
    """

    __slots__ = ("_d",)

    def __init__(self, items: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_d", dict(items or {}))

    def __getitem__(self, key: str) -> Any:
        return self._d[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Frozen mapping cannot be changed")

    def __repr__(self) -> str:
        return f"Frozen({self._d!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Frozen, (self._d,))


@dataclass(frozen=True)
class Classification:
    """The classifier's answer for one decoded film.

    Args:
        label: the most probable class.
        probabilities: each class's calibrated probability, in the model's label order.
        ood_score: the feature score of the out-of-distribution detector (None without one).
        ood_threshold: the detector's threshold (None without one).
        seconds: this film's share of the model call.
        image: (width, height) of the decoded film.
    """

    label: str
    probabilities: Mapping[str, float]
    ood_score: float | None = None
    ood_threshold: float | None = None
    seconds: float = 0.0
    image: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "probabilities", Frozen(self.probabilities))

    @property
    def ood(self) -> bool | None:
        """True when the feature score is over the threshold (None without a detector)."""
        if self.ood_score is None or self.ood_threshold is None:
            return None
        return bool(self.ood_score > self.ood_threshold)


@dataclass(frozen=True)
class Prediction:
    """One file's result; ``status`` is ``ok``, ``error`` (then ``reason`` says why, and ``kind`` is the
    :class:`~spinexr.errors.ReadErrorKind`) or ``not_analysed`` (outside the bundle's intended use: ``reason``
    says why, ``kind`` is ``outside_intended_use``, and there is no label). Build it with :meth:`of`,
    :meth:`unreadable` or :meth:`outside`.

    ``ood`` is True when the feature score is over the threshold or the file itself says it is not a spine
    radiograph (``ood_reasons``); ``warnings`` hold what the decoders said about the file.

    Args:
        path: the film's path (or name) as the document gives it.
        status: ``ok``, ``error`` or ``not_analysed``.
        reason: why the file could not be read, or why it was not analysed.
        kind: the read error's kind, or ``outside_intended_use``.
        label: the decision's label (the classifier's where nothing measured the film).
        probabilities: the classifier's calibrated probabilities by class.
        ood_score: the detector's feature score.
        ood: the out-of-distribution flag (None without a detector and without file checks).
        ood_reasons: why the film is flagged.
        ood_threshold: the detector's threshold.
        warnings: what the decoders said about the file (and outputs that could not draw).
        seconds: the film's share of the classifier's call.
        spine: the measurement, or None.
        decision: the decision, or None.
        image: (width, height) of the decoded film.
        files: what outputs drew beside the film, by kind (:data:`FILE_KINDS`).
        model: which bundle made it.
        timing_ms: milliseconds by step.
        sha256: the digest of the file's bytes.
        orientation: the film's Patient Orientation (row, column directions), where its header gives it.
    """

    path: str
    status: str
    reason: str = ""
    kind: str = ""
    label: str = ""
    probabilities: Mapping[str, float] = field(default_factory=Frozen)
    ood_score: float | None = None
    ood: bool | None = None
    ood_reasons: tuple[str, ...] = ()
    ood_threshold: float | None = None
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    spine: Measurement | None = None
    decision: Decision | None = None
    image: tuple[int, int] | None = None
    files: Mapping[str, str] = field(default_factory=Frozen)  # what outputs drew beside the film (FILE_KINDS)
    model: Mapping[str, Any] = field(default_factory=Frozen)  # which bundle made it (Pipeline.model_info)
    timing_ms: Mapping[str, float] | None = None
    sha256: str | None = None  # of the file's bytes (None where it could not be read at all)
    orientation: tuple[str, ...] | None = None  # Patient Orientation: the curves' sides are the patient's

    def __post_init__(self) -> None:
        for name in ("probabilities", "files", "model"):
            object.__setattr__(self, name, Frozen(getattr(self, name)))
        if self.timing_ms is not None:
            object.__setattr__(self, "timing_ms", Frozen(self.timing_ms))
        object.__setattr__(self, "ood_reasons", tuple(self.ood_reasons))
        object.__setattr__(self, "warnings", tuple(self.warnings))
        unknown = set(self.files) - set(FILE_KINDS)
        if unknown:
            raise ValueError(f"unknown drawn file kinds {sorted(unknown)}; one of {FILE_KINDS}")

    @classmethod
    def of(cls, c: Classification, path: str | Path = "", *, meta: Any = None, spine: Measurement | None = None,
           rule: DecisionRule | None = None, **facts: Any) -> Prediction:
        """A read film's result, built once.

        Args:
            c: the classifier's answer.
            path: the film's path (or name) as the document gives it.
            meta: the decoder's :class:`~spinexr.data.imread.ImageMeta`: what the file says about itself
                (:func:`~spinexr.models.ood.input_checks`) and its warnings (None: not checked).
            spine: the measurement (None: no landmark model).
            rule: the decision rule that lets the measured curve answer the classifier (with ``spine``).
            **facts: ``model``, ``timing_ms`` and ``sha256``.
        """
        ood, reasons, warnings = c.ood, (), ()
        if meta is not None:
            reasons = tuple(input_checks(meta))
            if c.ood_score is not None and c.ood:
                reasons = (f"feature score {c.ood_score:.1f} over the threshold", *reasons)
            ood = bool(reasons) if (ood is not None or reasons) else None
            warnings = tuple(getattr(meta, "warnings", ()) or ())
        decision = None if spine is None or rule is None else rule.decide(c.label, dict(c.probabilities), spine)
        orientation = orientation_of((getattr(meta, "extra", None) or {}).get("patient_orientation"))
        return cls(path=str(path), status="ok", label=decision.label if decision else c.label,
                   probabilities=c.probabilities, ood_score=c.ood_score, ood=ood, ood_reasons=reasons,
                   ood_threshold=c.ood_threshold, warnings=warnings, seconds=c.seconds, spine=spine,
                   decision=decision, image=c.image, orientation=orientation, **facts)

    @classmethod
    def unreadable(cls, path: str | Path, e: ImageReadError, **facts: Any) -> Prediction:
        """The result of a file that could not be read: its reason and kind, and the decoders' notes
        (``facts``: ``model``, ``sha256``)."""
        return cls(path=str(path), status="error", reason=e.reason, kind=e.kind.value, warnings=tuple(e.notes), **facts)

    @classmethod
    def outside(cls, path: str | Path, reasons: list[str], *, meta: Any = None, **facts: Any) -> Prediction:
        """The result of a film outside the bundle's intended use (:mod:`spinexr.deploy.intended_use`),
        known from its header before any model ran: every reason, the file's own checks and notes, no finding.

        Args:
            path: the film's path (or name) as the document gives it.
            reasons: why it is outside.
            meta: the decoder's :class:`~spinexr.data.imread.ImageMeta` (None: not known).
            **facts: ``model``, ``sha256``.
        """
        checks = tuple(input_checks(meta)) if meta is not None else ()
        image = None if meta is None else (int(meta.width), int(meta.height))
        return cls(path=str(path), status=NOT_ANALYSED, reason="; ".join(reasons), kind=OUTSIDE,
                   ood=True if checks else None, ood_reasons=checks,
                   warnings=tuple(getattr(meta, "warnings", ()) or ()), image=image, **facts)

    def not_analysed(self, reasons: list[str]) -> Prediction:
        """A copy outside the intended use, found after the models ran: the reasons and the OOD facts kept,
        the label, probabilities, measurement and decision withheld."""
        return replace(self, status=NOT_ANALYSED, reason="; ".join(reasons), kind=OUTSIDE, label="",
                       probabilities={}, spine=None, decision=None)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def heatmap(self) -> str:
        """The heatmap drawn beside the film ("" when none)."""
        return self.files.get("heatmap", "")

    @property
    def overlay(self) -> str:
        """The measurement drawn on the film ("" when none)."""
        return self.files.get("overlay", "")

    def with_file(self, kind: str, path: str | Path) -> Prediction:
        """A copy naming the file an output drew (``kind``: one of :data:`FILE_KINDS`)."""
        return replace(self, files={**self.files, kind: str(path)})

    def with_warning(self, warning: str) -> Prediction:
        """A copy with one more warning (an output that could not draw says why)."""
        return replace(self, warnings=(*self.warnings, warning))

    def with_timing(self, **ms: float) -> Prediction:
        """A copy with more timings (milliseconds by step)."""
        return replace(self, timing_ms={**(self.timing_ms or {}), **ms})

    def named(self, path: str, sha256: str | None = None) -> Prediction:
        """A copy under another name (an upload, a PACS instance), with the digest of the bytes received."""
        return replace(self, path=path, sha256=sha256 if sha256 is not None else self.sha256)

    def to_document(self) -> dict[str, Any]:
        """The prediction document (:mod:`spinexr.deploy.document`): numbers as numbers, the OOD flag a
        boolean (null without a detector), the corners in film pixels to 0.01 px."""
        spine = None
        if self.spine is not None:
            spine = {**self.spine.to_dict(self.orientation), "landmarks": np.round(self.spine.landmarks, 2).tolist()}
        return {
            "schema": SCHEMA, "path": self.path, "sha256": self.sha256, "status": self.status,
            "error": None if self.ok else {"reason": self.reason, "kind": self.kind},
            "label": self.label or None, "probabilities": dict(self.probabilities),
            "ood": {"flag": self.ood, "score": self.ood_score, "threshold": self.ood_threshold,
                    "reasons": list(self.ood_reasons)},
            "warnings": list(self.warnings),
            "image": None if self.image is None else {"width": int(self.image[0]), "height": int(self.image[1])},
            "spine": spine, "decision": None if self.decision is None else self.decision.to_dict(),
            "files": {k: self.files.get(k) or None for k in FILE_KINDS},
            "model": dict(self.model), "timing_ms": None if self.timing_ms is None else dict(self.timing_ms),
        }


__all__ = ["FILE_KINDS", "NOT_ANALYSED", "OUTSIDE", "Classification", "Frozen", "Prediction"]
