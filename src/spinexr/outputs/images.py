"""``predict --overlays DIR`` and ``--heatmaps DIR``: pictures drawn from each film's pixels.

Both are drawing sinks: they run beside the pipeline, wherever the executor runs it (this process, a
``--jobs`` process, a Ray actor: there the folder must be on storage every node shares), and name the
file they wrote in the film's document (``files.overlay``, ``files.heatmap``). File names start with
the film's place in the run, so two films with one name never overwrite each other.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from PIL import Image

from spinexr.config import EXPLAIN_METHODS
from spinexr.errors import SpinexrError
from spinexr.explain import overlay
from spinexr.outputs._base import Sink, writable_folder, write_failed


def artifact_name(i: int, path: Path, method: str) -> str:
    """``00012_<film stem>_<method>.png``: the film's place in the run, its name made safe, what was drawn.

    Args:
        i: the film's place in the run.
        path: the film's path.
        method: what was drawn (``cobb``, ``gradcam``).
    """
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in path.stem)[:80]
    return f"{i:05d}_{safe}_{method.replace('+', 'p')}.png"


def _save(img: Any, dest: Path) -> None:
    try:
        Image.fromarray(img).save(dest)
    except OSError as e:
        raise write_failed(dest, e) from None


class OverlaySink(Sink):
    """The measurement (corners, end-vertebra lines, angles) drawn on each film at its original size.

    Args:
        folder: where the pictures go (made if missing; checked writable before the run).
    """

    draws = True

    def __init__(self, folder: Path) -> None:
        self.folder = writable_folder(Path(folder), "overlay folder")

    @classmethod
    def from_flag(cls, value: Path, _args: argparse.Namespace) -> OverlaySink:
        return cls(value)

    def check(self, pipeline: Any) -> None:
        if pipeline.measurer is None:
            raise SpinexrError("--overlays needs a landmark model to measure the spine with (a bundle with one, "
                               "or --landmarks)")

    def draw(self, pipeline: Any, pred: Any, img: Any, index: int) -> Any:
        """The measurement drawn on the film, named in a copy of ``pred`` (see :meth:`Sink.draw`).

        Args:
            pipeline: the pipeline (its landmark model draws).
            pred: the film's prediction.
            img: the decoded film (None: not read).
            index: the film's place in the run.
        """
        if img is None or pred.spine is None:
            return pred
        dest = self.folder / artifact_name(index, Path(pred.path), "cobb")
        _save(pipeline.overlay(img, pred.spine), dest)
        return pred.with_file("overlay", dest)


class HeatmapSink(Sink):
    """The classifier's map (``method``: Grad-CAM, Grad-CAM++ or the attention map) over each film.

    Args:
        folder: where the pictures go (made if missing; checked writable before the run).
        method: one of :data:`~spinexr.config.EXPLAIN_METHODS`.
    """

    draws = True

    def __init__(self, folder: Path, method: str = "gradcam") -> None:
        if method not in EXPLAIN_METHODS:
            raise SpinexrError(f"--explain {method!r}: choose one of {', '.join(EXPLAIN_METHODS)}")
        self.folder = writable_folder(Path(folder), "heatmap folder")
        self.method = method

    @classmethod
    def from_flag(cls, value: Path, args: argparse.Namespace) -> HeatmapSink:
        return cls(value, getattr(args, "explain", None) or "gradcam")

    def draw(self, pipeline: Any, pred: Any, img: Any, index: int) -> Any:
        """The classifier's map over the film, named in a copy of ``pred`` (see :meth:`Sink.draw`).

        Args:
            pipeline: the pipeline (its classifier explains).
            pred: the film's prediction.
            img: the decoded film (None: not read).
            index: the film's place in the run.
        """
        if img is None or not pred.ok:  # no map of a label withheld (a film outside the intended use)
            return pred
        try:
            heat, _ = pipeline.explain(img, self.method)
        except SpinexrError as e:
            return pred.with_warning(f"no heatmap: {e}")
        dest = self.folder / artifact_name(index, Path(pred.path), self.method)
        _save(overlay(img, heat), dest)
        return pred.with_file("heatmap", dest)


__all__ = ["HeatmapSink", "OverlaySink", "artifact_name"]
