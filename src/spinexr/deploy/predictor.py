"""The one classifier predictor: what cv, train and evaluate score is what predict, serve, explain and ONNX run.

:class:`Predictor` runs a model file's inference graph (:class:`~spinexr.models.inference.InferenceModule`)
on files, in PyTorch or, exported to ONNX, in onnxruntime, fed the same uint8 square from
:meth:`~spinexr.data.contract.DataConfig.to_input`, scaled to [0, 1], that evaluation feeds it.
:class:`Prediction` is one film's result; its :meth:`~Prediction.to_document` is the wire format.
A bundle's classifier, landmark model and decision rule run together in :class:`~spinexr.pipeline.Pipeline`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from spinexr.data.contract import DataConfig, Placement
from spinexr.data.imread import DEFAULT_MAX_PIXELS, read_image
from spinexr.deploy.document import SCHEMA
from spinexr.deploy.modelfile import load_inference, read_metadata
from spinexr.errors import ImageReadError, SpinexrError
from spinexr.explain import cam_ready, explain_image
from spinexr.models.inference import InferenceModule
from spinexr.models.ood import input_checks


@dataclass
class Prediction:
    """One file's result; ``status`` is ``ok`` or ``error`` (then ``reason`` says why, and ``kind`` is
    the :class:`~spinexr.errors.ReadErrorKind`). :meth:`to_document` is its one wire format.

    ``ood`` is True when the feature score is over the threshold or the file itself says it is not a
    spine radiograph (``ood_reasons``); ``warnings`` hold what the decoders said about the file.
    """

    path: str
    status: str
    reason: str = ""
    kind: str = ""
    label: str = ""
    probabilities: dict[str, float] = field(default_factory=dict)
    ood_score: float | None = None
    ood: bool | None = None
    ood_reasons: list[str] = field(default_factory=list)
    ood_threshold: float | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    heatmap: str = ""
    spine: Any = None  # a spinexr.deploy.measure.Measurement when a landmark model measured the film
    overlay: str = ""
    decision: Any = None  # a spinexr.deploy.decision.Decision: ``label`` is then its label
    image: tuple[int, int] | None = None  # (width, height) of the decoded film
    model: dict[str, Any] = field(default_factory=dict)  # which bundle made it (Pipeline.model_info)
    timing_ms: dict[str, float] | None = None
    sha256: str | None = None  # of the file's bytes (None where it could not be read at all)

    @classmethod
    def unreadable(cls, path: str | Path, e: ImageReadError) -> Prediction:
        """The result of a file that could not be read: its reason and kind, and the decoders' notes."""
        return cls(path=str(path), status="error", reason=e.reason, kind=e.kind.value, warnings=list(e.notes))

    def decide(self, rule: Any) -> Prediction:
        """Let the measured curve answer the classifier (see :mod:`spinexr.deploy.decision`)."""
        if self.status == "ok":
            self.decision = rule.decide(self.label, self.probabilities, self.spine)
            self.label = self.decision.label
        return self

    def with_file_checks(self, meta: Any) -> Prediction:
        """Add what the file says about itself (:func:`spinexr.ood.input_checks`) and its read warnings."""
        reasons = input_checks(meta)
        if self.ood_score is not None and self.ood:
            reasons = [f"feature score {self.ood_score:.1f} over the threshold"] + reasons
        self.ood_reasons = reasons
        self.ood = bool(reasons) if (self.ood is not None or reasons) else None
        self.warnings = list(getattr(meta, "warnings", []) or [])
        return self

    def to_document(self) -> dict[str, Any]:
        """The prediction document (:mod:`spinexr.deploy.document`): numbers as numbers, the OOD flag a
        boolean (null without a detector), the corners in film pixels to 0.01 px."""
        ok = self.status == "ok"
        spine = None
        if self.spine is not None:
            spine = {**self.spine.to_dict(), "landmarks": np.round(self.spine.landmarks, 2).tolist()}
        return {
            "schema": SCHEMA, "path": self.path, "sha256": self.sha256, "status": self.status,
            "error": None if ok else {"reason": self.reason, "kind": self.kind},
            "label": self.label or None, "probabilities": dict(self.probabilities),
            "ood": {"flag": self.ood, "score": self.ood_score, "threshold": self.ood_threshold,
                    "reasons": list(self.ood_reasons)},
            "warnings": list(self.warnings),
            "image": None if self.image is None else {"width": int(self.image[0]), "height": int(self.image[1])},
            "spine": spine, "decision": None if self.decision is None else self.decision.to_dict(),
            "files": {"heatmap": self.heatmap or None, "overlay": self.overlay or None},
            "model": dict(self.model), "timing_ms": self.timing_ms,
        }


class Predictor:
    """Loads a model file (.safetensors) or an exported .onnx once; predicts files and arrays.

    Args:
        path: the model file.
        backend: ``torch`` or ``onnx`` (``onnx`` with a .safetensors path needs ``onnx_path``).
        device: torch device for the torch backend.
        onnx_path: an ONNX export of the same model, to run on onnxruntime.
        threads: intra-op threads for onnxruntime (None: its default).
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
            self.session, onnx_meta = _ort_session(Path(onnx_path), threads)
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

    def predict_image(self, img: np.ndarray, path: str = "") -> Prediction:
        return self.predict_images([img], [path])[0]

    def predict_images(self, imgs: list[np.ndarray], paths: list[str] | None = None) -> list[Prediction]:
        """Predict several decoded images in one model call (``seconds``: each film's share of the call)."""
        t0 = time.perf_counter()
        x = np.concatenate([self.prepare(img)[0] for img in imgs])
        _, pr, sc = self.run(x)
        dt = (time.perf_counter() - t0) / max(1, len(imgs))
        out = []
        for i, p in enumerate(pr):
            score = float(sc[i]) if self.ood_threshold is not None else None
            out.append(Prediction(path=paths[i] if paths else "", status="ok", label=self.labels[int(p.argmax())],
                                  probabilities={c: float(v) for c, v in zip(self.labels, p)}, ood_score=score,
                                  ood=None if score is None else bool(score > self.ood_threshold),
                                  ood_threshold=self.ood_threshold, seconds=dt,
                                  image=(int(imgs[i].shape[1]), int(imgs[i].shape[0]))))
        return out

    def predict_file(self, path: str | Path) -> tuple[Prediction, np.ndarray | None]:
        """Predict one file; a bad file gives ``status='error'`` with the reason, never an exception."""
        try:
            img, meta = read_image(path, max_pixels=self.max_pixels)
        except ImageReadError as e:
            return Prediction.unreadable(path, e), None
        return self.predict_image(img, str(path)).with_file_checks(meta), img

    def explain(self, img: np.ndarray, method: str = "gradcam", target: int | None = None) -> tuple[np.ndarray, int]:
        """A heatmap in the original image's frame (the letterbox undone)."""

        if self.model is None:
            raise SpinexrError("explanations need the .safetensors model file, not only the ONNX export")
        if method == "attention":
            m = self.model
        else:
            if not hasattr(self, "_cam_model"):
                self._cam_model = cam_ready(self.model)  # a copy without in-place activations, made once
            m = self._cam_model
        return explain_image(m, self.contract, img, method, target, device=self.device)


def _ort_session(path: Path, threads: int | None) -> tuple[Any, dict[str, Any]]:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise SpinexrError("the onnx backend needs onnxruntime: pip install 'spinexr[export]'") from e
    if not path.is_file():
        raise SpinexrError(f"{path}: ONNX file not found; export one with `spinexr export MODEL --onnx {path}`")
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise SpinexrError(f"{path}: onnxruntime cannot load it ({e})") from e
    md = sess.get_modelmeta().custom_metadata_map
    if "spinexr" not in md:
        raise SpinexrError(f"{path}: an ONNX file without spinexr metadata; export it with `spinexr export`")
    return sess, json.loads(md["spinexr"])


__all__ = ["InferenceModule", "Prediction", "Predictor"]
