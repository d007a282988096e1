"""The driver and its outputs fail well: a place that cannot be written is refused before any model
loads, a full disk ends with a message and `--resume` continues, a resume with other settings is
refused with the difference named, `--jobs` is bounded, results show up while a run goes on, unknown
output names are refused, what a folder held that is not a film is counted, and a new output format
is one sink plus one registration line."""

from __future__ import annotations

import json
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import expand, stream
from spinexr.errors import SpinexrError
from spinexr.outputs import OUTPUTS, OutputKind, RunInfo, Sink, register_output
from spinexr.outputs.results import JOURNAL_SUFFIX, ResultFile
from spinexr.pipeline import Pipeline
from spinexr.pipeline.driver import run_films
from spinexr.pipeline.executors import InProcess, Jobs
from spinexr.pipeline.source import expand_paths


@pytest.fixture(scope="module")
def films(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("films")
    for p in sorted(synth_dir.rglob("*.jpg"))[:6]:
        shutil.copy(p, d / f"{p.parent.name}_{p.name}")
    return d


@contextmanager
def _tmpfs(where: Path, options: str):
    """A tmpfs mounted at ``where`` for the test (skipped where mounting is not allowed)."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root in a machine that allows it): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 48 kB file system: a few prediction documents fill it."""
    with _tmpfs(tmp_path / "small", "size=48k") as where:
        yield where


@pytest.fixture
def read_only(tmp_path: Path):
    with _tmpfs(tmp_path / "ro", "ro,size=16k") as where:
        yield where


def test_a_read_only_folder_is_refused_before_any_model_loads(films: Path, read_only: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from spinexr.cli import main

    def never(*_a, **_k):
        raise AssertionError("the models loaded before the output was checked")

    monkeypatch.setattr(Pipeline, "load", never)
    for flag, value in (("--out", read_only / "p.csv"), ("--overlays", read_only / "o"),
                        ("--out", read_only / "sub" / "p.csv")):
        assert main(["predict", str(films), flag, str(value), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert ("not writable" in err or "cannot be made" in err) and "Traceback" not in err, err
    assert not list(read_only.iterdir())


def test_a_full_disk_ends_with_a_message_and_resume_continues(tiny: Pipeline, films: Path, small_disk: Path,
                                                               tmp_path: Path) -> None:
    many = tmp_path / "many"
    many.mkdir()
    for k in range(4):  # 24 films: enough documents to fill 48 kB
        for p in expand([films]):
            shutil.copy(p, many / f"{k}_{p.name}")
    paths = expand([many])
    out = small_disk / "preds.jsonl"
    with pytest.raises(SpinexrError, match=r"writing .* failed \(No space left on device\).*--resume"):
        stream(tiny, paths, out, batch_size=2)
    assert not [p for p in small_disk.iterdir() if p.name.endswith(".tmp")], "a stale temporary copy was left"
    kept = [json.loads(line) for line in out.read_text().splitlines()]  # whole documents only
    journal = out.with_name(out.name + JOURNAL_SUFFIX)
    for line in (journal.read_text().splitlines() if journal.exists() else []):
        try:
            kept.append(json.loads(line))  # written and synced before the disk filled
        except json.JSONDecodeError:
            pass  # the line the full disk cut short: predicted again
    # The same command on a disk with room continues where it stopped.
    moved = tmp_path / "preds.jsonl"
    shutil.copy(out, moved)
    if out.with_name(out.name + JOURNAL_SUFFIX).exists():
        shutil.copy(out.with_name(out.name + JOURNAL_SUFFIX), moved.with_name(moved.name + JOURNAL_SUFFIX))
    redone: list[str] = []
    stream(tiny, paths, moved, resume=True, batch_size=2, on_batch=lambda docs: redone.extend(d["path"] for d in docs))
    docs = [json.loads(line) for line in moved.read_text().splitlines()]
    assert sorted(d["path"] for d in docs) == sorted(str(p) for p in paths)  # every film once
    assert kept and not {d["path"] for d in kept} & set(redone)  # what was written is not done again


def test_resume_with_other_settings_is_refused_with_the_difference_named(tiny: Pipeline, tiny_bundle: Path,
                                                                         films: Path, tmp_path: Path) -> None:
    paths = expand([films])[:3]
    out = tmp_path / "preds.jsonl"
    stream(tiny, paths, out)
    text = out.read_text()
    unmeasured = Pipeline.load(tiny_bundle, no_landmarks=True)
    with pytest.raises(SpinexrError, match="another landmark model \\(resnet18; this run: none\\)"):
        stream(unmeasured, paths, out, resume=True)
    other_backend = text.replace('"backend": "torch"', '"backend": "onnx"')
    out.write_text(other_backend)
    with pytest.raises(SpinexrError, match="another backend \\(onnx; this run: torch\\)"):
        stream(tiny, paths, out, resume=True)
    assert out.read_text() == other_backend  # refused, and left alone


def test_jobs_are_bounded_by_cpus_and_memory(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from spinexr.pipeline import executors

    monkeypatch.setattr(executors, "cpus", lambda: 2)
    monkeypatch.setattr(executors, "_available_memory", lambda: 64 * 10**9)
    assert Jobs(99).bounded() == 2
    assert "--jobs 99 lowered to 2" in caplog.text
    monkeypatch.setattr(executors, "_available_memory", lambda: 2 * 10**9)
    assert Jobs(2).bounded() == 1
    with pytest.raises(SpinexrError, match="--jobs must be 1 or more"):
        Jobs(0)


def test_the_output_shows_results_while_the_run_goes_on(tiny: Pipeline, films: Path, tmp_path: Path) -> None:
    """Folded on a time interval too, not only past 1 MiB: after each batch the output holds it."""
    out = tmp_path / "preds.csv"
    seen: list[int] = []
    sink = ResultFile(out, fold_seconds=0.0)
    run_films(tiny, expand([films]), [sink], InProcess(batch_size=2, workers=0), progress=False,
              on_batch=lambda _docs: seen.append(len(out.read_text().splitlines()) - 1))
    assert seen == [2, 4, 6]


@pytest.mark.parametrize("name", ["x.jpg", "x", "x.txt"])
def test_an_unknown_output_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(SpinexrError, match="unknown output format"):
        ResultFile(tmp_path / name)
    assert not (tmp_path / name).exists()


def test_what_a_folder_holds_that_is_not_a_film_is_counted(films: Path, tmp_path: Path) -> None:
    d = tmp_path / "mixed"
    shutil.copytree(films, d)
    (d / "film.jpg").mkdir()  # a folder with an image's name
    (d / "film.jpg" / "inside.jpg").write_bytes((films / sorted(p.name for p in films.iterdir())[0]).read_bytes())
    (d / "notes.txt").write_text("not a film")
    (d / "loop").symlink_to(d, target_is_directory=True)  # a folder link that loops
    flat = expand_paths([d])
    assert len(flat.paths) == 6
    assert flat.skipped == {"links to folders (not followed)": 1, "sub-folders not entered (--recursive enters them)": 1,
                            "files that are not images": 1}
    deep = expand_paths([d], recursive=True)
    assert len(deep.paths) == 7 and deep.skipped["links to folders (not followed)"] == 1
    assert "1 files that are not images" in (deep.line() or "")


def test_a_text_file_named_dcm_and_a_looping_link_say_what_they_are(tmp_path: Path) -> None:
    from spinexr.data.imread import read_image
    from spinexr.errors import ImageReadError

    fake = tmp_path / "film.dcm"
    fake.write_text("this is a note, not a film\n" * 20)
    with pytest.raises(ImageReadError, match="not a DICOM file"):
        read_image(fake)
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(ImageReadError, match="loops"):
        read_image(a)
    gone = tmp_path / "gone.jpg"
    gone.symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(ImageReadError, match="link to a file that does not exist"):
        read_image(gone)


class _Names(Sink):
    """A test output: each film's label into one text file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lines: list[str] = []

    def open(self, run: RunInfo) -> None:
        self.lines.append(f"# {','.join(run.labels)}")

    def write(self, docs: list[dict]) -> None:
        self.lines += [f"{Path(d['path']).name}\t{d['label']}" for d in docs]

    def close(self) -> str:
        self.path.write_text("\n".join(self.lines) + "\n")
        return f"names: {len(self.lines) - 1} films to {self.path}"


def test_a_new_output_is_one_sink_and_one_registration_line(films: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from spinexr.cli import main

    register_output(OutputKind("--names-out", "each film's label, one a line", lambda v, _a: _Names(v), "FILE", False))
    try:
        out = tmp_path / "names.txt"
        assert main(["predict", str(films), "--names-out", str(out), "--no-landmarks", "--quiet", "--jobs", "2"]) == 0
        lines = out.read_text().splitlines()
        assert lines[0] == "# Normal,Scoliosis,Spondylolisthesis" and len(lines) == 7
        assert all(line.split("\t")[1] in ("Normal", "Scoliosis", "Spondylolisthesis") for line in lines[1:])
        assert "names: 6 films" in capsys.readouterr().err
    finally:
        OUTPUTS.pop("--names-out")


def test_a_film_whose_report_cannot_be_made_does_not_stop_the_others(tiny: Pipeline, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from spinexr.data.synth import synthesize
    from spinexr.deploy import dicom as dicom_mod
    from spinexr.outputs.dicom import DicomSink

    synthesize(tmp_path / "dx", n=3, seed=5, scale=0.3, fmt="dcm")
    paths = expand([tmp_path / "dx"], recursive=True)
    real = dicom_mod.dicom_results

    def fails_on_the_first(doc, source, *a):
        if doc["path"] == str(paths[0]):
            raise ValueError("'' is not a valid SpecificCharacterSetValues")
        return real(doc, source, *a)

    monkeypatch.setattr(dicom_mod, "dicom_results", fails_on_the_first)
    sink = DicomSink(tmp_path / "reports")
    res = run_films(tiny, paths, [sink, ResultFile(tmp_path / "p.jsonl")], InProcess(workers=0), progress=False)
    assert sink.written == 2 and len(list((tmp_path / "reports").rglob("SR_*.dcm"))) == 2
    assert any("SpecificCharacterSetValues" in line and "1 skipped" in line for line in res.lines)
    assert res.tally.ok == 3  # every film's document is in the output
