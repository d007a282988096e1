"""The app factory: one pipeline loaded once, a micro-batcher in front of its classifier, the routes."""

from __future__ import annotations

import inspect
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import torch
from fastapi import FastAPI

from spinexr import __version__
from spinexr.data.corrections import CorrectionStore
from spinexr.data.imread import UPLOAD_MAX_PIXELS
from spinexr.deploy.batching import MicroBatcher
from spinexr.pipeline import Pipeline, PipelineSpec
from spinexr.serve._routes import router
from spinexr.serve._uploads import MULTIPART_OVERHEAD, BodyLimit

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


@dataclass(frozen=True)
class ServiceSettings:
    """How the service takes requests.

    Args:
        max_upload_mb: the largest upload, in MB (a larger one gets 413 naming this limit).
        max_batch: images per classifier call when requests arrive together.
        max_queue: images waiting at most; more get 503 with ``Retry-After`` at once.
        body_timeout_s: an upload whose body has not arrived within this many seconds gets 408.
        corrections: a folder where the page's corrected corners are saved (None: saving refused).
        token: saving (and listing) corrections needs it as a bearer token.
        remote: bound to an address other machines reach: corrections need the token.
    """

    max_upload_mb: float = 32.0
    max_batch: int = 8
    max_queue: int = 32
    body_timeout_s: float = 30.0
    corrections: str | Path | None = None
    token: str | None = None
    remote: bool = False


def _pipeline(source: Pipeline | PipelineSpec | str | Path | None, spec_changes: dict[str, Any]) -> Pipeline:
    if isinstance(source, Pipeline):
        return source
    if isinstance(source, PipelineSpec):
        return Pipeline.load(source.replace(**spec_changes) if spec_changes else source)
    return Pipeline.load(PipelineSpec(source=None if source is None else str(source),
                                      **{"max_pixels": UPLOAD_MAX_PIXELS, **spec_changes}))


def create_app(source: Pipeline | PipelineSpec | str | Path | None = None, settings: ServiceSettings | None = None,
               **changes: Any) -> FastAPI:
    """Build the FastAPI app over a pipeline: a :class:`~spinexr.pipeline.Pipeline`, a
    :class:`~spinexr.pipeline.PipelineSpec`, or a bundle or classifier path (None: the bundle that ships
    with spinexr); it is loaded here, once, with uploads limited to
    :data:`~spinexr.data.imread.UPLOAD_MAX_PIXELS` pixels unless the spec says otherwise.

    Args:
        source: the pipeline, or what loads it.
        settings: how requests are taken (:class:`ServiceSettings`).
        **changes: fields of :class:`ServiceSettings` or of the spec (``landmarks``, ``max_pixels``, ...)
            changed from those given.

    Concurrent ``/v1/predict`` requests share classifier calls through a
    :class:`~spinexr.deploy.batching.MicroBatcher` of up to ``max_batch`` images; with more than
    ``max_queue`` images waiting, a request gets 503 with ``Retry-After`` at once rather than an unbounded wait.
    """
    settings = settings or ServiceSettings()
    svc_fields = {f for f in ServiceSettings.__dataclass_fields__}
    settings = replace(settings, **{k: v for k, v in changes.items() if k in svc_fields})
    pipeline = _pipeline(source, {k: v for k, v in changes.items() if k not in svc_fields})
    max_pixels = pipeline.spec.max_pixels if pipeline.spec is not None else UPLOAD_MAX_PIXELS
    corrections, token, remote = settings.corrections, settings.token, settings.remote
    max_upload_mb, max_batch, max_queue = settings.max_upload_mb, settings.max_batch, settings.max_queue
    store = CorrectionStore(corrections) if corrections is not None else None
    if store is not None:
        for problem in store.scan().problems:
            log.warning("corrections: %s", problem)
    if pipeline.spec is not None and pipeline.spec.threads:
        torch.set_num_threads(pipeline.spec.threads)
    batcher = MicroBatcher(pipeline.predictor, max_batch=max_batch, max_queue=max_queue)
    max_bytes = int(max_upload_mb * 1024 * 1024)
    extra: dict[str, Any] = {}
    if "max_body_size" in inspect.signature(FastAPI.__init__).parameters:
        # FastAPI's own limit answers with a bare "Content Too Large": BodyLimit answers first, naming the limit.
        extra["max_body_size"] = 4 * max_bytes + 4 * MULTIPART_OVERHEAD

    @asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        yield
        batcher.close()  # finish what is queued, then end the worker thread

    app = FastAPI(title="spinexr", version=__version__, lifespan=lifespan,
                  description="Spine radiograph classification (Normal, Scoliosis, Spondylolisthesis) and "
                              "Cobb angles; every prediction is a spinexr-prediction/2 document.", **extra)
    app.add_middleware(BodyLimit, max_bytes=max_bytes, max_upload_mb=max_upload_mb, timeout_s=settings.body_timeout_s)
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


def serve(source: PipelineSpec | str | Path | None = None, host: str = "127.0.0.1", port: int = 8000,
          settings: ServiceSettings | None = None) -> None:
    """Run the app with uvicorn (blocking)."""
    import uvicorn

    remote = host not in LOOPBACK
    app = create_app(source, settings, remote=remote)
    if remote:
        log.warning("binding to %s: the service is reachable from other machines; predictions need no "
                    "authentication, saving corrections needs --token", host)
    uvicorn.run(app, host=host, port=port, log_level="info")
