"""Exceptions that carry a message a user can act on.

The CLI turns any :class:`SpinexrError` (and :class:`ImageReadError`) into a one-line message and a
non-zero exit code instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path


class SpinexrError(Exception):
    """A user-facing error: the message says what was wrong and what to do."""


class DatasetError(SpinexrError, ValueError):
    """The dataset folder or manifest cannot be used as given."""


class WeightsError(SpinexrError):
    """Weights could not be loaded (offline hub, missing or incompatible file)."""


class ImageReadError(SpinexrError, ValueError):
    """An image file could not be read as a radiograph.

    Attributes:
        path: the file that failed.
        reason: a short reason, without the path.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
