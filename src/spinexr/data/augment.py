"""Augmentation of whole training batches on their own device (radiograph-safe geometry and exposure)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from spinexr.config import AugConfig, LandmarkConfig
from spinexr.data.framing import FULL_ASPECT, STRIP_ASPECT
from spinexr.geometry.cobb import FLIP_CORNERS


def augment(x: torch.Tensor, cfg: AugConfig, gen: torch.Generator) -> torch.Tensor:
    """Augment a float batch (B, 1, H, W) in [0, 1] on its own device: framing (:func:`reframe`, on the
    letterboxed films), then geometry, exposure, blur and noise."""
    if cfg.strip_p > 0 or cfg.widen_p > 0:
        x = reframe(x, cfg.strip_p, cfg.widen_p, gen)
    b = x.shape[0]
    dev = x.device

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, device=dev, generator=gen)

    ang = u(-cfg.rotate_deg, cfg.rotate_deg) * (math.pi / 180)
    sc = u(1 - cfg.scale, 1 + cfg.scale)
    tx, ty = u(-cfg.translate, cfg.translate) * 2, u(-cfg.translate, cfg.translate) * 2
    flip = torch.where(u(0, 1) < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(b, device=dev)
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(1 - cfg.contrast, 1 + cfg.contrast).view(b, 1, 1, 1) + mean
    x = x + u(-cfg.brightness, cfg.brightness).view(b, 1, 1, 1)
    x = x.clamp(0, 1) ** torch.exp(u(-cfg.gamma, cfg.gamma)).view(b, 1, 1, 1)
    if cfg.blur > 0:
        x = gaussian_blur(x, u(0, cfg.blur))
    if cfg.noise > 0:
        sd = u(0, cfg.noise).view(b, 1, 1, 1)
        x = (x + sd * torch.randn(x.shape, device=dev, generator=gen, dtype=x.dtype)).clamp(0, 1)
    return x


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each film of a batch (B, 1, H, W) with its own Gaussian ``sigma`` (B,) in pixels; sigma 0
    leaves a film unchanged. Separable, reflect-padded so the edges do not darken."""
    b = x.shape[0]
    r = max(1, math.ceil(3 * float(sigma.max())))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp_min(1e-3).view(b, 1)
    k = torch.exp(-0.5 * (t.view(1, -1) / s) ** 2)
    k = k / k.sum(dim=1, keepdim=True)  # (B, 2r+1); sigma -> 0 gives a delta
    y = F.pad(x.transpose(0, 1), (r, r, r, r), mode="reflect")  # (1, B, H+2r, W+2r)
    y = F.conv2d(y, k.view(b, 1, 1, -1), groups=b)
    y = F.conv2d(y, k.view(b, 1, -1, 1), groups=b)
    return y.transpose(0, 1)


def reframe(x: torch.Tensor, strip_p: float, widen_p: float, gen: torch.Generator,
            strip_aspect: float = 4.0, full_aspect: float = 2.5) -> torch.Tensor:
    """Framing augmentation on letterboxed films (B, 1, S, S) in [0, 1], where black columns are the
    letterbox: with ``strip_p`` a film wider than a strip keeps only a strip ``S / strip_aspect`` wide
    around its brightest column band (the spine, as :func:`~spinexr.data.framing.brightest_band`
    finds it), as if cut from the film; with ``widen_p`` a film narrower than ``S / full_aspect`` gets
    its edges mirrored outwards to that width. Films fill the height (they are taller than wide), so a
    column window in the square is a crop of the film. The whole batch at once on its own device: no
    per-film loop and no host synchronisation."""
    b, _, s, _ = x.shape
    dev = x.device
    r = torch.rand(b, 2, device=dev, generator=gen)
    cols = x.amax(dim=(1, 2)) > 0  # (B, S): columns holding film
    ar = torch.arange(s, device=dev)
    c0 = torch.where(cols, ar, s).amin(dim=1, keepdim=True)  # (B, 1) first film column
    c1 = torch.where(cols, ar + 1, 0).amax(dim=1, keepdim=True)  # one past the last
    w = (c1 - c0).clamp_min(1)
    has = cols.any(dim=1, keepdim=True)
    strip = has & (r[:, :1] < strip_p) & (w > s / strip_aspect * 1.2)
    widen = has & ~strip & (r[:, 1:] < widen_p) & (w < s / full_aspect)

    # The spine: the brightest band of the column profile, smoothed over 1/20 of the film's width
    # (zeros beyond the film, as in numpy's "same" convolution), searched in the film's middle 60%.
    prof = torch.cat([torch.zeros(b, 1, device=dev), x[:, 0].float().mean(dim=1).cumsum(dim=1)], dim=1)
    k = (w // 20).clamp_min(1)
    hi_i = (ar + (k - 1) // 2 + 1).clamp(0, s)
    lo_i = (ar - k // 2).clamp(0, s)
    smooth = (prof.gather(1, hi_i) - prof.gather(1, lo_i)) / k
    lo, hi = c0 + (2 * w) // 10, c0 + torch.maximum((8 * w) // 10, (2 * w) // 10 + 1)
    smooth = smooth.masked_fill((ar < lo) | (ar >= hi), float("-inf"))
    cx = smooth.argmax(dim=1, keepdim=True)
    half = int(s / strip_aspect / 2)
    keep = (ar >= torch.maximum(c0, cx - half)) & (ar < torch.minimum(c1, cx + half))
    out = x.masked_fill((strip & ~keep)[:, None, None, :], 0.0)

    # Widening: each padded column copies a film column, reflected repeatedly outwards.
    target = int(s / full_aspect)
    left = torch.minimum((target - w) // 2, c0).clamp_min(0)
    right = torch.minimum(target - w - left, s - c1).clamp_min(0)
    pl = (c0 - 1 - ar) % (2 * w)
    pr = (ar - c1) % (2 * w)
    src_l = c0 + torch.where(pl < w, pl, 2 * w - 1 - pl)
    src_r = c0 + torch.where(pr < w, w - 1 - pr, pr - w)
    in_l = widen & (ar >= c0 - left) & (ar < c0)
    in_r = widen & (ar >= c1) & (ar < c1 + right)
    src = torch.where(in_l, src_l, torch.where(in_r, src_r, ar.expand(b, s)))
    return out.gather(3, src[:, None, None, :].expand(b, 1, s, s))


def _pixel_to_norm(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """D and c with pixel = D @ normalised + c (``align_corners=False``); c is the input's centre."""
    d = torch.tensor([[w / 2.0, 0.0], [0.0, h / 2.0]], device=device)
    c = torch.tensor([(w - 1) / 2.0, (h - 1) / 2.0], device=device)
    return d, c


def augment_landmarks(x: torch.Tensor, pts: torch.Tensor, cfg: LandmarkConfig,
                      gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment films (B, 1, H, W) in [0, 1] and their corners (B, 68, 2) in input pixels together.

    One affine per film (rotation, zoom in or out with black padding, shift, and a horizontal flip
    that also swaps each vertebra's left and right corners) moves pixels and points alike; then
    brightness, contrast and gamma change. Points are mapped by the same matrix the pixels are
    resampled with, so they stay on the anatomy.
    """

    b, _, h, w = x.shape
    dev = x.device

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, device=dev, generator=gen)

    ang = u(-cfg.rotate_deg, cfg.rotate_deg) * (math.pi / 180)
    sc = u(cfg.scale_min, cfg.scale_max)
    t = torch.stack([u(-cfg.translate, cfg.translate) * w, u(-cfg.translate, cfg.translate) * h], dim=1)
    flip = (u(0, 1) < 0.5) if cfg.flip else torch.zeros(b, dtype=torch.bool, device=dev)
    fx = torch.where(flip, -1.0, 1.0)
    cos, sin = torch.cos(ang), torch.sin(ang)
    # Forward map, input pixel -> output pixel: p' = c + t + A (p - c), with A = scale * R * flip.
    a = torch.stack([torch.stack([sc * cos * fx, -sc * sin], 1), torch.stack([sc * sin * fx, sc * cos], 1)], 1)
    d, c = _pixel_to_norm(h, w, dev)
    a_inv = torch.linalg.inv(a)
    d_inv = torch.linalg.inv(d)
    theta = torch.cat([d_inv @ a_inv @ d, (-(d_inv @ a_inv) @ t[..., None])], dim=2)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    p = c + t[:, None] + ((pts - c) @ a.transpose(1, 2))
    if flip.any():
        v = p.reshape(b, -1, 4, 2)
        v = torch.where(flip[:, None, None, None], v[:, :, list(FLIP_CORNERS)], v)
        p = v.reshape(b, -1, 2)
    if cfg.strip_p > 0:
        x, p = strip_landmark_films(x, p, cfg.strip_p, gen)
    k = cfg.intensity
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(1 - k, 1 + k).view(b, 1, 1, 1) + mean + u(-k / 2, k / 2).view(b, 1, 1, 1)
    x = x.clamp(0, 1) ** torch.exp(u(-k, k)).view(b, 1, 1, 1)
    return x, p


def strip_landmark_films(x: torch.Tensor, pts: torch.Tensor, prob: float, gen: torch.Generator,
                         aspect: float = STRIP_ASPECT, full_aspect: float = FULL_ASPECT) -> tuple[torch.Tensor, torch.Tensor]:
    """Reframe a share ``prob`` of films (B, 1, H, W) the way other hospitals frame them: each chosen
    film is cut to a full-height strip ``H / aspect`` wide (wider where the spine needs it), every
    corner inside with a margin, its centre jittered about the spine; the strip is moved to the middle
    of the input with black on both sides, as the letterbox shows a narrow film. Half of the strips
    are then widened to ``H / full_aspect`` by mirroring their own edges outwards (as
    :func:`spinexr.data.framing.pad_to_aspect` widens a strip). Corners move with their columns."""
    b, _, h, w = x.shape
    dev = x.device
    chosen = torch.rand(b, device=dev, generator=gen) < prob
    if not chosen.any():
        return x, pts
    mirror = torch.rand(b, device=dev, generator=gen) < 0.5
    jitter = torch.rand(b, device=dev, generator=gen) * 2 - 1
    x, pts = x.clone(), pts.clone()
    for i in torch.nonzero(chosen).flatten().tolist():
        xs = pts[i, :, 0]
        lo, hi = float(xs.min()), float(xs.max())
        width = int(min(w, max(round(h / aspect), math.ceil(hi - lo) + 8)))
        slack = max(0.0, (width - (hi - lo)) / 2 - 4)
        cx = (lo + hi) / 2 + float(jitter[i]) * slack
        x0 = int(round(min(max(cx - width / 2, 0), w - width)))
        strip = x[i, :, :, x0:x0 + width]
        left = (w - width) // 2
        out = torch.zeros_like(x[i])
        out[:, :, left:left + width] = strip
        if bool(mirror[i]):
            wide = int(min(w, max(width, round(h / full_aspect))))
            pad_l = (wide - width) // 2
            pad_r = wide - width - pad_l
            if pad_l or pad_r:
                idx = _mirror_index(width, pad_l, pad_r, dev)
                out[:, :, left - pad_l:left + width + pad_r] = strip[:, :, idx]
        x[i] = out
        pts[i, :, 0] += left - x0
    return x, pts


def _mirror_index(n: int, pad_l: int, pad_r: int, dev: torch.device) -> torch.Tensor:
    """Column indices of an ``n``-wide strip widened by ``pad_l`` / ``pad_r`` mirrored columns (numpy's
    ``symmetric`` padding, repeated for pads wider than the strip)."""
    j = torch.arange(-pad_l, n + pad_r, device=dev)
    period = 2 * n
    j = torch.remainder(j, period)
    return torch.where(j < n, j, period - 1 - j)
