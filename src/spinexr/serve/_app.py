"""The app factory: one pipeline loaded once, a micro-batcher in front of its classifier, the routes."""

from __future__ import annotations

import inspect
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import torch
from fastapi import FastAPI

from spinexr import __version__
from spinexr.data.corrections import CorrectionStore
from spinexr.data.imread import UPLOAD_MAX_PIXELS
from spinexr.deploy.batching import MicroBatcher
from spinexr.deploy.pipeline import Pipeline
from spinexr.serve._routes import router
from spinexr.serve._uploads import MULTIPART_OVERHEAD, body_limit

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Service:
    """What the routes share: the pipeline, its batcher, the upload limits and the thread limiters."""

    pipeline: Pipeline
    batcher: MicroBatcher
    max_bytes: int
    max_upload_mb: float
    max_pixels: int
    predict_threads: Any
    explain_threads: Any
    page_html: str
    corrections: CorrectionStore | None = None
    token: str | None = None
    remote: bool = False  # bound to an address other machines reach: saving needs a token


def create_app(source: str | Path | Pipeline | None = None, onnx_path: str | Path | None = None,
               max_upload_mb: float = 32.0, max_pixels: int = UPLOAD_MAX_PIXELS, threads: int | None = None,
               max_batch: int = 8, max_queue: int = 32, landmarks: str | Path | None = None,
               no_landmarks: bool = False, corrections: str | Path | None = None, token: str | None = None,
               remote: bool = False) -> FastAPI:
    """Build the FastAPI app over a pipeline (a :class:`~spinexr.deploy.pipeline.Pipeline`, or what
    :meth:`Pipeline.load` takes: a bundle, a classifier file with optional ``landmarks``, or None for the
    bundle that ships with spinexr); it is loaded here, once.

    Concurrent ``/v1/predict`` requests share classifier calls through a
    :class:`~spinexr.deploy.batching.MicroBatcher` of up to ``max_batch`` images; with more than
    ``max_queue`` images waiting, a request gets 503 with ``Retry-After`` at once rather than an unbounded wait.

    ``corrections``: a folder where the page's corrected corners are saved
    (:class:`~spinexr.data.corrections.CorrectionStore`); without one, saving is refused. ``token``: saving
    then needs it as a bearer token; ``remote`` (bound to an address other machines reach) makes saving
    without a token a 403.
    """
    store = CorrectionStore(corrections) if corrections is not None else None
    if store is not None:
        for problem in store.scan().problems:
            log.warning("corrections: %s", problem)
    if threads:
        torch.set_num_threads(threads)
    pipeline = source if isinstance(source, Pipeline) else Pipeline.load(
        source, landmarks, no_landmarks=no_landmarks, onnx_path=onnx_path, threads=threads, max_pixels=max_pixels)
    batcher = MicroBatcher(pipeline.predictor, max_batch=max_batch, max_queue=max_queue)
    max_bytes = int(max_upload_mb * 1024 * 1024)
    extra: dict[str, Any] = {}
    if "max_body_size" in inspect.signature(FastAPI.__init__).parameters:
        # A backstop for chunked uploads without Content-Length; declared sizes meet the JSON 413 first.
        extra["max_body_size"] = 2 * max_bytes + MULTIPART_OVERHEAD

    @asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        yield
        batcher.close()  # finish what is queued, then end the worker thread

    app = FastAPI(title="spinexr", version=__version__, lifespan=lifespan,
                  description="Spine radiograph classification (Normal, Scoliosis, Spondylolisthesis) and "
                              "Cobb angles; every prediction is a spinexr-prediction/1 document.", **extra)
    app.middleware("http")(body_limit(max_bytes, max_upload_mb))
    # Inference runs in worker threads so the event loop (and /healthz) stays responsive. The classifier
    # runs one call at a time (each call already uses every intra-op thread it was given): predictions
    # queue in the batcher, one thread each; measurements and explanations take one thread at a time.
    app.state.service = Service(
        pipeline=pipeline, batcher=batcher, max_bytes=max_bytes, max_upload_mb=max_upload_mb, max_pixels=max_pixels,
        predict_threads=anyio.CapacityLimiter(max_queue + max_batch), explain_threads=anyio.CapacityLimiter(1),
        page_html=(Path(__file__).parent / "static" / "index.html").read_text(), corrections=store,
        token=token or None, remote=remote)
    app.state.predictor = pipeline.predictor
    app.state.batcher = batcher
    app.include_router(router)
    return app


def serve(source: str | Path | None = None, host: str = "127.0.0.1", port: int = 8000, **kw: Any) -> None:
    """Run the app with uvicorn (blocking)."""
    import uvicorn

    remote = host not in LOOPBACK
    app = create_app(source, remote=remote, **kw)
    if remote:
        log.warning("binding to %s: the service is reachable from other machines; predictions need no "
                    "authentication, saving corrections needs --token", host)
    uvicorn.run(app, host=host, port=port, log_level="info")
