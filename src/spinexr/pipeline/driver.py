"""The one driver of a batch run: films from a source, through a pipeline on an executor, into sinks.

:func:`run_films` opens every sink with what the pipeline makes (labels, bundle, settings), leaves out
the films a resumable sink already holds, runs the rest on the executor (:mod:`spinexr.pipeline.executors`:
here, ``--jobs`` processes, or Ray), which also runs the drawing sinks beside the pipeline, and hands each
finished batch to the other sinks in their order (DICOM before the result file, so a resumed run never
skips a film whose report is missing). Every sink is closed however the run ends, and says its line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from spinexr.outputs import RunInfo, Sink
from spinexr.outputs.results import ResultFile, Tally
from spinexr.pipeline.executors import InProcess, Todo
from spinexr.pipeline.runtime import Pipeline

log = logging.getLogger(__name__)


class Executor(Protocol):
    """Runs the pipeline over films: each batch's documents, in the films' order."""

    def documents(self, pipeline: Pipeline, todo: Todo, drawers: list[Sink]) -> Any:
        """Run the pipeline over the films.

        Args:
            pipeline: the loaded pipeline (loaded again where the films run elsewhere).
            todo: the films, each with its place in the run.
            drawers: the drawing outputs, run beside the pipeline.

        Returns:
            each batch's documents, in the films' order.
        """
        ...


@dataclass
class RunSummary:
    """What a run did: the films' tally (those already held by a resumed output included) and each sink's line.

    Args:
        tally: the films' counts.
        lines: each output's summary line.
    """

    tally: Tally
    lines: list[str] = field(default_factory=list)


def run_info(pipeline: Pipeline) -> RunInfo:
    """What the sinks learn of this pipeline: labels, bundle digest, and the settings that shape a document."""
    info = pipeline.model_info
    return RunInfo(labels=list(pipeline.labels), digest=info.get("bundle_digest"),
                   settings={"backend": info.get("backend"), "landmarks": info.get("landmarks")})


def run_films(pipeline: Pipeline, paths: list[Path], sinks: list[Sink], executor: Executor | None = None, *,
              progress: bool = True, on_batch: Callable[[list[dict[str, Any]]], None] | None = None) -> RunSummary:
    """Every film in ``paths`` through ``pipeline`` on ``executor`` (default: in this process) into ``sinks``.

    Args:
        pipeline: the loaded pipeline (its spec loads it again where the executor needs it).
        paths: the films, in order.
        sinks: the outputs; drawing sinks run beside the pipeline, the others receive each batch in order.
        executor: :class:`~spinexr.pipeline.executors.InProcess`, :class:`~spinexr.pipeline.executors.Jobs`
            or :class:`~spinexr.pipeline.ray.RayCluster`.
        progress: show a progress bar.
        on_batch: also called with each batch's documents (after the sinks).

    Returns:
        the run's :class:`RunSummary`.
    """
    executor = executor or InProcess()
    for s in sinks:
        s.check(pipeline)
    if hasattr(executor, "prepare"):  # e.g. reach a Ray cluster before any output is opened
        executor.prepare()
    info = run_info(pipeline)
    drawers = [s for s in sinks if s.draws]
    writers = [s for s in sinks if not s.draws]
    opened: list[Sink] = []
    summary = RunSummary(Tally())
    bar, failed = None, False
    try:
        for s in sinks:
            s.open(info)
            opened.append(s)
        # The resume state: films an output already holds (the result file: the same path and content) are left out.
        todo = [(i, p) for i, p in enumerate(paths) if not any(s.holds(p) for s in sinks)]
        if len(todo) < len(paths):
            log.info("resuming: %d of %d films already in the output", len(paths) - len(todo), len(paths))
        result = next((s for s in sinks if isinstance(s, ResultFile)), None)  # counts the films of earlier runs too
        summary.tally = result.tally if result is not None else summary.tally
        bar = tqdm(total=len(todo), desc="predicting", unit="film", disable=not progress, smoothing=0.1)
        for docs in executor.documents(pipeline, todo, drawers):
            for s in writers:
                s.write(docs)
            if result is None:
                for d in docs:
                    summary.tally.add(d)
            if on_batch is not None:
                on_batch(docs)
            bar.update(len(docs))
    except BaseException:
        failed = True
        raise
    finally:
        if bar is not None:
            bar.close()
        _close(opened, summary, failed)
    return summary


def _close(opened: list[Sink], summary: RunSummary, failed: bool) -> None:
    """Close every opened sink, each whatever the others do; a sink that fails to close is raised only when
    the run itself did not fail (the run's own error says more), and logged otherwise."""
    errors: list[BaseException] = []
    for s in opened:
        try:
            line = s.close()
        except Exception as e:  # noqa: BLE001 - every other sink still closes; the first error is raised below
            errors.append(e)
            log.warning("closing %s: %s", type(s).__name__, e)
            continue
        if line:
            summary.lines.append(line)
    if errors and not failed:
        raise errors[0]


def predict_paths(pipeline: Pipeline, paths: list[Path], sinks: list[Sink] | None = None,
                  progress: bool = True) -> list[Any]:
    """Every path through the pipeline one film at a time, as :class:`~spinexr.deploy.prediction.Prediction`
    objects (``status`` ok or error), the drawing ``sinks`` drawing on each (the demo and small scripts).

    Args:
        pipeline: the loaded pipeline.
        paths: the films, in order.
        sinks: outputs; the drawing ones draw on each film.
        progress: show a progress bar.
    """
    drawers = [s for s in (sinks or []) if s.draws]
    for s in drawers:
        s.check(pipeline)
    preds = []
    for i, p in enumerate(tqdm(paths, desc="predicting", unit="img", disable=not progress)):
        pred, img = pipeline.predict_file(p)
        for s in drawers:
            pred = s.draw(pipeline, pred, img, i)
        preds.append(pred)
    return preds


__all__ = ["Executor", "RunSummary", "predict_paths", "run_films", "run_info"]
