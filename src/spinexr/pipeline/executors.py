"""Where the pipeline runs during a batch run: here, in ``--jobs`` processes, or on a Ray cluster.

Every executor takes the same things (the loaded pipeline, whose :class:`~spinexr.pipeline.spec.PipelineSpec`
loads it again elsewhere; the films still to do, each with its place in the run; the drawing sinks) and
yields each batch's prediction documents in the films' order. Decoding happens where the pipeline runs
(or in decoding processes beside it), and so do the drawing sinks (overlays, heatmaps), on the decoded
pixels. The driver (:mod:`spinexr.pipeline.driver`) never sees a film's pixels.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor as PoolExecutor
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

from spinexr.config import DECODE_WORKERS
from spinexr.data.decoding import Decoded, decode, exit_with_parent
from spinexr.deploy.prediction import Prediction
from spinexr.errors import SpinexrError
from spinexr.outputs import Sink
from spinexr.pipeline.runtime import Pipeline
from spinexr.pipeline.spec import PipelineSpec

log = logging.getLogger(__name__)

T = TypeVar("T")
_END = object()
Todo = list[tuple[int, Path]]  # the films still to do, each with its place in the run
# What one --jobs process holds at most (the bundle's models, a batch of films, ONNX Runtime's arenas),
# measured on the bundled models (about 1.4 GB); --jobs is bounded so the processes fit in memory.
JOB_BYTES = 1_500_000_000


def in_order(pool: PoolExecutor, fn: Callable[..., T], items: Iterable[Any], ahead: int, *args: Any) -> Iterator[T]:
    """``fn(item, *args)`` for each item, run in ``pool`` at most ``ahead`` at a time, the results in the
    items' order (memory stays bounded whatever their number).

    Args:
        pool: a process or thread pool.
        fn: the function.
        items: its first arguments.
        ahead: the most items in flight.
        *args: its further arguments, the same for every item.
    """
    pending: deque[Future[T]] = deque()
    it = iter(items)
    try:
        while True:
            while len(pending) < ahead and (item := next(it, _END)) is not _END:
                pending.append(pool.submit(fn, item, *args))
            if not pending:
                return
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()


def decoded_batches(paths: list[Path], batch_size: int, workers: int, max_pixels: int) -> Iterator[list[Decoded]]:
    """Decoded films in order, ``batch_size`` at a time; with ``workers`` > 0 read in that many processes,
    at most a few batches ahead of the pipeline (memory stays bounded).

    Args:
        paths: the films, in order.
        batch_size: films a batch.
        workers: decoding processes (0: in this one).
        max_pixels: the largest film decoded.
    """
    if workers <= 0:
        for s in range(0, len(paths), batch_size):
            yield [decode(str(p), max_pixels) for p in paths[s:s + batch_size]]
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=exit_with_parent) as pool:
        batch: list[Decoded] = []
        for d in in_order(pool, decode, map(str, paths), batch_size * (workers + 1), max_pixels):
            batch.append(d)
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def predict_batch(pipeline: Pipeline, batch: list[Decoded]) -> list[Prediction]:
    """A decoded batch through the pipeline (the classifier in one call); unreadable files get their error."""
    return pipeline.predict_decoded(batch)


def batch_documents(pipeline: Pipeline, batch: list[tuple[int, Decoded]], drawers: list[Sink]) -> list[dict[str, Any]]:
    """Decoded films (with their places in the run) through the pipeline, each drawing sink drawing on
    them: their documents, in order.

    Args:
        pipeline: the loaded pipeline.
        batch: the decoded films, each with its place in the run.
        drawers: the drawing outputs.
    """
    preds = pipeline.predict_decoded([d for _, d in batch])
    docs = []
    for (i, d), p in zip(batch, preds):
        for sink in drawers:
            p = sink.draw(pipeline, p, d.img, i)
        docs.append(p.to_document())
    return docs


def cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class InProcess:
    """The pipeline in this process, films decoded in ``workers`` processes beside it (0: here).

    Args:
        batch_size: films a model call.
        workers: decoding processes (0: here).
    """

    batch_size: int = 16
    workers: int = DECODE_WORKERS

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise SpinexrError(f"--batch-size must be 1 or more, got {self.batch_size}")
        if self.workers < 0:
            raise SpinexrError(f"--workers must be 0 or more, got {self.workers}")

    def documents(self, pipeline: Pipeline, todo: Todo, drawers: list[Sink]) -> Iterator[list[dict[str, Any]]]:
        """The films through the pipeline here, decoded beside it (see :class:`~spinexr.pipeline.driver.Executor`).

        The arguments and what it yields: :meth:`~spinexr.pipeline.driver.Executor.documents`.
        """
        places = iter([i for i, _ in todo])
        max_pixels = pipeline.spec.max_pixels if pipeline.spec is not None else PipelineSpec().max_pixels
        for batch in decoded_batches([p for _, p in todo], self.batch_size, self.workers, max_pixels):
            yield batch_documents(pipeline, [(next(places), d) for d in batch], drawers)


_JOB: dict[str, Any] = {}  # in a --jobs process: its pipeline and drawing sinks


def _start_job(spec: PipelineSpec, drawers: list[Sink]) -> None:
    import torch

    exit_with_parent()
    torch.set_num_threads(spec.threads or 1)
    _JOB["pipeline"], _JOB["drawers"] = Pipeline.load(spec), drawers


def _run_job(batch: list[tuple[int, str]]) -> list[dict[str, Any]]:
    pipeline: Pipeline = _JOB["pipeline"]
    assert pipeline.spec is not None
    films = [(i, decode(p, pipeline.spec.max_pixels)) for i, p in batch]
    return batch_documents(pipeline, films, _JOB["drawers"])


@dataclass(frozen=True)
class Jobs:
    """``jobs`` processes that each load the pipeline once (this machine's CPUs shared among them) and
    decode and predict whole batches: on a CPU, two one-thread pipelines keep two cores busier than one
    pipeline with two threads. At most two batches a process are in flight, so memory stays bounded;
    ``jobs`` itself is bounded by the CPUs and by the memory available (:data:`JOB_BYTES` a process).

    Args:
        jobs: processes asked for (bounded as above).
        batch_size: films a batch.
    """

    jobs: int = 2
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise SpinexrError(f"--jobs must be 1 or more, got {self.jobs}")
        if self.batch_size < 1:
            raise SpinexrError(f"--batch-size must be 1 or more, got {self.batch_size}")

    def bounded(self) -> int:
        """``jobs``, at most one a CPU and as many as the available memory holds (said when lowered)."""
        mem = _available_memory()
        by_mem = max(1, mem // JOB_BYTES) if mem else self.jobs
        n = max(1, min(self.jobs, cpus(), by_mem))
        if n < self.jobs:
            log.warning("--jobs %d lowered to %d: this machine has %d CPUs and %s available memory (each process "
                        "holds the models, about %.1f GB)", self.jobs, n, cpus(),
                        f"{mem / 1e9:.1f} GB" if mem else "unknown", JOB_BYTES / 1e9)
        return n

    def documents(self, pipeline: Pipeline, todo: Todo, drawers: list[Sink]) -> Iterator[list[dict[str, Any]]]:
        """The films' batches through the pipeline in ``--jobs`` processes, in order (see
        :class:`~spinexr.pipeline.driver.Executor`).

        The arguments and what it yields: :meth:`~spinexr.pipeline.driver.Executor.documents`.
        """
        if pipeline.spec is None:
            raise SpinexrError("--jobs needs a pipeline made by Pipeline.load (it is loaded again in each process)")
        jobs = self.bounded()
        spec = pipeline.spec.replace(threads=max(1, cpus() // jobs))
        batches = [[(i, str(p)) for i, p in todo[s:s + self.batch_size]] for s in range(0, len(todo), self.batch_size)]
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_start_job,
                                 initargs=(spec, drawers)) as pool:
            try:
                yield from in_order(pool, _run_job, batches, 2 * jobs)
            except BrokenProcessPool as e:
                raise SpinexrError("a --jobs process ended abruptly (out of memory? killed?); what was written "
                                   "so far is kept: run again with --resume, with fewer --jobs") from e


__all__ = ["InProcess", "Jobs", "batch_documents", "cpus", "decoded_batches", "in_order", "predict_batch"]
