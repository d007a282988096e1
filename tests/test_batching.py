"""Micro-batching of concurrent predictions: shared model calls, the same answers, a bounded queue."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from spinexr.data.imread import read_image
from spinexr.deploy.batching import MicroBatcher, QueueFull
from spinexr.deploy.prediction import Classification
from spinexr.deploy.predictor import Predictor
from spinexr.errors import SpinexrError


def _wait_for(cond, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)



def _answered(c: Classification) -> bool:
    """A caller got its own classification: a label and probabilities that sum to one."""
    return isinstance(c, Classification) and c.label in c.probabilities and abs(sum(c.probabilities.values()) - 1) < 1e-4


@pytest.fixture(scope="module")
def images(synth_dir: Path) -> list[np.ndarray]:
    return [read_image(p)[0] for p in sorted(synth_dir.rglob("*.jpg"))[:8]]


def test_queued_callers_share_one_model_call_and_get_their_own_answers(trained_model: Path, images) -> None:
    pred = Predictor(trained_model)
    alone = [pred.predict_image(img) for img in images]
    b = MicroBatcher(pred, max_batch=8, max_queue=16)
    with ThreadPoolExecutor(8) as ex:
        with b.model_lock:  # the model is busy: all eight callers queue up
            futs = [ex.submit(b.predict, img) for img in images]
            _wait_for(lambda: len(b._pending) == 8, "eight queued callers")
        got = [f.result(timeout=60) for f in futs]
    assert dict(b.batch_sizes) == {8: 1}
    for a, g in zip(alone, got):
        assert a.label == g.label
        np.testing.assert_allclose([a.probabilities[c] for c in pred.labels],
                                   [g.probabilities[c] for c in pred.labels], atol=1e-4)


def test_batches_never_exceed_max_batch_and_keep_order(trained_model: Path, images) -> None:
    b = MicroBatcher(Predictor(trained_model), max_batch=3, max_queue=16)
    with ThreadPoolExecutor(8) as ex:
        with b.model_lock:
            futs = [ex.submit(b.predict, img) for img in images]
            _wait_for(lambda: len(b._pending) == 8, "eight queued callers")
        assert all(_answered(f.result(timeout=60)) for f in futs)
    assert max(b.batch_sizes) <= 3 and sum(k * v for k, v in b.batch_sizes.items()) == 8


def test_a_full_queue_refuses_at_once(trained_model: Path, images) -> None:
    b = MicroBatcher(Predictor(trained_model), max_batch=4, max_queue=2)
    with ThreadPoolExecutor(2) as ex:
        with b.model_lock:
            futs = [ex.submit(b.predict, img) for img in images[:2]]
            _wait_for(lambda: len(b._pending) == 2, "two queued callers")
            with pytest.raises(QueueFull, match="limit 2"):
                b.predict(images[2])
        assert all(_answered(f.result(timeout=60)) for f in futs)


def test_one_bad_image_does_not_fail_the_others_in_its_batch(trained_model: Path, images) -> None:
    b = MicroBatcher(Predictor(trained_model), max_batch=4, max_queue=8)
    bad = np.zeros((3, 3, 3, 3), np.float32)  # not a 2-D image: preparing it raises
    with ThreadPoolExecutor(3) as ex:
        with b.model_lock:
            futs = [ex.submit(b.predict, x) for x in (images[0], bad, images[1])]
            _wait_for(lambda: len(b._pending) == 3, "three queued callers")
        assert _answered(futs[0].result(timeout=60)) and _answered(futs[2].result(timeout=60))
        with pytest.raises(ValueError):  # the caller with the bad image gets its own error
            futs[1].result(timeout=60)
    assert b.batch_sizes[3] == 1 and b.batch_sizes[1] == 3  # the failed batch, then one by one


def test_service_answers_503_with_retry_after_when_the_queue_is_full(trained_model: Path, synth_dir: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from spinexr.serve import create_app

    app = create_app(trained_model, max_queue=1)
    batcher = app.state.batcher
    data = sorted(synth_dir.rglob("*.jpg"))[0].read_bytes()
    with TestClient(app) as client:
        results: list = []
        with batcher.model_lock:
            th = threading.Thread(target=lambda: results.append(
                client.post("/v1/predict", files={"file": ("a.jpg", data, "image/jpeg")})))
            th.start()
            _wait_for(lambda: len(batcher._pending) == 1, "the first request to queue")
            r = client.post("/v1/predict", files={"file": ("b.jpg", data, "image/jpeg")})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert "busy" in r.json()["detail"]
        th.join(timeout=60)
        assert results and results[0].status_code == 200
        assert client.get("/v1/model").json()["serving"]["model_calls_by_batch_size"] == {"1": 1}


def test_the_worker_ends_when_idle_and_a_new_one_serves_the_next_call(trained_model: Path, images) -> None:
    b = MicroBatcher(Predictor(trained_model), max_batch=2, max_queue=4)
    b.idle_seconds = 0.05
    assert _answered(b.predict(images[0]))
    first = b._worker
    assert first is not None
    first.join(timeout=30)
    assert not first.is_alive() and b._worker is None
    assert _answered(b.predict(images[1]))
    second = b._worker
    assert second is not None and second is not first
    b.close()
    assert not second.is_alive() and b._worker is None


def test_a_batch_or_queue_below_one_is_refused_with_the_flag_named(trained_model: Path) -> None:
    pred = Predictor(trained_model)
    with pytest.raises(SpinexrError, match="--max-batch"):
        MicroBatcher(pred, max_batch=0)
    with pytest.raises(SpinexrError, match="--max-queue"):
        MicroBatcher(pred, max_queue=0)
