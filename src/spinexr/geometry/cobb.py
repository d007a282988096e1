"""Cobb angles from vertebra landmarks: pure functions on arrays, independent of any model.

Landmarks are 17 vertebrae (T1..L5) x 4 corners, in the order upper-left, upper-right, lower-left,
lower-right, as (x, y) pixels with y down: an array of shape (17, 4, 2) (or (68, 2)).

The definition is the one the AASCE / SpineWeb 16 data came with (its ``angleCal_demo.m``):

- each vertebra's *midline* runs from the middle of its left side (between its two left corners) to
  the middle of its right side; the angle between two vertebrae is the angle between their midlines;
- the first angle (PT column) is the largest angle between any two vertebrae: the main curve, whose
  end vertebrae are that pair;
- whether the spine is S-shaped is read from the endplate centres: the curve is an S when they lie
  on both sides of the straight line from the first to the last;
- a C-shaped spine: the second angle is between T1 and the upper end vertebra, the third between
  L5 and the lower end vertebra (the tilt left above and below the main curve);
- an S-shaped spine whose main curve lies in the upper half of the film (the two end vertebrae's
  lower endplates average above mid-height): the second angle is the largest between the upper end
  vertebra and any vertebra above it, the third the largest between the lower end vertebra and any
  vertebra below it;
- an S whose main curve lies in the lower half: the second angle is the largest between the upper end
  vertebra and any vertebra above it (at vertebra k), the third the largest between k and any
  vertebra above k.

The film height enters only through that upper/lower-half test. Reproduces the dataset's
``angles.csv`` from its ``landmarks.csv`` to within 0.05 degrees on all rows (``tests/test_geometry.py``).

**Predicted corners** (``centreline_weight`` > 0). A landmark model places each vertebra well but
reads its tilt with an error of its own, and the definition above takes the largest difference
between any two tilts, so on a straight spine that error alone makes an angle, and on a curved one
the model's pull towards a straight spine flattens it. A second reading of each vertebra's tilt comes
from the spine's centreline, a polynomial (degree :data:`CENTRELINE_DEGREE`) through the 17 vertebra
centres: the tilt of the line perpendicular to it at that vertebra. Measuring with a weighted mean of
the two readings (:func:`vertebra_tilts`) uses every vertebra's position for each tilt, so one
vertebra's wrong tilt counts less. It is another measurement of the same curve, not the definition:
on the dataset's true corners, weight 0.5 reads the largest angle 2.4° from the definition on average
(weight 1: 6.3°, mostly larger, the polynomial overshooting at T1 and L5). The weight is a setting of
the landmark model (``centreline_weight`` in its file), chosen by measurement
(``benchmarks/angle_reading.py``); 0 is the definition itself, the one the truth is computed with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LEVELS = tuple([f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)])
N_VERTEBRAE = len(LEVELS)
# The degree that best reproduces the dataset's own angles from its true vertebra centres alone (the
# centreline reading by itself on all 466 AASCE films: largest-angle correlation 0.91, MAE 6.3°, against
# 0.88-0.90 and 7.0-11.3° for degrees 3, 4, 6 and 8).
CENTRELINE_DEGREE = 7
# Severity of the largest angle; the bands are printed with every result. 10 and 25 open the next
# band; 40 itself is still moderate ("severe > 40").
BAND_RANGES = {"none": "< 10°", "mild": "10-25°", "moderate": "25-40°", "severe": "> 40°"}
BAND_TEXT = ", ".join(f"{name} {rng}" for name, rng in BAND_RANGES.items())
# Corner order inside each vertebra, and its mirror image (a horizontal flip swaps left and right).
CORNERS = ("upper_left", "upper_right", "lower_left", "lower_right")
FLIP_CORNERS = (1, 0, 3, 2)


def as_vertebrae(landmarks: np.ndarray) -> np.ndarray:
    """(68, 2) or (17, 4, 2) landmarks -> float64 (17, 4, 2)."""
    a = np.asarray(landmarks, dtype=np.float64)
    if a.shape == (N_VERTEBRAE * 4, 2):
        a = a.reshape(N_VERTEBRAE, 4, 2)
    if a.shape != (N_VERTEBRAE, 4, 2):
        raise ValueError(f"landmarks must be 17 vertebrae x 4 corners x (x, y); got shape {a.shape}")
    return a


def midlines(v: np.ndarray) -> np.ndarray:
    """(17, 2) vectors from the middle of each vertebra's left side to the middle of its right side."""
    left = (v[:, 0] + v[:, 2]) / 2
    right = (v[:, 1] + v[:, 3]) / 2
    return right - left


def centreline_tilts(v: np.ndarray, degree: int = CENTRELINE_DEGREE) -> np.ndarray | None:
    """(17,) tilt in degrees (y down, as :func:`midlines`' angle) of the line perpendicular to the spine's
    centreline at each vertebra: the centreline is x as a polynomial of y through the vertebra centres.
    None when the centres do not spread down the film (no centreline to fit)."""
    c = v.mean(axis=1)
    y = c[:, 1]
    if not np.isfinite(c).all() or float(np.ptp(y)) < 1e-6:
        return None
    line = np.polynomial.Polynomial.fit(y, c[:, 0], min(degree, len(y) - 1))
    return np.degrees(np.arctan(-line.deriv()(y)))


def vertebra_tilts(v: np.ndarray, centreline_weight: float = 0.0) -> np.ndarray:
    """(17, 2) unit vectors, one per vertebra, whose pairwise angles the Cobb angles are: each
    vertebra's midline direction, or with ``centreline_weight`` > 0 the weighted mean of its midline's
    tilt and the centreline's there (:func:`centreline_tilts`)."""
    m = midlines(v)
    if centreline_weight <= 0:
        return m
    line = centreline_tilts(v)
    if line is None:
        return m
    own = np.degrees(np.arctan2(m[:, 1], m[:, 0]))
    t = np.radians((1 - centreline_weight) * own + centreline_weight * line)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def angle_matrix(vec: np.ndarray) -> np.ndarray:
    """Pairwise angles in degrees between the vectors (rows) of ``vec``."""
    unit = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
    return np.degrees(np.arccos(np.clip(unit @ unit.T, -1.0, 1.0)))


def tilt_gain(value: object) -> float:
    """A gain on tilts (:func:`widen_tilts`) as a float; ValueError naming the value when it is not a number
    from 0.5 to 2 (a reading that halves or doubles every angle is no calibration)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.5 <= float(value) <= 2.0:
        raise ValueError(f"tilt_gain {value!r}: a gain on tilts is a number from 0.5 to 2 (1: none)")
    return float(value)


def widen_tilts(landmarks: np.ndarray, gain: float) -> np.ndarray:
    """(17, 4, 2) corners with each vertebra turned about its own centre so that its midline's departure
    from the spine's mean tilt is ``gain`` times what it was. Every angle between two midlines, and so
    every Cobb angle read from the corners alone (``centreline_weight`` 0), is then ``gain`` times as
    large; the vertebrae stay where they were, so the drawn corners still show the angles read."""
    v = as_vertebrae(landmarks).astype(np.float64)
    m = midlines(v)
    theta = np.arctan2(m[:, 1], m[:, 0])
    unit = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    mean = np.arctan2(unit[:, 1].sum(), unit[:, 0].sum())
    turn = (gain - 1.0) * np.angle(np.exp(1j * (theta - mean)))  # each departure, wrapped to (-pi, pi]
    c, s = np.cos(turn)[:, None], np.sin(turn)[:, None]
    centre = v.mean(axis=1, keepdims=True)
    d = v - centre
    return centre + np.stack([c * d[..., 0] - s * d[..., 1], s * d[..., 0] + c * d[..., 1]], axis=-1)


def endplate_centres(v: np.ndarray) -> np.ndarray:
    """(34, 2): the upper then lower endplate centre of each vertebra, top to bottom."""
    upper = (v[:, 0] + v[:, 1]) / 2
    lower = (v[:, 2] + v[:, 3]) / 2
    return np.stack([upper, lower], axis=1).reshape(-1, 2)


def is_s_shaped(centres: np.ndarray) -> bool:
    """True when the centre line lies on both sides of the chord from its first to its last point.

    Each point's offset from the chord is measured as (y - y_end) / (y_start - y_end) minus
    (x - x_end) / (x_start - x_end): zero on the chord, its sign telling the side. As in the dataset's
    definition, the last two points (L5's endplates, next to the chord's end) are not considered.
    """
    first, last = centres[0], centres[-1]
    if first[0] == last[0] or first[1] == last[1]:
        # A chord parallel to an axis leaves the offset undefined; the dataset's definition then
        # counts the spine as an S (its sign test compares NaNs, which are never equal).
        return True
    pts = centres[:-2]
    off = (pts[:, 1] - last[1]) / (first[1] - last[1]) - (pts[:, 0] - last[0]) / (first[0] - last[0])
    return bool((off > 0).any() and (off < 0).any())


@dataclass(frozen=True)
class Curve:
    """One measured angle: its value, the two vertebrae (0 = T1 .. 16 = L5) it is measured between,
    and the apex (the vertebra between them farthest from the line joining their centres).

    Args:
        angle: degrees.
        upper: the upper end vertebra's index.
        lower: the lower end vertebra's index.
        apex: the apex's index.
    """

    angle: float
    upper: int
    lower: int
    apex: int

    @property
    def levels(self) -> tuple[str, str, str]:
        return LEVELS[self.upper], LEVELS[self.lower], LEVELS[self.apex]


@dataclass(frozen=True)
class CobbResult:
    """The three angles of the dataset's definition (PT, MT, TL/L columns), the shape, and the band.

    Args:
        pt: the largest angle anywhere (the PT column).
        mt: the MT column's angle.
        tl: the TL/L column's angle.
        s_shaped: whether the spine bends both ways.
        centreline_weight: how the tilts were read.
    """

    pt: Curve
    mt: Curve
    tl: Curve
    s_shaped: bool
    centreline_weight: float = 0.0  # how the tilts were read (0: the definition, corners alone)
    largest: float = field(init=False)
    band: str = field(init=False)

    def __post_init__(self) -> None:
        largest = max(self.pt.angle, self.mt.angle, self.tl.angle)
        object.__setattr__(self, "largest", largest)
        object.__setattr__(self, "band", severity_band(largest))

    @property
    def angles(self) -> tuple[float, float, float]:
        return self.pt.angle, self.mt.angle, self.tl.angle

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"largest": self.largest, "band": self.band, "bands": BAND_TEXT,
                                  "shape": "S" if self.s_shaped else "C", "centreline_weight": self.centreline_weight}
        for name, c in (("pt", self.pt), ("mt", self.mt), ("tl", self.tl)):
            up, lo, apex = c.levels
            out[name] = {"angle": c.angle, "upper_end": up, "lower_end": lo, "apex": apex}
        return out


def severity_band(angle: float) -> str:
    """The band of a Cobb angle (see :data:`BAND_TEXT`)."""
    if angle > 40.0:
        return "severe"
    return "moderate" if angle >= 25.0 else "mild" if angle >= 10.0 else "none"


def _apex(v: np.ndarray, a: int, b: int) -> int:
    lo, hi = min(a, b), max(a, b)
    if hi - lo < 2:
        return lo
    centres = v.mean(axis=1)
    p, q = centres[lo], centres[hi]
    d = q - p
    n = np.array([-d[1], d[0]]) / max(float(np.linalg.norm(d)), 1e-12)
    dist = np.abs((centres[lo + 1:hi] - p) @ n)
    return lo + 1 + int(np.argmax(dist))


def _curve(v: np.ndarray, ang: np.ndarray, a: int, b: int) -> Curve:
    return Curve(float(ang[a, b]), min(a, b), max(a, b), _apex(v, a, b))


def cobb_angles(landmarks: np.ndarray, image_height: float, centreline_weight: float = 0.0) -> CobbResult:
    """The three Cobb angles of one film (see the module docstring), with end vertebrae and apices.

    Args:
        landmarks: (17, 4, 2) or (68, 2) corner positions in pixels (y down).
        image_height: the film's height in pixels (only the upper/lower-half test of an S uses it).
        centreline_weight: 0 (the dataset's definition, for true corners) to 1: how much of each
            vertebra's tilt is read from the spine's centreline (for predicted corners; see above).
    """
    if not 0.0 <= centreline_weight <= 1.0:
        raise ValueError(f"centreline_weight must be between 0 and 1; got {centreline_weight}")
    v = as_vertebrae(landmarks)
    ang = angle_matrix(vertebra_tilts(v, centreline_weight))
    n = N_VERTEBRAE
    # The most tilted pair; ties go to the upper vertebra first, as a column-wise maximum does.
    upper = int(np.argmax(ang.max(axis=0)))
    lower = int(np.argmax(ang[:, upper]))
    upper, lower = min(upper, lower), max(upper, lower)
    pt = _curve(v, ang, upper, lower)
    centres = endplate_centres(v)
    s_shaped = is_s_shaped(centres)
    if not s_shaped:
        mt, tl = _curve(v, ang, 0, upper), _curve(v, ang, n - 1, lower)
    else:
        k = int(np.argmax(ang[upper, : upper + 1]))  # the most tilted vertebra above the upper end
        mt = _curve(v, ang, k, upper)
        if centres[2 * upper + 1, 1] + centres[2 * lower + 1, 1] < image_height:  # main curve in the upper half
            j = lower + int(np.argmax(ang[lower, lower:]))  # ... and below the lower end
            tl = _curve(v, ang, lower, j)
        else:
            j = int(np.argmax(ang[k, : k + 1]))  # ... and above k
            tl = _curve(v, ang, j, k)
    return CobbResult(pt=pt, mt=mt, tl=tl, s_shaped=s_shaped, centreline_weight=centreline_weight)


def flip_landmarks(landmarks: np.ndarray, width: float) -> np.ndarray:
    """The landmarks of the horizontally mirrored film: x -> width - x, and left and right corners swap,
    so the corner order (upper-left, upper-right, lower-left, lower-right) still holds."""
    v = as_vertebrae(landmarks).copy()
    v[..., 0] = width - v[..., 0]
    return v[:, list(FLIP_CORNERS)]
