"""Untrusted uploads, bounded: the body size (declared and as read), the image's kind, its pixels.

An upload is written only into a per-request temporary folder, under a fixed name that keeps nothing
of the client's file name but a short alphanumeric extension, and the folder is removed afterwards.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from fastapi import HTTPException, UploadFile
from fastapi.responses import JSONResponse

from spinexr.data.imread import ImageMeta, read_image
from spinexr.errors import ImageReadError, ReadErrorKind

CHUNK = 1 << 20
UPLOAD_PREFIX = "spinexr-"
_UPLOAD_PATH = re.compile(re.escape(tempfile.gettempdir()) + "/" + UPLOAD_PREFIX + r"[^/\s'\"]*/upload[\w.]*")
MULTIPART_OVERHEAD = 64 * 1024

# How an unreadable upload is answered: not something spinexr reads at all -> 415; an image it read
# but cannot use (damaged, too large in pixels, too small, blank) -> 422.
STATUS_BY_KIND = {ReadErrorKind.FORMAT: 415, ReadErrorKind.NO_PIXELS: 415, ReadErrorKind.CODEC: 415,
                  ReadErrorKind.NOT_FOUND: 422, ReadErrorKind.EMPTY: 422, ReadErrorKind.CORRUPT: 422,
                  ReadErrorKind.TOO_LARGE: 422, ReadErrorKind.TOO_SMALL: 422, ReadErrorKind.CONSTANT: 422}


class _BodyRefused(BaseException):  # noqa: N818 - a BaseException, so no handler on the way turns it into a 400
    """A request body stopped at the limit (size or time): answered by :class:`BodyLimit`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class BodyLimit:
    """ASGI middleware: every request body bounded in size and in time.

    A declared Content-Length over the limit gets 413 before the body is read; a body that passes the
    limit as it arrives (chunked, or lying about its length) is cut off there with the same 413; a body
    still arriving ``timeout_s`` seconds after the request began gets 408, so slow partial uploads never
    hold a connection open for ever. Each answer is JSON naming the limit.
    """

    def __init__(self, app: Any, max_bytes: int, max_upload_mb: float, timeout_s: float = 30.0) -> None:
        self.app, self.limit, self.max_upload_mb, self.timeout_s = app, max_bytes + MULTIPART_OVERHEAD, max_upload_mb, timeout_s

    def _too_large(self) -> _BodyRefused:
        return _BodyRefused(413, f"upload over the {self.max_upload_mb:g} MB limit; send a smaller file (DICOM films "
                                 "can be sent compressed, or as a PNG of the image)")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cl = dict(scope.get("headers") or []).get(b"content-length")
        try:
            if cl is not None and int(cl) > self.limit:
                raise self._too_large()
        except ValueError:
            await JSONResponse({"detail": "invalid Content-Length header"}, status_code=400)(scope, receive, send)
            return
        except _BodyRefused as e:
            await JSONResponse({"detail": e.detail}, status_code=e.status)(scope, receive, send)
            return
        deadline = anyio.current_time() + self.timeout_s
        received, started = 0, False

        async def bounded_receive() -> dict[str, Any]:
            nonlocal received
            left = deadline - anyio.current_time()
            with anyio.move_on_after(max(0.0, left)) as scope_:
                message = await receive()
            if scope_.cancelled_caught:
                raise _BodyRefused(408, f"the upload did not arrive within {self.timeout_s:g} s; send it again")
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise self._too_large()
            return message

        async def watched_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, watched_send)
        except _BodyRefused as e:
            if started:
                raise RuntimeError(str(e)) from None
            await JSONResponse({"detail": e.detail}, status_code=e.status)(scope, receive, send)


async def read_upload(file: UploadFile, max_bytes: int, max_upload_mb: float) -> bytes:
    """The upload's bytes, read in chunks and refused (413) as soon as they pass the limit."""
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


def decode_upload(data: bytes, filename: str | None, max_pixels: int) -> tuple[np.ndarray, ImageMeta]:
    """Decode an upload through the one read boundary; an unreadable one is an HTTP error with the
    reason and :class:`~spinexr.errors.ReadErrorKind` (the temporary path never reaches the client)."""
    suffix = Path(filename or "").suffix.lower()
    if not suffix.isascii() or len(suffix) > 8 or not suffix[1:].isalnum():
        suffix = ""
    with tempfile.TemporaryDirectory(prefix=UPLOAD_PREFIX) as d:
        p = Path(d) / f"upload{suffix}"
        p.write_bytes(data)
        try:
            img, meta = read_image(p, max_pixels=max_pixels)
        except ImageReadError as e:
            raise HTTPException(STATUS_BY_KIND.get(e.kind, 422),
                                {"reason": scrub(e.reason), "kind": e.kind.value, "notes": [scrub(n) for n in e.notes]}) from e
    meta.path = "upload"
    meta.warnings = [scrub(w) for w in meta.warnings]
    return img, meta


def scrub(text: str) -> str:
    """Any upload's temporary path (this request's or, in a late library warning, another's) becomes ``upload``."""
    return _UPLOAD_PATH.sub("upload", text)
