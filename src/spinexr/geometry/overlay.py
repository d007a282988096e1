"""The spine-geometry overlay, drawn on the film at its original size: every vertebra's corners, the
endplate lines of each curve's end vertebrae extended across the film (the curves by region:
:mod:`spinexr.geometry.curves`), each curve's name and angle beside its upper end vertebra, and the largest
angle (or, for a spine the plausibility check refused, the reason and no angle)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from spinexr.geometry.cobb import BAND_TEXT, LEVELS, CobbResult, as_vertebrae, vertebra_tilts
from spinexr.geometry.curves import RegionalCurve, find_curves

# One colour a curve, top to bottom (the page draws with the same ones).
CURVE_COLOURS = ((255, 90, 60), (60, 200, 255), (255, 215, 0), (190, 120, 255))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow before 10.1 has one bitmap size
        return ImageFont.load_default()


# An endplate line is drawn across this share of the film's width, centred on the endplate.
ENDPLATE_LINE_SPAN = 0.44


def _along(mid: np.ndarray, direction: np.ndarray, half: float) -> np.ndarray:
    u = direction / max(float(np.linalg.norm(direction)), 1e-9)
    return np.stack([mid - u * half, mid + u * half])


def curve_lines(landmarks: np.ndarray, upper_end: str, lower_end: str, width: float,
                centreline_weight: float = 0.0) -> np.ndarray:
    """The two lines a curve's angle is measured between, (2, 2, 2): through the middle of the upper endplate
    of its upper end vertebra and the middle of the lower endplate of its lower end vertebra (levels,
    ``T5``), each along its vertebra's tilt as the angle reads it (:func:`~spinexr.geometry.cobb.vertebra_tilts`:
    the midline, or its blend with the centreline), each a segment (two (x, y) points in film pixels, left to
    right) of :data:`ENDPLATE_LINE_SPAN` times the film's width. The angle between them is the curve's angle.
    The overlay PNG, the page, the DICOM presentation state and the SR's coordinates are these same lines.

    Args:
        landmarks: (17, 4, 2) corners (or 68 points) in film pixels.
        upper_end: the upper end vertebra's level.
        lower_end: the lower end vertebra's level.
        width: the film's width in pixels.
        centreline_weight: how the tilts are read, as the angle was (the document's ``centreline_weight``).
    """
    v = as_vertebrae(landmarks)
    tilts = vertebra_tilts(v, centreline_weight)
    half = width * ENDPLATE_LINE_SPAN / 2
    u, lo = LEVELS.index(upper_end), LEVELS.index(lower_end)
    return np.stack([_along((v[u][0] + v[u][1]) / 2, tilts[u], half),
                     _along((v[lo][2] + v[lo][3]) / 2, tilts[lo], half)])


def clip_segment(p: np.ndarray, q: np.ndarray, width: float, height: float) -> np.ndarray | None:
    """The part of segment ``p``-``q`` inside ``[0, width] x [0, height]`` (Liang-Barsky), None if none is.

    Args:
        p: the segment's start, (x, y) film pixels.
        q: its end.
        width: the film's width in pixels.
        height: its height.

    Returns:
        the clipped segment as a (2, 2) array, or None.
    """
    t0, t1 = 0.0, 1.0
    d = q - p
    for num, den in ((p[0], -d[0]), (width - p[0], d[0]), (p[1], -d[1]), (height - p[1], d[1])):
        if den == 0:
            if num < 0:
                return None
            continue
        t = num / den
        if den < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
    if t0 > t1:
        return None
    return np.clip(np.stack([p + t0 * d, p + t1 * d]), [0.0, 0.0], [width, height])  # no -1e-16 from rounding


def endplate_lines(landmarks: np.ndarray, curves: Sequence[RegionalCurve | dict], width: float,
                   centreline_weight: float = 0.0) -> list[np.ndarray]:
    """:func:`curve_lines` of each curve (a :class:`~spinexr.geometry.curves.RegionalCurve` or its
    document form), in order, with the tilts read as ``centreline_weight`` says."""
    out = []
    for c in curves:
        up, lo = (c.upper_end, c.lower_end) if isinstance(c, RegionalCurve) else (c["upper_end"], c["lower_end"])
        out.append(curve_lines(landmarks, up, lo, width, centreline_weight))
    return out


def draw_overlay(img: np.ndarray, landmarks: np.ndarray, result: CobbResult | None,
                 refused: Sequence[str] | None = None) -> np.ndarray:
    """An RGB uint8 copy of ``img`` (float [0, 1], H x W) with the measurement drawn on it."""
    h, w = img.shape
    im = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).convert("RGB")
    d = ImageDraw.Draw(im)
    v = as_vertebrae(landmarks)
    r = max(2, round(h / 400))
    lw = max(1, round(h / 600))
    for q in v:
        d.polygon([tuple(q[0]), tuple(q[1]), tuple(q[3]), tuple(q[2])], outline=(0, 255, 120), width=lw)
        for x, y in q:
            d.ellipse([x - r, y - r, x + r, y + r], fill=(0, 255, 120))
    font = _font(max(12, round(h / 45)))
    lines: list[tuple[str, tuple]] = []
    if refused:
        lines.append(("implausible spine, no angle: " + "; ".join(refused), (255, 60, 60)))
    elif result is not None:
        curves = find_curves(v, result.centreline_weight)
        for i, (c, segs) in enumerate(zip(curves, endplate_lines(v, curves, w, result.centreline_weight))):
            col = CURVE_COLOURS[i % len(CURVE_COLOURS)]
            for seg in segs:
                d.line([tuple(seg[0]), tuple(seg[1])], fill=col, width=2 * lw)
            lines.append((f"{c.name} {c.angle:.1f}°  {c.upper_end}-{c.lower_end}, apex {c.apex}"
                          f"{' (major)' if c.major else ''}", col))
        if not curves:
            lines.append(("no curve of 10° or more", (255, 255, 255)))
        lines.append((f"largest {result.largest:.1f}°: {result.band} ({BAND_TEXT})", (255, 255, 255)))
    y = 8
    for text, col in lines:
        d.text((8, y), text, fill=col, font=font, stroke_width=2, stroke_fill=(0, 0, 0))
        y += int(font.size * 1.3) if hasattr(font, "size") else 14
    return np.asarray(im)
