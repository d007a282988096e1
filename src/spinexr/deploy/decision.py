"""The decision that answers to the curve: the classifier's label, checked against the measured Cobb angle.

A rule, not a learned model, because its parts are what a radiologist already reads and each can be
audited on its own. On a film the landmark model measures as a plausible full spine (17 vertebrae in
order, no overlaps or gaps: the AP-view check), the measured largest Cobb angle is evidence:

- at or above ``curve_deg`` the film is called **Scoliosis** whatever the classifier said (a curve of
  that size is scoliosis by definition); when the classifier said otherwise the output says so;
- below ``straight_deg`` (the clinical 10° line) a Scoliosis call stands but is flagged as disagreeing
  with the measured curve: the landmark model's own error is several degrees, so a small measured
  angle does not overrule the classifier, it is shown beside it;
- in between, the classifier's label stands and the angle is reported.

A film the landmark model refuses (not a plausible AP spine: a lateral or lumbar-only view, a photo,
a chest film) keeps the classifier's label, with the reason. ``curve_deg`` is chosen on KAUH films
the classifier did not train on (``benchmarks/external_aasce.py`` writes the value and the KAUH
accuracy before and after); the bundled landmark model carries the value it was chosen with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

STRAIGHT_DEG = 10.0


@dataclass(frozen=True)
class Decision:
    label: str  # the decision
    classifier_label: str
    cobb_largest: float | None  # measured, on a plausible AP spine
    # agree (angle and label point the same way), consistent (an angle between the two lines),
    # disagree (Scoliosis called on a near-straight spine), overruled (a curve overrode the label), no angle
    agreement: str
    note: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def row(self) -> dict[str, str]:
        return {"classifier_label": self.classifier_label, "agreement": self.agreement, "decision_note": self.note}


@dataclass(frozen=True)
class DecisionRule:
    curve_deg: float = 25.0
    straight_deg: float = STRAIGHT_DEG

    @classmethod
    def from_meta(cls, meta: dict[str, Any] | None) -> DecisionRule:
        """The rule a landmark model file carries (``decision`` in its metadata), else the default."""
        d = (meta or {}).get("decision") or {}
        return cls(float(d.get("curve_deg", cls.curve_deg)), float(d.get("straight_deg", STRAIGHT_DEG)))

    def decide(self, label: str, probabilities: dict[str, float], measurement: Any) -> Decision:
        """``label``/``probabilities``: the classifier's; ``measurement``: a
        :class:`~spinexr.deploy.measure.Measurement` or None (no landmark model ran)."""
        p = probabilities.get(label, 0.0)
        if measurement is None:
            return Decision(label, label, None, "no angle", "no landmark model: the classifier's label")
        if measurement.result is None:
            why = "; ".join(measurement.refused) or "implausible spine"
            return Decision(label, label, None, "no angle",
                            f"not measured as a full AP spine ({why}): the classifier's label")
        a = float(measurement.result.largest)
        band = measurement.result.band
        if a >= self.curve_deg:
            if label == "Scoliosis":
                return Decision(label, label, a, "agree", f"measured largest Cobb angle {a:.1f}° ({band}) agrees")
            return Decision("Scoliosis", label, a, "overruled",
                            f"the classifier said {label} ({p:.2f}) but the measured largest Cobb angle is {a:.1f}° "
                            f"({band}, at least {self.curve_deg:g}°): called Scoliosis")
        if a < self.straight_deg and label == "Scoliosis":
            return Decision(label, label, a, "disagree",
                            f"the classifier said Scoliosis ({p:.2f}) but the measured largest Cobb angle is only "
                            f"{a:.1f}° ({band}); check the film")
        return Decision(label, label, a, "agree" if (label == "Scoliosis") == (a >= self.straight_deg) else "consistent",
                        f"measured largest Cobb angle {a:.1f}° ({band})")
