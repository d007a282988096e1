"""The inference graph of a trained classifier: what every path that runs a model runs.

:class:`InferenceModule` holds the data contract's normalisation, the network, the flip test-time
augmentation (a recorded property of the model file), the temperature (fitted on this module's own
logits) and the OOD score. Evaluation runs it over resident uint8 tensors
(:func:`spinexr.engine.inference.run_inference`); :class:`~spinexr.deploy.predictor.Predictor` runs it on
files, in PyTorch or, exported to ONNX, in onnxruntime. Both feed it the same uint8 square from
:meth:`~spinexr.data.contract.DataConfig.to_input`, scaled to [0, 1].
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from spinexr.data.contract import DataConfig


class InferenceModule(nn.Module):
    """(B, C, S, S) float in [0, 1] -> (logits, calibrated probabilities, OOD score).

    Args:
        model: a classifier with ``forward_features``, ``forward_head(pre_logits=True)`` and ``classifier``.
        contract: the model's :class:`~spinexr.data.contract.DataConfig` (normalisation).
        tta_flip: average the logits with those of the mirrored image.
        temperature: divides the (averaged) logits before the softmax.
        ood: an :class:`~spinexr.models.ood.OODDetector` on the pooled features of the unmirrored image.
    """

    def __init__(self, model: nn.Module, contract: DataConfig, tta_flip: bool = False, temperature: float = 1.0,
                 ood: Any = None) -> None:
        super().__init__()
        self.model = model
        self.contract = contract
        self.tta_flip = bool(tta_flip)
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.ood = None
        self.has_ood = False
        if ood is not None:
            self.set_ood(ood)

    def set_temperature(self, t: float) -> None:
        self.temperature.fill_(float(t))

    def set_ood(self, ood: Any) -> None:
        """Put an :class:`~spinexr.models.ood.OODDetector`'s arrays into the graph (as buffers)."""
        dev = next(self.model.parameters()).device
        self.ood, self.has_ood = ood, True
        for name in ("mean", "components", "class_means", "precision"):
            self.register_buffer(f"ood_{name}", torch.as_tensor(getattr(ood, name), dtype=torch.float32, device=dev))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logit features of [0, 1] films (unmirrored): what the OOD score is computed on."""
        return self.model.forward_head(self.model.forward_features(self.contract.normalize(x)), pre_logits=True)

    def _features_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.model.classifier(f)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f, logits = self._features_logits(x)
        if self.tta_flip:
            logits = 0.5 * (logits + self._features_logits(torch.flip(x, dims=[3]))[1])
        logits = logits.float()
        probs = torch.softmax(logits / self.temperature, dim=1)
        if self.has_ood:
            z = (f.float() - self.ood_mean) @ self.ood_components.t()
            d = z[:, None, :] - self.ood_class_means[None]
            score = torch.einsum("nck,kl,ncl->nc", d, self.ood_precision, d).min(dim=1).values
        else:
            score = torch.zeros(x.shape[0], device=x.device)
        return logits, probs, score
