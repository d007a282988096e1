"""The curves of a spine as a radiologist names them: by the region of their apex, with their convexity side,
Cobb angle, end vertebrae and apex, and which is the major curve.

**Finding the curves.** The major curve's end vertebrae are the most tilted pair anywhere (the largest Cobb
angle, the AASCE definition's first angle, read with the same tilts: :func:`~spinexr.geometry.cobb.vertebra_tilts`).
One of them is the most tilted one way of the whole spine, the other the most tilted the other way, so a
curve above the major one bends the other way: its end vertebrae are the major curve's upper end vertebra
and the vertebra above it most tilted against it. The same step is taken again above that curve, and below
the major curve, until a step finds less than :data:`MIN_CURVE_DEG`. Adjacent curves share an end vertebra,
as Cobb angles of a double curve are drawn. A curve under 10 degrees is spinal asymmetry, not scoliosis, and
is not reported (a straight spine has no curve).

**The apex** is the vertebra or disc between the end vertebrae farthest from the line joining their centres
(a disc is the midpoint between one vertebra's lower endplate and the next one's upper endplate). Its side
of that line is the curve's **convexity**: the image's right or left, which becomes the patient's right or
left through the film's Patient Orientation when it is known (DICOM (0020,0020): the first value is the
patient direction of the image's rows, left to right).

**Regions** by apex, in the Scoliosis Research Society's terms, with the thoracic region subdivided as
Lenke's classification does: proximal thoracic (apex T2-T5; T1 and the T1-T2 disc included), main thoracic
(apex from the T5-T6 disc to the T11-T12 disc), thoracolumbar (apex T12 to L1), lumbar (apex from the
L1-L2 disc down).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spinexr.geometry.cobb import (
    BAND_TEXT,
    LEVELS,
    N_VERTEBRAE,
    CobbResult,
    angle_matrix,
    as_vertebrae,
    endplate_centres,
    vertebra_tilts,
)

MIN_CURVE_DEG = 10.0
# Apex positions (vertebra i at i, the disc below it at i + 0.5; T1 = 0, L5 = 16) that open each region.
REGIONS = (("proximal thoracic", 0.0), ("main thoracic", 4.5), ("thoracolumbar", 11.0), ("lumbar", 12.5))
# Patient directions of DICOM Patient Orientation, as the side a convexity toward them is called.
SIDES = {"L": "left", "R": "right"}


def apex_name(position: float) -> str:
    """A vertebra (``T9``) or the disc between two (``T11-T12``) from an apex position (see :data:`REGIONS`)."""
    i = int(np.floor(position))
    return LEVELS[i] if position == i else f"{LEVELS[i]}-{LEVELS[i + 1]}"


def region(position: float) -> str:
    """The region of a curve whose apex is at ``position``."""
    return [name for name, start in REGIONS if position >= start][-1]


@dataclass(frozen=True)
class RegionalCurve:
    """One curve (see the module).

    Args:
        region: proximal thoracic, main thoracic, thoracolumbar or lumbar.
        side: the convexity: ``right`` or ``left`` (the patient's) or ``image right`` / ``image left``.
        angle: its Cobb angle in degrees.
        upper_end: the upper end vertebra (``T5``).
        lower_end: the lower end vertebra.
        apex: the apical vertebra or disc (``T9``, ``T11-T12``).
        major: whether it is the largest curve.
    """

    region: str
    side: str
    angle: float
    upper_end: str
    lower_end: str
    apex: str
    major: bool

    @property
    def name(self) -> str:
        """``right main thoracic``: side and region, as a report says it."""
        return f"{self.side} {self.region}"

    def to_dict(self) -> dict[str, object]:
        return {"region": self.region, "side": self.side, "angle": self.angle, "upper_end": self.upper_end,
                "lower_end": self.lower_end, "apex": self.apex, "major": self.major}


def _apex(v: np.ndarray, a: int, b: int) -> tuple[float, float]:
    """(position, signed offset in pixels: + toward the image's right) of the point between vertebrae ``a``
    and ``b`` (vertebra centres and discs) farthest from the line joining their centres."""
    centres = v.mean(axis=1)
    ends = endplate_centres(v).reshape(N_VERTEBRAE, 2, 2)  # (upper, lower) endplate centre of each vertebra
    discs = (ends[:-1, 1] + ends[1:, 0]) / 2
    pts = [(float(i), centres[i]) for i in range(a + 1, b)] + [(i + 0.5, discs[i]) for i in range(a, b)]
    p, q = centres[a], centres[b]
    d = q - p
    normal = np.array([d[1], -d[0]]) / max(float(np.linalg.norm(d)), 1e-12)  # points to the image's right
    if normal[0] < 0:
        normal = -normal
    pos, off = max(((pos, float((pt - p) @ normal)) for pos, pt in pts), key=lambda t: abs(t[1]))
    return pos, off


def _side(offset: float, orientation: tuple[str, ...] | None) -> str:
    toward_columns = offset > 0  # convex toward the image's right: the direction the rows run
    row = (orientation[0] if orientation else "").upper()[:1]
    if row in SIDES:
        other = "right" if SIDES[row] == "left" else "left"
        return SIDES[row] if toward_columns else other
    return "image right" if toward_columns else "image left"


def find_curves(landmarks: np.ndarray, centreline_weight: float = 0.0,
                orientation: tuple[str, ...] | None = None) -> list[RegionalCurve]:
    """The curves of one spine, top to bottom (see the module); empty for a spine without a curve of 10 degrees.

    Args:
        landmarks: (17, 4, 2) or (68, 2) corners in pixels (y down).
        centreline_weight: how the tilts are read (:func:`~spinexr.geometry.cobb.vertebra_tilts`), as the
            Cobb angles are.
        orientation: the film's Patient Orientation (row direction, column direction), or None.
    """
    v = as_vertebrae(landmarks)
    ang = angle_matrix(vertebra_tilts(v, centreline_weight))
    first = int(np.argmax(ang.max(axis=0)))
    second = int(np.argmax(ang[:, first]))
    upper, lower = min(first, second), max(first, second)
    pairs = [(upper, lower)]
    top, bottom = upper, lower
    while top > 0:  # curves above: each from the vertebra above most tilted against the last upper end
        k = int(np.argmax(ang[top, :top]))
        if ang[top, k] < MIN_CURVE_DEG:
            break
        pairs.insert(0, (k, top))
        top = k
    while bottom < N_VERTEBRAE - 1:  # ... and below
        k = bottom + 1 + int(np.argmax(ang[bottom, bottom + 1:]))
        if ang[bottom, k] < MIN_CURVE_DEG:
            break
        pairs.append((bottom, k))
        bottom = k
    largest = float(ang[upper, lower])
    out = []
    for a, b in pairs:
        angle = float(ang[a, b])
        if angle < MIN_CURVE_DEG or b - a < 1:
            continue
        pos, off = _apex(v, a, b)
        out.append(RegionalCurve(region(pos), _side(off, orientation), angle, LEVELS[a], LEVELS[b], apex_name(pos),
                                 major=(a, b) == (upper, lower) and angle == largest))
    return out


def pattern(curves: list[RegionalCurve]) -> str:
    """The curve pattern in words: ``no curve``, ``single right main thoracic``, ``double: right main thoracic
    and left lumbar``, ``triple: ...``."""
    if not curves:
        return "no curve (under 10 degrees)"
    names = [c.name for c in curves]
    if len(names) == 1:
        return f"single {names[0]}"
    count = {2: "double", 3: "triple"}.get(len(names), f"{len(names)} curves")
    return f"{count}: {', '.join(names[:-1])} and {names[-1]}"


# The AASCE challenge's three angles, in its columns' order (its files call them PT, MT and TL/L, though the
# first is the largest angle anywhere): kept for the benchmarks that compare against it.
AASCE_KEYS = ("first", "second", "third")


def orientation_of(value: str | None) -> tuple[str, ...] | None:
    """Patient Orientation as a header gives it (``L\\F``) -> ("L", "F"); None when absent or malformed."""
    parts = tuple(p.strip().upper() for p in (value or "").split("\\") if p.strip())
    return parts if len(parts) == 2 else None


def measured(landmarks: np.ndarray, result: CobbResult | None,
             orientation: tuple[str, ...] | None = None) -> dict[str, object]:
    """A measurement's wire form (``spinexr-prediction/2``): the largest angle and its band, the curves by
    region (:func:`find_curves`) with the pattern in words, and the AASCE triple (``aasce_angles``); nulls
    and no curve for a refused spine, so every film has the same keys.

    Args:
        landmarks: (17, 4, 2) corners in film pixels.
        result: the Cobb angles (:func:`~spinexr.geometry.cobb.cobb_angles`), None for a refused spine.
        orientation: the film's Patient Orientation, for the curves' sides.
    """
    empty = {"angle": None, "upper_end": None, "lower_end": None, "apex": None}
    if result is None:
        return {"largest": None, "band": None, "bands": BAND_TEXT, "centreline_weight": None, "curves": [],
                "pattern": None, "aasce_angles": {"shape": None, **{k: dict(empty) for k in AASCE_KEYS}}}
    curves = find_curves(landmarks, result.centreline_weight, orientation)
    triple = {}
    for key, c in zip(AASCE_KEYS, (result.pt, result.mt, result.tl)):
        up, lo, apex = c.levels
        triple[key] = {"angle": c.angle, "upper_end": up, "lower_end": lo, "apex": apex}
    return {"largest": result.largest, "band": result.band, "bands": BAND_TEXT,
            "centreline_weight": result.centreline_weight, "curves": [c.to_dict() for c in curves],
            "pattern": pattern(curves), "aasce_angles": {"shape": "S" if result.s_shaped else "C", **triple}}


__all__ = ["AASCE_KEYS", "MIN_CURVE_DEG", "REGIONS", "RegionalCurve", "apex_name", "find_curves", "measured",
           "orientation_of", "pattern", "region"]
