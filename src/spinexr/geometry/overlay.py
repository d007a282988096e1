"""The spine-geometry overlay, drawn on the film at its original size: every vertebra's corners, the
endplate lines of each curve's end vertebrae extended across the film, and the angle values (or, for
a spine the plausibility check refused, the reason and no angle)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from spinexr.geometry.cobb import BAND_TEXT, CobbResult, as_vertebrae

CURVE_COLOURS = {"pt": (255, 90, 60), "mt": (60, 200, 255), "tl": (255, 215, 0)}


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow before 10.1 has one bitmap size
        return ImageFont.load_default()


# An endplate line is drawn across this share of the film's width, centred on the endplate.
ENDPLATE_LINE_SPAN = 0.44


def _across(a: np.ndarray, b: np.ndarray, half: float) -> np.ndarray:
    mid, u = (a + b) / 2, (b - a) / max(float(np.linalg.norm(b - a)), 1e-9)
    return np.stack([mid - u * half, mid + u * half])


def endplate_lines(landmarks: np.ndarray, result: CobbResult, width: float) -> dict[str, np.ndarray]:
    """The lines a reader draws to measure each curve: ``{"pt" | "mt" | "tl": (2, 2, 2)}``, the upper
    endplate of its upper end vertebra and the lower endplate of its lower end vertebra, each a segment
    (two (x, y) points in film pixels) of :data:`ENDPLATE_LINE_SPAN` times the film's width. The
    overlay PNG and the DICOM presentation state draw these same lines."""
    v = as_vertebrae(landmarks)
    half = width * ENDPLATE_LINE_SPAN / 2
    return {name: np.stack([_across(v[c.upper][0], v[c.upper][1], half), _across(v[c.lower][2], v[c.lower][3], half)])
            for name, c in (("pt", result.pt), ("mt", result.mt), ("tl", result.tl))}


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
        lines_of = endplate_lines(v, result, w)
        for name, c in (("pt", result.pt), ("mt", result.mt), ("tl", result.tl)):
            col = CURVE_COLOURS[name]
            for seg in lines_of[name]:
                d.line([tuple(seg[0]), tuple(seg[1])], fill=col, width=2 * lw)
            u, low, apex = c.levels
            lines.append((f"{name.upper()} {c.angle:.1f}°  {u}-{low}, apex {apex}", col))
        lines.append((f"largest {result.largest:.1f}°: {result.band} ({BAND_TEXT})", (255, 255, 255)))
    y = 8
    for text, col in lines:
        d.text((8, y), text, fill=col, font=font, stroke_width=2, stroke_fill=(0, 0, 0))
        y += int(font.size * 1.3) if hasattr(font, "size") else 14
    return np.asarray(im)
