"""Synthetic radiographs: deterministic, labelled, and geometrically what was asked for."""

from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from spinexr.data.synth import MEYERDING, render_ap, render_lateral, synthesize


def _endplate_angle(v) -> float:
    (x0, y0), (x1, y1) = v.corners["sup_left"], v.corners["sup_right"]
    return math.degrees(math.atan2(y1 - y0, x1 - x0))


def measure_cobb(vertebrae) -> float:
    """Cobb angle from the drawn corners: the largest angle between two superior endplates."""
    angles = [_endplate_angle(v) for v in vertebrae]
    return max(angles) - min(angles)


def measure_slip(vertebrae, level: str) -> float:
    """Anterior displacement of ``level``'s posterior-inferior corner over the body below, in %."""
    names = [v.level for v in vertebrae]
    up = vertebrae[names.index(level)]
    lo = vertebrae[names.index(level) + 1]
    p_up = np.array(up.corners["inf_right"])
    post, ant = np.array(lo.corners["sup_right"]), np.array(lo.corners["sup_left"])
    e = ant - post
    return float(np.dot(p_up - post, e) / np.dot(e, e) * 100)


@pytest.mark.parametrize("cobb", [10.0, 25.0, 42.0, 60.0])
@pytest.mark.parametrize("curve", ["C", "S"])
def test_cobb_matches_request(cobb: float, curve: str) -> None:
    case = render_ap(np.random.default_rng(3), cobb_deg=cobb, curve=curve, scale=0.4)
    assert case.label == "Scoliosis"
    assert abs(measure_cobb(case.vertebrae) - cobb) < 2.0
    # The vertebrae are really drawn: bodies are brighter than the background beside the spine.
    img = case.image.astype(float)
    body = np.mean([img[int(v.center[1]), int(v.center[0])] for v in case.vertebrae])
    side = np.mean([img[int(v.center[1]), max(0, int(v.center[0] - 3 * v.half_w))] for v in case.vertebrae])
    assert body > side + 15


def test_normal_ap_is_straight() -> None:
    case = render_ap(np.random.default_rng(5), 0.0, scale=0.4)
    assert case.label == "Normal" and measure_cobb(case.vertebrae) < 5.0


@pytest.mark.parametrize("grade", [1, 2, 3, 4])
@pytest.mark.parametrize("level", ["L4", "L5"])
def test_slip_matches_grade(grade: int, level: str) -> None:
    lo, hi = MEYERDING[grade]
    slip = (lo + hi) / 2
    case = render_lateral(np.random.default_rng(grade), slip_pct=slip, slip_level=level, scale=0.4)
    measured = measure_slip(case.vertebrae, level)
    assert lo < measured <= hi
    assert case.grade == grade
    other = "L3" if level == "L4" else "L4"
    assert abs(measure_slip(case.vertebrae, other)) < 1.0  # only the chosen level slips


def test_normal_lateral_has_no_slip() -> None:
    case = render_lateral(np.random.default_rng(1), 0.0, scale=0.4)
    assert case.label == "Normal"
    assert all(abs(measure_slip(case.vertebrae, lv)) < 1.0 for lv in ("L1", "L2", "L3", "L4", "L5"))


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_for_seed(tmp_path: Path) -> None:
    synthesize(tmp_path / "a", n=6, seed=11, scale=0.25)
    synthesize(tmp_path / "b", n=6, seed=11, scale=0.25)
    synthesize(tmp_path / "c", n=6, seed=12, scale=0.25)
    da, db, dc = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert da == db
    assert da != dc


def test_labels_csv_and_views(synth_dir: Path) -> None:
    rows = list(csv.DictReader(open(synth_dir / "labels.csv")))
    assert len(rows) == 30
    by = {}
    for r in rows:
        by.setdefault(r["label"], set()).add(r["view"])
        assert (synth_dir / r["path"]).is_file()
        if r["label"] == "Scoliosis":
            assert 10 <= float(r["cobb_deg"]) <= 60 and r["curve"] in ("C", "S")
        if r["label"] == "Spondylolisthesis":
            g = int(r["meyerding_grade"])
            assert MEYERDING[g][0] < float(r["slip_pct"]) <= MEYERDING[g][1]
    assert by["Normal"] == {"AP", "lateral"}  # view alone does not give the class
    assert by["Scoliosis"] == {"AP"} and by["Spondylolisthesis"] == {"lateral"}
