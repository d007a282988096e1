"""The deployable model file: weights as safetensors, with everything needed to use them in its metadata.

One ``.safetensors`` file carries the weights and a JSON ``spinexr`` metadata entry (labels, input
size, normalisation, resize mode, temperature, architecture, attention, version, training data
summary). Loading never unpickles anything. A ``.json`` copy of the metadata is written beside it for
people to read.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from spinexr import CLASSES, __version__
from spinexr.errors import WeightsError

FORMAT = "spinexr-model/1"


def build_metadata(model: nn.Module, *, input_size: int, mean: float, std: float, resize: str,
                   temperature: float, weights: str, data_summary: dict[str, Any] | None = None,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    meta = {
        "format": FORMAT,
        "labels": list(CLASSES),
        "architecture": getattr(model, "arch", ""),
        "attention": getattr(model, "attention_kind", "none"),
        "in_chans": 1,
        "input_size": int(input_size),
        "mean": float(mean),
        "std": float(std),
        "resize": resize,
        "temperature": float(temperature),
        "initial_weights": weights,
        "spinexr_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "training_data": data_summary or {},
    }
    meta.update(extra or {})
    return meta


OOD_KEYS = ("mean", "components", "class_means", "precision")


def save_model(model: nn.Module, meta: dict[str, Any], path: str | Path, ood: Any = None) -> Path:
    """Write ``path`` (.safetensors) and ``path.json``; the write is atomic.

    ``ood`` (an :class:`~spinexr.ood.OODDetector`) is stored as ``ood.*`` tensors beside the weights.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ood is not None:
        for k in OOD_KEYS:
            state[f"ood.{k}"] = torch.as_tensor(getattr(ood, k), dtype=torch.float32).contiguous()
        meta = {**meta, "ood": {"threshold": ood.threshold, "percentile": ood.percentile,
                                "components": int(ood.components.shape[0]), "method": "mahalanobis-pca"}}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"spinexr": json.dumps(meta)})
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: model file not found; train one with `spinexr train` or `spinexr cv`")
    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
    except Exception as e:
        raise WeightsError(f"{path}: not a spinexr model file (safetensors could not read it: {e})") from e
    if "spinexr" not in md:
        raise WeightsError(f"{path}: a safetensors file without spinexr metadata; was it saved by spinexr?")
    meta = json.loads(md["spinexr"])
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: unsupported model format {meta.get('format')!r} (expected {FORMAT})")
    return meta


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any], Any]:
    """Rebuild the architecture from the metadata and load the weights.

    Returns ``(model in eval mode, metadata, OODDetector or None)``.
    """
    from safetensors.torch import load_file

    from spinexr.models import create_model

    meta = read_metadata(path)
    model = create_model(meta["architecture"], weights="none", attention=meta["attention"],
                         in_chans=meta.get("in_chans", 1), num_classes=len(meta["labels"]))
    state = load_file(str(path), device="cpu")
    ood = None
    ood_state = {k[4:]: state.pop(k) for k in list(state) if k.startswith("ood.")}
    if ood_state and "ood" in meta:
        from spinexr.ood import OODDetector

        ood = OODDetector(**{k: ood_state[k].double().numpy() for k in OOD_KEYS},
                          threshold=meta["ood"]["threshold"], percentile=meta["ood"]["percentile"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{path}: weights do not match {meta['architecture']} "
                           f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)")
    model.to(device).eval()
    return model, meta, ood
