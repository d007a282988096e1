"""Synthetic spine radiographs with known labels and severities, for the demo and the tests.

Two views are drawn:

* **AP full spine**: T1-L5 vertebral bodies with pedicles and spinous processes, discs, ribs, pelvis
  and sacrum over a soft-tissue gradient. Normal is straight; Scoliosis bends the spine into a C- or
  S-curve whose Cobb angle is exactly the one asked for: each vertebra's endplate tilt follows
  ``theta(s) = theta_max * sin(k * pi * s / L)`` along the curve, and the end vertebrae sit where the
  tilt is +/- ``theta_max``, so Cobb = 2 * theta_max.
* **Lateral lumbar**: L1-L5 on a sloped sacrum with lordosis, pedicles and spinous processes.
  Spondylolisthesis slides L4 (on L5) or L5 (on S1) anteriorly by a slip percentage inside the chosen
  Meyerding grade (I: 0-25 %, II: 25-50 %, III: 50-75 %, IV: 75-100 %), measured as the displacement
  of the slipped vertebra's posterior-inferior corner along the lower endplate, over that endplate's
  length.

Normal appears in both views, so the view alone does not give the class.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from tqdm.auto import tqdm

from spinexr.data.dicom_film import FilmIdentity, write_dx
from spinexr.data.imread import read_image
from spinexr.data.landmarks import write_landmark_csv
from spinexr.geometry.cobb import cobb_angles

MEYERDING = {1: (0.0, 25.0), 2: (25.0, 50.0), 3: (50.0, 75.0), 4: (75.0, 100.0)}
AP_LEVELS = [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
LAT_LEVELS = ["L1", "L2", "L3", "L4", "L5", "S1"]


@dataclass
class Vertebra:
    """A vertebral body as drawn: level name, centre, half sizes, tilt and four corners (x, y).

    Args:
        level: its name (T1 .. L5).
        center: (x, y) pixels.
        half_w: half its width.
        half_h: half its height.
        tilt_deg: its tilt.
        corners: its four corners by name.
    """

    level: str
    center: tuple[float, float]
    half_w: float
    half_h: float
    tilt_deg: float
    corners: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class SynthCase:
    """One synthetic radiograph and what it shows.

    Args:
        image: the film, uint8 H x W.
        label: its class.
        view: ``AP`` or ``lateral``.
        vertebrae: the vertebrae drawn.
        cobb_deg: the curve drawn.
        curve: ``C`` or ``S``.
        slip_pct: the slip drawn.
        grade: its Meyerding grade.
        slip_level: the vertebra that slips.
    """

    image: np.ndarray  # uint8 H x W
    label: str
    view: str
    vertebrae: list[Vertebra]
    cobb_deg: float = 0.0
    curve: str = ""
    slip_pct: float = 0.0
    grade: int = 0
    slip_level: str = ""


def _rot(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def _corners(center: np.ndarray, hw: float, hh: float, theta: float) -> dict[str, tuple[float, float]]:
    """Corners in image coordinates (y down). For a lateral view +x is posterior."""
    r = _rot(theta)
    local = {"sup_left": (-hw, -hh), "sup_right": (hw, -hh), "inf_right": (hw, hh), "inf_left": (-hw, hh)}
    return {k: tuple((center + r @ np.array(v)).tolist()) for k, v in local.items()}  # type: ignore[misc]


def _poly(center: np.ndarray, pts: list[tuple[float, float]], theta: float) -> list[tuple[float, float]]:
    r = _rot(theta)
    return [tuple((center + r @ np.array(p)).tolist()) for p in pts]  # type: ignore[misc]


def _ellipse_pts(cx: float, cy: float, rx: float, ry: float, n: int = 24) -> list[tuple[float, float]]:
    return [(cx + rx * math.cos(2 * math.pi * i / n), cy + ry * math.sin(2 * math.pi * i / n)) for i in range(n)]


class _Canvas:
    """Float layers composed additively, then blurred, noised and quantised."""

    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = w, h
        self.acc = np.zeros((h, w), dtype=np.float32)

    def add(self, draw_fn: Any, value: float, blur: float = 0.0) -> None:
        layer = Image.new("L", (self.w, self.h), 0)
        draw_fn(ImageDraw.Draw(layer))
        if blur > 0:
            layer = layer.filter(ImageFilter.GaussianBlur(blur))
        self.acc += value * np.asarray(layer, dtype=np.float32) / 255.0

    def finish(self, rng: np.random.Generator, blur: float, noise: float) -> np.ndarray:
        img = Image.fromarray(np.clip(self.acc * 255, 0, 255).astype(np.uint8))
        img = img.filter(ImageFilter.GaussianBlur(blur))
        a = np.asarray(img, dtype=np.float32) / 255.0
        # Low-frequency mottle (bowel gas, overlying tissue) plus quantum noise.
        small = rng.normal(0, 1, (max(2, self.h // 40), max(2, self.w // 40))).astype(np.float32)
        mottle = np.asarray(Image.fromarray(small).resize((self.w, self.h), Image.Resampling.BICUBIC))
        a = a * (1 + 0.06 * mottle) + rng.normal(0, noise, a.shape).astype(np.float32)
        gamma = rng.uniform(0.8, 1.25)
        a = np.clip(a, 0, 1) ** gamma
        return (np.clip(a, 0, 1) * 255).astype(np.uint8)


def _soft_tissue(cv: _Canvas, rng: np.random.Generator, lateral: bool) -> None:
    x = np.linspace(-1, 1, cv.w)[None, :]
    y = np.linspace(0, 1, cv.h)[:, None]
    if lateral:
        body = np.clip(1 - np.abs(x + 0.1) ** 2.2, 0, 1) * 0.28 + 0.04
    else:
        body = np.clip(1 - np.abs(x / rng.uniform(0.85, 1.0)) ** 3, 0, 1) * 0.25 + 0.03
    cv.acc += (body + 0.03 * y).astype(np.float32)


def _ap_chain(rng: np.random.Generator, w: int, h: int, cobb_deg: float, curve: str) -> list[Vertebra]:
    """T1..L5 as a chain along the curve: vertebral heights grow from T1 to L5, spacing includes the disc,
    and patient size and positioning vary (body scale, where the spine starts, lateral offset)."""
    n = len(AP_LEVELS)
    size = rng.uniform(0.82, 1.05)
    heights = np.linspace(0.030, 0.046, n) * h * size * rng.uniform(0.95, 1.05, n)
    disc = np.linspace(0.008, 0.013, n) * h * size * rng.uniform(0.8, 1.2, n)
    widths = np.linspace(0.11, 0.19, n) * h * 0.5 * size * rng.uniform(0.9, 1.1)
    theta_max = math.radians(cobb_deg / 2.0)
    sign = rng.choice([-1.0, 1.0])
    span, k = (12, 3) if curve == "S" else (8, 2)
    start = int(rng.integers(1, n - span)) if cobb_deg > 0 else 0

    def tilt(s: float) -> float:
        if cobb_deg <= 0 or s < start or s > start + span:
            return 0.0
        return sign * theta_max * math.sin(k * math.pi * (s - start) / span)

    jitter = rng.normal(0, math.radians(0.4), n) if cobb_deg <= 0 else np.zeros(n)
    pos = np.array([w * rng.uniform(0.42, 0.58), h * rng.uniform(0.01, 0.12) + heights[0] / 2])
    verts: list[Vertebra] = []
    for j in range(n):
        th = tilt(j) + jitter[j]
        verts.append(Vertebra(AP_LEVELS[j], tuple(pos.tolist()), widths[j] * 0.5 * 1.0, heights[j] / 2, math.degrees(th),
                              _corners(pos, widths[j] * 0.5, heights[j] / 2, th)))
        if j + 1 < n:
            step = heights[j] / 2 + disc[j] + heights[j + 1] / 2
            mid = tilt(j + 0.5) + (jitter[j] + jitter[j + 1]) / 2
            # The chain runs along the tilt: endplates stay perpendicular to the spine's axis.
            pos = pos + step * np.array([-math.sin(mid), math.cos(mid)])
    return verts


def _ap_ribs_and_pelvis(cv: _Canvas, rng: np.random.Generator, verts: list[Vertebra], w: int, h: int) -> None:
    """Ribs (T1-T12, arcs from the costovertebral joint outward and down), iliac wings and the sacrum under L5."""
    for j in range(12):
        v = verts[j]
        cx, cy = v.center
        for side in (-1, 1):
            span_x = w * rng.uniform(0.33, 0.40) * (0.6 + 0.4 * math.sin(math.pi * (j + 2) / 15))
            pts = []
            for t in np.linspace(0, 1, 20):
                x = cx + side * (v.half_w * 0.8 + span_x * t)
                y = cy + h * 0.02 * math.sin(math.pi * t) * -1 + h * 0.07 * t ** 1.6
                pts.append((x, y))
            thick = max(2, int(h * 0.007))
            cv.add(lambda d, p=pts, t_=thick: d.line(p, fill=255, width=t_), 0.14, blur=1.0)
    l5 = verts[-1]
    bx, by = l5.center
    pel_w = w * 0.42
    for side in (-1, 1):
        ex = bx + side * pel_w * 0.55
        cv.add(lambda d, e=ex: d.ellipse([e - pel_w * 0.45, by + h * 0.03, e + pel_w * 0.45, by + h * 0.20],
                                         outline=255, width=max(3, int(h * 0.01))), 0.22, blur=2.0)
        cv.add(lambda d, e=ex: d.ellipse([e - pel_w * 0.40, by + h * 0.04, e + pel_w * 0.40, by + h * 0.19],
                                         fill=255), 0.08, blur=4.0)
    sac = [(bx - l5.half_w * 0.9, by + l5.half_h + h * 0.012), (bx + l5.half_w * 0.9, by + l5.half_h + h * 0.012),
           (bx + l5.half_w * 0.2, by + h * 0.16), (bx - l5.half_w * 0.2, by + h * 0.16)]
    cv.add(lambda d: d.polygon(sac, fill=255), 0.30, blur=2.0)


def _ap_vertebrae(cv: _Canvas, verts: list[Vertebra], h: int) -> None:
    """Vertebral bodies, pedicles, spinous processes."""
    for v in verts:
        c = np.array(v.center)
        th = math.radians(v.tilt_deg)
        body = list(v.corners.values())
        cv.add(lambda d, b=body: d.polygon(b, fill=255), 0.24, blur=1.2)
        cv.add(lambda d, b=body: d.polygon(b, outline=255, width=max(2, int(h * 0.003))), 0.18, blur=0.8)
        for side in (-1, 1):
            ped = _poly(c, _ellipse_pts(side * v.half_w * 0.6, -v.half_h * 0.25, v.half_w * 0.16, v.half_h * 0.38), th)
            cv.add(lambda d, p=ped: d.polygon(p, outline=255, width=max(2, int(h * 0.003))), 0.22, blur=0.8)
        spin = _poly(c, [(-v.half_w * 0.08, -v.half_h * 0.3), (v.half_w * 0.08, -v.half_h * 0.3),
                         (v.half_w * 0.05, v.half_h * 0.9), (-v.half_w * 0.05, v.half_h * 0.9)], th)
        cv.add(lambda d, p=spin: d.polygon(p, fill=255), 0.12, blur=1.0)


def render_ap(
    rng: np.random.Generator,
    cobb_deg: float = 0.0,
    curve: str = "C",
    scale: float = 1.0,
) -> SynthCase:
    """An AP full-spine view; ``cobb_deg`` 0 draws a straight (Normal) spine.

    Args:
        rng: the random generator every drawn detail comes from.
        cobb_deg: the curve's Cobb angle in degrees.
        curve: ``C`` (one curve) or ``S`` (two).
        scale: the film's size relative to about 1000 px high.
    """
    h = int(round(rng.uniform(900, 1000) * scale))
    w = int(round(rng.uniform(330, 430) * scale))
    cv = _Canvas(w, h)
    _soft_tissue(cv, rng, lateral=False)
    verts = _ap_chain(rng, w, h, cobb_deg, curve)
    _ap_ribs_and_pelvis(cv, rng, verts, w, h)
    _ap_vertebrae(cv, verts, h)
    img = cv.finish(rng, blur=rng.uniform(0.8, 1.6) * scale, noise=rng.uniform(0.015, 0.035))
    label = "Scoliosis" if cobb_deg > 0 else "Normal"
    return SynthCase(img, label, "AP", verts, cobb_deg=cobb_deg, curve=curve if cobb_deg > 0 else "")


def _lateral_bones(cv: _Canvas, verts: dict[str, Vertebra], w: int, h: int) -> None:
    """The iliac crest's shadow over the lower lumbar spine, the sacrum, and each lumbar body with its
    pedicle and spinous process."""
    # Iliac crest shadow over the lower lumbar spine.
    ic = verts["L5"].center
    cv.add(lambda d: d.ellipse([ic[0] - w * 0.35, ic[1] - h * 0.10, ic[0] + w * 0.30, ic[1] + h * 0.30], fill=255),
           0.08, blur=8.0)
    s1 = verts["S1"]
    sc = np.array(s1.center)
    sacrum = _poly(sc, [(-s1.half_w, -s1.half_h), (s1.half_w, -s1.half_h), (s1.half_w * 0.9, s1.half_h * 5),
                        (-s1.half_w * 0.2, s1.half_h * 4.5)], math.radians(s1.tilt_deg))
    cv.add(lambda d: d.polygon(sacrum, fill=255), 0.30, blur=2.0)
    for lev in LAT_LEVELS[:-1]:
        v = verts[lev]
        c = np.array(v.center)
        th = math.radians(v.tilt_deg)
        body = list(v.corners.values())
        cv.add(lambda d, b=body: d.polygon(b, fill=255), 0.24, blur=1.2)
        cv.add(lambda d, b=body: d.polygon(b, outline=255, width=max(2, int(h * 0.004))), 0.2, blur=0.8)
        ped = _poly(c, [(v.half_w, -v.half_h * 0.7), (v.half_w * 1.7, -v.half_h * 0.6),
                        (v.half_w * 1.7, v.half_h * 0.1), (v.half_w, v.half_h * 0.0)], th)
        cv.add(lambda d, p=ped: d.polygon(p, fill=255), 0.2, blur=1.5)
        spin = _poly(c, [(v.half_w * 1.7, -v.half_h * 0.4), (v.half_w * 2.6, -v.half_h * 0.1),
                         (v.half_w * 2.6, v.half_h * 0.5), (v.half_w * 1.7, v.half_h * 0.4)], th)
        cv.add(lambda d, p=spin: d.polygon(p, fill=255), 0.22, blur=1.5)


def render_lateral(
    rng: np.random.Generator,
    slip_pct: float = 0.0,
    slip_level: str = "L5",
    scale: float = 1.0,
) -> SynthCase:
    """A lateral lumbar view (anterior to the left); ``slip_pct`` > 0 slides ``slip_level`` forward.

    Args:
        rng: the random generator every drawn detail comes from.
        slip_pct: the slip as a percentage of the vertebra below's depth.
        slip_level: the vertebra that slips (``L4`` or ``L5``).
        scale: the film's size relative to about 700 px high.
    """
    h = int(round(rng.uniform(620, 720) * scale))
    w = int(round(rng.uniform(520, 620) * scale))
    cv = _Canvas(w, h)
    _soft_tissue(cv, rng, lateral=True)
    size = rng.uniform(0.8, 1.1)
    hw = 0.085 * h * size  # half width (antero-posterior depth) of a lumbar body
    hh = np.array([0.045, 0.047, 0.049, 0.050, 0.048]) * h * size * rng.uniform(0.9, 1.1, 5)  # L1..L5
    gap = 0.022 * h * size * rng.uniform(0.7, 1.3)
    # Tilts from S1 upwards (negative: the endplate slopes down anteriorly), giving lordosis.
    sacral = rng.uniform(32, 44)
    tilts = {"S1": -sacral}
    tilts["L5"] = tilts["S1"] + rng.uniform(10, 14)
    tilts["L4"] = tilts["L5"] + rng.uniform(8, 12)
    tilts["L3"] = tilts["L4"] + rng.uniform(6, 10)
    tilts["L2"] = tilts["L3"] + rng.uniform(3, 7)
    tilts["L1"] = tilts["L2"] + rng.uniform(1, 5)
    s1_c = np.array([w * rng.uniform(0.45, 0.65), h * rng.uniform(0.80, 0.95)])
    s1_t = math.radians(tilts["S1"])
    verts: dict[str, Vertebra] = {
        "S1": Vertebra("S1", tuple(s1_c.tolist()), hw * 1.05, 0.05 * h * size, tilts["S1"],
                       _corners(s1_c, hw * 1.05, 0.05 * h * size, s1_t))
    }
    below = "S1"
    for k, lev in enumerate(["L5", "L4", "L3", "L2", "L1"]):
        lo = verts[below]
        lt = math.radians(lo.tilt_deg)
        p_lo = np.array(lo.corners["sup_right"])  # posterior-superior corner of the lower body
        e = _rot(lt) @ np.array([-1.0, 0.0])  # along the lower endplate, towards anterior
        n_up = _rot(lt) @ np.array([0.0, -1.0])
        end_len = 2 * lo.half_w
        shift = slip_pct / 100.0 * end_len if lev == slip_level else 0.0
        p_up = p_lo + gap * n_up + shift * e  # posterior-inferior corner of this body
        th = math.radians(tilts[lev])
        hh_l = float(hh[4 - k])
        c = p_up - _rot(th) @ np.array([hw, hh_l])
        # Everything above a slipped level moves with it (the chain is built bottom-up).
        verts[lev] = Vertebra(lev, tuple(c.tolist()), hw, hh_l, tilts[lev], _corners(c, hw, hh_l, th))
        below = lev
    _lateral_bones(cv, verts, w, h)
    img = cv.finish(rng, blur=rng.uniform(0.8, 1.6) * scale, noise=rng.uniform(0.015, 0.035))
    grade = next((g for g, (lo_, hi_) in MEYERDING.items() if lo_ < slip_pct <= hi_), 0)
    label = "Spondylolisthesis" if slip_pct > 0 else "Normal"
    order = [verts[k] for k in LAT_LEVELS]
    return SynthCase(img, label, "lateral", order, slip_pct=slip_pct, grade=grade,
                     slip_level=slip_level if slip_pct > 0 else "")


def render_chest(rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """A PA chest radiograph (lungs, ribs, heart, clavicles): a negative control for OOD checks."""
    h = int(round(rng.uniform(800, 900) * scale))
    w = int(round(rng.uniform(760, 860) * scale))
    cv = _Canvas(w, h)
    y, x = np.mgrid[0:h, 0:w]
    cv.acc += (0.45 * np.exp(-(((x - w / 2) / (0.45 * w)) ** 6 + ((y - h * 0.55) / (0.55 * h)) ** 6))).astype(np.float32)
    for side in (-1, 1):
        cx = w / 2 + side * w * 0.2
        cv.add(lambda d, c=cx: d.ellipse([c - w * 0.15, h * 0.18, c + w * 0.15, h * 0.78], fill=255), -0.3, blur=12)
        for k in range(9):
            yy = h * (0.2 + 0.065 * k)
            pts = [(w / 2 + side * w * 0.04 * (1 + t * 8), yy + h * 0.06 * math.sin(math.pi * t) - h * 0.04 * t)
                   for t in np.linspace(0, 1, 20)]
            cv.add(lambda d, p=pts: d.line(p, fill=255, width=max(3, int(h * 0.012))), 0.12, blur=2)
        cv.add(lambda d, s=side: d.line([(w / 2 + s * w * 0.03, h * 0.17), (w / 2 + s * w * 0.3, h * 0.12)],
                                        fill=255, width=max(4, int(h * 0.015))), 0.2, blur=2)
    cv.add(lambda d: d.ellipse([w * 0.42, h * 0.45, w * 0.68, h * 0.75], fill=255), 0.25, blur=10)
    cv.add(lambda d: d.rectangle([w * 0.47, h * 0.05, w * 0.53, h * 0.95], fill=255), 0.15, blur=3)
    return cv.finish(rng, blur=1.2 * scale, noise=0.02)


def write_negative_controls(out_dir: str | Path) -> list[Path]:
    """Images a spine model must flag as out of distribution: photos, chest films, a blank film, a document.

    The photos are scikit-learn's bundled sample images (offline); the rest are drawn here.
    """
    from sklearn.datasets import load_sample_images

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, photo in enumerate(load_sample_images().images):
        Image.fromarray(photo).save(out / f"photo{i}.jpg")
        Image.fromarray(photo[::2, ::2].transpose(1, 0, 2).copy()).save(out / f"photo{i}_rot.png")
        paths += [out / f"photo{i}.jpg", out / f"photo{i}_rot.png"]
    for i in range(2):
        Image.fromarray(render_chest(np.random.default_rng(i), scale=0.6)).save(out / f"chest{i}.png")
        paths.append(out / f"chest{i}.png")
    blank = np.clip(np.random.default_rng(0).normal(0.02, 0.01, (700, 300)) * 255, 0, 255).astype(np.uint8)
    Image.fromarray(blank).save(out / "blank.png")
    doc = Image.new("L", (600, 800), 250)
    d = ImageDraw.Draw(doc)
    for k in range(30):
        d.text((40, 30 + 24 * k), f"Lorem ipsum dolor sit amet, radiology report line {k}", fill=20)
    doc.save(out / "document.png")
    return paths + [out / "blank.png", out / "document.png"]


def make_case(label: str, rng: np.random.Generator, scale: float = 1.0, view: str | None = None) -> SynthCase:
    """One case of ``label`` with severities drawn from ``rng``.

    Args:
        label: ``Normal``, ``Scoliosis`` or ``Spondylolisthesis``.
        rng: the random generator.
        scale: the film's size (see :func:`render_ap`).
        view: for a Normal case, ``AP`` or ``lateral`` (None: drawn at random).
    """
    if label == "Scoliosis":
        return render_ap(rng, cobb_deg=float(rng.uniform(10, 60)), curve=str(rng.choice(["C", "S"])), scale=scale)
    if label == "Spondylolisthesis":
        grade = int(rng.choice([1, 2, 3, 4], p=[0.4, 0.3, 0.2, 0.1]))
        lo, hi = MEYERDING[grade]
        return render_lateral(rng, slip_pct=float(rng.uniform(lo + 3, hi - 3)),
                              slip_level=str(rng.choice(["L4", "L5"])), scale=scale)
    view = view or str(rng.choice(["AP", "lateral"]))
    return render_ap(rng, 0.0, scale=scale) if view == "AP" else render_lateral(rng, 0.0, scale=scale)


def synthesize(
    out_dir: str | Path,
    n: int = 60,
    seed: int = 0,
    scale: float = 1.0,
    fmt: str = "jpg",
    progress: bool = False,
) -> Path:
    """Write ``n`` synthetic radiographs as class folders plus ``labels.csv``; returns its path.

    The classes get ``n // 3`` images each (the remainder to Normal); half of Normal is AP and half
    lateral. Deterministic for a given ``seed``: image ``i`` draws from ``default_rng([seed, i])``.
    The AP films' vertebra corners go to ``landmarks.csv`` in the plain landmark format (pixels, with
    the Cobb angles measured on them), so the spine-geometry path runs without real data.

    Args:
        out_dir: the folder to write into.
        n: how many films.
        seed: the seed every film derives from.
        scale: the films' size factor (1.0: about 1000 px tall for an AP film).
        fmt: ``jpg``, ``png`` or ``dcm`` (DX DICOM files, each of its own made-up patient and study).
        progress: show a progress bar.

    Returns:
        the path of ``labels.csv``.
    """

    out = Path(out_dir)
    per = n // 3
    labels = ["Normal"] * (n - 2 * per) + ["Scoliosis"] * per + ["Spondylolisthesis"] * per
    rows = []
    landmark_rows: list[tuple[str, np.ndarray, tuple[float, float, float] | None, str]] = []
    for i, label in enumerate(tqdm(labels, desc="synth", unit="img", disable=not progress)):
        rng = np.random.default_rng([seed, i])
        view = None
        if label == "Normal":
            view = "AP" if i % 2 == 0 else "lateral"
        case = make_case(label, rng, scale=scale, view=view)
        d = out / label
        d.mkdir(parents=True, exist_ok=True)
        name = f"synth_{i:05d}.{fmt}"
        im = Image.fromarray(case.image)
        if fmt == "dcm":  # a DX file of its own made-up patient and study
            write_dx(d / name, case.image, FilmIdentity(patient_id=f"SYNTH-{seed}-{i:05d}",
                                                        patient_name=f"SYNTHETIC^FILM{i:05d}",
                                                        accession=f"SX{seed % 1000:03d}{i:05d}",
                                                        view="AP" if case.view == "AP" else "LL"))
        elif fmt in ("jpg", "jpeg"):
            im.save(d / name, quality=92)
        else:
            im.save(d / name)
        rows.append({
            "path": f"{label}/{name}", "label": label, "group": f"synth_{i:05d}", "view": case.view,
            "cobb_deg": f"{case.cobb_deg:.2f}" if case.cobb_deg else "", "curve": case.curve,
            "slip_pct": f"{case.slip_pct:.2f}" if case.slip_pct else "",
            "meyerding_grade": case.grade or "", "slip_level": case.slip_level,
        })
        if case.view == "AP":
            pts = ap_landmarks(case)
            landmark_rows.append((f"{label}/{name}", pts, cobb_angles(pts, case.image.shape[0]).angles, f"synth_{i:05d}"))
    csv_path = out / "labels.csv"
    with open(csv_path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["path", "label"])
        wr.writeheader()
        wr.writerows(rows)
    if landmark_rows:
        write_landmark_csv(out / "landmarks.csv", landmark_rows)
    return csv_path


def ap_landmarks(case: SynthCase) -> np.ndarray:
    """The (17, 4, 2) corners of an AP case's vertebrae, T1 to L5, in the landmark order
    (upper-left, upper-right, lower-left, lower-right), in pixels."""
    order = ("sup_left", "sup_right", "inf_left", "inf_right")
    return np.array([[v.corners[k] for k in order] for v in case.vertebrae], dtype=np.float64)


def contact_sheet(paths: list[Path], out: str | Path, captions: list[str] | None = None,
                  cols: int = 6, cell: int = 220) -> Path:
    """Tile images (letterboxed into square cells) with captions into one PNG.

    Args:
        paths: the images, in order.
        out: the PNG to write.
        captions: one caption an image (None: their file names).
        cols: images a row.
        cell: each cell's side in pixels.
    """

    rows = max(1, math.ceil(len(paths) / cols))
    sheet = Image.new("L", (cols * cell, rows * (cell + 18)), 0)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, p in enumerate(paths):
        img, _ = read_image(p)
        im = Image.fromarray((img * 255).astype(np.uint8))
        im.thumbnail((cell - 4, cell - 4))
        x0 = (i % cols) * cell + (cell - im.width) // 2
        y0 = (i // cols) * (cell + 18) + (cell - im.height) // 2
        sheet.paste(im, (x0, y0))
        cap = captions[i] if captions else Path(p).parent.name
        draw.text(((i % cols) * cell + 4, (i // cols) * (cell + 18) + cell + 2), cap, fill=255, font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


__all__ = ["MEYERDING", "SynthCase", "Vertebra", "contact_sheet", "make_case", "render_ap",
           "render_lateral", "synthesize"]
