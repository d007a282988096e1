"""Archive scale: the pipeline on ONNX Runtime (both models, batched, exports made once and cached)
agrees with PyTorch, and ``predict --ray`` on a local Ray cluster writes what one process writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import expand, stream
from spinexr.pipeline import Pipeline


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_pipeline(cache: Path) -> Pipeline:
    mp = pytest.MonkeyPatch()
    mp.setenv("SPINEXR_CACHE", str(cache))
    yield Pipeline.load(backend="onnx")
    mp.undo()


@pytest.fixture(scope="module")
def films(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("archive")
    for p in sorted(synth_dir.rglob("*.jpg"))[:10]:
        shutil.copy(p, d / f"{p.parent.name}_{p.name}")
    (d / "broken.png").write_bytes(b"not an image")
    return d


def _docs(path: Path) -> dict[str, dict]:
    out = {}
    for line in path.read_text().splitlines():
        d = json.loads(line)
        d.pop("timing_ms")
        out[d["path"]] = d
    return out


def test_the_onnx_pipeline_loads_no_network_until_an_explanation_needs_one(onnx_pipeline: Pipeline, cache: Path,
                                                                           films: Path) -> None:
    """With ``--backend onnx`` ONNX Runtime runs every model: loading the pipeline builds no PyTorch network
    and never imports timm (the start-up of every ``predict --jobs`` process), and an explanation still
    gets its network, built on first use."""
    code = ("import sys; from spinexr.pipeline import Pipeline; p = Pipeline.load(backend='onnx'); "
            "r = p.measurer.refiner; print('timm' in sys.modules, p.predictor._module is not None, "
            "p.measurer._predictor is not None, r is not None and r.net is not None)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "SPINEXR_CACHE": str(cache)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False"] * 4
    from spinexr.data.imread import read_image

    img, _ = read_image(sorted(films.glob("*.jpg"))[0])
    heat, target = onnx_pipeline.explain(img)
    assert heat.shape == img.shape[:2] and 0 <= target < len(onnx_pipeline.labels)
    assert onnx_pipeline.predictor.model is not None

def test_onnx_pipeline_agrees_with_pytorch_and_caches_its_exports(onnx_pipeline: Pipeline, bundled: Pipeline,
                                                                   films: Path, cache: Path, tmp_path: Path) -> None:
    exports = sorted(p.name.split("-")[0] for p in (cache / "onnx").glob("*.onnx"))
    refined = onnx_pipeline.measurer is not None and onnx_pipeline.measurer.refiner is not None
    assert exports == ["classifier", "landmarks", *(["refiner"] if refined else [])]
    assert onnx_pipeline.measurer is not None and onnx_pipeline.measurer.backend == "onnx"
    assert onnx_pipeline.predictor.backend == "onnx"
    paths = expand([films])
    stream(onnx_pipeline, paths, tmp_path / "onnx.jsonl", batch_size=4, workers=0, progress=False)
    stream(bundled, paths, tmp_path / "torch.jsonl", batch_size=4, workers=0, progress=False)
    a, b = _docs(tmp_path / "onnx.jsonl"), _docs(tmp_path / "torch.jsonl")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k]["label"] == b[k]["label"]
        if a[k]["status"] != "ok":
            continue
        assert max(abs(a[k]["probabilities"][c] - b[k]["probabilities"][c]) for c in a[k]["probabilities"]) < 1e-4
        sa, sb = a[k]["spine"], b[k]["spine"]
        assert sa["plausible"] == sb["plausible"]
        if sa["largest"] is not None:
            assert abs(sa["largest"] - sb["largest"]) < 0.05
    # A second load finds the exports: nothing is exported again.
    stamps = {p: p.stat().st_mtime_ns for p in (cache / "onnx").glob("*.onnx")}
    mp = pytest.MonkeyPatch()
    mp.setenv("SPINEXR_CACHE", str(cache))
    try:
        Pipeline.load(backend="onnx")
    finally:
        mp.undo()
    assert {p: p.stat().st_mtime_ns for p in (cache / "onnx").glob("*.onnx")} == stamps


@pytest.fixture(scope="module")
def local_ray(cache: Path):
    ray = pytest.importorskip("ray", reason="Ray is the [ray] extra")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"SPINEXR_CACHE": str(cache)}})
    yield ray
    ray.shutdown()


def test_ray_writes_what_one_process_writes_and_resumes(local_ray, onnx_pipeline: Pipeline, films: Path,
                                                        tmp_path: Path) -> None:
    from spinexr.outputs.images import OverlaySink
    from spinexr.outputs.results import ResultFile
    from spinexr.pipeline.driver import run_films
    from spinexr.pipeline.ray import _RAY_DATA_THREADS, RayCluster

    # Two more names for one film (a link and a copy): each is a film of its own, in every path.
    extra = tmp_path / "names"
    extra.mkdir()
    first_film = next(p for p in expand([films]) if p.suffix == ".jpg")
    (extra / "link.jpg").symlink_to(first_film.resolve())
    shutil.copy(first_film, extra / "copy.jpg")
    from spinexr.data.synth import synthesize
    from spinexr.outputs.dicom import DicomSink

    synthesize(tmp_path / "dx", n=3, seed=11, scale=0.35, fmt="dcm")  # DICOM films: their reports come from the driver
    paths = expand([films]) + [extra / "link.jpg", extra / "copy.jpg"] + expand([tmp_path / "dx"], recursive=True)
    one = tmp_path / "one.jsonl"
    stream(onnx_pipeline, paths, one, batch_size=4, workers=0, progress=False)
    out = tmp_path / "ray.jsonl"
    cluster = RayCluster(batch_size=2, progress=False)
    first = run_films(onnx_pipeline, paths[:5], [ResultFile(out)], cluster, progress=False).tally
    assert first.ok + first.errors == 5
    seen: list[str] = []
    # The drawing outputs run in the actors (the folder is shared here: one machine).
    sinks = [OverlaySink(tmp_path / "overlays"), DicomSink(tmp_path / "reports"), ResultFile(out, resume=True)]
    tally = run_films(onnx_pipeline, paths, sinks, cluster, progress=False,
                      on_batch=lambda docs: seen.extend(d["path"] for d in docs)).tally
    assert sorted(seen) == sorted(str(p) for p in paths[5:])  # the first five are not done again
    assert len(list((tmp_path / "reports").rglob("SR_*.dcm"))) == 3  # every DICOM film reported, on Ray too
    drawn = [json.loads(x)["files"]["overlay"] for x in out.read_text().splitlines()[5:]]
    assert all(f and Path(f).is_file() and Path(f).parent == tmp_path / "overlays" for f in drawn if f) and any(drawn)
    assert tally.ok + tally.errors == len(paths) and tally.errors == 1
    # Nothing of the run outlives it: a Ray Data thread that released its object references after
    # ray.shutdown() would abort the process.
    assert not [t.name for t in threading.enumerate() if t.name.startswith(_RAY_DATA_THREADS)]
    a, b = _docs(out), _docs(one)
    for d in a.values():
        d["files"]["overlay"] = None  # drawn in the second run only
    assert len(a) == len(paths) and {str(extra / "link.jpg"), str(extra / "copy.jpg")} <= a.keys()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == b[k], k  # the same documents, bit for bit (timing aside)


def test_an_unreachable_cluster_gets_a_message_not_a_wait(films: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray", reason="Ray is the [ray] extra")
    from spinexr.cli import main

    t0 = time.monotonic()
    for address, message in (("127.0.0.1:1", "cannot reach a Ray cluster at 127.0.0.1:1"), ("nonsense", "HOST:PORT")):
        assert main(["predict", str(films), "--out", str(tmp_path / "x.csv"), "--ray", address, "--quiet"]) == 2
        assert message in capsys.readouterr().err
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "x.csv").exists()


def test_onnx_jobs_write_what_one_process_writes(onnx_pipeline: Pipeline, films: Path, tmp_path: Path) -> None:
    """``--backend onnx --jobs 2``: two one-thread ONNX Runtime pipelines, the cached exports loaded in
    each, write the one-process documents, bit for bit (timing aside), in the films' order."""
    paths = expand([films])
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    stream(onnx_pipeline, paths, one, batch_size=3, workers=0, progress=False)
    stream(onnx_pipeline, paths, two, batch_size=3, jobs=2, progress=False)
    assert [json.loads(line)["path"] for line in two.read_text().splitlines()] == [str(p) for p in paths]
    assert _docs(two) == _docs(one)


def test_jobs_are_for_one_machine(films: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spinexr.cli import main

    assert main(["predict", str(films), "--out", str(tmp_path / "x.csv"), "--ray", "--jobs", "2"]) != 0
    assert "--jobs is for one machine" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
