"""Exceptions that carry a message a user can act on.

The CLI turns any :class:`SpinexrError` (and :class:`ImageReadError`) into a one-line message and a
non-zero exit code instead of a traceback.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path


class SpinexrError(Exception):
    """A user-facing error: the message says what was wrong and what to do."""


class DatasetError(SpinexrError, ValueError):
    """The dataset folder or manifest cannot be used as given."""


class WeightsError(SpinexrError):
    """Weights could not be loaded (offline hub, missing or incompatible file)."""


class ReadErrorKind(str, Enum):
    """Why a file could not be read, for programs (the service maps it to an HTTP status)."""

    NOT_FOUND = "not_found"  # no such file, or not a regular file
    EMPTY = "empty"  # 0 bytes
    FORMAT = "format"  # not an image format spinexr reads
    NO_PIXELS = "no_pixels"  # a DICOM without an image (report, plan, structure set)
    CODEC = "codec"  # a compression spinexr cannot decode with what is installed
    CORRUPT = "corrupt"  # the decoder failed: truncated, damaged or malformed
    TOO_LARGE = "too_large"  # over the pixel limit (decompression bomb guard)
    TOO_SMALL = "too_small"  # under the minimum side
    CONSTANT = "constant"  # every pixel the same, or non-finite values


class ImageReadError(SpinexrError, ValueError):
    """An image file could not be read as a radiograph.

    Attributes:
        path: the file that failed.
        reason: a short reason, without the path.
        kind: a :class:`ReadErrorKind`.
        notes: what the decoding libraries logged or warned while reading this file.
    """

    def __init__(self, path: str | Path, reason: str, kind: ReadErrorKind = ReadErrorKind.CORRUPT,
                 notes: list[str] | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.kind = ReadErrorKind(kind)
        self.notes = list(notes or [])
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple:
        """Rebuilt from its fields (it crosses from the decoding worker processes of ``predict``)."""
        return (type(self), (self.path, self.reason, self.kind, self.notes))
