"""The service's endpoints. Every prediction is answered with the prediction document
(:mod:`spinexr.deploy.document`), the same one ``spinexr predict`` writes."""

# No `from __future__ import annotations`: FastAPI resolves the endpoint signatures at runtime.
import io
import time
from typing import Any

import anyio
from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from PIL import Image

from spinexr import __version__
from spinexr.config import EXPLAIN_METHODS
from spinexr.deploy.batching import QueueFull
from spinexr.deploy.document import schema
from spinexr.errors import SpinexrError
from spinexr.explain import overlay
from spinexr.serve._uploads import decode_upload, read_upload

router = APIRouter()
METHOD_PATTERN = "^(" + "|".join(m.replace("+", "\\+") for m in EXPLAIN_METHODS) + ")$"


def _service(request: Request) -> Any:
    return request.app.state.service


async def _film(svc: Any, file: UploadFile) -> tuple:
    data = await read_upload(file, svc.max_bytes, svc.max_upload_mb)
    return await anyio.to_thread.run_sync(decode_upload, data, file.filename, svc.max_pixels)


def _png(img: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/v1/model")
def model_info(request: Request) -> dict[str, Any]:
    """What runs: the classifier's metadata, the pipeline (bundle, digest, landmark model, rule) and the batcher."""
    svc = _service(request)
    b = svc.batcher
    return {**svc.pipeline.describe(), "spinexr_server_version": __version__,
            "serving": {"max_batch": b.max_batch, "max_queue": b.max_queue,
                        "model_calls_by_batch_size": dict(sorted(b.batch_sizes.items()))}}


@router.get("/v1/schema")
def prediction_schema() -> dict[str, Any]:
    """The JSON Schema of the prediction document ``POST /v1/predict`` answers with."""
    return schema()


@router.post("/v1/predict")
async def predict(request: Request, file: UploadFile = File(...)) -> dict[str, Any]:
    """One film through the pipeline; the answer is its prediction document (path ``upload``)."""
    svc = _service(request)
    t0 = time.perf_counter()
    data = await read_upload(file, svc.max_bytes, svc.max_upload_mb)
    t1 = time.perf_counter()
    img, meta = await anyio.to_thread.run_sync(decode_upload, data, file.filename, svc.max_pixels)
    t2 = time.perf_counter()
    try:
        pred = await anyio.to_thread.run_sync(svc.batcher.predict, img, limiter=svc.predict_threads)
    except QueueFull as e:
        raise HTTPException(503, f"the server is busy: {e}", headers={"Retry-After": "1"}) from e
    pred.path = "upload"
    await anyio.to_thread.run_sync(svc.pipeline.complete, pred, img, meta, limiter=svc.explain_threads)
    t3 = time.perf_counter()
    pred.timing_ms = {**(pred.timing_ms or {}), "read": (t1 - t0) * 1e3, "decode": (t2 - t1) * 1e3,
                      "inference": (t3 - t2) * 1e3, "total": (t3 - t0) * 1e3}
    return pred.to_document()


@router.post("/v1/explain", responses={200: {"content": {"image/png": {}}}})
async def explain(request: Request, file: UploadFile = File(...),
                  method: str = Query("gradcam", pattern=METHOD_PATTERN),
                  target: str | None = Query(None)) -> Response:
    """The classifier's heatmap over the film (PNG); the class explained is in ``X-Spinexr-Target``."""
    svc = _service(request)
    img, _ = await _film(svc, file)
    labels = svc.pipeline.labels
    if target is not None and target not in labels:
        raise HTTPException(422, f"unknown target {target!r}; one of {labels}")
    t = labels.index(target) if target else None

    def _explain() -> tuple:
        with svc.batcher.model_lock:  # CAM hooks and the attention map live on the shared model
            return svc.pipeline.explain(img, method, t)

    try:
        heat, ti = await anyio.to_thread.run_sync(_explain, limiter=svc.explain_threads)
    except SpinexrError as e:
        raise HTTPException(422, str(e)) from e
    return Response(_png(overlay(img, heat)), media_type="image/png",
                    headers={"X-Spinexr-Target": labels[ti], "X-Spinexr-Method": method})


@router.post("/v1/overlay", responses={200: {"content": {"image/png": {}}}})
async def overlay_png(request: Request, file: UploadFile = File(...)) -> Response:
    """The spine measurement drawn on the film at its original size (needs a landmark model)."""
    svc = _service(request)
    if svc.pipeline.measurer is None:
        raise HTTPException(404, "this service has no landmark model; start it with a bundle that has one, or --landmarks")
    img, _ = await _film(svc, file)
    m = await anyio.to_thread.run_sync(svc.pipeline.measure, img, limiter=svc.explain_threads)
    return Response(_png(svc.pipeline.overlay(img, m)), media_type="image/png")


@router.get("/", response_class=HTMLResponse)
def page(request: Request) -> str:
    return _service(request).page_html
