"""The decision that answers to the curve: the classifier's label, checked against the measured Cobb angle.

A rule, not a learned model, because its parts are what a radiologist already reads and each can be
audited on its own. The measured largest Cobb angle is evidence on a full-spine AP film: one the
landmark model measures as a plausible spine (17 vertebrae in order, no overlaps or gaps) and the
view check (:mod:`spinexr.geometry.view`, carried in the landmark model file) finds to be a
full-spine AP view rather than a lumbar or lateral one (the landmark model, trained on full-spine AP
films, still draws an ordered spine on most lumbar views, so plausibility alone does not tell the
view). A landmark model file without a view check falls back to the classifier: a Spondylolisthesis
call counts as a lumbar view. On a full-spine AP film:

- a **Normal** call whose measured angle is at or above ``curve_deg`` becomes **Scoliosis**, and the
  output says the classifier was overruled (a curve of that size is scoliosis by definition);
- a **Scoliosis** call on a measured angle below ``straight_deg`` (the clinical 10° line) stands but
  is flagged as disagreeing: the landmark model's own error is several degrees, so a small measured
  angle is shown beside the label, not put in its place;
- a **Spondylolisthesis** call is overruled the same way (spondylolisthesis is read on a lateral
  lumbar view; a full-spine AP film with a curve of that size is a scoliosis film), but only on a
  film the check is surer of than of nearly all its lumbar films (its ``spondylolisthesis_line``):
  the call is the classifier's own evidence of a lumbar view, and below that line the label stands,
  as on a view the check doubts;
- otherwise the classifier's label stands and the angle is reported beside it.

A refused spine (a photo, a chest film) keeps the classifier's label, with the reason. On a view the
check takes for a lumbar or lateral one, only a **Normal** call answers to the angle, and only to a
curve of clinical size: one measured at or above ``doubted_view_deg`` (25°, the usual line between
mild and moderate scoliosis, or ``curve_deg`` where that is higher) becomes Scoliosis, flagged
"check the film". The view check errs on full AP films from other hospitals, whose curves would
otherwise go unheard; a lumbar view measures large angles too (KAUH's lumbar films: 21° at the
median), so the higher bar, and a film called Spondylolisthesis, the lumbar evidence, is never
overruled on such a view. Scoliosis calls on such a view keep their label. Wherever the angle is not
used (a doubted view, or a lumbar view by the classifier), a curve measured at ``large_curve_deg``
(40°) or more is still never buried: the label stands, the angle is shown beside it and the decision
is flagged "check the film". ``curve_deg`` is fitted on KAUH Normal films, which the
landmark model never saw (:func:`fit_curve_deg`: the smallest angle at most a set share of them
reach); the landmark model file carries the value (``decision`` in its metadata).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from spinexr.geometry.view import FULL_SPINE

STRAIGHT_DEG = 10.0
DOUBTED_VIEW_DEG = 25.0
# A curve of this size is never left unread: where the rule does not use the angle (a view the check
# doubts, a lumbar view by the classifier), the label stands but the angle is shown, flagged "check the film".
LARGE_CURVE_DEG = 40.0
# Bumped whenever ``DecisionRule.decide`` changes what it decides: stored cross-validation figures
# made under another version are rebuilt, not reused (:class:`spinexr.evaluation.decision_cv.CurveEvidence`).
RULE_VERSION = 5


@dataclass(frozen=True)
class Decision:
    """The classifier's label checked against the measured curve.

    Args:
        label: the decision.
        classifier_label: what the classifier said.
        cobb_largest: the largest measured angle on a plausible AP spine, or None.
        agreement: ``agree``, ``consistent``, ``disagree``, ``overruled``, ``no angle`` or ``check the film``.
        note: one sentence a reader sees.
    """

    label: str  # the decision
    classifier_label: str
    cobb_largest: float | None  # measured, on a plausible AP spine
    # agree (angle and label point the same way), consistent (an angle between the two lines),
    # disagree (Scoliosis called on a near-straight spine), overruled (a curve overrode the label), no angle,
    # check the film (a large curve on a view where the rule does not use the angle: shown beside the label)
    agreement: str
    note: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DecisionRule:
    """How the measured curve answers the classifier: its lines, in degrees.

    Args:
        curve_deg: a curve of at least this is scoliosis (a Normal call is overruled).
        straight_deg: below this the spine is straight (a Scoliosis call is disputed).
        doubted_view_deg: the bar for a curve on a view the view check doubts.
        large_curve_deg: a curve this large is flagged wherever the angle is not used.
    """

    curve_deg: float = 25.0
    straight_deg: float = STRAIGHT_DEG
    doubted_view_deg: float = DOUBTED_VIEW_DEG  # a Normal call on a view the check doubts: the bar for a curve
    large_curve_deg: float = LARGE_CURVE_DEG  # never left unread: flagged "check the film" wherever the angle is unused

    @classmethod
    def from_meta(cls, meta: dict[str, Any] | None) -> DecisionRule:
        """The rule a landmark model file carries (``decision`` in its metadata), else the default."""
        d = (meta or {}).get("decision") or {}
        return cls(float(d.get("curve_deg", cls.curve_deg)), float(d.get("straight_deg", STRAIGHT_DEG)),
                   float(d.get("doubted_view_deg", DOUBTED_VIEW_DEG)), float(d.get("large_curve_deg", LARGE_CURVE_DEG)))

    def _unused(self, label: str, a: float, band: str, why: str) -> Decision:
        """Where the rule does not use the angle: the label stands; a large curve is still shown and flagged."""
        if a >= self.large_curve_deg:
            return Decision(label, label, a, "check the film",
                            f"{why}: the classifier's {label} stands, but the measured largest Cobb angle is {a:.1f}° "
                            f"({band}, at least {self.large_curve_deg:g}°); check the film")
        return Decision(label, label, None, "no angle", f"{why}: the full-spine Cobb angle ({a:.1f}° measured) is not used")

    @property
    def doubted_view_bar(self) -> float:
        """The angle a Normal call on a view the check doubts must reach: the higher of the two lines."""
        return max(self.curve_deg, self.doubted_view_deg)

    def decide(self, label: str, probabilities: dict[str, float], measurement: Any) -> Decision:
        """``label``/``probabilities``: the classifier's; ``measurement``: a
        :class:`~spinexr.deploy.measure.Measurement` or None (no landmark model ran).

        Args:
            label: the classifier's label.
            probabilities: its probabilities by class.
            measurement: the film's measurement, or None.
        """
        p = probabilities.get(label, 0.0)
        if measurement is None:
            return Decision(label, label, None, "no angle", "no landmark model: the classifier's label")
        if measurement.result is None:
            why = "; ".join(measurement.refused) or "implausible spine"
            return Decision(label, label, None, "no angle",
                            f"not measured as a full AP spine ({why}): the classifier's label")
        a = float(measurement.result.largest)
        band = measurement.result.band
        view = getattr(measurement, "view", None)
        if view is not None and view != FULL_SPINE:
            bar = self.doubted_view_bar
            if label == "Normal" and a >= bar:
                return Decision("Scoliosis", label, a, "overruled",
                                f"the classifier said Normal ({p:.2f}) but the measured largest Cobb angle is {a:.1f}° "
                                f"({band}, at least {bar:g}°) on a view the check took for a lumbar or "
                                f"lateral one (full-spine probability {measurement.view_probability:.2f}): called "
                                "Scoliosis; check the film")
            return self._unused(label, a, band, "a lumbar or lateral view by the shape of the measured spine "
                                f"(full-spine probability {measurement.view_probability:.2f})")
        if label == "Spondylolisthesis" and view is None:
            return self._unused(label, a, band, "a lumbar or lateral view by the classifier")
        spond_line = getattr(measurement, "spondylolisthesis_view_line", None)
        if (label == "Spondylolisthesis" and a >= self.curve_deg and spond_line is not None
                and measurement.view_probability < spond_line):
            return self._unused(label, a, band, "called Spondylolisthesis (the classifier's evidence of a lumbar view) "
                                f"on a film whose full-spine probability ({measurement.view_probability:.2f}) is below "
                                f"the line such a call must reach ({spond_line:.2f})")
        if label == "Spondylolisthesis" and a < self.curve_deg:
            return Decision(label, label, a, "consistent",
                            f"measured largest Cobb angle {a:.1f}° ({band}) on a full-spine AP view; spondylolisthesis "
                            "is read on a lateral lumbar view")
        if a >= self.curve_deg:
            if label == "Scoliosis":
                return Decision(label, label, a, "agree", f"measured largest Cobb angle {a:.1f}° ({band}) agrees")
            on = " on a full-spine AP view" if label == "Spondylolisthesis" else ""
            return Decision("Scoliosis", label, a, "overruled",
                            f"the classifier said {label} ({p:.2f}) but the measured largest Cobb angle is {a:.1f}° "
                            f"({band}, at least {self.curve_deg:g}°){on}: called Scoliosis")
        if a < self.straight_deg and label == "Scoliosis":
            return Decision(label, label, a, "disagree",
                            f"the classifier said Scoliosis ({p:.2f}) but the measured largest Cobb angle is only "
                            f"{a:.1f}° ({band}); check the film")
        return Decision(label, label, a, "agree" if (label == "Scoliosis") == (a >= self.straight_deg) else "consistent",
                        f"measured largest Cobb angle {a:.1f}° ({band})")


def fit_curve_deg(measured: Any, max_rate: float = 0.02, floor: float = STRAIGHT_DEG) -> float:
    """The rule's curve line, chosen on films known not to be scoliosis (KAUH Normal; NaN: the landmark model
    refused the film): the smallest angle, on a half-degree step and at least ``floor``, that at most
    ``max_rate`` of those films reach, so the rule overrides at most that share of them.

    Args:
        measured: the films' largest measured angles (NaN: refused).
        max_rate: the largest share of them allowed to reach the line.
        floor: the lowest line.
    """


    a = np.asarray(measured, dtype=np.float64)
    allowed = int(math.floor(max_rate * len(a)))
    top = np.sort(a[np.isfinite(a)])[::-1]
    if len(top) <= allowed:
        return float(floor)
    return float(max(floor, math.floor(top[allowed] * 2) / 2 + 0.5))


