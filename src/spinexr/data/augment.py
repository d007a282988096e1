"""Augmentation of whole training batches on their own device (radiograph-safe geometry and exposure)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from spinexr.config import AugConfig, LandmarkConfig
from spinexr.data.framing import brightest_band


def augment(x: torch.Tensor, cfg: AugConfig, gen: torch.Generator) -> torch.Tensor:
    """Augment a float batch (B, 1, H, W) in [0, 1] on its own device."""
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
    around its brightest column band (the spine), as if cut from the film; with ``widen_p`` a film
    narrower than ``S / full_aspect`` gets its edges mirrored outwards to that width. Films fill the
    height (they are taller than wide), so a column window in the square is a crop of the film."""
    b, _, s, _ = x.shape
    dev = x.device
    r = torch.rand(b, 2, device=dev, generator=gen)
    out = x.clone()
    cols = (x.amax(dim=(1, 2)) > 0)  # (B, S): columns holding film
    for i in range(b):
        idx = torch.nonzero(cols[i]).flatten()
        if len(idx) == 0:
            continue
        c0, c1 = int(idx[0]), int(idx[-1]) + 1
        w = c1 - c0
        if r[i, 0] < strip_p and w > s / strip_aspect * 1.2:
            cx = c0 + brightest_band(x[i, 0, :, c0:c1].mean(dim=0).float().cpu().numpy())
            half = int(s / strip_aspect / 2)
            a, z = max(c0, cx - half), min(c1, cx + half)
            out[i, :, :, :a] = 0
            out[i, :, :, z:] = 0
        elif r[i, 1] < widen_p and w < s / full_aspect:
            target = int(s / full_aspect)
            left = min((target - w) // 2, c0)
            right = min(target - w - left, s - c1)
            film = x[i, :, :, c0:c1]
            if left > 0:
                out[i, :, :, c0 - left:c0] = _mirror(film, left).flip(-1)
            if right > 0:
                out[i, :, :, c1:c1 + right] = _mirror(film.flip(-1), right)
    return out


def _mirror(film: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` columns of the film reflected repeatedly (n may exceed its width)."""
    reps = [film, film.flip(-1)] * (n // film.shape[-1] + 1)
    return torch.cat(reps, dim=-1)[..., :n]


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
    from spinexr.geometry.cobb import FLIP_CORNERS

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
    k = cfg.intensity
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(1 - k, 1 + k).view(b, 1, 1, 1) + mean + u(-k / 2, k / 2).view(b, 1, 1, 1)
    x = x.clamp(0, 1) ** torch.exp(u(-k, k)).view(b, 1, 1, 1)
    return x, p
