"""Attention heads over a CNN's final feature map, each exposing a spatial map for visualisation.

* :class:`MHSA2d`: multi-head self-attention over the spatial tokens, with a fixed 2-D sine-cosine
  positional encoding (so any input size works), a pre-norm residual block and an MLP.
* :class:`CBAM`: channel attention followed by spatial attention (Woo et al., 2018).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from spinexr.errors import SpinexrError


def _exporting() -> bool:
    """True while torch.export / ONNX / TorchScript trace the module (no Python-side state then)."""
    return bool(torch.jit.is_tracing() or torch.compiler.is_compiling())


def sincos_2d(h: int, w: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A (h*w, dim) fixed 2-D sine-cosine positional encoding."""
    if dim % 4:
        raise ValueError("positional encoding dim must be a multiple of 4")
    d = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(d, device=device, dtype=torch.float32) / d))
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    y = ys.reshape(-1, 1) * omega
    x = xs.reshape(-1, 1) * omega
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1).to(dtype)


class MHSA2d(nn.Module):
    """Pre-norm multi-head self-attention block on a (B, C, H, W) map; returns the same shape.

    The attention is computed in a reduced ``dim`` (keys, queries and values are projected from C),
    which keeps the head small on 2048-channel backbones. ``last_map`` holds, after each forward, the
    mean attention each spatial position *receives*, averaged over heads and queries: (B, H, W).
    """

    def __init__(self, channels: int, dim: int = 256, num_heads: int = 8, drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dim = dim
        self.norm1 = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * dim)
        self.proj = nn.Linear(dim, channels)
        self.norm2 = nn.LayerNorm(channels)
        hidden = max(dim, channels // 2)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Dropout(drop), nn.Linear(hidden, channels))
        self.drop = nn.Dropout(drop)
        self.scale = (dim // num_heads) ** -0.5
        self.gamma1 = nn.Parameter(torch.full((channels,), 0.1))
        self.gamma2 = nn.Parameter(torch.full((channels,), 0.1))
        self.last_map: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # B, N, C
        y = self.norm1(t)
        qkv = self.qkv(y).reshape(b, h * w, 3, self.num_heads, self.dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # B, heads, N, d
        pos = sincos_2d(h, w, self.dim, x.device, q.dtype).reshape(h * w, self.num_heads, -1).transpose(0, 1)
        q, k = q + pos, k + pos
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        if not _exporting():
            self.last_map = attn.detach().mean(dim=(1, 2)).reshape(b, h, w).float()
        out = (self.drop(attn) @ v).transpose(1, 2).reshape(b, h * w, self.dim)
        t = t + self.gamma1 * self.proj(out)
        t = t + self.gamma2 * self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(b, c, h, w)


class CBAM(nn.Module):
    """Channel then spatial attention; ``last_map`` is the spatial gate, (B, H, W) in [0, 1]."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)
        self.last_map: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ca = torch.sigmoid(self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1)))
        x = x * ca
        s = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        sa = torch.sigmoid(self.spatial(s))
        if not _exporting():
            self.last_map = sa.detach()[:, 0].float()
        return x * sa


def create_attention(kind: str, channels: int, drop: float = 0.0) -> nn.Module:
    """``mhsa``, ``cbam`` or ``none`` (identity)."""
    if kind == "mhsa":
        return MHSA2d(channels, dim=min(256, channels - channels % 32 or 32), drop=drop)
    if kind == "cbam":
        return CBAM(channels)
    if kind == "none":
        return nn.Identity()

    raise SpinexrError(f"unknown attention {kind!r}; choose mhsa, cbam or none")
