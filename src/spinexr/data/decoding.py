"""Reading films for a stream of predictions: one film's decoded pixels, what the file said about
itself, or why it could not be read, and the SHA-256 of its bytes. This module imports no model code,
so the worker processes that run it (``predict --workers``) start light."""

from __future__ import annotations

import multiprocessing
import os
import threading
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


def exit_with_parent() -> None:
    """A worker process's initializer: end this process as soon as the one that started it is gone.
    A worker blocked on its task queue never notices a parent killed with SIGKILL, and would stay
    behind after every killed run."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # returns when the parent's end of the start-up pipe closes: when it has died
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


__all__ = ["Decoded", "decode", "exit_with_parent"]
