"""``spinexr predict --ray [ADDRESS]``: the same pipeline mapped over a Ray cluster with Ray Data.

The films' paths become a dataset (``ray.data.from_items``); ``map_batches`` runs them through an
actor pool, each actor loading the bundle once on ONNX Runtime with as many threads as the CPUs it
holds, and reading its films with the same read boundary as ``predict`` (so the films must be
reachable at the same path from every node: a shared mount). The driver takes the finished batches
as they come and writes them with :class:`~spinexr.deploy.stream.ResultFile`: the same output, the
same ``--resume``, the same summary as a run on one machine. Ray is optional (``spinexr[ray]``).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spinexr.data.decoding import decode
from spinexr.deploy.pipeline import Pipeline
from spinexr.deploy.stream import ResultFile, Tally, predict_batch
from spinexr.errors import SpinexrError

log = logging.getLogger(__name__)


class PredictActor:
    """One Ray actor: the pipeline loaded once (ONNX Runtime, ``threads`` threads), films in, documents out."""

    def __init__(self, source: str | None, landmarks: str | None, no_landmarks: bool, threads: int,
                 max_pixels: int, backend: str = "onnx") -> None:
        self.pipeline = Pipeline.load(source, landmarks, no_landmarks=no_landmarks, backend=backend, threads=threads,
                                      max_pixels=max_pixels)
        self.max_pixels = max_pixels

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        decoded = [decode(str(p), self.max_pixels) for p in batch["path"]]
        preds = predict_batch(self.pipeline, decoded)
        return {"index": batch["index"], "doc": [json.dumps(p.to_document()) for p in preds]}


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


def _connect(address: str | None, num_cpus: int | None, progress: bool = True) -> Any:
    try:
        import ray
    except ImportError as e:
        raise SpinexrError("--ray needs Ray: pip install 'spinexr[ray]'") from e
    logging.getLogger("ray.data").setLevel(logging.WARNING)
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


def ray_paths(paths: list[Path], out: Path, labels: list[str], digest: str | None, *, source: str | None = None,
              landmarks: str | None = None, no_landmarks: bool = False, address: str | None = None,
              resume: bool = False, batch_size: int = 16,
              cpus_per_actor: int = 1, actors: int | None = None, num_cpus: int | None = None,
              max_pixels: int | None = None, backend: str = "onnx", progress: bool = True,
              on_batch: Callable[[list[dict[str, Any]]], None] | None = None) -> Tally:
    """Predict ``paths`` on a Ray cluster (``address``; None: a local one with ``num_cpus``) into ``out``.

    ``labels`` and ``digest``: the pipeline's labels and bundle digest (the output's columns and the
    check on resume), from the pipeline the driver loaded. Actors get absolute paths; each document
    names its film as it was given. Returns the tally of the whole output."""
    from spinexr.data.imread import DEFAULT_MAX_PIXELS

    if batch_size < 1 or cpus_per_actor < 1:
        raise SpinexrError("--batch-size and --ray-cpus-per-actor must be 1 or more")
    ray = _connect(address, num_cpus, progress)
    sink = ResultFile(out, labels, digest, resume)
    todo = [p for p in paths if not sink.has(p)]
    if len(todo) < len(paths):
        log.info("resuming: %d of %d films already in %s", len(paths) - len(todo), len(paths), out)
    if not todo:
        sink.close()
        return sink.tally
    cpus = int(ray.cluster_resources().get("CPU", 1))
    pool = actors or max(1, cpus // cpus_per_actor)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    # Each film travels with its place in the list: two names for one file (a link, a copy) stay two films,
    # each document named as it was given. Absolute, not resolved: a link is read through its own name.
    before = set(threading.enumerate())
    ds = ray.data.from_items([{"path": os.path.abspath(p), "index": i} for i, p in enumerate(todo)],
                             override_num_blocks=max(1, len(todo) // batch_size))
    ds = ds.map_batches(PredictActor, batch_size=batch_size, concurrency=pool, num_cpus=cpus_per_actor,
                        fn_constructor_kwargs={"source": source, "landmarks": landmarks, "no_landmarks": no_landmarks,
                                               "threads": cpus_per_actor, "backend": backend,
                                               "max_pixels": max_pixels or DEFAULT_MAX_PIXELS})
    batches = ds.iter_batches(batch_size=batch_size, batch_format="numpy")
    try:
        for batch in batches:
            docs = [json.loads(s) for s in batch["doc"]]
            for d, i in zip(docs, batch["index"]):
                d["path"] = str(todo[int(i)])
            sink.append(docs)
            if on_batch is not None:
                on_batch(docs)
    finally:
        sink.close()
    del batches, ds
    _settle(before)
    return sink.tally


__all__ = ["PredictActor", "ray_paths"]
