"""Reframing a film without moving the spine out of it: the framing stress test's two transforms.

KAUH's classes differ in framing: every Normal film is a narrow full-spine strip, most Scoliosis
films are full AP views. A classifier that learned the framing changes its answer when only the
framing changes. :func:`strip_crop` cuts a full AP film down to a Normal-like strip around the spine;
:func:`pad_to_aspect` widens a strip to a full film's proportions with black margins. The stress test
(:func:`framing_stress`) counts how often either changes a model's prediction.
:func:`spine_window` is the window input contract's answer to both: every film becomes the same
spine-centred strip window, whichever way it was framed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

STRIP_ASPECT = 4.0  # height / width of KAUH's Normal strips (median 4.0)
FULL_ASPECT = 2.5  # height / width of KAUH's full AP Scoliosis films (median 2.5)
FULL_AP_MAX_ASPECT = 3.0  # films at most this tall for their width count as full AP views


def bounded(img: np.ndarray, max_side: int = 1024) -> np.ndarray:
    """The film scaled down (aspect kept) so that its longer side is at most ``max_side``."""
    h, w = img.shape
    s = max_side / max(h, w)
    if s >= 1:
        return img

    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(img.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR,
                                                                                reducing_gap=2.0))


def brightest_band(profile: np.ndarray, k: int | None = None, peak_middle: bool = False) -> float:
    """Index of the brightest band (smoothed over ``k`` columns, 1/20 of its length by default) within
    the middle 60% of a column-brightness profile: where the spine is across an AP film. The first
    column of the peak, or with ``peak_middle`` the middle of a flat peak."""
    w = len(profile)
    k = k or max(1, w // 20)
    smooth = np.convolve(profile, np.ones(k) / k, mode="same")
    lo, hi = int(w * 0.2), max(int(w * 0.8), int(w * 0.2) + 1)
    seg = smooth[lo:hi]
    p = int(np.argmax(seg))
    if not peak_middle:
        return lo + p
    tie = seg[p] - 1e-6 * max(1.0, abs(float(seg[p])))
    a, b = p, p
    while a > 0 and seg[a - 1] >= tie:
        a -= 1
    while b < len(seg) - 1 and seg[b + 1] >= tie:
        b += 1
    return lo + (a + b) / 2


def _column_profile(img: np.ndarray) -> np.ndarray:
    """Mean brightness of each column, the top and bottom tenth of the film left out."""
    h = img.shape[0]
    return img[h // 10: h - h // 10].mean(axis=0)


def spine_column(img: np.ndarray, landmarks: np.ndarray | None = None) -> float:
    """The x of the spine: the mean x of the vertebra corners when given, else the brightest
    vertical band of the film's middle 60% (the spine is the densest structure across an AP film)."""
    if landmarks is not None:
        return float(np.asarray(landmarks)[..., 0].mean())
    return float(brightest_band(_column_profile(img)))


def strip_box(img: np.ndarray, aspect: float = STRIP_ASPECT, landmarks: np.ndarray | None = None) -> tuple[int, int]:
    """``(x0, width)`` of :func:`strip_crop`'s strip (the whole film when it is already that narrow)."""
    h, w = img.shape
    if landmarks is None and h / aspect >= w:
        return 0, w
    cx = spine_column(img, landmarks)
    half = h / aspect / 2
    if landmarks is not None:
        xs = np.asarray(landmarks)[..., 0]
        half = max(half, float(np.max(np.abs(xs - cx))) + 2)
    width = int(round(min(w, 2 * half)))
    x0 = int(round(min(max(cx - width / 2, 0), w - width)))
    return x0, width


def spine_centre(img: np.ndarray) -> float:
    """The spine's column for :func:`spine_window`: :func:`brightest_band`, smoothed over a share of the
    film's *height* (not its width) and taken at the middle of a flat peak, so that a film and the same
    film with margins added left and right put the spine on the same pixels."""
    return float(brightest_band(_column_profile(img), k=max(1, int(round(img.shape[0] / STRIP_ASPECT / 20))),
                                peak_middle=True))


def spine_window(img: np.ndarray, aspect: float = STRIP_ASPECT) -> tuple[np.ndarray, int]:
    """A window of the full height, ``height / aspect`` wide, centred on the spine's column
    (:func:`spine_centre`, the brightest band), and its left edge ``x0`` in the film (negative when it
    starts left of it). Where the window reaches past the film, the film's edges are mirrored outwards
    (as :func:`pad_to_aspect` widens a strip), so a strip and that strip widened give the same window."""
    h, w = img.shape
    width = max(1, int(round(h / aspect)))
    x0 = int(round(spine_centre(img) - width / 2))
    lo, hi = max(0, x0), min(w, x0 + width)
    sub = img[:, lo:hi]
    left, right = lo - x0, x0 + width - hi
    if left or right:
        sub = np.pad(sub, ((0, 0), (left, right)), mode="symmetric")
    return sub, x0


def strip_crop(img: np.ndarray, aspect: float = STRIP_ASPECT, landmarks: np.ndarray | None = None) -> np.ndarray:
    """A vertical strip of the full height, ``height / aspect`` wide, centred on the spine (and, with
    landmarks, wide enough for every corner), kept inside the film."""
    x0, width = strip_box(img, aspect, landmarks)
    return img[:, x0:x0 + width]


def pad_to_aspect(img: np.ndarray, aspect: float = FULL_ASPECT, mode: str = "reflect") -> np.ndarray:
    """Margins left and right (the film centred) until height / width is ``aspect``.

    ``reflect`` mirrors the film's own edges outwards (repeatedly, for a very narrow strip), so the
    margins look like the soft tissue and ribs of a wider film; ``black`` pads with zeros, which a
    letterboxing model cannot see at all (the letterbox adds the same black), so the stress test
    uses ``reflect``.
    """
    h, w = img.shape
    target = int(round(h / aspect))
    if target <= w:
        return img
    left = (target - w) // 2
    return np.pad(img, ((0, 0), (left, target - w - left)), mode="constant" if mode == "black" else "symmetric")


def framing_stress(predict: Any, scoliosis_films: list[np.ndarray], normal_films: list[np.ndarray],
                   classes: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """How often reframing changes the predicted class.

    ``predict``: a function from a list of float [0, 1] films to an (n, classes) probability array.
    Scoliosis films that are full AP views (height / width at most ``FULL_AP_MAX_ASPECT``) are cut
    to strips; Normal films are padded to ``FULL_ASPECT``.
    """
    out: dict[str, Any] = {}
    ap = [im for im in scoliosis_films if im.shape[0] / im.shape[1] <= FULL_AP_MAX_ASPECT]
    narrow = [im for im in normal_films if im.shape[0] / im.shape[1] > FULL_ASPECT]
    for key, films, fn, cls in (("scoliosis_ap_to_strip", ap, strip_crop, "Scoliosis"),
                                ("normal_strip_to_full", narrow, pad_to_aspect, "Normal")):
        if not films:
            out[key] = {"n": 0, "changed": 0, "to": {}}
            continue
        before = np.asarray(predict(films)).argmax(axis=1)
        after = np.asarray(predict([fn(im) for im in films])).argmax(axis=1)
        changed = before != after
        out[key] = {"n": len(films), "changed": int(changed.sum()),
                    "to": {c: int((changed & (after == j)).sum()) for j, c in enumerate(classes) if c != cls}}
    return out
