"""The spine classifier: a timm backbone, an attention head and a linear classifier.

Grayscale is handled with timm's ``in_chans=1``: with pretrained weights timm's ``adapt_input_conv``
sums the RGB stem filters into one channel, which is exact for a gray image replicated three times,
and the first convolution costs a third of the RGB one. Inception-v3 is built without aux logits
(they only regularise ImageNet training and break CAM, pytorch-grad-cam#121).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from spinexr import CLASSES
from spinexr.models._registry import get_model_entry, register_model
from spinexr.models.attention import create_attention

# Gray ImageNet statistics: the mean of the RGB means and stds, matching timm's summed stem.


class SpineClassifier(nn.Module):
    """``forward_features`` -> attention-refined map; ``forward_head`` -> logits."""

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        num_classes: int = len(CLASSES),
        attention: str = "mhsa",
        drop_rate: float = 0.2,
        arch: str = "",
    ) -> None:
        super().__init__()
        self.arch = arch
        self.attention_kind = attention
        self.backbone = backbone
        self.attention = create_attention(attention, num_features, drop=0.0)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.num_features = num_features
        self.classifier = nn.Linear(num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(self.backbone.forward_features(x))

    def forward_head(self, f: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        z = self.pool(f).flatten(1)
        if pre_logits:
            return z
        return self.classifier(self.drop(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def attention_map(self) -> torch.Tensor | None:
        """The attention head's spatial map from the last forward: (B, h, w), or None."""
        return getattr(self.attention, "last_map", None)


def _build(name: str, pretrained: bool, in_chans: int, drop_rate: float, attention: str,
           num_classes: int, **timm_kwargs: object) -> SpineClassifier:
    import timm

    entry = get_model_entry(name)
    backbone = timm.create_model(entry.timm_name, pretrained=pretrained, num_classes=0, global_pool="",
                                 in_chans=in_chans, **timm_kwargs)
    return SpineClassifier(backbone, backbone.num_features, num_classes=num_classes, attention=attention,
                           drop_rate=drop_rate, arch=name)


@register_model("legacy_xception", 299, "act4", "Xception (the Keras port, timm legacy_xception)")
def xception(pretrained: bool = False, in_chans: int = 1, drop_rate: float = 0.2, attention: str = "mhsa",
             num_classes: int = len(CLASSES)) -> SpineClassifier:
    """Xception (the Keras port, timm legacy_xception)."""
    return _build("xception", pretrained, in_chans, drop_rate, attention, num_classes)


@register_model("inception_v3", 299, "Mixed_7c", "Inception-v3 without aux logits")
def inception_v3(pretrained: bool = False, in_chans: int = 1, drop_rate: float = 0.2, attention: str = "mhsa",
                 num_classes: int = len(CLASSES)) -> SpineClassifier:
    """Inception-v3 without aux logits."""
    return _build("inception_v3", pretrained, in_chans, drop_rate, attention, num_classes, aux_logits=False)


@register_model("densenet121", 224, "features.norm5", "DenseNet-121")
def densenet121(pretrained: bool = False, in_chans: int = 1, drop_rate: float = 0.2, attention: str = "mhsa",
                num_classes: int = len(CLASSES)) -> SpineClassifier:
    """DenseNet-121."""
    return _build("densenet121", pretrained, in_chans, drop_rate, attention, num_classes)


@register_model("resnet10t", 224, "layer4", "ResNet-10-T: a small, fast backbone for CPU runs and tests")
def small(pretrained: bool = False, in_chans: int = 1, drop_rate: float = 0.2, attention: str = "mhsa",
          num_classes: int = len(CLASSES)) -> SpineClassifier:
    """ResNet-10-T: a small, fast backbone for CPU runs and tests."""
    return _build("small", pretrained, in_chans, drop_rate, attention, num_classes)
