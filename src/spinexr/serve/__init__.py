"""``spinexr serve``: a FastAPI service and a browser page over one loaded pipeline.

Endpoints: ``POST /v1/predict`` (multipart ``file``; the prediction document), ``POST /v1/explain`` and
``POST /v1/overlay`` (PNG), ``GET /v1/model``, ``GET /v1/schema``, ``GET /healthz``, the OpenAPI docs at
``/docs``, and the page at ``/``.

Untrusted input is bounded (:mod:`spinexr.serve._uploads`): uploads over the size limit get 413
(checked on Content-Length before the body is read, and again while reading), content that is not an
image gets 415, an image that cannot be decoded or is over the pixel limit (a decompression bomb) gets
422. The pipeline is loaded once (:mod:`spinexr.serve._app`). Concurrent predictions are micro-batched,
and a full queue answers 503 with ``Retry-After``.
"""

from spinexr.serve._app import ServiceSettings, create_app, serve

__all__ = ["ServiceSettings", "create_app", "serve"]
