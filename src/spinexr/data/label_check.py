"""A check of landmark labels before they train a model: what a labelling slip looks like, fixed where
the fix is certain, left out where it is not.

Hand-placed corners go wrong in a few set ways (the AASCE data's own films hold some: a vertebra's
left and right corners swapped, its upper and lower corners swapped, two neighbouring vertebrae
labelled in each other's place). Each of those has one right answer, so it is fixed: corners back to
upper-left, upper-right, lower-left, lower-right; neighbours back into top-to-bottom order.
What is still not a plausible spine afterwards (:func:`spinexr.geometry.plausibility.implausibility`:
overlaps, gaps, a lost point) is left out of training and listed with the reason.

A fix never moves a point: it only gives each point its right name. The angles a fixed label gives
are the same as before wherever the slip did not change which vertebra is which.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spinexr.geometry.cobb import LEVELS, as_vertebrae
from spinexr.geometry.plausibility import implausibility

FIX_KINDS = ("vertebrae reordered", "left and right corners swapped", "upper and lower corners swapped")


@dataclass(frozen=True)
class LabelCheck:
    """One film's label: the landmarks with their names put right (``landmarks``, (17, 4, 2)), what was
    fixed, and what is still wrong (``problems``; empty: the label can train).

    Args:
        landmarks: the corners with their names put right.
        fixes: what was fixed.
        problems: what is still wrong.
    """

    landmarks: np.ndarray
    fixes: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        return not self.problems


def _reorder(v: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Neighbours labelled in each other's place are swapped back. A vertebra found far from its place
    (the AASCE labels hold films whose 17th vertebra sits above T1) has no certain fix: renaming every
    vertebra would shift the levels, so it is left for the plausibility check to exclude."""
    order = np.argsort(v.mean(axis=1)[:, 1], kind="stable")
    shift = np.abs(order - np.arange(len(order)))
    if not shift.any() or shift.max() > 1:
        return v, []
    moved = [LEVELS[i] for i in np.flatnonzero(shift)]
    return v[order], [f"vertebrae reordered ({' and '.join(moved)} swapped)"]


def _name_corners(v: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Within each vertebra: the upper pair above the lower pair, and in each pair the left point first."""
    v = v.copy()
    fixes: list[str] = []
    upper, lower = v[:, :2].mean(axis=1)[:, 1], v[:, 2:].mean(axis=1)[:, 1]
    for i in np.flatnonzero(upper > lower):
        v[i] = v[i][[2, 3, 0, 1]]
        fixes.append(f"upper and lower corners swapped at {LEVELS[i]}")
    for a, b in ((0, 1), (2, 3)):
        for i in np.flatnonzero(v[:, a, 0] > v[:, b, 0]):
            v[i, [a, b]] = v[i, [b, a]]
            fixes.append(f"left and right corners swapped at {LEVELS[i]}")
    return v, fixes


def check_label(landmarks: np.ndarray) -> LabelCheck:
    """Fix what has one right answer, then say what is still wrong."""
    v, fixes = _name_corners(as_vertebrae(np.asarray(landmarks, dtype=np.float64)))
    v, moved = _reorder(v)
    fixes += moved
    return LabelCheck(v, tuple(dict.fromkeys(fixes)), tuple(implausibility(v)))


@dataclass
class LabelReport:
    """What the check did to a landmark set: counts by kind, and every film it fixed or left out.

    Args:
        n: films checked.
        fixed: fixes by film.
        excluded: problems by film left out.
    """

    n: int = 0
    fixed: dict[str, list[str]] = field(default_factory=dict)  # film -> fixes
    excluded: dict[str, list[str]] = field(default_factory=dict)  # film -> problems left

    def to_dict(self) -> dict[str, Any]:
        kinds = Counter(next(k for k in FIX_KINDS if f.startswith(k)) for fs in self.fixed.values() for f in fs)
        return {"n": self.n, "clean": self.n - len(self.fixed) - len([f for f in self.excluded if f not in self.fixed]),
                "fixed": len(self.fixed), "excluded": len(self.excluded), "fixes_by_kind": dict(kinds),
                "fixed_films": self.fixed, "excluded_films": self.excluded}


def check_labels(records: list) -> tuple[list[LabelCheck], LabelReport]:
    """Every record's label checked (records with ``landmarks`` and ``path``); the checks in order, and the report."""
    checks, report = [], LabelReport(n=len(records))
    for r in records:
        c = check_label(r.landmarks)
        checks.append(c)
        if c.fixes:
            report.fixed[str(r.path)] = list(c.fixes)
        if c.problems:
            report.excluded[str(r.path)] = list(c.problems)
    return checks, report


__all__ = ["FIX_KINDS", "LabelCheck", "LabelReport", "check_label", "check_labels"]
