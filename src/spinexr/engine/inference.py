"""Batch inference over resident uint8 tensors, through the one predictor graph.

Evaluation (cv, train, evaluate) scores a model with :func:`run_inference`, which feeds
:class:`~spinexr.models.inference.InferenceModule` exactly what :class:`~spinexr.deploy.predictor.Predictor`
feeds it for a file: the contract's uint8 square scaled to [0, 1]. So the accuracy, calibration and
OOD flags a report shows are those of the predictor users run. It runs in float32, as deployed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from spinexr.data.contract import DataConfig
from spinexr.models.inference import InferenceModule


@dataclass
class InferenceOutput:
    """What the predictor gives for a batch of films: logits (flip-averaged when the model says so),
    calibrated probabilities and OOD scores (zeros without a detector)."""

    logits: np.ndarray
    probs: np.ndarray
    ood_scores: np.ndarray

    def __len__(self) -> int:
        return len(self.probs)


def unit_batches(x_u8: torch.Tensor, idx: np.ndarray | None, device: torch.device,
                 batch_size: int = 64) -> Iterator[torch.Tensor]:
    """``x_u8[idx]`` (all rows when idx is None) in order, on ``device``, as float in [0, 1]."""
    n = x_u8.shape[0] if idx is None else len(idx)
    ids = torch.arange(n) if idx is None else torch.as_tensor(np.asarray(idx), dtype=torch.long)
    for s in range(0, n, batch_size):
        yield x_u8[ids[s:s + batch_size]].to(device, non_blocking=True).float().div_(255.0)


@torch.no_grad()
def run_inference(module: nn.Module, x_u8: torch.Tensor, idx: np.ndarray | None, device: torch.device,
                  batch_size: int = 64) -> InferenceOutput:
    """The predictor's outputs for ``x_u8[idx]``."""
    module.eval()
    lg, pr, sc = [], [], []
    for xb in unit_batches(x_u8, idx, device, batch_size):
        a, b, c = module(xb)
        lg.append(a.float().cpu())
        pr.append(b.float().cpu())
        sc.append(c.float().cpu())
    if not pr:
        k = int(getattr(module, "model", module).classifier.out_features)
        return InferenceOutput(np.zeros((0, k), np.float32), np.zeros((0, k), np.float32), np.zeros(0, np.float32))
    return InferenceOutput(torch.cat(lg).numpy(), torch.cat(pr).numpy(), torch.cat(sc).numpy())


@torch.no_grad()
def extract_features(model: nn.Module, contract: DataConfig, x_u8: torch.Tensor, idx: np.ndarray | None,
                     device: torch.device, batch_size: int = 64) -> np.ndarray:
    """Pooled pre-logit features of ``x_u8[idx]`` (unmirrored), as the predictor's OOD score sees them."""

    module = InferenceModule(model, contract).eval()
    out = [module.features(xb).float().cpu() for xb in unit_batches(x_u8, idx, device, batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 1), np.float32)
