"""``spinexr predict --ray [ADDRESS]``: the same pipeline mapped over a Ray cluster with Ray Data.

The films' paths become a dataset (``ray.data.from_items``); ``map_batches`` runs them through an
actor pool, each actor loading the pipeline once from its :class:`~spinexr.pipeline.spec.PipelineSpec`
(ONNX Runtime by default, with as many threads as the CPUs it holds), reading its films with the same
read boundary as ``predict`` and running the drawing sinks on them (so the films, and the folders
overlays and heatmaps go to, must be reachable at the same path from every node: a shared mount).
The driver takes the finished batches as they come and hands them to the other sinks: the same
outputs, the same ``--resume``, the same summary as a run on one machine. Ray is optional
(``spinexr[ray]``).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from spinexr.data.decoding import decode
from spinexr.errors import SpinexrError
from spinexr.outputs import Sink
from spinexr.pipeline.executors import Todo, batch_documents
from spinexr.pipeline.runtime import Pipeline
from spinexr.pipeline.spec import PipelineSpec

log = logging.getLogger(__name__)


class PredictActor:
    """One Ray actor: the pipeline loaded once from ``spec``, films in, documents out (drawing as it goes).

    Args:
        spec: what the actor loads.
        drawers: the drawing outputs it runs.
    """

    def __init__(self, spec: PipelineSpec, drawers: list[Sink]) -> None:
        self.pipeline = Pipeline.load(spec)
        self.drawers = drawers

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        assert self.pipeline.spec is not None
        films = [(int(i), decode(str(p), self.pipeline.spec.max_pixels)) for i, p in zip(batch["index"], batch["path"])]
        docs = batch_documents(self.pipeline, films, self.drawers)
        return {"index": batch["index"], "doc": [json.dumps(d) for d in docs]}


def _probe(address: str, timeout: float = 5.0) -> None:
    """Refuse, with a message, a cluster address nothing answers at (Ray itself retries for minutes)."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise SpinexrError(f"--ray {address}: give the cluster's address as HOST:PORT (HOST:6379) or ray://HOST:10001")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise SpinexrError(f"cannot reach a Ray cluster at {address} ({e.strerror or e}); check the address, or start "
                           "one with `ray start --head` (or use --ray alone for a cluster on this machine)") from None


class _QuietNotices(logging.Filter):
    """Leaves out Ray's notice that token authentication is on (printed on every start of a cluster)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled" not in record.getMessage()


def _connect(address: str | None, num_cpus: int | None, progress: bool = True) -> Any:
    try:
        import ray
    except ImportError as e:
        raise SpinexrError("--ray needs Ray: pip install 'spinexr[ray]'") from e
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    for handler in logging.getLogger("ray").handlers:  # a notice on every start, not a problem of this run
        if not any(isinstance(f, _QuietNotices) for f in handler.filters):
            handler.addFilter(_QuietNotices())
    ray.data.DataContext.get_current().enable_progress_bars = progress
    if address and address != "auto":
        _probe(address)
    if ray.is_initialized():
        return ray
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, logging_level=logging.WARNING, log_to_driver=False,
                     include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        where = f"at {address}" if address else "on this machine"
        raise SpinexrError(f"cannot reach a Ray cluster {where} ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                           "start one with `ray start --head` and give its address (HOST:6379 or ray://HOST:10001)"
                           ) from None
    return ray


# The helper threads Ray Data starts for one run (block prefetching, the streaming executor, metadata
# fetching, threaded batch formatting). Each holds object references until it ends.
_RAY_DATA_THREADS = ("Prefetcher", "StreamingExecutor-", "ray-data-metadata-prefetch", "map_tp_", "iter_threaded")


def _settle(before: set[threading.Thread], timeout: float = 30.0) -> None:
    """Wait for the Ray Data threads this run started to end.

    A thread that ends releases the object references it held; one released after the caller has
    shut Ray down aborts the whole process (the core worker is gone). Returning only once they are
    gone makes ``ray.shutdown()`` right after a run safe."""
    gc.collect()
    deadline = time.monotonic() + timeout
    for t in threading.enumerate():
        if t in before or t is threading.current_thread() or not t.name.startswith(_RAY_DATA_THREADS):
            continue
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            log.warning("Ray Data's thread %s is still running after %.0f s", t.name, timeout)


@dataclass(frozen=True)
class RayCluster:
    """Run the pipeline on a Ray cluster: ``address`` (None: a local one with ``num_cpus`` CPUs), one
    actor per ``cpus_per_actor`` CPUs (or ``actors``), ``batch_size`` films a call, ONNX Runtime unless
    the spec names a backend.

    Args:
        address: the cluster (None: a local one).
        cpus_per_actor: CPUs each actor takes.
        batch_size: films a call.
        actors: actors asked for (None: by the CPUs).
        num_cpus: CPUs of a local cluster.
        progress: show Ray's progress.
    """

    address: str | None = None
    cpus_per_actor: int = 1
    batch_size: int = 16
    actors: int | None = None
    num_cpus: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.cpus_per_actor < 1:
            raise SpinexrError("--batch-size and --ray-cpus-per-actor must be 1 or more")

    def prepare(self) -> None:
        """Reach the cluster before any output is opened: a wrong address is refused with nothing written."""
        _connect(self.address, self.num_cpus, self.progress)

    def documents(self, pipeline: Pipeline, todo: Todo, drawers: list[Sink]) -> Iterator[list[dict[str, Any]]]:
        """The films' batches through pipelines on Ray actors, in order (see :class:`~spinexr.pipeline.driver.Executor`).

        The arguments and what it yields: :meth:`~spinexr.pipeline.driver.Executor.documents`.
        """
        if pipeline.spec is None:
            raise SpinexrError("--ray needs a pipeline made by Pipeline.load (each actor loads it again)")
        if not todo:
            return
        ray = _connect(self.address, self.num_cpus, self.progress)
        spec = pipeline.spec.replace(threads=self.cpus_per_actor, backend=pipeline.spec.backend or "onnx")
        cpus = int(ray.cluster_resources().get("CPU", 1))
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        # Each film travels with its place in the run: two names for one file (a link, a copy) stay two films,
        # each document named as it was given. Absolute, not resolved: a link is read through its own name.
        before = set(threading.enumerate())
        given = dict(todo)
        blocks = max(1, len(todo) // self.batch_size)
        ds = ray.data.from_items([{"path": os.path.abspath(p), "index": i} for i, p in todo],
                                 override_num_blocks=blocks)
        # No more actors than blocks of films: an actor without a block would only load models for nothing.
        pool = ray.data.ActorPoolStrategy(size=min(blocks, self.actors or max(1, cpus // self.cpus_per_actor)))
        ds = ds.map_batches(PredictActor, batch_size=self.batch_size, compute=pool, num_cpus=self.cpus_per_actor,
                            fn_constructor_kwargs={"spec": spec, "drawers": drawers})
        batches = ds.iter_batches(batch_size=self.batch_size, batch_format="numpy")
        try:
            for batch in batches:
                docs = [json.loads(s) for s in batch["doc"]]
                for d, i in zip(docs, batch["index"]):
                    d["path"] = str(given[int(i)])
                yield docs
        finally:
            del batches, ds
            _settle(before)


__all__ = ["PredictActor", "RayCluster"]
