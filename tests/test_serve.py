"""The REST API through FastAPI's TestClient: every status code, and nothing written outside tmp."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import gradient_image, serve_in_thread

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from spinexr.serve import create_app  # noqa: E402


@pytest.fixture(scope="module")
def client(trained_model: Path) -> TestClient:
    return TestClient(create_app(trained_model, max_upload_mb=1.0, max_pixels=4_000_000))


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def spine_bytes(synth_dir: Path) -> bytes:
    return sorted((synth_dir / "Scoliosis").glob("*.jpg"))[0].read_bytes()


def test_health_model_docs_page(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    m = client.get("/v1/model").json()
    assert m["labels"] == ["Normal", "Scoliosis", "Spondylolisthesis"] and m["data_config"]["input_size"] == 64
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text and 'id="heatmap"' in page.text


def test_predict_ok(client: TestClient, spine_bytes: bytes) -> None:
    r = client.post("/v1/predict", files={"file": ("x.jpg", spine_bytes, "image/jpeg")})
    assert r.status_code == 200
    j = r.json()
    assert j["label"] in j["probabilities"]
    assert abs(sum(j["probabilities"].values()) - 1) < 1e-4
    assert isinstance(j["ood"]["flag"], bool) and j["ood"]["threshold"] > 0
    assert j["model"]["name"] == "small" and j["model"]["version"]
    assert j["timing_ms"]["total"] > 0


def test_explain_returns_png_at_original_size(client: TestClient, spine_bytes: bytes) -> None:
    r = client.post("/v1/explain?method=gradcam", files={"file": ("x.jpg", spine_bytes, "image/jpeg")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == Image.open(io.BytesIO(spine_bytes)).size
    r = client.post("/v1/explain?method=attention&target=Normal", files={"file": ("x.jpg", spine_bytes, "image/jpeg")})
    assert r.status_code == 200 and r.headers["x-spinexr-target"] == "Normal"
    assert client.post("/v1/explain?method=lime", files={"file": ("x.jpg", spine_bytes, "image/jpeg")}).status_code == 422
    assert client.post("/v1/explain?target=Kyphosis", files={"file": ("x.jpg", spine_bytes, "image/jpeg")}).status_code == 422


def test_upload_too_large_413(client: TestClient) -> None:
    r = client.post("/v1/predict", files={"file": ("big.png", b"\0" * (2 * 1024 * 1024), "image/png")})
    assert r.status_code == 413 and "1 MB limit" in r.json()["detail"]  # the declared length, before the body


def test_not_an_image_415(client: TestClient) -> None:
    r = client.post("/v1/predict", files={"file": ("notes.txt", b"patient notes, not an image\n" * 10, "text/plain")})
    assert r.status_code == 415
    r = client.post("/v1/predict", files={"file": ("fake.jpg", os.urandom(2048), "image/jpeg")})
    assert r.status_code == 415


def test_bad_images_422(client: TestClient) -> None:
    good = _png(gradient_image(64, 96))
    cases = {
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "bomb": _png(np.tile(gradient_image(256, 256), (10, 10))),  # 2560 x 2560 > the 4 Mpx limit
        "tiny": _png(np.array([[1]], np.uint8)),
        "constant": _png(np.full((64, 64), 9, np.uint8)),
    }
    for name, data in cases.items():
        r = client.post("/v1/predict", files={"file": (f"{name}.png", data, "image/png")})
        assert r.status_code == 422, (name, r.status_code, r.text)
        assert r.json()["detail"]
        assert "/tmp" not in json.dumps(r.json()["detail"])  # no server paths leak into messages
    assert client.post("/v1/predict").status_code == 422  # no file field


def test_hostile_filename_never_reaches_disk(client: TestClient, spine_bytes: bytes, tmp_path: Path) -> None:
    before_tmp = set(os.listdir(tempfile.gettempdir()))
    cwd_before = set(os.listdir("."))
    r = client.post("/v1/predict", files={"file": ("../../../../etc/evil.jpg", spine_bytes, "image/jpeg")})
    assert r.status_code == 200
    assert set(os.listdir(".")) == cwd_before
    leftovers = [d for d in set(os.listdir(tempfile.gettempdir())) - before_tmp if d.startswith("spinexr-")]
    assert not leftovers


def test_a_streamed_body_over_the_limit_gets_the_413_that_names_it(client: TestClient) -> None:
    """A body sent without Content-Length (chunked) is cut off where it passes the limit, and answered with
    the same JSON that names the limit, not a bare 'Content Too Large'."""
    body = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n\r\n" + b"\0" * (3 << 20)

    def chunks():
        for i in range(0, len(body), 1 << 16):
            yield body[i:i + (1 << 16)]

    r = client.post("/v1/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and "1 MB limit" in r.json()["detail"]


def test_a_slow_partial_upload_is_answered_and_closed(trained_model: Path) -> None:
    """An upload whose body stops arriving is answered 408 when the body timeout passes, on a real socket."""
    import socket

    pytest.importorskip("uvicorn")
    srv, th, url = serve_in_thread(create_app(trained_model, body_timeout_s=1.0))
    port = int(url.rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
            c.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                      b"Content-Length: 100000\r\n\r\n--b\r\n")  # then nothing more
            got = b""
            while b"did not arrive" not in got and (chunk := c.recv(65536)):  # headers and body may come apart
                got += chunk
            answer = got.decode(errors="replace")
        assert answer.startswith("HTTP/1.1 408") and "did not arrive within 1 s" in answer
    finally:
        srv.should_exit = True
        th.join(timeout=10)
