"""Models: a registry of backbones with attention heads, and a factory."""

from spinexr.models import spine as _spine  # noqa: F401  (registers the architectures)
from spinexr.models._factory import create_model, load_backbone_weights, read_state_dict
from spinexr.models._registry import ModelEntry, get_model_entry, list_models
from spinexr.models.spine import SpineClassifier

__all__ = ["ModelEntry", "SpineClassifier", "create_model", "get_model_entry",
           "list_models", "load_backbone_weights", "read_state_dict"]
