"""Untrusted uploads, bounded: the body size (declared and as read), the image's kind, its pixels.

An upload is written only into a per-request temporary folder, under a fixed name that keeps nothing
of the client's file name but a short alphanumeric extension, and the folder is removed afterwards.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException, Request, UploadFile
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


def body_limit(max_bytes: int, max_upload_mb: float) -> Callable[[Request, Any], Awaitable[Any]]:
    """Middleware: a declared Content-Length over the limit gets 413 before the body is read."""

    async def limit_body(request: Request, call_next: Any) -> Any:
        cl = request.headers.get("content-length")
        if cl is not None:
            try:
                too_big = int(cl) > max_bytes + MULTIPART_OVERHEAD
            except ValueError:
                return JSONResponse({"detail": "invalid Content-Length header"}, status_code=400)
            if too_big:
                return JSONResponse({"detail": f"upload over the {max_upload_mb:g} MB limit"}, status_code=413)
        return await call_next(request)

    return limit_body


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
