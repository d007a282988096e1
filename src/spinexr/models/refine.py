"""The second landmark stage: each vertebra's four corners read again from its own crop of the film
at a higher resolution than the whole-spine model sees.

At 320 x 160 a vertebra is about 15 px tall, and a Cobb angle is a difference of vertebra tilts: a
corner one input pixel off tilts a vertebra by several degrees. The refiner takes the whole-spine
model's corners, cuts one crop per vertebra out of the film resized to ``film_height`` (1024 px: a
vertebra about 45 px tall), turned so that the crop's vertical runs along the spine there and scaled
to the local vertebra spacing, and places the four corners in the crop with four heatmaps (the same
:class:`~spinexr.models.landmark.LandmarkNet` and soft-argmax codec as the first stage, one vertebra
at a time). Because every crop is centred and turned on the spine, the network only has to learn
where a vertebra's corners sit relative to its neighbours, not where the spine is.

Geometry (one frame per vertebra): centre ``c`` (the mean of its corners), unit vectors ``e_y`` (down
the spine: from the vertebra above to the one below) and ``e_x`` (``e_y`` turned a quarter to the
film's right), and a half side ``half`` (``span`` times the local centre-to-centre spacing). A crop
position ``(u, v)`` in [-1, 1]^2 is the film position ``c + half (u e_x + v e_y)``; crop pixel ``i``
sits at ``u = (2 i + 1) / S - 1`` (grid_sample's ``align_corners=False``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from spinexr.models.landmark import HeatmapCodec, LandmarkNet

# The four corners of a vertebra, mirrored: left and right swap (upper-left, upper-right, lower-left, lower-right).
MIRROR4 = [1, 0, 3, 2]
FILM_HEIGHT = 1024
CROP = 96
SPAN = 1.3


def frames(corners: torch.Tensor, span: float = SPAN) -> torch.Tensor:
    """(B, 17, 4, 2) corners -> (B, 17, 5) frames ``(cx, cy, ey_x, ey_y, half)``."""
    c = corners.mean(dim=-2)
    d = torch.cat([c[:, 1:2] - c[:, :1], c[:, 2:] - c[:, :-2], c[:, -1:] - c[:, -2:-1]], dim=1)
    steps = torch.cat([torch.ones_like(d[:, :1, 0]), torch.full_like(d[:, 1:-1, 0], 2.0), torch.ones_like(d[:, :1, 0])],
                      dim=1)
    length = d.norm(dim=-1).clamp_min(1e-6)
    ey = d / length[..., None]
    half = span * length / steps
    return torch.cat([c, ey, half[..., None]], dim=-1)


def _axes(fr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    c, ey, half = fr[..., :2], fr[..., 2:4], fr[..., 4:5]
    ex = torch.stack([ey[..., 1], -ey[..., 0]], dim=-1)
    return c, ex, ey, half


def to_crop(points: torch.Tensor, fr: torch.Tensor, size: int) -> torch.Tensor:
    """(..., K, 2) film pixels -> crop pixels of the (..., 5) frame, for a crop of ``size`` px."""
    c, ex, ey, half = _axes(fr)
    w = points - c[..., None, :]
    u = (w * ex[..., None, :]).sum(-1) / half
    v = (w * ey[..., None, :]).sum(-1) / half
    return torch.stack([(u + 1) * size / 2 - 0.5, (v + 1) * size / 2 - 0.5], dim=-1)


def from_crop(points: torch.Tensor, fr: torch.Tensor, size: int) -> torch.Tensor:
    """The inverse of :func:`to_crop`."""
    c, ex, ey, half = _axes(fr)
    u = (points[..., 0] + 0.5) * 2 / size - 1
    v = (points[..., 1] + 0.5) * 2 / size - 1
    return c[..., None, :] + half[..., None, :] * (u[..., None] * ex[..., None, :] + v[..., None] * ey[..., None, :])


def crop_grid(fr: torch.Tensor, height: int, width: int, size: int) -> torch.Tensor:
    """(N, 5) frames on a film of ``height`` x ``width`` -> (N, size, size, 2) grid_sample positions."""
    c, ex, ey, half = _axes(fr)
    sx, sy = 2.0 / width, 2.0 / height
    theta = torch.stack([
        torch.stack([sx * half[:, 0] * ex[:, 0], sx * half[:, 0] * ey[:, 0], (2 * c[:, 0] + 1) / width - 1], dim=-1),
        torch.stack([sy * half[:, 0] * ex[:, 1], sy * half[:, 0] * ey[:, 1], (2 * c[:, 1] + 1) / height - 1], dim=-1),
    ], dim=1)
    return F.affine_grid(theta, [fr.shape[0], 1, size, size], align_corners=False)


def cut_crops(film: torch.Tensor, fr: torch.Tensor, size: int) -> torch.Tensor:
    """(1, 1, H, W) film in [0, 1] and (N, 5) frames -> (N, 1, size, size) crops (zeros off the film)."""
    grid = crop_grid(fr, film.shape[-2], film.shape[-1], size)
    return F.grid_sample(film.expand(fr.shape[0], -1, -1, -1), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def vertebra_turns(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """(..., 17, 4, 2) corners twice -> (..., 17) degrees each vertebra's midline (the middle of its left
    side to the middle of its right side, what the Cobb angles are read from: the midline of
    :func:`spinexr.geometry.cobb.midlines`, here on tensors) turned between them."""

    def midline(v: torch.Tensor) -> torch.Tensor:
        return (v[..., 1, :] + v[..., 3, :] - v[..., 0, :] - v[..., 2, :]) / 2

    a, b = midline(before), midline(after)
    cross = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    return torch.rad2deg(torch.atan2(cross, (a * b).sum(-1))).abs()


def turn_limit(value: object) -> float | None:
    """A limit on turning (:attr:`VertebraRefiner.max_turn`) as a float, or None for no limit; ValueError
    for anything but a number of degrees more than 0 and at most 180 (a string is read as a number)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"max_turn {value!r} is not a number of degrees") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 180:
        raise ValueError(f"max_turn {value!r}: a limit in degrees is more than 0 and at most 180 (null: no limit)")
    return float(value)


@dataclass(frozen=True)
class RefinerSettings:
    """A :class:`VertebraRefiner`'s geometry and reading (the keywords it takes).

    Args:
        crop: the crop's side in pixels.
        span: the crop's side as a multiple of the vertebra's size.
        film_height: the film's height, in pixels, the crops are cut from.
        mean: the crops' normalisation mean.
        std: the crops' normalisation standard deviation.
        tta_flip: read each crop's mirror image too and average.
        iterations: passes (each cuts the crops again around the last pass's corners).
        flip_every_pass: the mirror reading on every pass (False: the last alone).
        max_turn: the most a later pass may turn a vertebra, in degrees (None: no limit).
    """

    crop: int = CROP
    span: float = SPAN
    film_height: int = FILM_HEIGHT
    mean: float = 0.449
    std: float = 0.226
    tta_flip: bool = True
    iterations: int = 1
    flip_every_pass: bool = True
    max_turn: float | None = None


class VertebraRefiner(nn.Module):
    """(1, 1, H, W) film at ``film_height`` in [0, 1] and (17, 4, 2) corners in its pixels -> refined
    (17, 4, 2) corners. ``iterations`` > 1 cuts the crops again around the refined corners; with
    ``tta_flip`` each crop's mirror image is read too and the two averaged, on every pass or, with
    ``flip_every_pass`` False, on the last pass alone (the earlier ones only place the crops again).
    ``max_turn`` (degrees): a pass after the first that turns a vertebra further than this keeps that
    vertebra where the pass before placed it (a later pass cut around a vertebra the first stage
    misplaced can tilt it further each time; None: no limit).
    ``net`` None: the geometry alone, for crops read by the refiner's ONNX export (a ``reader`` given
    to :meth:`forward`)."""

    def __init__(self, net: LandmarkNet | None, **settings: Any) -> None:
        super().__init__()
        s = RefinerSettings(**settings)
        self.net = net
        self.crop, self.span, self.film_height = s.crop, s.span, s.film_height
        self.mean, self.std = s.mean, s.std
        self.codec = HeatmapCodec(s.crop, s.crop)
        self.tta_flip = s.tta_flip
        self.iterations = s.iterations
        self.flip_every_pass = s.flip_every_pass
        self.max_turn = s.max_turn

    def read_plain(self, crops: torch.Tensor) -> torch.Tensor:
        """(N, 1, S, S) crops in [0, 1] -> (N, 4, 2) corners in crop pixels, each crop read as it is
        (normalisation, network, soft-argmax): what the ONNX export holds."""
        if self.net is None:
            raise RuntimeError("this refiner was loaded without its network (network=False): pass a reader")
        pts, _ = self.codec.decode(self.net((crops - self.mean) / self.std))
        return pts

    def read_crops(self, crops: torch.Tensor, flip: bool | None = None,
                   reader: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """(N, 1, S, S) crops in [0, 1] -> (N, 4, 2) corners in crop pixels; with ``flip`` (default
        ``tta_flip``) each crop and its mirror image are read in one batch and averaged. ``reader``
        reads the crops as they are (default :meth:`read_plain`)."""
        read = reader or self.read_plain
        if not (self.tta_flip if flip is None else flip):
            return read(crops)
        n = crops.shape[0]
        pts = read(torch.cat([crops, crops.flip(-1)]))
        back = pts[n:][:, MIRROR4]
        back = torch.stack([(self.crop - 1) - back[..., 0], back[..., 1]], dim=-1)
        return (pts[:n] + back) / 2

    def passes(self, film: torch.Tensor, corners: torch.Tensor,
               reader: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Each pass's (17, 4, 2) corners, in order, the limit on turning (``max_turn``) applied; the
        last are :meth:`forward`'s."""
        pts, out = corners, []
        for i in range(self.iterations):
            fr = frames(pts[None], self.span)[0]
            flip = self.tta_flip and (self.flip_every_pass or i == self.iterations - 1)
            new = from_crop(self.read_crops(cut_crops(film, fr, self.crop), flip, reader), fr, self.crop)
            if i > 0 and self.max_turn is not None:
                held = vertebra_turns(pts, new) > self.max_turn
                new = torch.where(held[:, None, None], pts, new)
            pts = new
            out.append(pts)
        return out

    def forward(self, film: torch.Tensor, corners: torch.Tensor,
                reader: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """``reader``: what reads the crops as they are (default :meth:`read_plain`; the deployed ONNX
        Runtime path passes its export of that method)."""
        return self.passes(film, corners, reader)[-1]


class CropReader(nn.Module):
    """A refiner's plain crop reading (normalisation, network, soft-argmax; the mirror reading is done
    around it): what the ONNX export holds. (N, 1, S, S) crops in [0, 1] -> (N, 4, 2) crop-pixel corners."""

    def __init__(self, refiner: VertebraRefiner) -> None:
        super().__init__()
        self.refiner = refiner

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.refiner.read_plain(crops)


def refiner_box(height: int, width: int, film_height: int = FILM_HEIGHT) -> tuple[int, int]:
    """The size a ``height`` x ``width`` film is resized to for the refiner (aspect kept):
    ``fit_to_box(img, *refiner_box(h, w), "stretch")``."""
    return film_height, max(1, round(width * film_height / height))
