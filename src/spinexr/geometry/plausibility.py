"""Is a set of 17 predicted vertebrae a plausible spine? An angle is reported only when it is.

Checks, on (17, 4, 2) corners in film pixels (y down): the vertebrae come in order from top to
bottom; each vertebra's left corners lie left of its right ones and its upper corners above its lower
ones; neighbours do not overlap by more than a quarter of a vertebra's height; and no gap between
neighbours is more than 2.5 times the median spacing (a vertebra skipped or a point lost).
"""

from __future__ import annotations

import numpy as np

from spinexr.geometry.cobb import LEVELS, as_vertebrae


def implausibility(landmarks: np.ndarray, overlap: bool = True) -> list[str]:
    """The reasons the landmarks are not a plausible spine (empty when they are). ``overlap=False``
    leaves out the neighbours' overlap: for corners placed one vertebra at a time (the vertebra
    refiner), where neighbouring endplates across a thin disc can cross by a few pixels while each
    vertebra's own tilt is right; such a spine is judged on the whole-spine model's corners instead."""
    v = as_vertebrae(landmarks)
    centres = v.mean(axis=1)
    reasons: list[str] = []
    dy = np.diff(centres[:, 1])
    if (dy <= 0).any():
        i = int(np.argmax(dy <= 0))
        reasons.append(f"order broken: {LEVELS[i + 1]} is not below {LEVELS[i]}")
    flipped = (v[:, 1, 0] <= v[:, 0, 0]) | (v[:, 3, 0] <= v[:, 2, 0]) | (v[:, 2, 1] <= v[:, 0, 1]) | (v[:, 3, 1] <= v[:, 1, 1])
    if flipped.any():
        reasons.append(f"corners out of place at {LEVELS[int(np.argmax(flipped))]}")
    heights = ((v[:, 2, 1] + v[:, 3, 1]) - (v[:, 0, 1] + v[:, 1, 1])) / 2
    lower = (v[:, 2, 1] + v[:, 3, 1]) / 2
    upper = (v[:, 0, 1] + v[:, 1, 1]) / 2
    overlap_px = lower[:-1] - upper[1:]
    bad = overlap_px > 0.25 * np.maximum(heights[:-1], 1e-6)
    if overlap and bad.any():
        i = int(np.argmax(bad))
        reasons.append(f"{LEVELS[i]} and {LEVELS[i + 1]} overlap")
    spacing = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    med = float(np.median(spacing))
    if med > 0 and (spacing > 2.5 * med).any():
        i = int(np.argmax(spacing > 2.5 * med))
        reasons.append(f"gap between {LEVELS[i]} and {LEVELS[i + 1]} ({spacing[i] / med:.1f}x the median spacing)")
    return reasons
