"""What every output of a run is: a :class:`Sink`, and the registry of the outputs ``predict`` offers.

A sink is opened once the pipeline is loaded (it learns the labels, the bundle and the settings that
shape a document), may say which films it already holds (the resume state), receives every film's
prediction, and closes with its line for the end-of-run summary. A sink that draws from the film's
pixels (overlays, heatmaps) sets ``draws``: its :meth:`Sink.draw` runs beside the pipeline, wherever
the executor runs it (this process, a ``--jobs`` process, a Ray actor), and returns the prediction
naming the file it wrote (a changed copy: a prediction is never changed in place); every other sink
receives the finished document in the driver, in the films' order.

A new output format is one module in :mod:`spinexr.outputs` (its sink class, with a ``from_flag``
constructor) and one :func:`register_output` line in the package's ``__init__``: ``predict`` then offers
its flag, builds the sink from the flag's value, and runs it with every executor. The registry names
the class as ``"module:Class"``, imported only when the flag is used (as the command line names its
verbs' handlers), so ``spinexr --help`` never imports what an output needs (pydicom, matplotlib).
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinexr.errors import SpinexrError


@dataclass(frozen=True)
class RunInfo:
    """What a sink learns when the run starts.

    Args:
        labels: the classifier's labels (CSV columns).
        digest: the bundle's digest (None: a pipeline without a bundle).
        settings: what the pipeline says of the settings that shape a document (its ``backend`` and
            ``landmarks``, as each document's ``model`` records them).
    """

    labels: list[str]
    digest: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)


class Sink:
    """One output of a run (see the module). Subclasses override what they need."""

    draws = False  # True: draw() runs beside the pipeline, on the decoded film

    def check(self, pipeline: Any) -> None:
        """Refuse, before any film runs, a pipeline this output cannot be made from."""

    def open(self, run: RunInfo) -> None:
        """The run starts (after the pipeline loaded)."""

    def holds(self, path: Path) -> bool:
        """True when this output already holds the film (the same path and content): a resumed run skips it."""
        return False

    def draw(self, pipeline: Any, pred: Any, img: Any, index: int) -> Any:
        """Draw from the film's pixels (``draws`` sinks only); returns ``pred`` naming the file drawn
        (:meth:`~spinexr.deploy.prediction.Prediction.with_file`), or as it was when nothing was drawn.

        Args:
            pipeline: the loaded pipeline (its models draw: the overlay, the heatmap).
            pred: the film's :class:`~spinexr.deploy.prediction.Prediction`.
            img: the decoded film (None when it could not be read).
            index: the film's place in the run (names the file drawn).
        """
        return pred

    def write(self, docs: list[dict[str, Any]]) -> None:
        """One finished batch of documents, in the films' order."""

    def close(self) -> str | None:
        """The run ended (also after an error): finish the output; returns its summary line, if any."""
        return None


@dataclass(frozen=True)
class OutputKind:
    """An output ``predict`` offers: its flag and the sink it builds from the flag's value.

    Args:
        flag: the command-line flag (``--dicom-out``).
        help: the flag's help text.
        sink: the sink class as ``"module:Class"`` (its ``from_flag(value, args)`` builds it; ``args``: the
            verb's parsed flags, for settings it shares), or a callable ``(value, args) -> Sink``.
        metavar: the flag's placeholder.
        folder: the value names a folder (guarded against overwriting like one, made if missing).
    """

    flag: str
    help: str
    sink: str | Callable[[Path, argparse.Namespace], Sink]
    metavar: str = "DIR"
    folder: bool = True

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def make(self, value: Path, args: argparse.Namespace) -> Sink:
        """The sink for the flag's ``value``."""
        if callable(self.sink):
            return self.sink(value, args)
        module, _, name = self.sink.partition(":")
        return getattr(importlib.import_module(module), name).from_flag(value, args)


OUTPUTS: dict[str, OutputKind] = {}


def register_output(kind: OutputKind) -> OutputKind:
    """Offer ``kind`` as a ``predict`` output (one line in :mod:`spinexr.outputs`)."""
    OUTPUTS[kind.flag] = kind
    return kind


def output_kinds() -> list[OutputKind]:
    """Every registered output, in the order registered."""
    return list(OUTPUTS.values())


def writable_folder(folder: Path, what: str) -> Path:
    """Make ``folder`` if needed and check a file can be written there, before any model loads: a
    read-only or missing place is refused with what to do, never found after the first batch."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SpinexrError(f"{what} {folder}: cannot be made ({e.strerror or e}); choose a folder you can write to") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SpinexrError(f"{what} {folder}: not writable; choose a folder you can write to")
    return folder


def write_failed(where: Path | str, e: OSError) -> SpinexrError:
    """An OSError while writing an output, as a message: what failed, why, and that ``--resume`` continues."""
    why = e.strerror or str(e)
    return SpinexrError(f"writing {where} failed ({why}); what was written before is kept and complete: free space "
                        "or fix the permission, then run the same command with --resume to continue")


__all__ = ["OUTPUTS", "OutputKind", "RunInfo", "Sink", "output_kinds", "register_output", "writable_folder",
           "write_failed"]
