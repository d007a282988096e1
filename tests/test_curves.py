"""Curves named as a radiologist names them: regions by apex, convexity side, end vertebrae, the major curve;
none under 10 degrees; the major curve is the AASCE largest angle on every AASCE film."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinexr.data.landmarks import read_aasce
from spinexr.geometry.cobb import cobb_angles
from spinexr.geometry.curves import apex_name, find_curves, pattern, region

AASCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "aasce-spine-ap"


def spine(offset) -> np.ndarray:
    """17 vertebrae (T1 at the top) along x = 200 + offset(y), each square to the spine's axis there:
    (17, 4, 2) corners (upper-left, upper-right, lower-left, lower-right), y down."""
    ys = 100 + 40 * np.arange(17, dtype=float)
    out = []
    for y in ys:
        x = 200 + offset(y)
        slope = (offset(y + 0.5) - offset(y - 0.5))  # dx/dy
        axis = np.array([slope, 1.0]) / np.hypot(slope, 1.0)  # down the spine
        across = np.array([axis[1], -axis[0]])  # to the image's right
        c = np.array([x, y])
        out.append([c - 15 * across - 15 * axis, c + 15 * across - 15 * axis,
                    c - 15 * across + 15 * axis, c + 15 * across + 15 * axis])
    return np.array(out)


TOP, BOTTOM = 100.0, 740.0  # the heights of T1's and L5's centres


def arc(amp: float):
    """One arc over the whole spine, ``amp`` pixels to the image's right at T9 (negative: left): every
    vertebra tilted a little more than the one above, as in a C curve."""
    return lambda y: amp * np.sin(np.pi * (y - TOP) / (BOTTOM - TOP))


def s_curve(amp: float):
    """Two arcs, the upper (apex about T7) to the image's right and larger, the lower (apex about L3) to the left."""
    return lambda y: amp * np.sin(2 * np.pi * ((y - TOP) / (BOTTOM - TOP) - 0.1)) * (1.2 - 0.4 * (y - TOP) / (BOTTOM - TOP))


def test_a_right_thoracic_c_curve() -> None:
    c_spine = spine(arc(80))
    curves = find_curves(c_spine)
    assert len(curves) == 1
    c = curves[0]
    assert c.major and c.region == "main thoracic" and c.side == "image right" and c.apex in ("T9", "T8-T9", "T9-T10")
    assert c.angle == pytest.approx(cobb_angles(c_spine, 900).largest, abs=1e-9) and c.angle > 30
    assert (c.upper_end, c.lower_end) == ("T1", "L5")
    # the patient's side from the film's orientation: rows running to the patient's left
    assert find_curves(c_spine, orientation=("L", "F"))[0].side == "left"
    assert find_curves(c_spine, orientation=("R", "F"))[0].side == "right"
    assert find_curves(spine(arc(-80)))[0].side == "image left"
    assert pattern(curves) == "single image right main thoracic"


def test_an_s_right_thoracic_and_left_lumbar() -> None:
    s = s_curve(70)
    curves = find_curves(spine(s), orientation=("L", "F"))
    assert [c.region for c in curves] == ["main thoracic", "lumbar"]
    assert [c.side for c in curves] == ["left", "right"]  # opposite convexities
    assert curves[0].lower_end == curves[1].upper_end  # adjacent curves share their end vertebra
    assert sum(c.major for c in curves) == 1
    major = next(c for c in curves if c.major)
    assert major.angle == max(c.angle for c in curves) == pytest.approx(cobb_angles(spine(s), 900).largest)
    assert pattern(curves).startswith("double: left main thoracic and right lumbar")


def test_a_straight_spine_and_a_small_asymmetry_have_no_curve() -> None:
    assert find_curves(spine(lambda y: 0 * y)) == []
    small = spine(arc(15))
    assert 5 < cobb_angles(small, 900).largest < 10  # a 9-degree-ish asymmetry: not scoliosis
    assert find_curves(small) == [] and pattern([]).startswith("no curve")


def test_regions_by_apex() -> None:
    assert [region(p) for p in (0, 2, 4, 4.5, 8, 10.5, 11, 11.5, 12, 12.5, 14, 16)] == [
        "proximal thoracic"] * 3 + ["main thoracic"] * 3 + ["thoracolumbar"] * 3 + ["lumbar"] * 3
    assert apex_name(8) == "T9" and apex_name(10.5) == "T11-T12" and apex_name(11.5) == "T12-L1"


@pytest.mark.realdata
def test_on_every_aasce_film_the_major_curve_is_the_largest_angle() -> None:
    if not (AASCE / "labels").is_dir():
        pytest.skip(f"AASCE data not found at {AASCE} (it lives in ../shared beside the repository)")
    ds = read_aasce(AASCE)
    for r in ds.records:
        curves = find_curves(r.landmarks)
        largest = max(r.angles)
        if largest < 10:
            assert curves == [], r.name
            continue
        major = [c for c in curves if c.major]
        assert len(major) == 1 and abs(major[0].angle - largest) <= 0.1, (r.name, largest, curves)
