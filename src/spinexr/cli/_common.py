"""What every verb shares: the one overwrite guard, run folders, and how results are printed."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from spinexr.errors import SpinexrError


def say(*lines: str, err: bool = False) -> None:
    """Print a verb's summary lines (results to stdout; the tally of a batch to stderr with ``err``)."""
    for line in lines:
        print(line, file=sys.stderr if err else sys.stdout)


def guard_output(path: str | Path, *, force: bool, inputs: Iterable[str | Path] = (), folder: bool = False,
                 what: str = "") -> Path:
    """The one overwrite guard: nothing a user gave is overwritten. An output that is one of the
    ``inputs`` is refused even with --force; an existing file (or, for a ``folder``, a non-empty one)
    is replaced only with --force. Returns the path."""
    p = Path(path)
    name = f"{what} {p}" if what else str(p)
    if p.exists() and p.resolve() in {Path(i).resolve() for i in inputs if Path(i).exists()}:
        raise SpinexrError(f"{name}: the output would overwrite the input file; choose another path")
    occupied = p.is_dir() and any(p.iterdir()) if folder else p.exists()
    if occupied and not force:
        kind = "folder exists and is not empty" if folder else "exists"
        raise SpinexrError(f"{name}: {kind}; choose another {'folder' if folder else 'path'} or pass --force")
    return p


def run_dir(out: str | None, verb: str, force: bool) -> Path:
    """A fresh run folder (``runs/<verb>-<time>`` by default), never overwritten without --force."""
    p = Path(out) if out else Path("runs") / f"{verb}-{time.strftime('%Y%m%d-%H%M%S')}"
    # Under torchrun rank 0 alone writes the folder, and may have made it already: it alone checks.
    if int(os.environ.get("RANK", "0")) == 0:
        guard_output(p, force=force, folder=True, what="run folder")
    return p
