"""What the model looked at: Grad-CAM and Grad-CAM++ (through pytorch-grad-cam) and the attention
head's own map, drawn over the original image at its original aspect, plus a deletion-curve
faithfulness score.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from spinexr.errors import SpinexrError

METHODS = ("gradcam", "gradcam++", "attention")


def cam_ready(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose activations are not in-place.

    In-place ReLUs (DenseNet's ``norm5``, Xception's ``act4``) overwrite the tensor whose gradient
    Grad-CAM hooks into, which breaks backward hooks (pytorch-grad-cam#147).
    """
    m = copy.deepcopy(model).eval()
    for mod in m.modules():
        if isinstance(getattr(mod, "inplace", None), bool):
            mod.inplace = False
    return m


def target_layer(model: nn.Module) -> nn.Module:
    """The default CAM layer of a model (a spatial layer, pytorch-grad-cam#192), from the registry."""
    from spinexr.models import get_model_entry

    path = get_model_entry(model.arch).cam_layer  # type: ignore[attr-defined]
    mod: Any = model.backbone  # type: ignore[attr-defined]
    for part in path.split("."):
        mod = getattr(mod, part)
    return mod


def _normalise(h: np.ndarray) -> np.ndarray:
    h = np.nan_to_num(h.astype(np.float32))
    lo, hi = float(h.min()), float(h.max())
    return (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)


def explain(model: nn.Module, x: torch.Tensor, method: str = "gradcam", target: int | None = None) -> tuple[np.ndarray, int]:
    """A heatmap over the model input for one image.

    Args:
        model: a spine classifier (use :func:`cam_ready` for the CAM methods).
        x: a normalised (1, 1, S, S) input.
        method: ``gradcam``, ``gradcam++`` or ``attention``.
        target: class index to explain (default: the predicted class).

    Returns:
        ``(heat, target)``: an (S, S) float32 map in [0, 1] and the explained class.
    """
    if method not in METHODS:
        raise SpinexrError(f"unknown explanation {method!r}; choose {', '.join(METHODS)}")
    s = x.shape[-1]
    with torch.no_grad():
        logits = model(x)
    if target is None:
        target = int(logits.argmax(1)[0])
    if method == "attention":
        amap = getattr(model, "attention_map", None)
        if amap is None:
            raise SpinexrError("this model has no attention head (attention=none); use gradcam or gradcam++")
        up = F.interpolate(amap[:1, None].float(), size=(s, s), mode="bilinear", align_corners=False)[0, 0]
        return _normalise(up.cpu().numpy()), target
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = GradCAM if method == "gradcam" else GradCAMPlusPlus
    with cls(model=model, target_layers=[target_layer(model)]) as cam:
        heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]
    return _normalise(heat), target


def overlay(img: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a [0,1] heatmap (same H x W as ``img``) over a gray [0,1] image; returns RGB uint8."""
    from matplotlib import colormaps

    rgb_heat = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    gray = np.repeat(img[..., None], 3, axis=2)
    out = (1 - alpha * heat[..., None]) * gray + alpha * heat[..., None] * rgb_heat
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


@torch.no_grad()
def deletion_auc(model: nn.Module, x: torch.Tensor, heat: np.ndarray, target: int, steps: int = 10,
                 fill: float | None = None) -> float:
    """Area under the target probability as the most salient pixels are blacked out, 0 to 100 %.

    Lower is more faithful: a good map removes the evidence first. Compare with a random order.
    All ``steps + 1`` masked copies go through the model as one batch.
    """
    s = x.shape[-1]
    order = torch.as_tensor(np.argsort(-heat.ravel(), kind="stable"))
    fill_v = float(x.min()) if fill is None else fill
    rank = torch.empty(s * s, dtype=torch.long)
    rank[order] = torch.arange(s * s)
    cuts = torch.tensor([int(round(k / steps * s * s)) for k in range(steps + 1)])
    keep = (rank[None, :] >= cuts[:, None]).reshape(steps + 1, 1, s, s).to(x.dtype)
    batch = x * keep + fill_v * (1 - keep)
    probs = torch.softmax(model(batch), 1)[:, target].cpu().numpy()
    return float(np.trapezoid(probs, dx=1.0 / steps))


def faithfulness(model: nn.Module, xs: torch.Tensor, method: str, steps: int = 10, seed: int = 0) -> dict[str, float]:
    """Mean deletion AUC of ``method``'s maps against random maps on a batch of normalised inputs."""
    rng = np.random.default_rng(seed)
    m = cam_ready(model) if method != "attention" else model.eval()
    ours, rand = [], []
    for i in range(xs.shape[0]):
        x = xs[i:i + 1]
        heat, t = explain(m, x, method)
        ours.append(deletion_auc(m, x, heat, t, steps))
        rand.append(deletion_auc(m, x, rng.random(heat.shape).astype(np.float32), t, steps))
    return {"method": method, "deletion_auc": float(np.mean(ours)), "random_deletion_auc": float(np.mean(rand)),
            "n": int(xs.shape[0])}
