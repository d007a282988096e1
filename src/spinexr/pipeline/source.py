"""The films a run reads: files and folders as given, expanded to image files, and what was passed over.

A folder gives its image files (by extension, or DICOM files without one); a given file is always
kept, so a missing or unreadable one gets its own document with the reason. What a folder held that is
not a film is counted by reason for the run's summary, never silently dropped: other files, sub-folders
not entered without ``--recursive``, and links to folders (not followed: a folder link may loop).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from spinexr.data.imread import IMAGE_EXTENSIONS, is_dicom_file

log = logging.getLogger(__name__)


@dataclass
class Films:
    """The films of a run, in order, and the entries passed over by reason.

    Args:
        paths: the films.
        skipped: entries passed over, counted by reason.
    """

    paths: list[Path] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        if n:
            self.skipped[reason] = self.skipped.get(reason, 0) + n

    def line(self) -> str | None:
        """The summary's line for what was passed over (None: nothing)."""
        if not self.skipped:
            return None
        return "passed over: " + "; ".join(f"{n} {reason}" for reason, n in self.skipped.items())


def _folder(root: Path, recursive: bool, films: Films) -> None:
    found = 0
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        links = [d for d in dirnames if (here / d).is_symlink()]
        films.skip("links to folders (not followed)", len([d for d in links if not d.startswith(".")]))
        subdirs = sorted(d for d in dirnames if not d.startswith(".") and d not in links)
        if not recursive:
            films.skip("sub-folders not entered (--recursive enters them)", len(subdirs))
            subdirs = []
        dirnames[:] = subdirs
        for fn in sorted(filenames):
            if fn.startswith("."):
                continue
            p = here / fn
            if p.suffix.lower() in IMAGE_EXTENSIONS or (p.suffix == "" and is_dicom_file(p)):
                films.paths.append(p)
                found += 1
            else:
                films.skip("files that are not images")
    if not found:
        log.warning("%s: no image files found%s", root, "" if recursive else " (use --recursive for sub-folders)")


def expand_paths(items: list[str | Path], recursive: bool = False) -> Films:
    """Files as given, folders expanded to their images (sub-folders only with ``recursive``)."""
    films = Films()
    for p in map(Path, items):
        if p.is_dir():
            _folder(p, recursive, films)
        else:
            films.paths.append(p)  # missing or unreadable files are reported per row, not fatal
    return films


__all__ = ["Films", "expand_paths"]
