"""Corners a person placed: checked, then measured with the same Cobb code as everything else.

:func:`measure_corners` is what ``POST /v1/measure`` answers and what a saved correction records:
the three angles with end vertebrae and apex, the largest and its band (:mod:`spinexr.geometry.cobb`),
and the plausibility verdict (:mod:`spinexr.geometry.plausibility`, judged as a refined spine is:
order, corners and gaps, since a person places each vertebra as the refiner does). Corners are
checked as landmark labels are when loaded for training (:func:`outside_film`), so a saved
correction can always be trained on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spinexr.geometry.cobb import N_VERTEBRAE, cobb_angles
from spinexr.geometry.curves import measured
from spinexr.geometry.overlay import endplate_lines
from spinexr.geometry.plausibility import implausibility

# Cropped films cut through the lowest vertebrae: a corner a little past the edge is real anatomy
# (the AASCE labels hold one 2.4% below its film); farther out is a labelling error.
OUTSIDE_TOLERANCE = 0.05


def outside_film(pts: np.ndarray, width: float, height: float, tol: float = OUTSIDE_TOLERANCE) -> str | None:
    """Why the (..., 2) points cannot be landmarks of a ``width`` x ``height`` film (NaN, or outside it by
    more than ``tol`` of its side), or None.

    Args:
        pts: (..., 2) points in film pixels.
        width: the film's width.
        height: its height.
        tol: how far outside, as a share of the side, still counts as on the film.
    """
    if not np.isfinite(pts).all():
        return "a landmark is NaN or infinite"
    x, y = pts[..., 0], pts[..., 1]
    out = (x < -tol * width) | (x > (1 + tol) * width) | (y < -tol * height) | (y > (1 + tol) * height)
    if out.any():
        i = int(np.argmax(out))
        return (f"landmark {i + 1} ({x.flat[i]:.1f}, {y.flat[i]:.1f}) lies outside the {width:g}x{height:g} film "
                f"(by more than {tol:.0%} of its side)")
    return None


def check_corners(corners: Any, width: float, height: float) -> np.ndarray:
    """``corners`` ((17, 4, 2) or (68, 2) numbers, x and y in film pixels) as a float64 (17, 4, 2) array,
    or a ValueError saying what is wrong with them.

    Args:
        corners: the corners as numbers (a JSON body's list, an array).
        width: the film's width in pixels.
        height: its height.
    """
    if not (np.isfinite(width) and np.isfinite(height)) or width <= 0 or height <= 0:
        raise ValueError(f"the film's width and height must be positive numbers; got {width} x {height}")
    try:
        a = np.asarray(corners, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("corners must be numbers: 17 vertebrae x 4 corners x (x, y)") from None
    if a.shape == (N_VERTEBRAE * 4, 2):
        a = a.reshape(N_VERTEBRAE, 4, 2)
    if a.shape != (N_VERTEBRAE, 4, 2):
        raise ValueError(f"expected 17 vertebrae x 4 corners x (x, y) = 68 points; got shape {list(a.shape)}")
    bad = outside_film(a, width, height)
    if bad:
        raise ValueError(bad)
    return a


def measure_corners(corners: Any, width: float, height: float, centreline_weight: float = 0.0) -> dict[str, Any]:
    """The measurement of checked corners, in the document's form (:func:`spinexr.geometry.curves.measured`:
    ``curves`` by region, ``pattern``, ``largest``, ``band``, ``aasce_angles``, ...), with ``plausible``,
    ``refused`` (the reasons) and ``endplate_lines`` (per curve, in order, the two lines a reader draws:
    :func:`spinexr.geometry.overlay.curve_lines`).

    Args:
        corners: (17, 4, 2) corners (or 68 points) in film pixels, checked.
        width: the film's width.
        height: its height.
        centreline_weight: how the tilts are read (0: each vertebra's own corners, the definition).
    """
    v = check_corners(corners, width, height)
    reasons = implausibility(v, overlap=False)
    result = cobb_angles(v, height, centreline_weight)
    out = measured(v, result)
    return {**out, "plausible": not reasons, "refused": reasons,
            "endplate_lines": [seg.tolist() for seg in endplate_lines(v, out["curves"], width, centreline_weight)]}


__all__ = ["OUTSIDE_TOLERANCE", "check_corners", "measure_corners", "outside_film"]
