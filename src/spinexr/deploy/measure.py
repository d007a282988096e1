"""Measuring the spine on a film with a landmark model: corners in the film's own pixels, the three
Cobb angles with end vertebrae and band, or the reasons a predicted spine was refused."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spinexr.data.contract import DataConfig, Placement, fit_to_box
from spinexr.deploy.decision import DecisionRule
from spinexr.errors import SpinexrError, WeightsError
from spinexr.geometry.cobb import CobbResult, cobb_angles, tilt_gain, widen_tilts
from spinexr.geometry.curves import measured
from spinexr.geometry.overlay import draw_overlay
from spinexr.geometry.plausibility import implausibility
from spinexr.geometry.view import FEATURES, ViewCheck
from spinexr.models.files import landmark_metadata, load_landmark_model, load_refiner_model, onnx_session
from spinexr.models.landmark import inference_form
from spinexr.models.refine import refiner_box

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Measurement:
    """One film's measurement (immutable). ``result`` is None when the predicted spine is implausible
    (``refused`` says why).

    Args:
        landmarks: (17, 4, 2) corners in film pixels.
        result: the Cobb angles, or None for a refused spine.
        refused: why the spine was refused.
        confidence: the mean heatmap peak (0 to 1).
        view: the view check's answer (None without a check).
        view_probability: its probability of a full-spine AP view.
        spondylolisthesis_view_line: the check's line for a film called Spondylolisthesis (not output).
        first_stage: the first stage's corners where ``landmarks`` are the refiner's (not output).
    """

    landmarks: np.ndarray  # (17, 4, 2) film pixels
    result: CobbResult | None
    refused: tuple[str, ...] = ()
    confidence: float = 0.0  # mean heatmap peak (0..1)
    # The view check's answer (spinexr.geometry.view), None when the landmark model file has no check.
    view: str | None = None
    view_probability: float | None = None
    # The check's line for a film called Spondylolisthesis (ViewCheck.spondylolisthesis_line); not output.
    spondylolisthesis_view_line: float | None = None
    # The first stage's corners where ``landmarks`` are the refiner's (what a two-stage view check reads); not output.
    first_stage: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "refused", tuple(self.refused))

    def to_dict(self, orientation: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The same keys for every film (nulls where a refused spine or a file without a view check has
        none), so a CSV flattening has the same columns whatever the films: the curves by region
        (:func:`spinexr.geometry.curves.measured`; their sides the patient's where ``orientation``, the
        film's Patient Orientation, is known) and the AASCE triple."""
        return {"plausible": self.result is not None, "refused": list(self.refused), "confidence": self.confidence,
                "view": self.view, "full_spine_probability": self.view_probability,
                **measured(self.landmarks, self.result, orientation)}


class SpineMeasurer:
    """Loads a landmark model file once; measures decoded films.

    Args:
        path: the landmark model file.
        device: the torch device.
        backend: ``torch`` or ``onnx``.
        onnx_path: the landmark model's ONNX export (the onnx backend).
        threads: onnxruntime's intra-op threads.
        refiner: the vertebra refiner file, or None.
        refiner_onnx_path: the refiner's ONNX export (its crops then read by onnxruntime).
    """

    def __init__(self, path: str | Path, device: str = "cpu", backend: str = "torch", onnx_path: str | Path | None = None,
                 threads: int | None = None, refiner: str | Path | None = None,
                 refiner_onnx_path: str | Path | None = None) -> None:
        if backend not in ("torch", "onnx"):
            raise SpinexrError(f"unknown backend {backend!r}; choose torch or onnx")
        self.device = torch.device(device)
        self.path = Path(path)
        # With the onnx backend the networks are not built (no timm import, no weights in PyTorch): only
        # the metadata, and the refiner's crop geometry. The PyTorch predictor is built on first use.
        self._predictor: Any = None
        if backend == "onnx":
            self.meta = landmark_metadata(path)
        else:
            self._predictor, self.meta = self._load_predictor()
        if backend == "onnx" and onnx_path is None:
            raise SpinexrError("the onnx backend needs the landmark model's ONNX export: "
                               "`spinexr export LANDMARK_MODEL --onnx landmarks.onnx`")
        self.backend = backend
        self.session = onnx_session(Path(onnx_path), threads)[0] if backend == "onnx" else None
        self.contract = DataConfig.from_meta(self.meta)
        self.rule = DecisionRule.from_meta(self.meta)
        # Files written before the centreline reading: each vertebra's own corners alone.
        w = self.meta.get("centreline_weight", 0.0)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= w <= 1.0:
            raise WeightsError(f"{path}: malformed centreline_weight {w!r} in its metadata (a number from 0 to 1); "
                               "use the file as spinexr wrote it, or train again with --centreline-weight")
        self.centreline_weight = float(w)
        # The second stage: each vertebra read again from its own crop; its file says how to read the angles.
        self.refiner, self.refiner_meta = (load_refiner_model(refiner, self.device, network=refiner_onnx_path is None)
                                           if refiner is not None else (None, {}))
        if self.refiner is not None and self.refiner.net is not None:
            self.refiner.net = inference_form(self.refiner.net)
        if self.refiner is not None:
            self.centreline_weight = float(self.refiner_meta.get("centreline_weight", 0.0))
        # A gain on the refined tilts (files without one: 1, none), calibrated on validation films
        # (geometry.cobb.widen_tilts): the corners drawn are those the angles are read from.
        try:
            self.tilt_gain = tilt_gain(self.refiner_meta.get("tilt_gain", 1.0))
        except ValueError as e:
            raise WeightsError(f"{refiner}: malformed vertebra refiner ({e}); use the file as spinexr wrote it") from e
        # With the onnx backend the refiner's crops are read by its export (they are still cut by PyTorch).
        self.refiner_session = (onnx_session(Path(refiner_onnx_path), threads)[0]
                                if self.refiner is not None and refiner_onnx_path is not None else None)
        try:
            self.view_check = ViewCheck.from_meta(self.meta)
        except (KeyError, TypeError, ValueError) as e:
            raise WeightsError(f"{path}: malformed view check in its metadata ({e})") from e
        if self.view_check is not None and self.view_check.features != FEATURES and self.refiner is None:
            log.warning("%s: its view check reads the vertebra refiner's corners too, and no refiner was given: "
                        "films are measured without the view check (a Spondylolisthesis call then stands for a "
                        "lumbar view); give the refiner it was fitted with (--refiner)", path)

    @property
    def predictor(self) -> Any:
        """The first stage in PyTorch (:class:`~spinexr.models.landmark.LandmarkPredictor`), built on first use."""
        if self._predictor is None:
            self._predictor, _ = self._load_predictor()
        return self._predictor

    def _load_predictor(self) -> tuple[Any, dict[str, Any]]:
        pred, meta = load_landmark_model(self.path, self.device)
        pred.net = inference_form(pred.net)  # the trained weights, folded for inference
        return pred, meta

    def angles(self, landmarks: np.ndarray, image_height: float) -> CobbResult:
        """The Cobb angles of corners this model predicted, read as this model file says."""
        return cobb_angles(landmarks, image_height, self.centreline_weight)

    @torch.no_grad()
    def corners(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, 1, H, W) float32 inputs in [0, 1] -> ((B, 68, 2) input-pixel corners, (B, 68) confidences)."""
        if self.session is not None:
            pts, conf = self.session.run(["landmarks", "confidence"], {"image": x})
            return pts, conf
        pts, conf = self.predictor(torch.from_numpy(x).to(self.device))
        return pts.cpu().numpy(), conf.cpu().numpy()

    def first_stage(self, imgs: list[np.ndarray]) -> list[tuple[np.ndarray, float]]:
        """The whole-spine model alone: each film's (17, 4, 2) film-pixel corners and mean heatmap confidence."""
        inputs = [self.contract.to_input(img) for img in imgs]
        # One film (its test-time views already a batch) per call: on 2 CPU cores a call of 16 films took
        # 209 ms a film in PyTorch and 69 in ONNX Runtime, against 127 and 62 one film at a time.
        out = []
        for x8, pl in inputs:
            p, c = self.corners(x8.astype(np.float32)[None, None] / 255.0)
            out.append((pl.points_to_original(p[0]).reshape(17, 4, 2), float(c[0].mean())))
        return out

    def second_stage(self, img: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """From the first stage's corners: the corners the angles are read from (refined where this
        measurer has a refiner) and the reasons the spine is refused (empty when it is measured)."""
        reasons = implausibility(first)
        if self.refiner is None:
            return first, reasons
        refined = self.refine(img, first)
        if self.tilt_gain != 1.0:
            refined = widen_tilts(refined, self.tilt_gain)
        return refined, self.judge_refined(reasons, refined)

    def measure_batch(self, imgs: list[np.ndarray]) -> list[Measurement]:
        """Decoded films measured: corners, angles or refusals, the view check."""
        out = []
        for img, (first, conf) in zip(imgs, self.first_stage(imgs)):
            v, refused = self.second_stage(img, first)
            m = Measurement(v, None if refused else self.angles(v, img.shape[0]), refused, conf,
                            first_stage=None if v is first else first)
            if self.view_check is not None:
                m = self.view_check.applied(m, self.view_check.read(v, img.shape[0], conf, m.first_stage))
            out.append(m)
        return out

    @staticmethod
    def judge_refined(first_reasons: list[str], refined: np.ndarray) -> list[str]:
        """Whether a refined spine is measured: the whole-spine model's corners judge the spine
        (``first_reasons``), the refined ones their order, their corners and their gaps, not the overlap of
        neighbouring endplates (each vertebra is placed alone, and across a thin disc two placed
        endplates can cross by a few pixels while each vertebra's tilt, what the angles are read
        from, is right; on held-out AASCE films one spine in five did)."""
        return list(dict.fromkeys([*first_reasons, *implausibility(refined, overlap=False)]))

    def refine(self, img: np.ndarray, corners: np.ndarray) -> np.ndarray:
        """(17, 4, 2) film-pixel corners read again by the vertebra refiner, on the film resized to its height."""
        passes, pl = self.refine_passes(img, corners)
        return pl.points_to_original(passes[-1].reshape(-1, 2)).reshape(17, 4, 2)

    @torch.no_grad()
    def refine_passes(self, img: np.ndarray, corners: np.ndarray) -> tuple[list[np.ndarray], Placement]:
        """Each refiner pass's (17, 4, 2) corners (the last are :meth:`refine`'s) in the pixels of the film as
        the refiner reads it (where its limit on turning is measured), and that film's placement
        (``points_to_original`` maps them back to the film's own pixels)."""
        assert self.refiner is not None
        x8, pl = fit_to_box(img, *refiner_box(*img.shape, self.refiner.film_height), "stretch")
        film = torch.from_numpy(x8.astype(np.float32) / 255.0)[None, None].to(self.device)
        start = torch.as_tensor(pl.points_to_input(corners.reshape(-1, 2)).reshape(17, 4, 2), dtype=torch.float32)
        out = self.refiner.passes(film, start.to(self.device), self._read_crops_onnx if self.refiner_session else None)
        return [p.cpu().numpy() for p in out], pl

    def _read_crops_onnx(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.refiner_session.run(["corners"], {"crops": crops.cpu().numpy()})[0])

    def measure(self, img: np.ndarray) -> Measurement:
        return self.measure_batch([img])[0]

    def overlay(self, img: np.ndarray, m: Measurement) -> np.ndarray:
        return draw_overlay(img, m.landmarks, m.result, m.refused)
