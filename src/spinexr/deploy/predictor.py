"""The one classifier predictor: what cv, train and evaluate score is what predict, serve, explain and ONNX run.

:class:`Predictor` runs a model file's inference graph (:class:`~spinexr.models.inference.InferenceModule`)
on files, in PyTorch or, exported to ONNX, in onnxruntime, fed the same uint8 square from
:meth:`~spinexr.data.contract.DataConfig.to_input`, scaled to [0, 1], that evaluation feeds it.
:class:`~spinexr.deploy.prediction.Classification` is its answer for one film; a film's whole result is a
:class:`~spinexr.deploy.prediction.Prediction`, whose :meth:`~spinexr.deploy.prediction.Prediction.to_document`
is the wire format.
A bundle's classifier, landmark model and decision rule run together in :class:`~spinexr.pipeline.Pipeline`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from spinexr.data.contract import DataConfig, Placement
from spinexr.data.imread import DEFAULT_MAX_PIXELS, read_image
from spinexr.deploy.prediction import Classification, Prediction
from spinexr.errors import ImageReadError, SpinexrError
from spinexr.explain import cam_ready, explain_image
from spinexr.models.files import load_inference, onnx_session, read_metadata
from spinexr.models.inference import InferenceModule


class Predictor:
    """Loads a model file (.safetensors) or an exported .onnx once; predicts files and arrays.

    Args:
        path: the model file.
        backend: ``torch`` or ``onnx`` (``onnx`` with a .safetensors path needs ``onnx_path``).
        device: torch device for the torch backend.
        onnx_path: an ONNX export of the same model, to run on onnxruntime.
        threads: intra-op threads for onnxruntime (None: its default).
        max_pixels: the largest film :meth:`predict_file` decodes.
    """

    def __init__(self, path: str | Path, backend: str | None = None, device: str = "cpu",
                 onnx_path: str | Path | None = None, threads: int | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        path = Path(path)
        self.max_pixels = max_pixels
        self._module: InferenceModule | None = None
        self._weights: Path | None = None  # the .safetensors file the PyTorch module is built from, when first needed
        self.session: Any = None
        if path.suffix == ".onnx":
            onnx_path, backend = path, "onnx"
        backend = backend or ("onnx" if onnx_path else "torch")
        self.backend = backend
        self.device = torch.device(device)
        if path.suffix != ".onnx":
            self._weights = path
            if backend == "onnx":  # ONNX Runtime predicts: the network is built only for explanations
                self.meta = read_metadata(path)
            else:
                self._module, self.meta = load_inference(path, self.device)
        if backend == "onnx":
            if onnx_path is None:
                raise SpinexrError("the onnx backend needs an .onnx file: export one with "
                                   "`spinexr export MODEL --onnx out.onnx`")
            self.session, onnx_meta = onnx_session(Path(onnx_path), threads)
            if self._weights is None:
                self.meta = onnx_meta
        elif backend != "torch":
            raise SpinexrError(f"unknown backend {backend!r}; choose torch or onnx")
        self.labels: list[str] = list(self.meta["labels"])
        self.contract = DataConfig.from_meta(self.meta)
        self.size = self.contract.input_size
        self.ood_threshold = float(self.meta["ood"]["threshold"]) if self.meta.get("ood") else None

    @property
    def module(self) -> InferenceModule | None:
        """The PyTorch module (None with only an ONNX file). With the onnx backend it is built on first use
        (explanations), so loading a pipeline to predict never imports timm or builds a network."""
        if self._module is None and self._weights is not None:
            self._module, _ = load_inference(self._weights, self.device)
        return self._module

    @property
    def model(self) -> nn.Module | None:
        """The classifier network inside :attr:`module`."""
        m = self.module
        return None if m is None else m.model

    @property
    def name(self) -> str:
        return str(self.meta.get("architecture", ""))

    def prepare(self, img: np.ndarray) -> tuple[np.ndarray, Placement]:
        """A decoded film -> the module's (1, 1, S, S) float input in [0, 1], by the model's data contract."""
        x, pl = self.contract.to_input(img)
        return x.astype(np.float32)[None, None] / 255.0, pl

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(B, 1, S, S) float32 in [0, 1] -> (logits, probs, ood scores) as numpy."""
        if self.session is not None:
            lg, pr, sc = self.session.run(["logits", "probs", "ood_score"], {"image": x.astype(np.float32)})
            return lg, pr, sc
        module = self.module
        assert module is not None
        with torch.no_grad():
            lg, pr, sc = module(torch.from_numpy(x).to(self.device))
        return lg.cpu().numpy(), pr.cpu().numpy(), sc.cpu().numpy()

    def predict_image(self, img: np.ndarray) -> Classification:
        """The classifier's answer for one decoded film."""
        return self.predict_images([img])[0]

    def predict_images(self, imgs: list[np.ndarray]) -> list[Classification]:
        """The classifier's answers for decoded films, in one model call (``seconds``: each film's share)."""
        t0 = time.perf_counter()
        x = np.concatenate([self.prepare(img)[0] for img in imgs])
        _, pr, sc = self.run(x)
        dt = (time.perf_counter() - t0) / max(1, len(imgs))
        return [Classification(label=self.labels[int(p.argmax())], probabilities={c: float(v) for c, v in zip(self.labels, p)},
                               ood_score=float(sc[i]) if self.ood_threshold is not None else None,
                               ood_threshold=self.ood_threshold, seconds=dt,
                               image=(int(imgs[i].shape[1]), int(imgs[i].shape[0])))
                for i, p in enumerate(pr)]

    def predict_file(self, path: str | Path) -> tuple[Prediction, np.ndarray | None]:
        """The classifier alone on one file, with the file's own checks; a bad file gives ``status='error'``
        with the reason, never an exception."""
        try:
            img, meta = read_image(path, max_pixels=self.max_pixels)
        except ImageReadError as e:
            return Prediction.unreadable(path, e), None
        return Prediction.of(self.predict_image(img), path, meta=meta), img

    def explain(self, img: np.ndarray, method: str = "gradcam", target: int | None = None) -> tuple[np.ndarray, int]:
        """A heatmap in the original image's frame (the letterbox undone).

        Args:
            img: the decoded film, float in [0, 1].
            method: ``gradcam``, ``gradcam++`` or ``attention``.
            target: the class index explained (None: the predicted class).

        Returns:
            the heatmap (H x W in [0, 1]) and the class explained.
        """

        if self.model is None:
            raise SpinexrError("explanations need the .safetensors model file, not only the ONNX export")
        if method == "attention":
            m = self.model
        else:
            if not hasattr(self, "_cam_model"):
                self._cam_model = cam_ready(self.model)  # a copy without in-place activations, made once
            m = self._cam_model
        return explain_image(m, self.contract, img, method, target, device=self.device)


__all__ = ["InferenceModule", "Predictor"]
