"""Measuring the spine on a film with a landmark model: corners in the film's own pixels, the three
Cobb angles with end vertebrae and band, or the reasons a predicted spine was refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spinexr.deploy.decision import DecisionRule
from spinexr.geometry.cobb import CobbResult, cobb_angles
from spinexr.geometry.plausibility import implausibility


@dataclass
class Measurement:
    """One film's measurement. ``result`` is None when the predicted spine is implausible (``refused``)."""

    landmarks: np.ndarray  # (17, 4, 2) film pixels
    result: CobbResult | None
    refused: list[str] = field(default_factory=list)
    confidence: float = 0.0  # mean heatmap peak (0..1)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"plausible": self.result is not None, "refused": self.refused,
                             "confidence": self.confidence}
        if self.result is not None:
            d.update(self.result.to_dict())
        return d

    def row(self) -> dict[str, str]:
        """CSV columns: the angles, end vertebrae and band, or the refusal."""
        if self.result is None:
            return {"cobb_largest": "", "cobb_band": "", "cobb_pt": "", "cobb_mt": "", "cobb_tl": "",
                    "cobb_main_curve": "", "cobb_refused": "; ".join(self.refused)}
        r = self.result
        u, lo, apex = r.pt.levels
        return {"cobb_largest": f"{r.largest:.2f}", "cobb_band": r.band, "cobb_pt": f"{r.pt.angle:.2f}",
                "cobb_mt": f"{r.mt.angle:.2f}", "cobb_tl": f"{r.tl.angle:.2f}",
                "cobb_main_curve": f"{u}-{lo} apex {apex}", "cobb_refused": ""}


class SpineMeasurer:
    """Loads a landmark model file once; measures decoded films."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        from spinexr.deploy.modelfile import load_landmark_model

        self.device = torch.device(device)
        self.predictor, self.meta = load_landmark_model(path, self.device)
        self.contract = self.predictor.contract
        self.rule = DecisionRule.from_meta(self.meta)

    @torch.no_grad()
    def measure(self, img: np.ndarray) -> Measurement:
        x8, pl = self.contract.to_input(img)
        pts, conf = self.predictor(torch.from_numpy(x8.astype(np.float32) / 255.0)[None, None].to(self.device))
        v = pl.points_to_original(pts[0].cpu().numpy()).reshape(17, 4, 2)
        refused = implausibility(v)
        return Measurement(v, None if refused else cobb_angles(v, img.shape[0]), refused, float(conf.mean()))

    def overlay(self, img: np.ndarray, m: Measurement) -> np.ndarray:
        from spinexr.geometry.overlay import draw_overlay

        return draw_overlay(img, m.landmarks, m.result, m.refused)
