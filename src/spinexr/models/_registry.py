"""The model registry: each architecture is one small registered function (timm's pattern)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn

from spinexr.data.contract import DataConfig
from spinexr.errors import SpinexrError


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture and its defaults."""

    name: str
    fn: Callable[..., nn.Module]
    timm_name: str
    data_config: DataConfig  # the default data contract (timm's pretrained_cfg, for one gray channel)
    cam_layer: str  # dotted path, inside the backbone, of the default Grad-CAM target layer
    description: str

    @property
    def input_size(self) -> int:
        return self.data_config.input_size


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(timm_name: str, input_size: int, cam_layer: str, description: str = "") -> Callable:
    """Decorator: register ``fn`` under its own name."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[fn.__name__] = ModelEntry(fn.__name__, fn, timm_name, DataConfig(input_size), cam_layer,
                                            description or (fn.__doc__ or "").strip().splitlines()[0])
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_model_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise SpinexrError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _REGISTRY[name]
