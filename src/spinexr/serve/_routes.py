"""The service's endpoints. Every prediction is answered with the prediction document
(:mod:`spinexr.deploy.document`), the same one ``spinexr predict`` writes."""

# No `from __future__ import annotations`: FastAPI resolves the endpoint signatures at runtime.
import hashlib
import hmac
import io
import json
import time
from typing import Any

import anyio
import numpy as np
from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from PIL import Image

from spinexr import __version__
from spinexr.config import EXPLAIN_METHODS
from spinexr.data.corrections import CorrectionContext
from spinexr.data.decoding import Decoded
from spinexr.data.label_check import check_label
from spinexr.deploy.batching import QueueFull
from spinexr.deploy.document import schema
from spinexr.errors import SpinexrError
from spinexr.explain import overlay
from spinexr.geometry.corners import check_corners, measure_corners
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
        classified = await anyio.to_thread.run_sync(svc.batcher.predict, img, limiter=svc.predict_threads)
    except QueueFull as e:
        raise HTTPException(503, f"the server is busy: {e}", headers={"Retry-After": "1"}) from e
    film = Decoded("upload", hashlib.sha256(data).hexdigest(), img, meta)
    pred = await anyio.to_thread.run_sync(svc.pipeline.complete, classified, film, limiter=svc.explain_threads)
    t3 = time.perf_counter()
    return pred.with_timing(read=(t1 - t0) * 1e3, decode=(t2 - t1) * 1e3, inference=(t3 - t2) * 1e3,
                            total=(t3 - t0) * 1e3).to_document()


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


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HTTPException(422, "the body is not JSON; send {\"corners\": [...], \"width\": W, \"height\": H}") from None
    if not isinstance(body, dict):
        raise HTTPException(422, "the body must be a JSON object")
    return body


def _measured(body: dict[str, Any]) -> dict[str, Any]:
    """``measure_corners`` on a request's corners and film size; a bad one is a 422 with the reason."""
    for key in ("corners", "width", "height"):
        if key not in body:
            raise HTTPException(422, f"missing {key!r}: send the 68 corners and the film's width and height")
    try:
        w, h = float(body["width"]), float(body["height"])
        cw = float(body.get("centreline_weight", 0.0))
        if not 0.0 <= cw <= 1.0:
            raise ValueError(f"centreline_weight must be between 0 and 1; got {cw}")
        out = measure_corners(body["corners"], w, h, cw)
    except (TypeError, ValueError) as e:
        raise HTTPException(422, str(e)) from None
    label = check_label(np.asarray(body["corners"], dtype=np.float64))  # the check training applies to saved corners
    return {**out, "training": {"usable": label.usable, "problems": list(label.problems), "fixes": list(label.fixes)}}


@router.post("/v1/measure")
async def measure(request: Request) -> dict[str, Any]:
    """Corners in (``corners``: 17 x 4 x (x, y) in film pixels, ``width``, ``height``; optional
    ``centreline_weight``, default 0: the corners alone), the measurement out: the three Cobb angles with
    end vertebrae and apex, the largest and its band, the shape and the plausibility verdict. The same
    code as every other measurement (:func:`spinexr.geometry.corners.measure_corners`). ``training`` is the
    verdict training would give these corners as a saved correction (:func:`spinexr.data.label_check.check_label`:
    ``usable``, the ``problems`` that would leave them out, the slips it would fix)."""
    return _measured(await _json(request))


@router.post("/v1/film", responses={200: {"content": {"image/png": {}}}})
async def film_png(request: Request, file: UploadFile = File(...)) -> Response:
    """The film as the pipeline reads it (8-bit gray PNG at its full size): the frame every corner is in."""
    svc = _service(request)
    img, _ = await _film(svc, file)
    return Response(_png((img * 255).round().astype("uint8")), media_type="image/png")


def _authorised(svc: Any, request: Request) -> None:
    if svc.corrections is None:
        raise HTTPException(409, "this service keeps no corrections: start it with "
                                 "`spinexr serve --corrections DIR` to save them")
    if svc.token is None:
        if svc.remote:
            raise HTTPException(403, "this service is reachable from other machines, so saving needs a token: "
                                     "start it with --token (or SPINEXR_SERVE_TOKEN) and send it as a bearer token")
        return
    sent = request.headers.get("authorization", "")
    sent = sent[7:] if sent.lower().startswith("bearer ") else request.headers.get("x-spinexr-token", "")
    if not hmac.compare_digest(sent.encode(), svc.token.encode()):
        raise HTTPException(403, "wrong or missing token: send the token the service was started with "
                                 "(Authorization: Bearer TOKEN)")


@router.post("/v1/corrections")
async def save_correction(request: Request, file: UploadFile = File(...), correction: str = Form(...)) -> dict[str, Any]:
    """Save corrected corners for the uploaded film (``correction``: JSON with ``corners`` and optional
    ``name``, ``model_corners``): a new version in the corrections store, never overwriting one."""
    svc = _service(request)
    _authorised(svc, request)
    try:
        body = json.loads(correction)
    except json.JSONDecodeError:
        raise HTTPException(422, "the correction field is not JSON") from None
    if not isinstance(body, dict) or "corners" not in body:
        raise HTTPException(422, "the correction must be a JSON object with the 68 corners")
    data = await read_upload(file, svc.max_bytes, svc.max_upload_mb)
    img, _ = await anyio.to_thread.run_sync(decode_upload, data, file.filename, svc.max_pixels)
    h, w = img.shape
    model_corners = body.get("model_corners")
    try:
        if model_corners is not None:
            check_corners(model_corners, w, h)
        about = CorrectionContext(saved_by=str(body.get("name") or ""), model_corners=model_corners,
                                  bundle_digest=svc.pipeline.model_info.get("bundle_digest"),
                                  model=dict(svc.pipeline.model_info))
        rec = await anyio.to_thread.run_sync(lambda: svc.corrections.save(data, file.filename or "film",
                                                                          body["corners"], (w, h), about))
    except (TypeError, ValueError) as e:
        raise HTTPException(422, str(e)) from None
    return rec


@router.get("/v1/corrections/{sha256}")
def get_correction(request: Request, sha256: str) -> dict[str, Any]:
    """The latest saved correction of the film with this content hash, and how many versions it has; it needs
    the token wherever saving does."""
    svc = _service(request)
    if svc.corrections is None:
        raise HTTPException(404, "this service keeps no corrections")
    _authorised(svc, request)
    try:
        rec, n = svc.corrections.latest(sha256)
    except SpinexrError as e:
        raise HTTPException(422, str(e)) from None
    if rec is None:
        raise HTTPException(404, "no correction saved for this film")
    return {"versions": n, "latest": rec}


@router.get("/v1/corrections")
def corrections_status(request: Request) -> dict[str, Any]:
    """What the corrections folder holds: films corrected, rows logged, and what could not be read; it needs
    the token wherever saving does."""
    svc = _service(request)
    if svc.corrections is None:
        return {"enabled": False}
    _authorised(svc, request)
    scan = svc.corrections.scan()
    return {"enabled": True, "films": len(scan.latest), "versions": sum(scan.versions.values()),
            "log_rows": scan.rows, "problems": scan.problems}


@router.get("/", response_class=HTMLResponse)
def page(request: Request) -> str:
    return _service(request).page_html
