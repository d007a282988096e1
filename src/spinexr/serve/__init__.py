"""``spinexr serve``: a FastAPI service and a browser page over one loaded model.

Endpoints: ``POST /v1/predict`` and ``POST /v1/explain`` (multipart ``file``), ``GET /v1/model``,
``GET /healthz``, the OpenAPI docs at ``/docs``, and the page at ``/``.

Untrusted input is bounded: uploads over the size limit get 413 (checked on Content-Length before
the body is read, and again while reading), content that is not an image gets 415, an image that
cannot be decoded or is over the pixel limit (a decompression bomb) gets 422. Uploads are written
only into a per-request temporary folder that is removed afterwards. The model is loaded once.
Concurrent predictions are micro-batched, and a full queue answers 503 with ``Retry-After``.
"""

# No `from __future__ import annotations`: FastAPI resolves the endpoint signatures at runtime.
import inspect
import io
import logging
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from spinexr import __version__
from spinexr.errors import ImageReadError, SpinexrError

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
CHUNK = 1 << 20

# How an unreadable upload is answered: not something we read at all -> 415; an image we read but
# cannot use (damaged, too large in pixels, too small, blank) -> 422.
STATUS_BY_KIND = {"format": 415, "no_pixels": 415, "codec": 415, "not_found": 422, "empty": 422,
                  "corrupt": 422, "too_large": 422, "too_small": 422, "constant": 422}


def _need_fastapi() -> Any:
    try:
        import fastapi  # noqa: F401
    except ImportError as e:
        raise SpinexrError("serving needs FastAPI and uvicorn: pip install 'spinexr[serve]'") from e


def create_app(model_path: str | Path, onnx_path: str | Path | None = None, max_upload_mb: float = 32.0,
               max_pixels: int = 60_000_000, threads: int | None = None, max_batch: int = 8,
               max_queue: int = 32, landmarks_path: str | Path | None = None) -> Any:
    """Build the FastAPI app; the model is loaded here, once.

    Concurrent ``/v1/predict`` requests share model calls through a :class:`MicroBatcher` of up to
    ``max_batch`` images; with more than ``max_queue`` images waiting, a request gets 503 with
    ``Retry-After`` at once rather than an unbounded wait.
    """
    _need_fastapi()
    from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    from spinexr.deploy.batching import MicroBatcher, QueueFull
    from spinexr.deploy.predictor import Predictor
    from spinexr.explain import overlay

    if threads:
        import torch

        torch.set_num_threads(threads)
    predictor = Predictor(model_path, onnx_path=onnx_path, threads=threads, max_pixels=max_pixels)
    measurer = None
    if landmarks_path is not None:
        import threading

        from spinexr.deploy.measure import SpineMeasurer

        measurer = SpineMeasurer(landmarks_path)
        measure_lock = threading.Lock()  # one film through the landmark model at a time

        def _measure(img: Any) -> Any:
            with measure_lock:
                return measurer.measure(img)
    max_bytes = int(max_upload_mb * 1024 * 1024)
    batcher = MicroBatcher(predictor, max_batch=max_batch, max_queue=max_queue)
    import anyio

    # Inference runs in worker threads so the event loop (and /healthz) stays responsive. The model
    # runs one call at a time (each call already uses every intra-op thread it was given): predictions
    # queue in the batcher, one thread each, and explanations take the batcher's model lock.
    predict_threads = anyio.CapacityLimiter(max_queue + max_batch)
    explain_threads = anyio.CapacityLimiter(1)
    meta_public = {k: v for k, v in predictor.meta.items()}
    meta_public["backend"] = predictor.backend
    meta_public["spinexr_server_version"] = __version__

    extra: dict[str, Any] = {}
    if "max_body_size" in inspect.signature(FastAPI.__init__).parameters:
        # A backstop for chunked uploads without Content-Length; declared sizes meet the JSON 413 below first.
        extra["max_body_size"] = 2 * max_bytes + 64 * 1024

    @asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        yield
        batcher.close()  # finish what is queued, then end the worker thread

    app = FastAPI(title="spinexr", version=__version__, lifespan=lifespan,
                  description="Spine radiograph classification: Normal, Scoliosis, Spondylolisthesis.", **extra)

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        cl = request.headers.get("content-length")
        if cl is not None:
            try:
                too_big = int(cl) > max_bytes + 64 * 1024  # multipart framing overhead
            except ValueError:
                return JSONResponse({"detail": "invalid Content-Length header"}, status_code=400)
            if too_big:
                return JSONResponse({"detail": f"upload over the {max_upload_mb:g} MB limit"}, status_code=413)
        return await call_next(request)

    async def _read_upload(file: UploadFile) -> bytes:
        buf = bytearray()
        while True:
            chunk = await file.read(CHUNK)
            if not chunk:
                break
            buf += chunk
            if len(buf) > max_bytes:
                raise HTTPException(413, f"upload over the {max_upload_mb:g} MB limit")
        if not buf:
            raise HTTPException(422, "the uploaded file is empty")
        return bytes(buf)

    def _decode(data: bytes, filename: str | None) -> Any:
        from spinexr.data.imread import (
            read_image,  # Only the extension of the client's name is kept: the name itself never reaches the disk.
        )
        suffix = Path(filename or "").suffix.lower()
        if not suffix.isascii() or len(suffix) > 8 or not suffix[1:].isalnum():
            suffix = ""
        with tempfile.TemporaryDirectory(prefix="spinexr-") as d:
            p = Path(d) / f"upload{suffix}"
            p.write_bytes(data)
            try:
                img, meta = read_image(p, max_pixels=max_pixels)
            except ImageReadError as e:
                raise HTTPException(STATUS_BY_KIND.get(e.kind.value, 422),
                                    {"reason": e.reason.replace(str(p), "upload"), "kind": e.kind.value,
                                     "notes": [n.replace(str(p), "upload") for n in e.notes]}) from e
        meta.path = "upload"
        meta.warnings = [w.replace(str(p), "upload") for w in meta.warnings]
        return img, meta

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model")
    def model_info() -> dict[str, Any]:
        return {**meta_public, "serving": {"max_batch": batcher.max_batch, "max_queue": batcher.max_queue,
                                           "model_calls_by_batch_size": dict(sorted(batcher.batch_sizes.items()))}}

    @app.post("/v1/predict")
    async def predict(file: UploadFile = File(...)) -> dict[str, Any]:
        t0 = time.perf_counter()
        data = await _read_upload(file)
        t1 = time.perf_counter()
        img, meta = await anyio.to_thread.run_sync(_decode, data, file.filename)
        t2 = time.perf_counter()
        try:
            pred = await anyio.to_thread.run_sync(batcher.predict, img, limiter=predict_threads)
        except QueueFull as e:
            raise HTTPException(503, f"the server is busy: {e}", headers={"Retry-After": "1"}) from e
        pred.with_file_checks(meta)
        spine = decision = None
        if measurer is not None:
            m = await anyio.to_thread.run_sync(_measure, img, limiter=explain_threads)
            spine = {**m.to_dict(), "landmarks": m.landmarks.round(2).tolist()}
            pred.spine = m
            decision = pred.decide(measurer.rule).decision.to_dict()
        t3 = time.perf_counter()
        return {
            "spine": spine, "decision": decision,
            "label": pred.label, "probabilities": pred.probabilities,
            "ood": {"flag": pred.ood, "score": pred.ood_score, "threshold": predictor.ood_threshold,
                    "reasons": pred.ood_reasons},
            "warnings": pred.warnings,
            "model": {"name": predictor.name, "version": predictor.meta.get("spinexr_version"),
                      "backend": predictor.backend},
            "image": {"width": int(img.shape[1]), "height": int(img.shape[0])},
            "timing_ms": {"read": (t1 - t0) * 1e3, "decode": (t2 - t1) * 1e3, "inference": (t3 - t2) * 1e3,
                          "total": (t3 - t0) * 1e3},
        }

    @app.post("/v1/explain", responses={200: {"content": {"image/png": {}}}})
    async def explain(file: UploadFile = File(...),
                      method: str = Query("gradcam", pattern="^(gradcam|gradcam\\+\\+|attention)$"),
                      target: str | None = Query(None)) -> Response:
        from PIL import Image

        data = await _read_upload(file)
        img, _ = await anyio.to_thread.run_sync(_decode, data, file.filename)
        if target is not None and target not in predictor.labels:
            raise HTTPException(422, f"unknown target {target!r}; one of {predictor.labels}")
        t = predictor.labels.index(target) if target else None
        def _explain() -> tuple:
            with batcher.model_lock:  # CAM hooks and the attention map live on the shared model
                return predictor.explain(img, method, t)

        try:
            heat, ti = await anyio.to_thread.run_sync(_explain, limiter=explain_threads)
        except SpinexrError as e:
            raise HTTPException(422, str(e)) from e
        buf = io.BytesIO()
        Image.fromarray(overlay(img, heat)).save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png",
                        headers={"X-Spinexr-Target": predictor.labels[ti], "X-Spinexr-Method": method})

    @app.post("/v1/overlay", responses={200: {"content": {"image/png": {}}}})
    async def overlay_png(file: UploadFile = File(...)) -> Response:
        """The spine measurement drawn on the film at its original size (needs a landmark model)."""
        from PIL import Image

        if measurer is None:
            raise HTTPException(404, "this service has no landmark model; start it with --landmarks MODEL")
        data = await _read_upload(file)
        img, _ = await anyio.to_thread.run_sync(_decode, data, file.filename)
        m = await anyio.to_thread.run_sync(_measure, img, limiter=explain_threads)
        buf = io.BytesIO()
        Image.fromarray(measurer.overlay(img, m)).save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png")

    page_html = (STATIC / "index.html").read_text()

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return page_html

    app.state.predictor = predictor
    app.state.batcher = batcher
    return app


def serve(model_path: str | Path, host: str = "127.0.0.1", port: int = 8000, **kw: Any) -> None:
    """Run the app with uvicorn (blocking)."""
    _need_fastapi()
    import uvicorn

    app = create_app(model_path, **kw)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding to %s: the service is reachable from other machines; it has no authentication", host)
    uvicorn.run(app, host=host, port=port, log_level="info")
