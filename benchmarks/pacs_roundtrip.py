"""PACS round trip: studies per minute through spinexr against a local Orthanc, and how long a study waits
between arriving and its SR being stored back, over DICOMweb (``spinexr pacs watch``, polling) and over DIMSE
(``spinexr pacs listen``, Orthanc C-STOREing each film to spinexr as a router would, spinexr C-STOREing the
reports back).

    python benchmarks/pacs_roundtrip.py --studies 200

Two runs, each on a fresh Orthanc (``benchmarks/_orthanc.py``) and the bundled models:

* **throughput**: N synthetic one-film DX studies (``spinexr data synth --format dcm``) stored first, then
  ``spinexr pacs watch --once``: studies per minute over the whole command (start-up included) and over
  the work alone (first study seen to last report stored, from the ledger);
* **latency**: ``spinexr pacs watch --interval S`` running, the same N studies arriving one at a time at a
  steady rate (a share of the measured throughput, so the queue stays short); per study, the time from its
  STOW to Orthanc to its SR stored back (the ledger's time), median and p95.

The DIMSE runs do the same with ``spinexr pacs listen``: throughput with every film sent at once (Orthanc's
C-STORE of all of them), latency with each film sent as it arrives (its C-STORE to spinexr started at
arrival, as a routing rule does).

Writes ``benchmarks/results/pacs_roundtrip.json``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _machine import header, write_result  # noqa: E402
from _orthanc import PASSWORD, USER, Orthanc, free_port  # noqa: E402

ENV = {**os.environ, "SPINEXR_PACS_USER": USER, "SPINEXR_PACS_PASSWORD": PASSWORD, "PYTHONUNBUFFERED": "1"}


def _ledger(state: Path) -> tuple[list[tuple[str, float]], list[tuple[str, float, float]]]:
    with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as db:
        films = db.execute("SELECT study_uid, stored FROM films WHERE state = 'reported'").fetchall()
        studies = db.execute("SELECT study_uid, first_seen, finished FROM studies").fetchall()
    return films, studies


def throughput(films: list[Path], work: Path) -> dict:
    with Orthanc(work / "orthanc_tp") as pacs:
        client = pacs.client()
        for f in films:
            client.store_instances([pydicom.dcmread(f)])
        state = work / "tp.sqlite"
        t0 = time.time()
        done = subprocess.run([sys.executable, "-m", "spinexr", "pacs", "watch", pacs.url, "--state", str(state),
                               "--once"], cwd=ROOT, env=ENV, capture_output=True, text=True)
        wall = time.time() - t0
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        reported, studies = _ledger(state)
    first = min(s[1] for s in studies)
    last = max(t for _, t in reported)
    return {"studies": len(films), "reported": len(reported), "wall_s": wall,
            "studies_per_min_wall": len(reported) / wall * 60,
            "work_s": last - first, "studies_per_min_work": len(reported) / (last - first) * 60}


def latency(films: list[Path], work: Path, warm: Path, rate_per_s: float, interval: float) -> dict:
    with Orthanc(work / "orthanc_lat") as pacs:
        client = pacs.client()
        state = work / "lat.sqlite"
        log = open(work / "watch.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "spinexr", "pacs", "watch", pacs.url, "--state", str(state),
                                 "--interval", str(interval)], cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        try:
            client.store_instances([pydicom.dcmread(warm)])  # the models load on the first film: not timed
            while len(_reported(state)) < 1:
                if proc.poll() is not None:
                    raise SystemExit((work / "watch.log").read_text()[-3000:])
                time.sleep(0.2)
            arrived: dict[str, float] = {}
            start = time.time()
            for i, f in enumerate(films):
                wait = start + i / rate_per_s - time.time()
                if wait > 0:
                    time.sleep(wait)
                ds = pydicom.dcmread(f)
                client.store_instances([ds])
                arrived[str(ds.StudyInstanceUID)] = time.time()
            deadline = time.time() + 1800
            while True:
                reported, _ = _ledger(state)
                if len(reported) >= len(films) + 1 or time.time() > deadline:
                    break
                time.sleep(1.0)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            log.close()
    waits = np.array([t - arrived[s] for s, t in reported if s in arrived])
    return {"studies": len(films), "reported": int(len(waits)), "arrival_rate_per_min": rate_per_s * 60,
            "poll_interval_s": interval, "wait_median_s": float(np.median(waits)),
            "wait_p95_s": float(np.percentile(waits, 95)), "wait_max_s": float(waits.max())}


def _listening(work: Path, name: str, pacs: Orthanc, port: int) -> tuple[subprocess.Popen, Path]:
    """``spinexr pacs listen`` with the bundled models, reports to ``pacs``; returns once it answers C-ECHO
    and its models are loaded (one film sent and reported first)."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    state = work / f"{name}.sqlite"
    log = open(work / f"{name}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "spinexr", "pacs", "listen", "--state", str(state), "--port",
                             str(port), "--destination", f"ORTHANC@127.0.0.1:{pacs.dicom_port}", "--allow", "ORTHANC"],
                            cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    ae = AE(ae_title="ORTHANC")
    ae.add_requested_context(Verification)
    while True:
        if proc.poll() is not None:
            raise SystemExit((work / f"{name}.log").read_text()[-3000:])
        assoc = ae.associate("127.0.0.1", port, ae_title="SPINEXR")
        if assoc.is_established:
            assoc.release()
            return proc, state
        time.sleep(0.2)


def _reported(state: Path) -> list[tuple[str, float]]:
    try:
        return _ledger(state)[0]
    except sqlite3.Error:
        return []


def dimse(films: list[Path], work: Path, warm: Path, rate_per_s: float | None) -> dict:
    """Throughput (``rate_per_s`` None: every film sent at once) or latency (films sent as they arrive)."""
    import threading

    port = free_port()
    name = "dimse_tp" if rate_per_s is None else "dimse_lat"
    with Orthanc(work / f"orthanc_{name}", modalities={"spinexr": ("SPINEXR", "127.0.0.1", port)}) as pacs:
        proc, state = _listening(work, name, pacs, port)
        try:
            pacs.send("spinexr", [pacs.upload(warm)])  # the models load on the first film: not timed
            while len(_reported(state)) < 1:
                time.sleep(0.2)
            ids = [(pacs.upload(f), str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID)) for f in films]
            arrived: dict[str, float] = {}
            t0 = time.time()
            if rate_per_s is None:
                pacs.send("spinexr", [i for i, _ in ids])
                arrived = {s: t0 for _, s in ids}
            else:
                senders = []
                for k, (i, s) in enumerate(ids):
                    wait = t0 + k / rate_per_s - time.time()
                    if wait > 0:
                        time.sleep(wait)
                    arrived[s] = time.time()
                    th = threading.Thread(target=pacs.send, args=("spinexr", [i]))
                    th.start()
                    senders.append(th)
                for th in senders:
                    th.join()
            deadline = time.time() + 1800
            while len(_reported(state)) < len(films) + 1 and time.time() < deadline:
                time.sleep(0.5)
            reported = [(s, t) for s, t in _reported(state) if s in arrived]
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    waits = np.array([t - arrived[s] for s, t in reported])
    if rate_per_s is None:
        work_s = max(t for _, t in reported) - t0
        return {"studies": len(films), "reported": len(reported), "work_s": work_s,
                "studies_per_min_work": len(reported) / work_s * 60}
    return {"studies": len(films), "reported": int(len(waits)), "arrival_rate_per_min": rate_per_s * 60,
            "wait_median_s": float(np.median(waits)), "wait_p95_s": float(np.percentile(waits, 95)),
            "wait_max_s": float(waits.max())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=200)
    ap.add_argument("--scale", type=float, default=1.0, help="synthetic film size (1.0: ~1000 px tall AP)")
    ap.add_argument("--interval", type=float, default=5.0, help="polling interval of the latency run")
    ap.add_argument("--load", type=float, default=0.7, help="arrival rate as a share of the measured throughput")
    ap.add_argument("--out", default="pacs_roundtrip.json", help="result file name under benchmarks/results")
    args = ap.parse_args(argv)
    res = header("pacs_roundtrip", argv)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="spinexr-pacs-bench-") as tmp:
        work = Path(tmp)
        subprocess.run([sys.executable, "-m", "spinexr", "data", "synth", str(work / "films"), "--n",
                        str(args.studies), "--scale", str(args.scale), "--format", "dcm", "--seed", "3"],
                       cwd=ROOT, check=True, capture_output=True)
        films = sorted((work / "films").rglob("*.dcm"))
        tp = throughput(films, work)
        print(f"throughput: {tp['studies_per_min_wall']:.1f} studies/min (wall), "
              f"{tp['studies_per_min_work']:.1f} (work)")
        rate = tp["studies_per_min_work"] / 60 * args.load
        warm, timed = films[0], films[1:]  # one film loads the models before the timed ones arrive
        lat = latency(timed, work, warm, rate, args.interval)
        print(f"latency: median {lat['wait_median_s']:.1f} s, p95 {lat['wait_p95_s']:.1f} s")
        dtp = dimse(timed, work, warm, None)
        print(f"DIMSE throughput: {dtp['studies_per_min_work']:.1f} studies/min (work)")
        dlat = dimse(timed, work, warm, dtp["studies_per_min_work"] / 60 * args.load)
        print(f"DIMSE latency: median {dlat['wait_median_s']:.1f} s, p95 {dlat['wait_p95_s']:.1f} s")
    res.update({"settings": {"studies": args.studies, "scale": args.scale, "films_per_study": 1,
                             "models": "bundled", "poll_interval_s": args.interval, "load": args.load},
                "throughput": tp, "latency": lat, "dimse": {"throughput": dtp, "latency": dlat},
                "wall_seconds": time.time() - t0})
    write_result(args.out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
