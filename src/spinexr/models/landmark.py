"""The landmark model: a timm ``features_only`` encoder, a light FPN decoder on a stride-4 grid, and
the codec that turns its output into sub-pixel corner positions and back.

The codec is the one place the target encoding lives (mmpose's ``codecs`` idea). Two encodings:

- ``corners`` (:class:`HeatmapCodec`, the default): one heatmap per vertebra corner (17 x 4); a corner
  is the soft-argmax of its heatmap (the expectation of the position under the heatmap's softmax, so
  positions are continuous and differentiable).
- ``offsets`` (:class:`OffsetCodec`): one heatmap per vertebra (17) plus 8 offset maps
  shared by all vertebrae; every grid cell votes for the four corners of the vertebra it lies on
  (its own position plus its offsets), and a vertebra's corner is the vote averaged under that
  vertebra's heatmap. The heatmap only has to find the vertebra; the corners' relative placement
  (each endplate's tilt, which is what a Cobb angle is made of) comes from local, translation-
  equivariant regression instead of from 4 independent soft-argmaxes, which a diffuse heatmap pulls
  towards each other. Measured at equal compute on AASCE it placed corners as well but tilted them
  worse (SMAPE 87% against 36%), so it is not the default.

Both losses score decoded positions against the truth (L1 as a fraction of the input height), with
optional terms for each vertebra's midline and for the heatmap shape (Jensen-Shannon, as in DSNT).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from spinexr.data.contract import DataConfig
from spinexr.errors import SpinexrError, WeightsError

N_POINTS = 68
STRIDE = 4
# A tall input keeps a full-spine film's aspect: 512 x 256 on a CPU, 1024 x 512 on a GPU.
DEFAULT_CONTRACT = DataConfig(512, input_width=256)


class LandmarkNet(nn.Module):
    """(B, 1, H, W) normalised film -> (B, C, H/4, W/4): the codec's channels (68 corner heatmaps, or
    17 vertebra heatmaps and 8 offset maps).

    Args:
        encoder: the timm backbone.
        pretrained: load its ImageNet weights (needs the network).
        in_chans: input channels.
        width: the decoder's channels.
        num_points: the landmarks (68 corners).
        out_channels: the head's channels (default ``num_points``).
    """

    def __init__(self, encoder: str = "resnet18", pretrained: bool = False, in_chans: int = 1, width: int = 64,
                 num_points: int = N_POINTS, out_channels: int | None = None) -> None:
        super().__init__()
        import timm

        try:
            self.encoder = timm.create_model(encoder, features_only=True, out_indices=(1, 2, 3, 4),
                                             pretrained=pretrained, in_chans=in_chans)
        except Exception as e:  # noqa: BLE001 - the hub raises many kinds: offline, missing cache, unknown name
            raise WeightsError(f"cannot build landmark encoder {encoder!r} ({e}); use a timm model name, and "
                               "pretrained weights need the network (or use --weights none)") from e
        chs = self.encoder.feature_info.channels()
        self.arch = encoder
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in chs)
        # One 3x3 conv at stride 4: at full-spine input sizes it costs about what the encoder does.
        self.fuse = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        self.head = nn.Conv2d(width, out_channels or num_points, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        y = self.lateral[-1](feats[-1])
        for f, lat in zip(reversed(feats[:-1]), reversed(list(self.lateral[:-1]))):
            y = lat(f) + F.interpolate(y, size=f.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.fuse(y))


class ChannelsLast(nn.Module):
    """A landmark network in its inference form (:func:`inference_form`): batch norms folded into the
    convolutions and the activations in channels-last layout. The same function as the network it was made
    from, to float rounding; for inference only (it has no batch norms to train).

    Args:
        fused: the network, batch norms folded.
        arch: its encoder's name.
    """

    def __init__(self, fused: nn.Module, arch: str) -> None:
        super().__init__()
        self.fused = fused.to(memory_format=torch.channels_last)
        self.arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused(x.contiguous(memory_format=torch.channels_last)).contiguous()


def inference_form(net: LandmarkNet) -> nn.Module:
    """``net`` as deployed inference runs it on PyTorch: its batch norms folded into the convolutions
    (``torch.fx``) and channels-last activations, which oneDNN's CPU convolutions run faster (on 2 cores,
    about 1.6x for the bundled first stage and refiner). Corners move by float rounding only. A network
    that cannot be traced is returned as it is. The model files keep the trained form."""
    from torch.fx.experimental.optimization import fuse

    try:
        fused = fuse(net.eval())
    except Exception:  # noqa: BLE001 - tracing fails in many ways on other encoders: keep the eager network
        return net
    return ChannelsLast(fused, getattr(net, "arch", "")).eval()


@dataclass(frozen=True)
class HeatmapCodec:
    """Heatmaps of stride ``stride`` over an input of ``height`` x ``width`` pixels <-> (x, y) pixels.

    Args:
        height: the input's height.
        width: its width.
        stride: input pixels a heatmap cell.
        sigma: the target Gaussian's sigma, in cells.
        angle_weight: the weight of the endplate-angle loss.
        js_weight: the weight of the Jensen-Shannon heatmap loss.
    """

    height: int
    width: int
    stride: int = STRIDE
    sigma: float = 1.5  # of the target Gaussian, in heatmap cells
    angle_weight: float = 0.0
    js_weight: float = 0.0
    name = "corners"
    channels = N_POINTS

    def grid(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Input-pixel x and y of each heatmap cell's centre."""
        h, w = self.height // self.stride, self.width // self.stride
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * self.stride - 0.5
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * self.stride - 0.5
        return xs, ys

    def decode(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, h, w) logits -> ((B, K, 2) sub-pixel (x, y) in input pixels, (B, K, h, w) probabilities)."""
        b, k, h, w = logits.shape
        prob = torch.softmax(logits.float().reshape(b, k, h * w), dim=-1).reshape(b, k, h, w)
        xs, ys = self.grid(logits.device)
        x = (prob.sum(dim=2) * xs).sum(dim=-1)
        y = (prob.sum(dim=3) * ys).sum(dim=-1)
        return torch.stack([x, y], dim=-1), prob

    def target(self, pts: torch.Tensor) -> torch.Tensor:
        """(B, K, 2) positions -> (B, K, h, w) normalised Gaussians."""
        xs, ys = self.grid(pts.device)
        s = self.sigma * self.stride
        gx = torch.exp(-((xs[None, None] - pts[..., :1]) ** 2) / (2 * s * s))
        gy = torch.exp(-((ys[None, None] - pts[..., 1:]) ** 2) / (2 * s * s))
        g = gy[..., :, None] * gx[..., None, :]
        return g / g.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)

    def loss(self, logits: torch.Tensor, pts: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Position L1 and each vertebra's midline error (both as fractions of the input height), and the
        Jensen-Shannon divergence of each heatmap from a Gaussian at its true position."""
        pred, prob = self.decode(logits)
        l1 = (pred - pts).abs().mean() / self.height
        # Each vertebra's midline vector error, on the same scale as the position term: it weighs the
        # corners' relative placement (what a Cobb angle is made of) without being translation-blind
        # enough to drown the positions. An error of tilts (atan2) or one relative to the midline's
        # length does drown them: its gradient is ~100x larger while corners still bunch together.
        tilt = (vertebra_midlines(pred) - vertebra_midlines(pts)).norm(dim=-1).mean() / self.height
        js = torch.zeros((), device=logits.device)
        if self.js_weight > 0:
            q = self.target(pts)
            m = 0.5 * (prob + q)
            js = 0.5 * ((prob * (prob.clamp_min(1e-12) / m.clamp_min(1e-12)).log()).sum(dim=(-2, -1))
                        + (q * (q.clamp_min(1e-12) / m.clamp_min(1e-12)).log()).sum(dim=(-2, -1))).mean()
        total = l1 + self.angle_weight * tilt + self.js_weight * js
        return total, {"l1": float(l1.detach()), "tilt": float(tilt.detach()), "js": float(js.detach())}


@dataclass(frozen=True)
class OffsetCodec(HeatmapCodec):
    """17 vertebra heatmaps + 8 offset maps (dx, dy of the 4 corners, in units of ``offset_scale`` of
    the input height) -> corners: ``corner_kc = sum_p softmax_k(p) * (p + offset_c(p))``.

    Args:
        offset_scale: the offsets' unit, as a share of the input height (the other fields:
            :class:`HeatmapCodec`).
    """

    offset_scale: float = 1 / 16
    name = "offsets"
    channels = N_POINTS // 4 + 8

    def decode(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 25, h, w) -> ((B, 68, 2) corners in input pixels, (B, 68, h, w) each corner's vertebra heatmap)."""
        b, _, h, w = logits.shape
        nv = N_POINTS // 4
        prob = torch.softmax(logits[:, :nv].float().reshape(b, nv, h * w), dim=-1)  # (B, 17, hw)
        xs, ys = self.grid(logits.device)
        off = logits[:, nv:].float().reshape(b, 4, 2, h * w) * (self.offset_scale * self.height)
        vx = off[:, :, 0] + xs.repeat(h)[None, None]  # (B, 4, hw): where each cell puts each corner
        vy = off[:, :, 1] + ys.repeat_interleave(w)[None, None]
        x = torch.einsum("bkp,bcp->bkc", prob, vx)
        y = torch.einsum("bkp,bcp->bkc", prob, vy)
        pts = torch.stack([x, y], dim=-1).reshape(b, N_POINTS, 2)
        return pts, prob.reshape(b, nv, h, w).repeat_interleave(4, dim=1)

    def target(self, pts: torch.Tensor) -> torch.Tensor:
        """(B, 68, 2) corners -> (B, 68, h, w) Gaussians at each corner's vertebra centre."""
        c = pts.reshape(pts.shape[0], -1, 4, 2).mean(dim=2)
        return super().target(c).repeat_interleave(4, dim=1)


CODECS = {"corners": HeatmapCodec, "offsets": OffsetCodec}


def make_codec(name: str, height: int, width: int, **kw: float) -> HeatmapCodec:
    """The codec called ``name`` (``corners`` or ``offsets``) for an input of ``height`` x ``width``.

    Args:
        name: ``corners`` or ``offsets``.
        height: the input's height.
        width: its width.
        **kw: the codec's own settings (its stride, sigma).
    """
    if name not in CODECS:
        raise ValueError(f"unknown landmark encoding {name!r}; accepted: {', '.join(CODECS)}")
    return CODECS[name](height, width, **kw)


def vertebra_midlines(pts: torch.Tensor) -> torch.Tensor:
    """(B, 68, 2) corners -> (B, 17, 2) midline vectors, left-side middle to right-side middle."""
    v = pts.reshape(pts.shape[0], -1, 4, 2)
    return (v[:, :, 1] + v[:, :, 3] - v[:, :, 0] - v[:, :, 2]) / 2


def vertebra_tilt(pts: torch.Tensor) -> torch.Tensor:
    """(B, 68, 2) corners -> (B, 17) tilt in radians of each vertebra's midline, the quantity Cobb
    angles are differences of."""
    d = vertebra_midlines(pts)
    return torch.atan2(d[..., 1], d[..., 0])


# Corner k of the mirrored film is corner MIRROR[k] of the film: left and right swap in each vertebra.
MIRROR = [v * 4 + c for v in range(N_POINTS // 4) for c in (1, 0, 3, 2)]


def parse_scales(text: str | list[float] | tuple[float, ...]) -> tuple[float, ...]:
    """``"1,0.85,1.1"`` (a setting) or a sequence -> the test-time zooms, each in [0.5, 1.5]."""
    try:
        vals = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except (TypeError, ValueError):
        vals = []
    if not vals or any(not 0.5 <= v <= 1.5 for v in vals):
        raise SpinexrError(f"test-time zooms must be numbers in [0.5, 1.5], for example 1,0.85,1.1; got {text!r}")
    return tuple(vals)


def zoom(x: torch.Tensor, s: float) -> tuple[torch.Tensor, tuple[float, float, float, float]]:
    """``x`` (B, C, H, W) in [0, 1] zoomed about its centre by ``s`` at the same size (below 1: zoomed
    out, black around it, as the training zoom-out pads; above 1: the overhang cut off), and the map
    ``(sx, sy, ox, oy)`` from a zoomed pixel position back: ``x = (x' + 0.5 - ox) / sx - 0.5``."""
    h, w = int(x.shape[-2]), int(x.shape[-1])  # fixed by the contract (an export traces them as constants)
    if s == 1.0:
        return x, (1.0, 1.0, 0.0, 0.0)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    y = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    oy, ox = (h - nh) // 2, (w - nw) // 2
    if s < 1.0:
        y = F.pad(y, (ox, w - nw - ox, oy, h - nh - oy))
    else:
        y = y[..., -oy:-oy + h, -ox:-ox + w]
    return y, (nw / w, nh / h, float(ox), float(oy))


class LandmarkPredictor(nn.Module):
    """The deployed landmark graph: (B, 1, H, W) float in [0, 1] -> ((B, 68, 2) input-pixel positions,
    (B, 68) peak probability of each heatmap, a confidence).

    Test-time augmentation inside the graph, all views in one batch: each zoom in ``tta_scales``
    (about the centre; 1 is the film as it is) and, with ``tta_flip``, each view's mirror image
    (mapped back with x -> W - 1 - x and left and right corners swapped). The views' corners, mapped
    back to the input, are averaged: the corners' noise, which tilts vertebrae and so moves Cobb
    angles, averages down. On the AASCE films the landmark CV trained on (its fit and validation
    films, not its test films), zooms 1, 0.85 and 1.1 with the flip brought the SMAPE from 19.2%
    to 17.4% on 150 fit films and from 13.2% to 12.9% on 32 validation films, against the flip alone.

    Args:
        net: the landmark network.
        contract: its data contract.
        encoding: ``corners`` or ``offsets``.
        tta_flip: average with the mirror image.
        tta_scales: the test-time zooms.
    """

    def __init__(self, net: LandmarkNet, contract: DataConfig, encoding: str = "corners", tta_flip: bool = False,
                 tta_scales: tuple[float, ...] | list[float] | str = (1.0,)) -> None:
        super().__init__()
        self.net = net
        self.contract = contract
        self.codec = make_codec(encoding, contract.height, contract.width)
        self.tta_flip = tta_flip
        self.tta_scales = parse_scales(tta_scales)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        views, maps = [], []
        for s in self.tta_scales:
            v, m = zoom(x, s)
            views.append(v)
            maps.append(m)
        if self.tta_flip:
            views += [v.flip(-1) for v in views]
        pts, prob = self.codec.decode(self.net(self.contract.normalize(torch.cat(views))))
        v = len(views)  # the batch stays a dynamic dimension (ONNX): views are split by reshaping
        pts = pts.reshape(v, -1, *pts.shape[1:])
        conf = prob.flatten(2).max(dim=-1).values.reshape(v, -1, prob.shape[1])
        n = len(self.tta_scales)
        if self.tta_flip:
            back = pts[n:][:, :, MIRROR]
            back = torch.stack([(self.contract.width - 1) - back[..., 0], back[..., 1]], dim=-1)
            pts = torch.cat([pts[:n], back])
            conf = torch.cat([conf[:n], conf[n:][:, :, MIRROR]])
        total = torch.zeros_like(pts[0])
        for i in range(v):
            sx, sy, ox, oy = maps[i % n]
            p = pts[i]
            total = total + torch.stack([(p[..., 0] + 0.5 - ox) / sx - 0.5, (p[..., 1] + 0.5 - oy) / sy - 0.5], dim=-1)
        return total / v, conf.mean(dim=0)
