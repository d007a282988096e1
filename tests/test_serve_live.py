"""The service on a real loopback socket: a bounded load test and an end-to-end browser test."""

from __future__ import annotations

import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

CHROMIUM = Path("/usr/bin/chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@pytest.fixture(scope="module")
def server(trained_model: Path):
    from spinexr.serve import create_app

    port = _free_port()
    app = create_app(trained_model, max_upload_mb=8)
    cfg = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", workers=1)
    srv = uvicorn.Server(cfg)
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not th.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    th.join(timeout=10)


@pytest.mark.slow
def test_load_300_requests_concurrency_8(server: str, synth_dir: Path) -> None:
    files = sorted(synth_dir.rglob("*.jpg"))
    payloads = [(p.name, p.read_bytes()) for p in files]

    def call(i: int) -> tuple[int, float]:
        name, data = payloads[i % len(payloads)]
        t0 = time.perf_counter()
        with httpx.Client(timeout=60) as c:
            r = c.post(f"{server}/v1/predict", files={"file": (name, data, "image/jpeg")})
        return r.status_code, time.perf_counter() - t0

    with ThreadPoolExecutor(8) as ex:  # warm-up, so one-off allocations do not count as growth
        list(ex.map(call, range(24)))
    rss0 = _rss_mb()
    with ThreadPoolExecutor(8) as ex:
        res = list(ex.map(call, range(300)))
    rss1 = _rss_mb()
    codes = [c for c, _ in res]
    assert codes.count(200) == 300, {c: codes.count(c) for c in set(codes)}
    lat = sorted(t for _, t in res)
    p95 = lat[int(0.95 * len(lat)) - 1]
    assert p95 < 30.0  # bounded; the benchmark measures it properly
    assert rss1 - rss0 < 300, f"process memory grew {rss1 - rss0:.0f} MB over 300 requests"
    assert statistics.median(lat) > 0


@pytest.mark.slow
def test_browser_upload_shows_label_and_heatmap(server: str, synth_dir: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    img = sorted((synth_dir / "Scoliosis").glob("*.jpg"))[0]
    shot = tmp_path / "browser.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu",
                                          "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(server + "/")
            # Nothing but the drop zone until there is a result: no empty panels, no broken images.
            before = {sel: page.is_visible(sel) for sel in ("#drop", "#result", "#heatmap-panel", "#viewer-panel")}
            page.set_input_files("#file", str(img))
            page.wait_for_function("document.getElementById('label').textContent.length > 0", timeout=60_000)
            page.wait_for_function("document.getElementById('heatmap').naturalWidth > 0", timeout=60_000)
            label = page.text_content("#label")
            bars = page.locator("#bars .bar").count()
            widths = page.eval_on_selector_all("#bars .fill", "els => els.map(e => e.getBoundingClientRect().width)")
            status = page.text_content("#status")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert before == {"#drop": True, "#result": False, "#heatmap-panel": False, "#viewer-panel": False}
    assert label in ("Normal", "Scoliosis", "Spondylolisthesis")
    assert bars == 3
    assert all(w >= 0 for w in widths) and sum(widths) > 100  # the bars are drawn, not just labelled
    assert status.startswith("Done")
    assert shot.is_file() and shot.stat().st_size > 10_000
