"""Running a trained model on new files: one :class:`Predictor` for PyTorch and onnxruntime.

Both backends run the same :class:`DeployModule` graph: normalisation, the classifier, temperature
scaling and the OOD score are inside it, so an ONNX file needs only a letterboxed [0, 1] input.
"""

from __future__ import annotations

import atexit
import json
import threading
import time
import weakref
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from spinexr.errors import ImageReadError, SpinexrError
from spinexr.imread import DEFAULT_MAX_PIXELS, read_image
from spinexr.preprocess import Placement, fit_to_square


class DeployModule(nn.Module):
    """(B, 1, S, S) float in [0, 1] -> (logits, calibrated probabilities, OOD score)."""

    def __init__(self, model: nn.Module, meta: dict[str, Any], ood: Any = None) -> None:
        super().__init__()
        self.model = model
        self.mean = float(meta["mean"])
        self.std = float(meta["std"])
        self.register_buffer("temperature", torch.tensor(float(meta.get("temperature", 1.0))))
        self.has_ood = ood is not None
        if ood is not None:
            self.register_buffer("ood_mean", torch.as_tensor(ood.mean, dtype=torch.float32))
            self.register_buffer("ood_components", torch.as_tensor(ood.components, dtype=torch.float32))
            self.register_buffer("ood_class_means", torch.as_tensor(ood.class_means, dtype=torch.float32))
            self.register_buffer("ood_precision", torch.as_tensor(ood.precision, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (x - self.mean) / self.std
        f = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        logits = self.model.classifier(f)
        probs = torch.softmax(logits / self.temperature, dim=1)
        if self.has_ood:
            z = (f - self.ood_mean) @ self.ood_components.t()
            d = z[:, None, :] - self.ood_class_means[None]
            score = torch.einsum("nck,kl,ncl->nc", d, self.ood_precision, d).min(dim=1).values
        else:
            score = torch.zeros(x.shape[0], device=x.device)
        return logits, probs, score


@dataclass
class Prediction:
    """One file's result; ``status`` is ``ok`` or ``error`` (then ``reason`` says why, and ``kind`` is
    the :class:`~spinexr.errors.ReadErrorKind`).

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
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def with_file_checks(self, meta: Any) -> "Prediction":
        """Add what the file says about itself (:func:`spinexr.ood.input_checks`) and its read warnings."""
        from spinexr.ood import input_checks

        reasons = input_checks(meta)
        if self.ood_score is not None and self.ood:
            reasons = [f"feature score {self.ood_score:.1f} over the threshold"] + reasons
        self.ood_reasons = reasons
        self.ood = bool(reasons) if (self.ood is not None or reasons) else None
        self.warnings = list(getattr(meta, "warnings", []) or [])
        return self

    def row(self, labels: list[str]) -> dict[str, Any]:
        return {"path": self.path, "status": self.status, "reason": self.reason, "kind": self.kind,
                "label": self.label,
                **{f"p_{c}": (f"{self.probabilities[c]:.6f}" if self.probabilities else "") for c in labels},
                "ood_score": "" if self.ood_score is None else f"{self.ood_score:.3f}",
                "ood": "" if self.ood is None else str(self.ood).lower(),
                "ood_reasons": "; ".join(self.ood_reasons), "warnings": "; ".join(self.warnings)}


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
        self.model: nn.Module | None = None
        self.deploy: DeployModule | None = None
        self.session: Any = None
        if path.suffix == ".onnx":
            onnx_path, backend = path, "onnx"
        backend = backend or ("onnx" if onnx_path else "torch")
        self.backend = backend
        self.device = torch.device(device)
        if path.suffix != ".onnx":
            from spinexr.modelfile import load_model

            self.model, self.meta, self.ood = load_model(path, self.device)
            self.deploy = DeployModule(self.model, self.meta, self.ood).to(self.device).eval()
        if backend == "onnx":
            if onnx_path is None:
                raise SpinexrError("the onnx backend needs an .onnx file: export one with `spinexr export MODEL --onnx out.onnx`")
            self.session, onnx_meta = _ort_session(Path(onnx_path), threads)
            if self.deploy is None:
                self.meta = onnx_meta
                self.ood = None
        elif backend != "torch":
            raise SpinexrError(f"unknown backend {backend!r}; choose torch or onnx")
        self.labels: list[str] = list(self.meta["labels"])
        self.size = int(self.meta["input_size"])
        self.ood_threshold = float(self.meta["ood"]["threshold"]) if self.meta.get("ood") else None

    @property
    def name(self) -> str:
        return str(self.meta.get("architecture", ""))

    def prepare(self, img: np.ndarray) -> tuple[np.ndarray, Placement]:
        x, pl = fit_to_square(img, self.size, self.meta.get("resize", "letterbox"))
        return x.astype(np.float32)[None, None] / 255.0, pl

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(B, 1, S, S) float32 in [0, 1] -> (logits, probs, ood scores) as numpy."""
        if self.session is not None:
            lg, pr, sc = self.session.run(["logits", "probs", "ood_score"], {"image": x.astype(np.float32)})
            return lg, pr, sc
        assert self.deploy is not None
        with torch.no_grad():
            lg, pr, sc = self.deploy(torch.from_numpy(x).to(self.device))
        return lg.cpu().numpy(), pr.cpu().numpy(), sc.cpu().numpy()

    def predict_image(self, img: np.ndarray, path: str = "") -> Prediction:
        return self.predict_images([img], [path])[0]

    def predict_images(self, imgs: list[np.ndarray], paths: list[str] | None = None) -> list[Prediction]:
        """Predict several decoded images in one model call (``seconds`` is the call's time, shared)."""
        t0 = time.perf_counter()
        x = np.concatenate([self.prepare(img)[0] for img in imgs])
        _, pr, sc = self.run(x)
        dt = time.perf_counter() - t0
        out = []
        for i, p in enumerate(pr):
            score = float(sc[i]) if self.ood_threshold is not None else None
            out.append(Prediction(path=paths[i] if paths else "", status="ok", label=self.labels[int(p.argmax())],
                                  probabilities={c: float(v) for c, v in zip(self.labels, p)}, ood_score=score,
                                  ood=None if score is None else bool(score > self.ood_threshold), seconds=dt))
        return out

    def predict_file(self, path: str | Path) -> tuple[Prediction, np.ndarray | None]:
        """Predict one file; a bad file gives ``status='error'`` with the reason, never an exception."""
        try:
            img, meta = read_image(path, max_pixels=self.max_pixels)
        except ImageReadError as e:
            return Prediction(path=str(path), status="error", reason=e.reason, kind=e.kind.value,
                              warnings=e.notes), None
        return self.predict_image(img, str(path)).with_file_checks(meta), img

    def explain(self, img: np.ndarray, method: str = "gradcam", target: int | None = None) -> tuple[np.ndarray, int]:
        """A heatmap in the original image's frame (the letterbox undone)."""
        from spinexr.explain import cam_ready, explain

        if self.model is None:
            raise SpinexrError("explanations need the .safetensors model file, not only the ONNX export")
        if method == "attention":
            m = self.model
        else:
            if not hasattr(self, "_cam_model"):
                self._cam_model = cam_ready(self.model)  # a copy without in-place activations, made once
            m = self._cam_model
        x, pl = self.prepare(img)
        xt = (torch.from_numpy(x).to(self.device) - self.meta["mean"]) / self.meta["std"]
        heat, t = explain(m, xt, method, target)
        return pl.to_original(heat), t


class QueueFull(SpinexrError):
    """More requests are waiting than :class:`MicroBatcher` accepts."""


_LIVE_BATCHERS: weakref.WeakSet[MicroBatcher] = weakref.WeakSet()


@atexit.register
def _close_batchers() -> None:
    # A worker that wakes while the interpreter is finalizing aborts the process: end them all first.
    for b in list(_LIVE_BATCHERS):
        b.close(timeout=5.0)


class MicroBatcher:
    """Runs concurrent callers' images through the model together, one model call at a time.

    Callers queue their image and wait. One worker thread owns the model: whenever the model is
    free, it takes every waiting image, up to ``max_batch``, oldest first, runs them as one batch and
    wakes each caller with its own result. A lone caller runs at once with a batch of one, so there
    is no added wait; under load, the images that queued during a model call share the next one. On a
    GPU this turns a queue of batch-1 requests into a few full batches; on a CPU already near its
    arithmetic peak it saves per-call overhead. With ``max_queue`` images waiting, :meth:`predict`
    raises :class:`QueueFull` at once, so latency under overload stays bounded instead of growing.
    Hold :attr:`model_lock` to use the model for anything else (explanations).
    """

    def __init__(self, predictor: Predictor, max_batch: int = 8, max_queue: int = 64) -> None:
        if max_batch < 1 or max_queue < 1:
            raise SpinexrError(f"--max-batch ({max_batch}) and --max-queue ({max_queue}) must be at least 1")
        self.predictor = predictor
        self.max_batch = int(max_batch)
        self.max_queue = int(max_queue)
        self.model_lock = threading.Lock()
        self.batch_sizes: Counter[int] = Counter()  # model calls by batch size
        self._pending: deque[dict[str, Any]] = deque()
        self._cv = threading.Condition()
        self._worker: threading.Thread | None = None
        self.idle_seconds = 60.0  # the worker thread ends after this long without work
        self._stop = False
        _LIVE_BATCHERS.add(self)

    def predict(self, img: np.ndarray) -> Prediction:
        slot: dict[str, Any] = {"img": img, "event": threading.Event()}
        with self._cv:
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"{len(self._pending)} images are already waiting (limit {self.max_queue}); retry later")
            self._pending.append(slot)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._loop, name="spinexr-batcher", daemon=True)
                self._worker.start()
            self._cv.notify()
        slot["event"].wait()
        if "error" in slot:
            raise slot["error"]
        return slot["result"]

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending:
                    if self._stop or (not self._cv.wait(timeout=self.idle_seconds) and not self._pending):
                        self._worker = None  # closed or idle: end; the next predict() starts a new worker
                        return
            with self.model_lock:  # the batch is taken only once the model is free, so it is as full as it can be
                with self._cv:
                    batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
                try:
                    self._run(batch)
                except BaseException as e:  # never leave a caller waiting
                    for b in batch:
                        if not b["event"].is_set():
                            b["error"] = e
                            b["event"].set()
                    raise

    def close(self, timeout: float = 30.0) -> None:
        """Finish the waiting images, then end the worker thread (a later :meth:`predict` starts a new one)."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join(timeout)
        with self._cv:
            self._stop = False

    def _run(self, batch: list[dict[str, Any]]) -> None:
        self.batch_sizes[len(batch)] += 1
        try:
            preds = self.predictor.predict_images([b["img"] for b in batch])
        except Exception as e:
            if len(batch) > 1:  # one caller's image must not fail the others: run them one by one
                for b in batch:
                    self._run([b])
                return
            batch[0]["error"] = e
            batch[0]["event"].set()
            return
        for b, p in zip(batch, preds):
            b["result"] = p
            b["event"].set()


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
