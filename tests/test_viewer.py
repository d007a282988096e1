"""The measurement viewer and the corrections store: in Chromium with real mouse events (Playwright), a dragged
corner gives the angle ``spinexr.geometry.cobb`` gives, undo restores it, a save lands in the store and a
reload offers it; ``POST /v1/measure`` equals the Python function; the store keeps versions and survives
a truncated row; fine-tuning on a few corrections lowers the error on them."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import serve_in_thread
from spinexr.data.corrections import CorrectionStore
from spinexr.data.synth import ap_landmarks, make_case
from spinexr.geometry.cobb import LEVELS, cobb_angles
from spinexr.geometry.corners import measure_corners

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
from fastapi.testclient import TestClient  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def pipeline(bundled):
    return bundled


def _serve(app):
    return serve_in_thread(app, timeout=30)


@pytest.fixture(scope="module")
def servers(pipeline, tmp_path_factory: pytest.TempPathFactory):
    """One service keeping corrections behind a token, one keeping none."""
    from spinexr.serve import create_app

    store = tmp_path_factory.mktemp("corrections")
    a = _serve(create_app(pipeline, corrections=store, token=TOKEN))
    b = _serve(create_app(pipeline))
    yield a[2], b[2], store
    for srv, th, _ in (a, b):
        srv.should_exit = True
        th.join(timeout=10)


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    case = make_case("Scoliosis", np.random.default_rng(3), scale=0.6)
    p = tmp_path_factory.mktemp("film") / "scoliosis_film.png"
    Image.fromarray(case.image).save(p)
    return p


def _browser(p):
    return p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                             args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])


def _open(page, url: str, film: Path) -> None:
    page.goto(url + "/")
    page.set_input_files("#file", str(film))
    page.wait_for_selector("#viewer-panel:not([hidden])", timeout=120_000)
    page.wait_for_function("document.getElementById('viewer').dataset.pending === '0'", timeout=60_000)


def _shown(page) -> float:
    """The largest angle the page shows (the major curve's, when it is 10 degrees or more)."""
    page.wait_for_function("document.getElementById('viewer').dataset.pending === '0'", timeout=60_000)
    return float(page.get_attribute("#largest", "data-angle"))


def _expected(page) -> float:
    corners = np.array(page.evaluate("current.corners"))
    h, weight = page.evaluate("current.h"), page.evaluate("current.weight")
    return cobb_angles(corners, h, weight).largest


@pytest.mark.slow
def test_drag_undo_save_reload_in_the_browser(servers, film: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    url, no_store_url, store = servers
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            _open(page, url, film)
            before = _shown(page)
            assert before == pytest.approx(_expected(page), abs=0.1)
            upper = LEVELS.index(page.evaluate("current.measured.aasce_angles.first.upper_end"))
            page.locator("#viewer").scroll_into_view_if_needed()
            handle = page.locator(f'#viewer circle.corner[data-v="{upper}"][data-c="1"]')
            box = handle.bounding_box()
            assert 0 <= box["y"] < 1000, "the handle is on screen"
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x + 6, y - 14, steps=6)
            page.mouse.up()
            after = _shown(page)
            moved = np.array(page.evaluate("current.corners")) - np.array(page.evaluate("current.model"))
            assert np.count_nonzero(np.abs(moved).sum(axis=-1) > 0.5) == 1  # that one corner, nothing else
            assert abs(after - before) > 0.5  # the end vertebra's tilt changed the angle
            assert after == pytest.approx(_expected(page), abs=0.1)  # as spinexr.geometry.cobb reads it
            assert page.is_visible("#edited")
            page.click("#undo")
            assert _shown(page) == pytest.approx(before, abs=0.1)
            assert not page.is_visible("#edited")
            page.click("#redo")
            assert _shown(page) == pytest.approx(after, abs=0.1)
            # saving: refused with a wrong token, kept with the right one
            page.fill("#corr-token", "wrong")
            page.click("#save")
            page.wait_for_function("document.getElementById('save-status').textContent.startsWith('Not saved')")
            assert "403" in page.text_content("#save-status")
            page.fill("#corr-token", TOKEN)
            page.fill("#corr-name", "Dr Tester")
            page.click("#save")
            page.wait_for_function("document.getElementById('save-status').textContent.startsWith('Saved')")
            saved = np.array(page.evaluate("current.corners"))
            rows = list(csv.DictReader(open(store / "corrections.csv")))
            assert len(rows) == 1 and rows[0]["saved_by"] == "Dr Tester" and rows[0]["version"] == "1"
            xs = np.array([float(rows[0][f"x{i}"]) for i in range(1, 69)])
            ys = np.array([float(rows[0][f"y{i}"]) for i in range(1, 69)])
            np.testing.assert_allclose(np.stack([xs, ys], 1), saved.reshape(68, 2), atol=0.01)
            assert float(rows[0]["pt"]) == pytest.approx(after, abs=0.1)
            # a reload of the same film offers the saved correction once the token is given (reading needs it)
            _open(page, url, film)
            assert page.is_hidden("#saved-offer")
            page.fill("#corr-token", TOKEN)
            page.wait_for_selector("#saved-offer:not([hidden])", timeout=30_000)
            assert "by Dr Tester" in page.text_content("#saved-text")
            page.click("#load-saved")
            np.testing.assert_allclose(np.array(page.evaluate("current.corners")), saved, atol=0.01)
            assert _shown(page) == pytest.approx(after, abs=0.1)
            # a service without a corrections folder refuses, saying how to start it
            _open(page, no_store_url, film)
            page.click("#save")
            page.wait_for_function("document.getElementById('save-status').textContent.startsWith('Not saved')")
            assert "409" in page.text_content("#save-status") and "--corrections" in page.text_content("#save-status")
        finally:
            browser.close()


def _curve_list(page) -> list[tuple[str, str, float]]:
    return [(e["region"], e["side"], float(e["angle"])) for e in
            page.eval_on_selector_all("#curves .curve", "els => els.map(e => ({...e.dataset}))")]


def _drag(page, selector: str, dx: float, dy: float) -> None:
    box = page.locator(selector).bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=8)
    page.mouse.up()


@pytest.mark.slow
def test_viewer_levels_window_level_and_curves_in_the_browser(servers, film: Path, tmp_path: Path) -> None:
    """The viewer comes first on the page, labels every vertebra T1...L5 beside it, changes the film's
    pixels with level and window, and a dragged vertebra updates the curve list (regions and sides) as
    ``measure_corners`` reads the new corners; an overlap is flagged as training would leave it out."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    _, url, _ = servers
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            _open(page, url, film)
            page.wait_for_function("document.getElementById('status').textContent.startsWith('Done')", timeout=60_000)
            assert page.locator("#viewer-panel").bounding_box()["y"] < page.locator("#result").bounding_box()["y"]
            labels = page.eval_on_selector_all("#viewer text.level", """els => els.map(e => {
                const r = e.getBoundingClientRect(), q = document.querySelector(`#viewer polygon.vert[data-v="${e.dataset.v}"]`)
                    .getBoundingClientRect();
                return [e.textContent, r.width, r.height, r.right, q.left, (r.top + r.bottom) / 2, q.top, q.bottom]; })""")
            assert [lab[0] for lab in labels] == list(LEVELS)
            for text, width, height, right, vert_left, mid, top, bottom in labels:
                assert width > 0 and height > 0, text  # drawn
                assert right <= vert_left + 1 and top <= mid <= bottom, text  # beside its own vertebra
            page.locator("#viewer").screenshot(path=str(tmp_path / "a.png"))
            page.locator("#wl-level").fill("25")
            page.locator("#wl-window").fill("40")
            page.locator("#viewer").screenshot(path=str(tmp_path / "b.png"))
            a, b = (np.asarray(Image.open(tmp_path / n).convert("L"), dtype=np.float64) for n in ("a.png", "b.png"))
            assert a.shape == b.shape and b.mean() > a.mean() + 10  # a lower level and a narrower window: brighter
            assert np.abs(a - b).mean() > 5  # the film's pixels changed, not a label
            before = _curve_list(page)
            assert before, "the synthetic scoliosis film has a curve"
            end = LEVELS.index(page.evaluate("current.measured.curves[0].upper_end"))
            _drag(page, f'#viewer circle.corner[data-v="{end}"][data-c="1"]', 0, -12)  # its tilt, and the curves
            page.wait_for_function("document.getElementById('viewer').dataset.pending === '0'", timeout=60_000)
            after = _curve_list(page)
            corners = np.array(page.evaluate("current.corners"))
            want = measure_corners(corners, page.evaluate("current.w"), page.evaluate("current.h"),
                                   page.evaluate("current.weight"))["curves"]
            assert [(r, s) for r, s, _ in after] == [(c["region"], c["side"]) for c in want]
            assert [a for _, _, a in after] == pytest.approx([c["angle"] for c in want], abs=0.1)
            assert after != before
            drawn = page.eval_on_selector_all("#viewer text.curve-angle", "els => els.map(e => e.textContent)")
            assert drawn == [f"{c['angle']:.1f}°" for c in want]  # each angle drawn on the film at its lines
            assert "overlap" not in page.text_content("#training")
            t7, t8 = np.array(page.evaluate("current.corners[6]")), np.array(page.evaluate("current.corners[7]"))
            height, gap = t7[2:, 1].mean() - t7[:2, 1].mean(), t8[:2, 1].mean() - t7[2:, 1].mean()
            scale = page.evaluate("current.view.s")
            _drag(page, '#viewer polygon.vert[data-v="6"]', 0, (gap + 0.5 * height) * scale)  # T7 half into T8
            page.wait_for_function("document.getElementById('viewer').dataset.pending === '0'", timeout=60_000)
            assert "leave these corners out" in page.text_content("#training")
            assert "overlap" in page.text_content("#training")
            assert page.get_attribute("#training", "class") == "bad"
        finally:
            browser.close()


def _random_spine(rng: np.random.Generator, plausible: bool) -> np.ndarray:
    case = make_case("Scoliosis", rng, scale=0.5)
    v = ap_landmarks(case) + rng.normal(0, 1.5, (17, 4, 2))
    if not plausible:
        i = int(rng.integers(0, 16))
        v[[i, i + 1]] = v[[i + 1, i]]  # two vertebrae out of order
    return v, case.image.shape


def test_measure_endpoint_equals_the_python_function(pipeline) -> None:
    from spinexr.serve import create_app

    client = TestClient(create_app(pipeline))
    rng = np.random.default_rng(0)
    verdicts = set()
    for k in range(40):
        v, (h, w) = _random_spine(rng, plausible=k % 4 != 0)
        weight = float(rng.choice([0.0, 0.5]))
        got = client.post("/v1/measure", json={"corners": v.tolist(), "width": w, "height": h,
                                                "centreline_weight": weight}).json()
        want = measure_corners(v, w, h, weight)
        assert [(c["region"], c["side"], c["upper_end"], c["lower_end"], c["apex"], c["major"]) for c in got["curves"]] \
            == [(c["region"], c["side"], c["upper_end"], c["lower_end"], c["apex"], c["major"]) for c in want["curves"]]
        assert [c["angle"] for c in got["curves"]] == pytest.approx([c["angle"] for c in want["curves"]], abs=1e-9)
        assert got["pattern"] == want["pattern"] and len(got["endplate_lines"]) == len(got["curves"])
        for key in ("first", "second", "third"):
            assert got["aasce_angles"][key]["angle"] == pytest.approx(want["aasce_angles"][key]["angle"], abs=1e-9)
        assert (got["largest"], got["band"], got["plausible"], got["refused"]) == \
            (pytest.approx(want["largest"]), want["band"], want["plausible"], want["refused"])
        verdicts.add(got["plausible"])
    assert verdicts == {True, False}  # both kinds of spine were measured
    v, (h, w) = _random_spine(rng, True)
    for body, reason in (({"corners": v.tolist()[:16], "width": w, "height": h}, "68 points"),
                         ({"corners": v.tolist(), "height": h}, "missing 'width'"),
                         ({"corners": (v + [w * 2, 0]).tolist(), "width": w, "height": h}, "outside"),
                         ({"corners": [[["a", 1]] * 4] * 17, "width": w, "height": h}, "numbers")):
        r = client.post("/v1/measure", json=body)
        assert r.status_code == 422 and reason in r.json()["detail"], (reason, r.json())
    nan = json.dumps({"corners": v.tolist(), "width": w, "height": h}).replace(str(v[0, 0, 0]), "NaN", 1)
    r = client.post("/v1/measure", content=nan, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "NaN" in r.json()["detail"]


def test_corrections_are_versioned_and_a_truncated_row_loses_nothing_else(pipeline, tmp_path: Path) -> None:
    from spinexr.serve import create_app

    client = TestClient(create_app(pipeline, corrections=tmp_path / "store"))
    films = []
    for seed in (1, 2):
        case = make_case("Scoliosis", np.random.default_rng(seed), scale=0.4)
        buf = io.BytesIO()
        Image.fromarray(case.image).save(buf, format="PNG")
        films.append((buf.getvalue(), ap_landmarks(case)))
    (data, v), (data2, v2) = films

    def save(d: bytes, corners: np.ndarray):
        return client.post("/v1/corrections", files={"file": ("f.png", d, "image/png")},
                           data={"correction": json.dumps({"corners": corners.tolist()})})

    assert save(data, v).json()["version"] == 1
    assert save(data, v + 2).json()["version"] == 2  # the same film again: a new version
    assert save(data2, v2).status_code == 200
    sha = hashlib.sha256(data).hexdigest()
    assert (tmp_path / "store" / "records" / sha / "v1.json").is_file()  # version 1 is still there
    got = client.get(f"/v1/corrections/{sha}").json()
    assert got["versions"] == 2 and np.allclose(got["latest"]["corners"], v + 2, atol=1e-3)
    assert client.get("/v1/corrections/" + "0" * 64).status_code == 404
    bad = save(data, np.full((17, 4, 2), np.nan))
    assert bad.status_code == 422
    wrong = client.post("/v1/corrections", files={"file": ("f.png", data, "image/png")},
                        data={"correction": json.dumps({"corners": v.tolist()[:5]})})
    assert wrong.status_code == 422 and "68 points" in wrong.json()["detail"]
    no_film = client.post("/v1/corrections", data={"correction": json.dumps({"corners": v.tolist()})})
    assert no_film.status_code == 422 and no_film.json()["detail"][0]["loc"] == ["body", "file"]
    # cut the log's last row short: reported per row, the other corrections kept, saving goes on
    log = tmp_path / "store" / "corrections.csv"
    log.write_bytes(log.read_bytes()[:-300])
    store = CorrectionStore(tmp_path / "store")
    scan = store.scan()
    assert scan.rows == 2 and len(scan.problems) == 1 and "row 4" in scan.problems[0]
    assert save(data2, v2 + 1).json()["version"] == 2
    scan = store.scan()
    assert scan.rows == 3 and len(scan.latest) == 2
    latest = list(csv.DictReader(open(tmp_path / "store" / "latest.csv")))
    assert len(latest) == 2  # one row a film, its latest version
    from spinexr.data.landmarks import read_landmark_csv

    assert len(read_landmark_csv(tmp_path / "store" / "latest.csv")) == 2  # what `landmarks train --data` reads
    status = client.get("/v1/corrections").json()
    assert status["films"] == 2 and status["versions"] == 4 and len(status["problems"]) == 1


def test_saving_and_reading_corrections_need_a_token_off_loopback(pipeline, tmp_path: Path) -> None:
    from spinexr.serve import create_app

    client = TestClient(create_app(pipeline, corrections=tmp_path / "s", remote=True))
    case = make_case("Scoliosis", np.random.default_rng(4), scale=0.4)
    buf = io.BytesIO()
    Image.fromarray(case.image).save(buf, format="PNG")
    r = client.post("/v1/corrections", files={"file": ("f.png", buf.getvalue(), "image/png")},
                    data={"correction": json.dumps({"corners": ap_landmarks(case).tolist()})})
    assert r.status_code == 403 and "--token" in r.json()["detail"]
    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    for path in ("/v1/corrections", f"/v1/corrections/{sha}"):  # the listing and one film's latest
        r = client.get(path)
        assert r.status_code == 403 and "--token" in r.json()["detail"], path
    guarded = TestClient(create_app(pipeline, corrections=tmp_path / "t", remote=True, token=TOKEN))
    assert guarded.get("/v1/corrections").status_code == 403
    assert guarded.get("/v1/corrections", headers={"Authorization": "Bearer wrong"}).status_code == 403
    ok = guarded.get("/v1/corrections", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["films"] == 0


def test_page_verdict_is_the_check_training_applies(pipeline) -> None:
    """``/v1/measure``'s ``training`` verdict is :func:`check_label`'s, the check ``landmarks train`` applies:
    planted overlaps are flagged, clean spines usable, slips named as training fixes them."""
    from spinexr.data.label_check import check_label
    from spinexr.serve import create_app

    client = TestClient(create_app(pipeline))
    rng = np.random.default_rng(5)
    clean, (h, w) = _random_spine(rng, plausible=True)
    overlap = clean.copy()
    overlap[6] += [0.0, 0.6 * float(overlap[6, 2, 1] - overlap[6, 0, 1])]  # T7 pushed down into T8
    swapped = clean.copy()
    swapped[3] = swapped[3][[1, 0, 3, 2]]  # T4's left and right corners swapped: a slip training fixes
    for v in (clean, overlap, swapped, *(_random_spine(rng, plausible=bool(i % 2))[0] for i in range(6))):
        got = client.post("/v1/measure", json={"corners": v.tolist(), "width": w, "height": h}).json()["training"]
        want = check_label(v)
        assert got == {"usable": want.usable, "problems": list(want.problems), "fixes": list(want.fixes)}
    flagged = client.post("/v1/measure", json={"corners": overlap.tolist(), "width": w, "height": h}).json()
    assert not flagged["training"]["usable"] and "T7 and T8 overlap" in flagged["training"]["problems"]
    fixed = client.post("/v1/measure", json={"corners": swapped.tolist(), "width": w, "height": h}).json()
    assert fixed["training"]["usable"] and any("T4" in f for f in fixed["training"]["fixes"])


@pytest.mark.slow
def test_fine_tuning_on_a_few_corrections_lowers_their_error(synth_dir: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    """The bundled landmark model (trained on AASCE films) fine-tuned on synthetic films' corners measures
    those films better than before; a correction whose vertebrae overlap is left out and named, with one
    count of the films in the console, the card, the model file and the metrics."""
    from spinexr.cli import main
    from spinexr.deploy.bundle import load_bundle
    from spinexr.deploy.bundled import bundled_bundle_dir
    from spinexr.deploy.measure import SpineMeasurer
    from spinexr.evaluation.landmark_cv import film_count
    from spinexr.evaluation.landmark_eval import evaluate_landmarks

    parent = load_bundle(bundled_bundle_dir()).landmarks
    rows = list(csv.reader(open(synth_dir / "landmarks.csv")))
    bad = rows[1]  # T7 pushed down into T8 (y7 corners are columns 1 + 68 + 24 ... 27)
    ys = [float(v) for v in bad[69:137]]
    shift = 0.5 * (ys[26] - ys[24]) + (ys[28] - ys[26])
    bad[69 + 24:69 + 28] = [f"{v + shift:.3f}" for v in ys[24:28]]
    data = tmp_path / "corrections.csv"
    with open(data, "w", newline="") as f:
        csv.writer(f).writerows([rows[0], *[[str(synth_dir / r[0]), *r[1:]] for r in rows[1:]]])
    before, _ = evaluate_landmarks(SpineMeasurer(parent), synth_dir / "landmarks.csv", progress=False, n_boot=50)
    out = tmp_path / "ft"
    capsys.readouterr()
    assert main(["landmarks", "train", "--init", str(parent), "--data", str(data), "--out", str(out), "--epochs", "4",
                 "--test-fraction", "0", "--device", "cpu", "--batch-size", "4", "--quiet"]) == 0
    console = capsys.readouterr().out
    child = out / "models" / "landmarks.safetensors"
    after, _ = evaluate_landmarks(SpineMeasurer(child), synth_dir / "landmarks.csv", progress=False, n_boot=50)
    assert after["landmark_error_pct_height"]["mean"] < before["landmark_error_pct_height"]["mean"]
    card = (out / "models" / "landmarks.md").read_text()
    assert str(parent) in card and str(data) in card
    meta = json.loads((out / "models" / "landmarks.json").read_text())
    assert meta["training_data"]["parent"]["path"] == str(parent)
    assert SpineMeasurer(child).contract == SpineMeasurer(parent).contract  # the contract kept
    metrics = json.loads((out / "metrics.json").read_text())
    films = metrics["films"]
    assert films["read"] == len(rows) - 1 and films["left_out"] == 1 and films["held_out"] == 0
    assert films["trained_on"] + films["validated_on"] + films["left_out"] + films["unreadable"] == films["read"]
    left = metrics["left_out"]
    assert list(left) == [str(synth_dir / bad[0])] and "T7 and T8 overlap" in left[str(synth_dir / bad[0])]
    said = film_count(meta["training_data"])
    assert said == film_count(metrics) and said in console and said in card  # one count, said three times
    assert f"trained on {films['trained_on']} films, {films['validated_on']} more" in said
    assert Path(bad[0]).name in said and "T7 and T8 overlap" in said
