"""Micro-batching for the service: concurrent callers' images share model calls, with a bounded queue."""

from __future__ import annotations

import atexit
import threading
import weakref
from collections import Counter, deque
from typing import Any

import numpy as np

from spinexr.deploy.prediction import Classification
from spinexr.deploy.predictor import Predictor
from spinexr.errors import SpinexrError


class QueueFull(SpinexrError):
    """More requests are waiting than :class:`MicroBatcher` accepts."""


_LIVE_BATCHERS: weakref.WeakSet[MicroBatcher] = weakref.WeakSet()


@atexit.register
def _close_batchers() -> None:
    # A worker that wakes while the interpreter is finalizing aborts the process: end them all first.
    for b in list(_LIVE_BATCHERS):
        b.close(timeout=5.0)


class MicroBatcher:
    """Runs concurrent callers' images through the model together, one model call at a time.

    Callers queue their image and wait. One worker thread owns the model: whenever the model is
    free, it takes every waiting image, up to ``max_batch``, oldest first, runs them as one batch and
    wakes each caller with its own result. A lone caller runs at once with a batch of one, so there
    is no added wait; under load, the images that queued during a model call share the next one. On a
    GPU this turns a queue of batch-1 requests into a few full batches; on a CPU already near its
    arithmetic peak it saves per-call overhead. With ``max_queue`` images waiting, :meth:`predict`
    raises :class:`QueueFull` at once, so latency under overload stays bounded instead of growing.
    Hold :attr:`model_lock` to use the model for anything else (explanations).
    """

    def __init__(self, predictor: Predictor, max_batch: int = 8, max_queue: int = 64) -> None:
        if max_batch < 1 or max_queue < 1:
            raise SpinexrError(f"--max-batch ({max_batch}) and --max-queue ({max_queue}) must be at least 1")
        self.predictor = predictor
        self.max_batch = int(max_batch)
        self.max_queue = int(max_queue)
        self.model_lock = threading.Lock()
        self.batch_sizes: Counter[int] = Counter()  # model calls by batch size
        self._pending: deque[dict[str, Any]] = deque()
        self._cv = threading.Condition()
        self._worker: threading.Thread | None = None
        self.idle_seconds = 60.0  # the worker thread ends after this long without work
        self._stop = False
        _LIVE_BATCHERS.add(self)

    def predict(self, img: np.ndarray) -> Classification:
        slot: dict[str, Any] = {"img": img, "event": threading.Event()}
        with self._cv:
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"{len(self._pending)} images are already waiting (limit {self.max_queue}); retry later")
            self._pending.append(slot)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._loop, name="spinexr-batcher", daemon=True)
                self._worker.start()
            self._cv.notify()
        slot["event"].wait()
        if "error" in slot:
            raise slot["error"]
        return slot["result"]

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending:
                    if self._stop or (not self._cv.wait(timeout=self.idle_seconds) and not self._pending):
                        self._worker = None  # closed or idle: end; the next predict() starts a new worker
                        return
            with self.model_lock:  # the batch is taken only once the model is free, so it is as full as it can be
                with self._cv:
                    batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
                try:
                    self._run(batch)
                except BaseException as e:  # never leave a caller waiting
                    for b in batch:
                        if not b["event"].is_set():
                            b["error"] = e
                            b["event"].set()
                    raise

    def close(self, timeout: float = 30.0) -> None:
        """Finish the waiting images, then end the worker thread (a later :meth:`predict` starts a new one)."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join(timeout)
        with self._cv:
            self._stop = False

    def _run(self, batch: list[dict[str, Any]]) -> None:
        self.batch_sizes[len(batch)] += 1
        try:
            preds = self.predictor.predict_images([b["img"] for b in batch])
        except Exception as e:
            if len(batch) > 1:  # one caller's image must not fail the others: run them one by one
                for b in batch:
                    self._run([b])
                return
            batch[0]["error"] = e
            batch[0]["event"].set()
            return
        for b, p in zip(batch, preds):
            b["result"] = p
            b["event"].set()
