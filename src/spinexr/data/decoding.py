"""Reading films for a stream of predictions: one film's decoded pixels, what the file said about
itself, or why it could not be read, and the SHA-256 of its bytes. This module imports no model code,
so the worker processes that run it (``predict --workers``) start light."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spinexr.data.imread import DEFAULT_MAX_PIXELS, ImageMeta, file_digest, read_image
from spinexr.errors import ImageReadError


@dataclass
class Decoded:
    """One file as a worker read it: the film and what the file said, or why it could not be read."""

    path: str
    sha256: str | None
    img: np.ndarray | None = None
    meta: ImageMeta | None = None
    error: ImageReadError | None = None


def decode(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Read one film (in a worker process): the read boundary's film or its error, and the file's digest."""
    digest = file_digest(path)
    try:
        img, meta = read_image(path, max_pixels=max_pixels)
    except ImageReadError as e:
        return Decoded(path, digest, error=e)
    return Decoded(path, digest, img, meta)


__all__ = ["Decoded", "decode"]
