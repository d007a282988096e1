"""What the model looked at: Grad-CAM and Grad-CAM++ (through pytorch-grad-cam) and the attention
head's own map, drawn over the original image at its original aspect, plus faithfulness scores
(deletion AUC and ROAD) against smooth random maps.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from spinexr.config import EXPLAIN_METHODS
from spinexr.errors import SpinexrError
from spinexr.models import get_model_entry

METHODS = EXPLAIN_METHODS


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
        if amap.shape[-1] * amap.shape[-2] < 2:
            warnings.warn(f"the attention map is a single token at input size {s}, so it shows nothing; use a larger "
                          "image size", RuntimeWarning, stacklevel=2)
        up = F.interpolate(amap[:1, None].float(), size=(s, s), mode="bilinear", align_corners=False)[0, 0]
        return _normalise(up.cpu().numpy()), target
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = GradCAM if method == "gradcam" else GradCAMPlusPlus
    with cls(model=model, target_layers=[target_layer(model)]) as cam:
        heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]
    heat = _normalise(heat)
    if heat.max() == heat.min():
        warnings.warn(f"the {method} map is constant: at input size {s} the CAM layer is too coarse (or the gradient "
                      "is zero), so the heatmap shows nothing; use a larger image size", RuntimeWarning, stacklevel=2)
    return heat, target


def explain_image(model: nn.Module, contract: Any, img: np.ndarray, method: str = "gradcam",
                  target: int | None = None, device: Any = "cpu") -> tuple[np.ndarray, int]:
    """A heatmap for a decoded film, in the film's own frame: the input is made by the model's data
    contract (the same resize and normalisation it was trained and is deployed with), then undone."""
    x8, pl = contract.to_input(img)
    x = contract.normalize(torch.from_numpy(x8.astype(np.float32) / 255.0)[None, None].to(device))
    heat, t = explain(model, x, method, target)
    return pl.to_original(heat), t


def overlay(img: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a [0,1] heatmap (same H x W as ``img``) over a gray [0,1] image; returns RGB uint8."""
    from matplotlib import colormaps

    rgb_heat = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    gray = np.repeat(img[..., None], 3, axis=2)
    out = (1 - alpha * heat[..., None]) * gray + alpha * heat[..., None] * rgb_heat
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def random_map(size: int, rng: np.random.Generator, grid: int | None = None) -> np.ndarray:
    """A map with no information but a CAM's smoothness: uniform noise on a coarse grid, upsampled.

    Pixel-wise random orders are an unfair baseline: removing scattered pixels corrupts the whole image
    at once and drops the probability faster than any coherent map, so a map "loses" to noise. The
    grid defaults to the backbones' output stride of 32, the resolution a CAM is computed at.
    """
    g = grid or max(2, int(np.ceil(size / 32)))
    coarse = torch.from_numpy(rng.random((1, 1, g, g)).astype(np.float32))
    return _normalise(F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy())


@torch.no_grad()
def deletion_auc(model: nn.Module, x: torch.Tensor, heat: np.ndarray, target: int, steps: int = 10,
                 fill: float | None = None) -> float:
    """Area under the target probability as the most salient pixels are blacked out, 0 to 100 %.

    Lower is more faithful: a good map removes the evidence first. Compare with :func:`random_map`.
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


def road_scores(model: nn.Module, xs: torch.Tensor, heats: np.ndarray, targets: list[int],
                percentiles: tuple[int, ...] = (20, 50, 80), seed: int = 0) -> np.ndarray:
    """ROAD (Rong et al., 2022) per image, through pytorch-grad-cam's ``ROADCombined``.

    Pixels are removed by noisy linear imputation from their neighbours rather than blacked out, so
    the perturbed image stays close to a radiograph. The score is half the drop in the target's
    softmax probability when the most relevant pixels go, minus the drop when the least relevant go,
    averaged over ``percentiles``: higher is more faithful, 0 is no better than chance.
    """
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    metric = ROADCombined(percentiles=list(percentiles))
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # the imputer's noise, seeded; the caller's RNG untouched
        torch.manual_seed(seed)
        out = metric(xs.cpu(), heats.astype(np.float32), [ClassifierOutputSoftmaxTarget(t) for t in targets], model)
    return np.asarray(out, dtype=np.float64).reshape(-1)


def faithfulness(model: nn.Module, xs: torch.Tensor, method: str, steps: int = 10, seed: int = 0,
                 road: bool = True) -> dict[str, Any]:
    """Deletion AUC and ROAD of ``method``'s maps against smooth random maps, on normalised inputs.

    The comparison is paired (the same image and target for both maps); ``road_wins`` is the share of
    images where the method's map beats the random one.
    """
    rng = np.random.default_rng(seed)
    m = cam_ready(model) if method != "attention" else model.eval()
    heats, rands, targets, ours, rand = [], [], [], [], []
    for i in range(xs.shape[0]):
        x = xs[i:i + 1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # counted below as constant_maps
            heat, t = explain(m, x, method)
        r = random_map(x.shape[-1], rng)
        heats.append(heat)
        rands.append(r)
        targets.append(t)
        ours.append(deletion_auc(m, x, heat, t, steps))
        rand.append(deletion_auc(m, x, r, t, steps))
    out: dict[str, Any] = {"method": method, "deletion_auc": float(np.mean(ours)),
                           "random_deletion_auc": float(np.mean(rand)), "n": int(xs.shape[0]),
                           "constant_maps": int(sum(float(h.max()) == float(h.min()) for h in heats))}
    if road:
        ro = road_scores(m, xs, np.stack(heats), targets, seed=seed)
        rr = road_scores(m, xs, np.stack(rands), targets, seed=seed)
        out.update(road=float(ro.mean()), random_road=float(rr.mean()), road_wins=float((ro > rr).mean()))
    return out
