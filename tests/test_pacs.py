"""``spinexr pacs`` against a real Orthanc with its DICOMweb plugin: reports read back from the PACS say what
``predict`` says, dciodvfy accepts them, bad studies are handled per study, a kill and restart leaves
exactly one report per film, and a server that is down or refuses the credentials gets a clear message."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from spinexr.data.dicom_film import FilmIdentity, dx_dataset
from spinexr.data.synth import make_case, synthesize
from spinexr.errors import SpinexrError
from spinexr.pacs import Credentials, Ledger, load_credentials

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _orthanc import PASSWORD, USER, Orthanc, find_orthanc, free_port  # noqa: E402
from test_dicom_out import assert_report_matches, dciodvfy_errors  # noqa: E402

needs_orthanc = pytest.mark.skipif(find_orthanc() is None, reason="Orthanc and its DICOMweb plugin are not installed "
                                                                   "(Debian: orthanc orthanc-dicomweb; .ci/run installs them)")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "SPINEXR_PACS_USER": USER, "SPINEXR_PACS_PASSWORD": PASSWORD}
TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.fixture(scope="module")
def dx_films(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pacs_dx")
    synthesize(d, n=6, seed=21, scale=0.35, fmt="dcm")
    return d


def unreadable_dx(path: Path) -> Path:
    """A DX film whose pixel data is cut short: the PACS stores it, no reader can decode it."""
    ds = dx_dataset(np.zeros((120, 60), np.uint8), FilmIdentity(patient_id="BROKEN-1"))
    ds.PixelData = ds.PixelData[:1000]
    ds.save_as(path, enforce_file_format=True)
    return path


def load(pacs: Orthanc, files: list[Path]) -> None:
    client = pacs.client()
    for f in files:
        client.store_instances([pydicom.dcmread(f, force=True)])


def watch(pacs_url: str, state: Path, *extra: str, env: dict | None = None, timeout: float = 600,
          **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spinexr", "pacs", "watch", pacs_url, "--state", str(state), *extra],
                          cwd=ROOT, capture_output=True, text=True, env=env or ENV, timeout=timeout, **kw)


def reports(pacs: Orthanc, study: str) -> dict[str, list[pydicom.Dataset]]:
    """The SR and PR instances of a study, read back from the PACS."""
    client = pacs.client()
    out: dict[str, list[pydicom.Dataset]] = {"SR": [], "PR": []}
    for s in client.search_for_series(study):
        modality = s["00080060"]["Value"][0]
        if modality in out:
            uid = s["0020000E"]["Value"][0]
            for i in client.search_for_instances(study, uid):
                out[modality].append(client.retrieve_instance(study, uid, i["00080018"]["Value"][0]))
    return out


@needs_orthanc
@pytest.mark.slow
def test_round_trip_reports_match_predict(dx_films: Path, tmp_path: Path, tiny_bundle: Path) -> None:
    """The tiny bundle: what the reports hold is checked against predict's documents, whatever the models."""
    films = sorted(dx_films.rglob("*.dcm"))
    broken = unreadable_dx(tmp_path / "broken.dcm")
    chest = dx_dataset(make_case("Normal", np.random.default_rng(3), scale=0.35).image, FilmIdentity(patient_id="C1"))
    chest.BodyPartExamined = "CHEST"  # a DX film outside the intended use: analysed by no one, reported nowhere
    chest.save_as(tmp_path / "chest.dcm", enforce_file_format=True)
    model = ("--model", str(tiny_bundle))
    with Orthanc(tmp_path / "orthanc") as pacs:
        load(pacs, [*films, broken, tmp_path / "chest.dcm", TEST_FILES / "CT_small.dcm", TEST_FILES / "rtplan.dcm"])
        state = tmp_path / "state.sqlite"
        done = watch(pacs.url, state, "--once", *model)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr and "loading the models" in done.stderr
        assert "skipped: no CR or DX series (modalities: CT)" in done.stderr
        assert "skipped: no CR or DX series (modalities: RTPLAN)" in done.stderr
        # predict on the same files: the reports read back from the PACS say the same, to 0.01 deg
        preds = tmp_path / "preds.jsonl"
        ran = subprocess.run([sys.executable, "-m", "spinexr", "predict", str(tiny_bundle), *map(str, films), "--out", str(preds),
                              "--quiet"], cwd=ROOT, capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr
        docs = {json.loads(line)["sha256"]: json.loads(line) for line in preds.read_text().splitlines()}
        import hashlib

        for f in films:
            film = pydicom.dcmread(f, stop_before_pixels=True)
            got = reports(pacs, film.StudyInstanceUID)
            assert len(got["SR"]) == 1 and len(got["PR"]) == 1
            assert_report_matches(got["SR"][0], docs[hashlib.sha256(f.read_bytes()).hexdigest()])
            assert got["SR"][0].PatientID == film.PatientID
        one = got
        for kind in ("SR", "PR"):
            path = tmp_path / f"{kind}.dcm"
            one[kind][0].save_as(path, enforce_file_format=True)
            assert dciodvfy_errors(path) == [], kind
        broken_study = pydicom.dcmread(broken, stop_before_pixels=True).StudyInstanceUID
        assert reports(pacs, broken_study) == {"SR": [], "PR": []}  # no report for the film no one can read
        assert reports(pacs, chest.StudyInstanceUID) == {"SR": [], "PR": []}  # nor for the chest film
        ledger = Ledger(state, pacs.url)
        counts = ledger.counts()
        assert counts == {"done": len(films) + 1, "skipped": 2, "retry": 1, "films reported": len(films),
                          "films failed": 1, "films not analysed": 1, "films waiting to be tried again": 1}
        failed = [f for f in ledger.films() if f["state"] == "failed"]
        assert failed[0]["study_uid"] == broken_study and failed[0]["reason"] and failed[0]["next_try"] > time.time()
        outside = [f for f in ledger.films() if f["state"] == "not_analysed"]
        assert outside[0]["study_uid"] == chest.StudyInstanceUID and "Body Part Examined CHEST" in outside[0]["reason"]
        ledger.close()
        again = watch(pacs.url, state, "--once", *model)  # nothing new: nothing done twice
        assert again.returncode == 0 and "0 new studies" in again.stderr
        assert "loading the models" not in again.stderr  # nothing new: no model loaded
        # a film that arrives later in a finished study: that film is reported, the others are not redone
        first = pydicom.dcmread(films[0])
        late = dx_dataset(make_case("Scoliosis", np.random.default_rng(9), scale=0.35).image, FilmIdentity(
            patient_id=first.PatientID, study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID,
            instance_number=2))
        pacs.client().store_instances([late])
        later = watch(pacs.url, state, "--once", *model)
        assert later.returncode == 0 and "1 new studies: 1 finished (1 films reported" in later.stderr, later.stderr
        got = reports(pacs, first.StudyInstanceUID)
        assert len(got["SR"]) == 2 and len({sr.SOPInstanceUID for sr in got["SR"]}) == 2
        assert sorted(int(sr.InstanceNumber) for sr in got["SR"]) == [1, 2]  # numbered within the output series
        assert watch(pacs.url, state, "--once", *model).stderr.count("0 new studies") == 1
        status = subprocess.run([sys.executable, "-m", "spinexr", "pacs", "status", "--state", str(state)], cwd=ROOT,
                                capture_output=True, text=True)
        assert f"films reported {len(films) + 1}" in status.stdout


@needs_orthanc
@pytest.mark.slow
def test_kill_and_restart_leaves_one_report_per_study(tmp_path: Path) -> None:
    films = tmp_path / "films"
    synthesize(films, n=9, seed=5, scale=0.35, fmt="dcm")
    paths = sorted(films.rglob("*.dcm"))
    with Orthanc(tmp_path / "orthanc") as pacs:
        load(pacs, paths)
        state = tmp_path / "state.sqlite"
        proc = subprocess.Popen([sys.executable, "-m", "spinexr", "pacs", "watch", pacs.url, "--state", str(state),
                                 "--interval", "0.5", "--batch-size", "1"], cwd=ROOT, env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def reported() -> int:
            try:
                with sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=1) as db:
                    return int(db.execute("SELECT COUNT(*) FROM films WHERE state = 'reported'").fetchone()[0])
            except sqlite3.Error:
                return 0

        deadline = time.monotonic() + 300
        while reported() < 2:
            assert proc.poll() is None, "the watcher ended early"
            assert time.monotonic() < deadline, "no report in time"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        first = reported()
        assert first < len(paths), "killed in the middle of the run"
        done = watch(pacs.url, state, "--once")
        assert done.returncode == 0, done.stderr
        for p in paths:
            got = reports(pacs, pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID)
            assert (len(got["SR"]), len(got["PR"])) == (1, 1), p.name
        assert reported() == len(paths)
        # SIGTERM while the watcher waits between passes: it ends at once, cleanly
        log = tmp_path / "idle.log"
        with open(log, "w") as err:
            idle = subprocess.Popen([sys.executable, "-m", "spinexr", "pacs", "watch", pacs.url, "--state", str(state),
                                     "--interval", "600"], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=err)
            deadline = time.monotonic() + 120
            while "0 new studies" not in log.read_text():
                assert idle.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            t0 = time.monotonic()
            idle.send_signal(signal.SIGTERM)
            idle.wait(timeout=30)
        assert idle.returncode == 0 and time.monotonic() - t0 < 10 and "Traceback" not in log.read_text()


@needs_orthanc
def test_refused_credentials_and_a_server_that_is_down(tmp_path: Path, tiny_bundle: Path) -> None:
    with Orthanc(tmp_path / "orthanc") as pacs:
        bad = {**ENV, "SPINEXR_PACS_PASSWORD": "wrong"}
        done = watch(pacs.url, tmp_path / "s.sqlite", "--once", env=bad)
        assert done.returncode == 2 and "refused the credentials (HTTP 401)" in done.stderr
        assert "Traceback" not in done.stderr
        load(pacs, [TEST_FILES / "CT_small.dcm"])  # Orthanc's REST root lists this study's ID, not DICOM JSON
        # the REST root, not /dicom-web: it ends at its first answer (a run that paged on would hit the timeout)
        wrong = watch(pacs.root, tmp_path / "r.sqlite", "--once", timeout=120)
        assert wrong.returncode == 2, wrong.stderr
        assert "not a DICOMweb root" in wrong.stderr and "http://HOST:8042/dicom-web" in wrong.stderr
        assert "Traceback" not in wrong.stderr
        # SIGTERM while the models load (the first new film): the run ends cleanly once they are in
        film = tmp_path / "dx.dcm"
        dx_dataset(make_case("Normal", np.random.default_rng(2), scale=0.3).image, FilmIdentity(patient_id="S1")) \
            .save_as(film, enforce_file_format=True)
        load(pacs, [film])
        log = tmp_path / "loading.log"
        with open(log, "w") as err:
            proc = subprocess.Popen([sys.executable, "-m", "spinexr", "pacs", "watch", pacs.url, "--state",
                                     str(tmp_path / "t.sqlite"), "--model", str(tiny_bundle), "--interval", "600"],
                                    cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=err)
            deadline = time.monotonic() + 120
            while "loading the models" not in log.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        assert proc.returncode == 0 and "Traceback" not in log.read_text(), log.read_text()
    down = f"http://127.0.0.1:{free_port()}/dicom-web"
    done = watch(down, tmp_path / "d.sqlite", "--once", "--retries", "2")
    assert done.returncode == 2
    assert "cannot be reached" in done.stderr and "gave up after 2 tries" in done.stderr
    assert "trying again in 1 s" in done.stderr and "Traceback" not in done.stderr


def test_credentials_come_from_the_environment_or_a_private_file(tmp_path: Path) -> None:
    assert load_credentials(env={"SPINEXR_PACS_TOKEN": "t0k"}).token == "t0k"
    c = load_credentials(env={"SPINEXR_PACS_USER": "u", "SPINEXR_PACS_PASSWORD": "p"})
    assert (c.user, c.password, c.kind) == ("u", "p", "basic")
    assert "p" not in repr(Credentials(user="u", password="secret-pw")).replace("(basic)", "")
    f = tmp_path / "auth"
    f.write_text("# the PACS\nuser = alice\npassword = s3cret\n")
    f.chmod(0o644)
    with pytest.raises(SpinexrError, match="others can read it"):
        load_credentials(f, env={})
    f.chmod(0o600)
    c = load_credentials(f, env={})
    assert (c.user, c.password) == ("alice", "s3cret")
    f.write_text("passwd: x\n")
    with pytest.raises(SpinexrError, match="line 1"):
        load_credentials(f, env={})
    import requests

    s = requests.Session()
    Credentials(token="abc").apply(s)
    assert s.headers["Authorization"] == "Bearer abc"
    assert load_credentials(env={}).kind == "none"


def test_a_state_file_belongs_to_one_server(tmp_path: Path) -> None:
    Ledger(tmp_path / "s.sqlite", "http://a/dicom-web").close()
    with pytest.raises(SpinexrError, match="records the work done on http://a/dicom-web"):
        Ledger(tmp_path / "s.sqlite", "http://b/dicom-web")
    # The same server written another way is the same server: host resolution, default port, trailing slash.
    Ledger(tmp_path / "l.sqlite", "http://127.0.0.1:80/dicom-web").close()
    for same in ("http://localhost/dicom-web/", "HTTP://LOCALHOST:80/dicom-web", "http://[::1]/dicom-web"):
        Ledger(tmp_path / "l.sqlite", same).close()
    for other in ("http://127.0.0.1:8042/dicom-web", "https://127.0.0.1/dicom-web", "http://127.0.0.1/other"):
        with pytest.raises(SpinexrError, match="records the work done on"):
            Ledger(tmp_path / "l.sqlite", other)
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(SpinexrError, match="not a spinexr pacs state file"):
        Ledger(tmp_path / "junk.sqlite", "http://a/dicom-web")


def test_pacs_cli_rejects_bad_settings(tmp_path: Path) -> None:
    for args, msg in ((["ftp://x/dicom-web"], "starts with http"), (["http://x", "--since", "2026-01-01"], "YYYYMMDD")):
        done = subprocess.run([sys.executable, "-m", "spinexr", "pacs", "watch", *args, "--state",
                               str(tmp_path / "s.sqlite")], cwd=ROOT, capture_output=True, text=True, env=ENV)
        assert done.returncode == 2 and msg in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, "-m", "spinexr", "pacs", "status", "--state", str(tmp_path / "no")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "no such state file" in done.stderr


def test_a_failed_film_is_tried_again_a_bounded_number_of_times_with_a_growing_wait(tmp_path: Path) -> None:
    from spinexr.pacs.ledger import RETRIES, RETRY_WAIT_S

    ledger = Ledger(tmp_path / "s.sqlite", "http://a/dicom-web")
    ref = ("1.2.3", "1.2.3.4", "1.2.3.4.5")
    ledger.seen(ref[0])
    waits = []
    for attempt in range(1, RETRIES + 1):
        t0 = time.time()
        ledger.record_film(ref, reason="cannot be retrieved")
        row = ledger.films()[0]
        assert row["attempts"] == attempt
        if attempt < RETRIES:
            waits.append(row["next_try"] - t0)
            assert ledger.film_done(ref[2]) and not ledger.film_done(ref[2], now=row["next_try"] + 1)
            assert ledger.due(now=row["next_try"] + 1) == [ref[0]] and ledger.due(now=t0) == []
        else:  # out of tries: failed for good, never due again
            assert row["next_try"] is None and ledger.film_done(ref[2], now=t0 + 1e9) and ledger.due(now=t0 + 1e9) == []
    assert waits[0] == pytest.approx(RETRY_WAIT_S, abs=5) and waits[1] == pytest.approx(2 * RETRY_WAIT_S, abs=5)
    ledger.record_film(("1.2.3", "1.2.3.4", "9.9"), reason="modality CT", analysed=False)
    assert ledger.film_done("9.9", now=time.time() + 1e9)  # not analysed: never retried
    assert ledger.counts()["films not analysed"] == 1
    ledger.close()


def test_a_pass_asks_for_recent_studies_and_sweeps_all_once_a_day(tmp_path: Path) -> None:
    from spinexr.pacs.worker import PacsWorker, WatchQuery
    from spinexr.pipeline import PipelineSpec

    ledger = Ledger(tmp_path / "s.sqlite", "http://a/dicom-web")
    worker = PacsWorker(None, "http://a/dicom-web", PipelineSpec(), ledger, tmp_path / "work",
                        WatchQuery(since="20200101", full_sweep_s=3600))
    now = time.mktime(time.strptime("2026-12-07 10:00", "%Y-%m-%d %H:%M"))
    assert worker.window(now) == ("20200101", True)  # the first pass: everything from --since
    ledger.put("last_pass", str(now))
    ledger.put("last_full_sweep", str(now))
    assert worker.window(now + 600) == ("20261206", False)  # from the day before the last pass
    assert worker.window(now + 3600) == ("20200101", True)  # a full sweep once an hour here
    ledger.close()


def test_an_answer_that_is_not_dicom_json_names_the_root_to_use() -> None:
    from spinexr.pacs.worker import _dicom_json

    ok = [{"0020000D": {"vr": "UI", "Value": ["1.2"]}}]
    assert _dicom_json(ok, "http://a") == ok
    for bad in (["5f2d1c7e-6b0e1a2c"], {"Studies": []}, [{"ID": "x"}]):
        with pytest.raises(SpinexrError, match="http://a is not a DICOMweb root.*dicom-web"):
            _dicom_json(bad, "http://a")


def test_a_server_that_ignores_paging_is_read_once_and_a_stop_ends_the_listing(tmp_path: Path) -> None:
    """A server answering every offset with the same full page (the way a wrong root pages forever) is
    read once; a stop set between pages ends the listing."""
    import threading

    from spinexr.pacs.worker import PAGE, PacsWorker
    from spinexr.pipeline import PipelineSpec

    page = [{"0020000D": {"vr": "UI", "Value": [f"1.2.{i}"]}} for i in range(PAGE)]

    class SamePage:  # stands in for the HTTP answers of such a server; the paging logic is what is tested
        calls = 0

        def search_for_studies(self, **kw):
            SamePage.calls += 1
            return page

    ledger = Ledger(tmp_path / "s.sqlite", "http://a/dicom-web")
    worker = PacsWorker(SamePage(), "http://a/dicom-web", PipelineSpec(), ledger, tmp_path / "work")
    assert len(worker.find_studies()) == PAGE and SamePage.calls == 2
    stop = threading.Event()
    stop.set()
    assert worker.find_studies(stop=stop) == [] and SamePage.calls == 2
    ledger.close()


def _listen(tiny_bundle: Path, state: Path, port: int, dest_port: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "spinexr", "pacs", "listen", "--model", str(tiny_bundle),
                             "--state", str(state), "--port", str(port), "--destination",
                             f"ORTHANC@127.0.0.1:{dest_port}", "--allow", "ORTHANC", *extra],
                            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _films_in(state: Path, which: str = "reported") -> int:
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM films WHERE state = ?", (which,)).fetchone()[0])
    except sqlite3.Error:
        return 0


def _echo(port: int, calling: str) -> bool:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="SPINEXR")
    if not assoc.is_established:
        return False
    ok = bool(assoc.send_c_echo())
    assoc.release()
    return ok


@needs_orthanc
@pytest.mark.slow
def test_dimse_node_round_trip_with_a_kill(tmp_path: Path, tiny_bundle: Path) -> None:
    """Orthanc C-STOREs films to ``spinexr pacs listen``, which C-STOREs each film's SR and presentation state
    back; killed in the middle and started again, every film ends with exactly one SR and one PR in Orthanc.
    A caller not allowed is refused at association; C-ECHO answers; a chest film gets nothing back."""
    pytest.importorskip("pynetdicom")
    films = tmp_path / "films"
    synthesize(films, n=6, seed=5, scale=0.35, fmt="dcm")
    paths = sorted(films.rglob("*.dcm"))
    chest = dx_dataset(make_case("Normal", np.random.default_rng(4), scale=0.35).image, FilmIdentity(patient_id="C2"))
    chest.BodyPartExamined = "CHEST"
    chest.save_as(tmp_path / "chest.dcm", enforce_file_format=True)
    port, state = free_port(), tmp_path / "state.sqlite"
    with Orthanc(tmp_path / "orthanc", modalities={"spinexr": ("SPINEXR", "127.0.0.1", port)}) as pacs:
        ids = [pacs.upload(p) for p in [*paths, tmp_path / "chest.dcm"]]
        proc = _listen(tiny_bundle, state, port, pacs.dicom_port, "--batch-size", "1")
        try:
            deadline = time.monotonic() + 60
            while not _echo(port, "ORTHANC"):
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "the node did not answer C-ECHO"
                time.sleep(0.2)
            assert not _echo(port, "INTRUDER")  # an AE title not allowed: association refused
            pacs.send("spinexr", ids)  # Orthanc as the router: every film to spinexr
            deadline = time.monotonic() + 300
            while _films_in(state) < 2:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "no report in time"
                time.sleep(0.01)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        killed_at = _films_in(state)
        assert killed_at < len(paths) - 1, "killed in the middle of the run"
        # SIGTERM while films are being reported: it finishes the film in hand and ends, cleanly
        stopped = _listen(tiny_bundle, state, port, pacs.dicom_port, "--batch-size", "1")
        deadline = time.monotonic() + 300
        while _films_in(state) <= killed_at:
            assert stopped.poll() is None and time.monotonic() < deadline, "no report after the restart"
            time.sleep(0.01)
        t0 = time.monotonic()
        stopped.send_signal(signal.SIGTERM)
        _, err = stopped.communicate(timeout=60)
        assert stopped.returncode == 0 and "Traceback" not in err and time.monotonic() - t0 < 30, err
        again = _listen(tiny_bundle, state, port, pacs.dicom_port)
        try:
            deadline = time.monotonic() + 300
            while _films_in(state) + _films_in(state, "not_analysed") < len(paths) + 1:
                assert again.poll() is None, again.stderr.read()
                assert time.monotonic() < deadline, "the restarted node did not finish the inbox"
                time.sleep(0.1)
        finally:
            again.send_signal(signal.SIGTERM)  # a stop: ends within seconds, with no traceback
            _, err = again.communicate(timeout=60)
        assert again.returncode == 0 and "Traceback" not in err, err
        for p in paths:
            got = reports(pacs, pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID)
            assert (len(got["SR"]), len(got["PR"])) == (1, 1), p.name
        assert reports(pacs, chest.StudyInstanceUID) == {"SR": [], "PR": []}
        assert _films_in(state, "not_analysed") == 1
        assert not list(Path(str(state) + ".inbox").glob("*.dcm"))  # the inbox is empty once all is done
