"""``create_model(name, **kwargs)``: build a registered model, then load weights if asked."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file

from spinexr.errors import WeightsError
from spinexr.models._registry import get_model_entry

log = logging.getLogger(__name__)

OFFLINE_HINT = (
    "use --weights none to train from scratch, or --weights PATH with a local .safetensors/.pth file "
    "(a timm state dict for this architecture)"
)


def create_model(name: str, weights: str | None = "none", **kwargs: Any) -> nn.Module:
    """Build ``name`` with ``weights`` = ``none`` | ``imagenet`` | a local file path.

    Keyword arguments that are None are dropped, so CLI values pass straight through.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    entry = get_model_entry(name)
    weights = weights or "none"
    if weights == "imagenet":
        return _create_pretrained(entry.fn, name, **kwargs)
    model = entry.fn(pretrained=False, **kwargs)
    if weights != "none":
        load_backbone_weights(model, weights)
    return model


def _create_pretrained(fn: Any, name: str, **kwargs: Any) -> nn.Module:
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get("TIMM_OFFLINE"):
        offline = True
    else:
        offline = False
    try:
        return fn(pretrained=True, **kwargs)
    except Exception as e:  # the hub raises many kinds: connection, offline mode, missing cache entry
        why = "HF_HUB_OFFLINE is set" if offline else f"{type(e).__name__}: {e}"
        raise WeightsError(
            f"could not fetch ImageNet weights for {name} through timm ({why}); {OFFLINE_HINT}"
        ) from e


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Tensors from a .safetensors file or a torch file, never unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found; {OFFLINE_HINT}")
    try:
        if path.suffix == ".safetensors":
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(
            f"{path}: cannot load weights ({type(e).__name__}: {e}); give a .safetensors file or a .pth "
            "holding only tensors"
        ) from e
    for key in ("state_dict", "model", "model_state"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not sd:
        raise WeightsError(f"{path}: no state dict of tensors found in the file")
    return sd


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load a timm state dict (or a whole spinexr model's) from ``path`` into ``model``.

    A 3-channel stem is adapted to the model's channel count with timm's ``adapt_input_conv``; the
    classifier of an ImageNet state dict is skipped. Too few matching tensors is an error.
    """
    from timm.models import adapt_input_conv

    sd = read_state_dict(path)
    if any(k.startswith("backbone.") for k in sd):
        target, prefix = model, ""
    else:
        target, prefix = model.backbone, ""  # type: ignore[union-attr]
    own = target.state_dict()
    loaded: dict[str, Any] = {}
    for k, v in sd.items():
        k2 = prefix + k
        if k2 not in own:
            continue
        if own[k2].shape != v.shape:
            if v.ndim == 4 and own[k2].ndim == 4 and v.shape[0] == own[k2].shape[0] and v.shape[2:] == own[k2].shape[2:]:
                v = adapt_input_conv(own[k2].shape[1], v)
            else:
                continue
        loaded[k2] = v
    frac = len(loaded) / max(1, len(own))
    if frac < 0.5:
        raise WeightsError(
            f"{path}: only {len(loaded)} of {len(own)} tensors match this architecture; is the file for "
            f"a different model? ({OFFLINE_HINT})"
        )
    target.load_state_dict(loaded, strict=False)
    log.info("loaded %d/%d tensors from %s", len(loaded), len(own), path)
