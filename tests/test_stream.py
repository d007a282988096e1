"""``predict`` as a stream: batched results equal the film-at-a-time path, the output is complete at
every moment (a real SIGKILL of a real process), ``--resume`` finishes the job without doing a film
twice, and outputs that are not this pipeline's are refused, untouched."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import expand, stream
from spinexr.deploy.document import document_columns, flatten
from spinexr.errors import SpinexrError
from spinexr.outputs import results as result_file
from spinexr.outputs.results import JOURNAL_SUFFIX
from spinexr.pipeline import Pipeline
from spinexr.pipeline.driver import predict_paths

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def films(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic films, plus two that cannot be read (the batch goes on past them)."""
    d = tmp_path_factory.mktemp("archive")
    for p in sorted(synth_dir.rglob("*.jpg"))[:14]:
        shutil.copy(p, d / f"{p.parent.name}_{p.name}")
    (d / "broken.png").write_bytes(b"not an image")
    (d / "empty.jpg").write_bytes(b"")
    return d


def _comparable(doc: dict) -> dict:
    d = dict(doc)
    d.pop("timing_ms")
    return d


def _close(a: object, b: object, tol: float = 1e-4) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (float, int)):
        return abs(a - b) <= tol * max(1.0, abs(a))
    return a == b


def _same_but_rounding(a: dict, b: dict) -> bool:
    """Documents of runs on different thread counts: PyTorch's channels-last convolutions add their sums in
    another order, so the corners (written to 0.01 px) may round to the next step and the angles move in
    their fourth decimal; everything else as :func:`_close` says."""
    a, b = _comparable({**a, "files": None}), _comparable({**b, "files": None})
    sa, sb = dict(a.get("spine") or {}), dict(b.get("spine") or {})
    la, lb = sa.pop("landmarks", None), sb.pop("landmarks", None)
    if (la is None) != (lb is None):
        return False
    corners_ok = la is None or (np.shape(la) == np.shape(lb) and np.abs(np.subtract(la, lb)).max() <= 0.011)
    return corners_ok and _close({**a, "spine": sa}, {**b, "spine": sb}, tol=1e-3)


@pytest.mark.parametrize("workers", [0, 1])
def test_the_stream_gives_what_the_film_at_a_time_path_gives(tiny: Pipeline, films: Path, tmp_path: Path,
                                                             workers: int) -> None:
    paths = expand([films])
    today = [p.to_document() for p in predict_paths(tiny, paths, progress=False)]
    out = tmp_path / "preds.jsonl"
    tally = stream(tiny, paths, out, batch_size=4, workers=workers, progress=False)
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [d["path"] for d in docs] == [d["path"] for d in today]
    for a, b in zip(docs, today):
        assert _close(_comparable(a), _comparable(b)), a["path"]
    assert tally.ok == sum(d["status"] == "ok" for d in today) and tally.errors == 2
    assert not out.with_name(out.name + JOURNAL_SUFFIX).exists()


def test_jobs_give_the_same_documents_in_the_same_order(tiny: Pipeline, films: Path, tmp_path: Path) -> None:
    """Two processes, each its own pipeline, each decoding its own batches: the documents are the
    one-process stream's, in its order (a film named twice keeps both rows), overlays drawn by the jobs."""
    paths = expand([films])
    paths = [*paths, paths[0]]
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    stream(tiny, paths, one, batch_size=3, workers=0, progress=False, overlays=tmp_path / "o1")
    tally = stream(tiny, paths, two, batch_size=3, jobs=2, progress=False, overlays=tmp_path / "o2")
    a = [json.loads(line) for line in one.read_text().splitlines()]
    b = [json.loads(line) for line in two.read_text().splitlines()]
    assert [d["path"] for d in b] == [str(p) for p in paths]
    for x, y in zip(a, b):
        assert _same_but_rounding(x, y), x["path"]  # a job runs on one thread, the one-process stream on two
    drawn = [d["files"]["overlay"] for d in b if d["status"] == "ok"]
    assert len(drawn) == 15 and all(Path(f).parent == tmp_path / "o2" and Path(f).is_file() for f in drawn)
    assert sorted(Path(f).name for f in drawn) == sorted(p.name for p in (tmp_path / "o1").iterdir())
    assert tally.ok == 15 and tally.errors == 2


def test_jobs_need_a_loaded_pipeline_and_a_count(tiny: Pipeline, films: Path, tmp_path: Path) -> None:
    paths = expand([films])[:2]
    with pytest.raises(SpinexrError, match="--jobs must be 1 or more"):
        stream(tiny, paths, tmp_path / "a.csv", jobs=0, progress=False)
    handmade = Pipeline(tiny.predictor, tiny.measurer, tiny.bundle)
    with pytest.raises(SpinexrError, match="Pipeline.load"):
        stream(handmade, paths, tmp_path / "b.csv", jobs=2, progress=False)


def test_every_row_has_the_schema_columns(tiny: Pipeline, films: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds.csv"
    stream(tiny, expand([films]), out, batch_size=5, workers=0, progress=False)
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    cols = document_columns(tiny.labels)
    assert rows[0] == cols
    assert all(len(r) == len(cols) for r in rows[1:]) and len(rows) == 17
    ok = [dict(zip(cols, r)) for r in rows[1:] if r[cols.index("status")] == "ok"]
    assert ok and all(r["spine_plausible"] in ("true", "false") and len(r["sha256"]) == 64 for r in ok)


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_folding_batches_keeps_the_output_a_whole_file(tiny: Pipeline, films: Path, tmp_path: Path, fmt: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Folded in as the journal grows, the output reads whole after every batch, and ends with every film."""
    monkeypatch.setattr(result_file, "MIN_FOLD_BYTES", 1)
    out = tmp_path / f"preds.{fmt}"
    seen = []

    def count() -> int:
        text = out.read_text()
        if fmt == "json":
            return len(json.loads(text))
        if fmt == "jsonl":
            return len([json.loads(line) for line in text.splitlines()])
        return len(_csv_rows(out))

    stream(tiny, expand([films]), out, batch_size=3, workers=0, progress=False,
                 on_batch=lambda _docs: seen.append(count()))
    assert seen[0] == 3 and seen == sorted(seen) and len(set(seen)) > 2  # folded more than once, never shrinking
    assert count() == 16


def _run(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "spinexr", "predict", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(cond, proc: subprocess.Popen, limit: float = 120.0) -> None:
    """Poll until ``cond()`` holds (the process is killed as soon as it does)."""
    t0 = time.monotonic()
    while not cond():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < limit, "the run never got that far"
        time.sleep(0.02)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc), the multiprocessing helpers among them."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows, "the output is empty"
    cols = rows[0]
    assert all(len(r) == len(cols) for r in rows[1:]), "a torn row"
    return [dict(zip(cols, r)) for r in rows[1:]]


@pytest.mark.parametrize("processes", [["--workers", "1"], ["--jobs", "2"]], ids=["decoding-worker", "jobs"])
def test_a_killed_run_leaves_a_whole_file_and_resume_finishes_it(films: Path, tmp_path: Path, bundled: Pipeline,
                                                                 processes: list[str]) -> None:
    out = tmp_path / "preds.csv"
    journal = out.with_name(out.name + JOURNAL_SUFFIX)
    args = [str(films), "--out", str(out), "--batch-size", "2", *processes, "--quiet"]
    # Killed twice: once while the first batches are in the journal, once in the middle of the work.
    proc = _run(args, ROOT)
    _wait_for(lambda: journal.exists() and journal.stat().st_size > 0, proc)
    workers = _children(proc.pid) if Path("/proc/self/stat").is_file() else []
    assert workers or not Path("/proc/self/stat").is_file(), "the run has its worker processes"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Its decoding worker does not outlive it.
    t0 = time.monotonic()
    while any(_alive(w) for w in workers):
        assert time.monotonic() - t0 < 30, "a worker process outlived its killed run"
        time.sleep(0.05)
    first = _csv_rows(out)  # the header at least: complete
    if "--jobs" not in processes:  # killed again, in the middle of a resumed run (once is enough for --jobs)
        proc = _run([*args, "--resume"], ROOT)
        _wait_for(lambda: journal.exists() and len(journal.read_bytes().splitlines()) >= 4, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert len(_csv_rows(out)) >= len(first)
    done = subprocess.run([sys.executable, "-m", "spinexr", "predict", *args, "--resume"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = _csv_rows(out)
    paths = [str(p) for p in expand([films])]
    assert sorted(r["path"] for r in rows) == sorted(paths)  # every film once: none twice, none skipped
    assert "14 predicted" in done.stderr and "2 unreadable" in done.stderr  # the summary counts the whole output
    today = {p.path: p for p in predict_paths(bundled, [Path(p) for p in paths], progress=False)}
    for r in rows:
        assert r["label"] == (today[r["path"]].label or "")
    assert not journal.exists()


def test_resume_skips_what_is_there_and_redoes_a_changed_film(tiny: Pipeline, films: Path, tmp_path: Path) -> None:
    src = tmp_path / "films"
    shutil.copytree(films, src)
    out = tmp_path / "preds.jsonl"
    paths = expand([src])
    stream(tiny, paths[:6], out, workers=0, progress=False)
    changed = paths[0]
    changed.write_bytes(changed.read_bytes() + b"\0")  # same path, other content: predicted again
    done = []
    stream(tiny, paths, out, resume=True, workers=0, progress=False,
                 on_batch=lambda docs: done.extend(d["path"] for d in docs))
    assert done == [str(p) for p in [paths[0], *paths[6:]]]
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(docs) == len(paths) + 1  # the old result of the changed film stays: nothing is deleted


def test_a_torn_journal_line_is_predicted_again(tiny: Pipeline, films: Path, tmp_path: Path) -> None:
    paths = expand([films])[:4]
    out = tmp_path / "preds.jsonl"
    ref = tmp_path / "ref.jsonl"
    stream(tiny, paths, ref, workers=0, progress=False)
    lines = ref.read_text().splitlines()
    out.write_text("")
    journal = out.with_name(out.name + JOURNAL_SUFFIX)
    journal.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][: len(lines[2]) // 2])  # cut mid-line by a kill
    redone = []
    stream(tiny, paths, out, resume=True, workers=0, progress=False,
                 on_batch=lambda docs: redone.extend(d["path"] for d in docs))
    assert redone == [str(p) for p in paths[2:]]
    assert [json.loads(x)["path"] for x in out.read_text().splitlines()] == [str(p) for p in paths]


def test_resume_refuses_another_bundles_output_and_leaves_it_alone(tiny: Pipeline, films: Path,
                                                                   tmp_path: Path) -> None:
    paths = expand([films])[:3]
    out = tmp_path / "preds.csv"
    stream(tiny, paths, out, workers=0, progress=False)
    text = out.read_text()
    foreign = text.replace(tiny.model_info["bundle_digest"], "0" * 64)
    out.write_text(foreign)
    with pytest.raises(SpinexrError, match="another bundle"):
        stream(tiny, paths, out, resume=True, workers=0, progress=False)
    assert out.read_text() == foreign
    other = tmp_path / "other.csv"
    other.write_text("path,label\nfilm.png,Normal\n")
    with pytest.raises(SpinexrError, match="columns"):
        stream(tiny, paths, other, resume=True, workers=0, progress=False)
    assert other.read_text() == "path,label\nfilm.png,Normal\n"


def test_resume_on_the_command_line_needs_an_output(films: Path) -> None:
    from spinexr.cli import main

    assert main(["predict", str(films), "--resume"]) != 0


def test_a_bad_batch_size_is_refused(tiny: Pipeline, films: Path, tmp_path: Path) -> None:
    with pytest.raises(SpinexrError, match="batch-size"):
        stream(tiny, expand([films]), tmp_path / "p.csv", batch_size=0, progress=False)


def test_flattened_documents_fit_the_columns(tiny: Pipeline, films: Path) -> None:
    cols = set(document_columns(tiny.labels))
    for p in predict_paths(tiny, expand([films])[:3] + [films / "broken.png"], progress=False):
        d = p.to_document()
        extra = {k for k, v in flatten(d).items() if k not in cols}
        assert extra <= {k for k in ("error", "image", "spine", "decision", "timing_ms") if d.get(k) is None}
