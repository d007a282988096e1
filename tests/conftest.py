"""Shared fixtures: tiny images, a tiny synthetic dataset, and the KAUH folder when it is present."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
KAUH = ROOT.parent / "shared" / "data" / "kauh-spine-xray"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker's torch gets its share of the cores (two workers with every core
    each would fight over them)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(scope="session")
def kauh_dir() -> Path:
    if not (KAUH / "Normal").is_dir():
        pytest.skip(f"KAUH dataset not found at {KAUH} (it lives in ../shared beside the repository)")
    return KAUH


def gradient_image(w: int = 64, h: int = 96) -> np.ndarray:
    """A non-constant uint8 test image with structure in both axes."""
    y, x = np.mgrid[0:h, 0:w]
    return ((x * 3 + y * 2) % 256).astype(np.uint8)


@pytest.fixture
def gray_u8() -> np.ndarray:
    return gradient_image()


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 30-image synthetic dataset at a small scale, shared by the tests of one session."""
    from spinexr.data.synth import synthesize

    out = tmp_path_factory.mktemp("synth")
    synthesize(out, n=30, seed=7, scale=0.3)
    return out


def save(img: np.ndarray | Image.Image, path: Path, **kw) -> Path:
    im = img if isinstance(img, Image.Image) else Image.fromarray(img)
    im.save(path, **kw)
    return path


@pytest.fixture(scope="session")
def trained_model(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained for a few epochs on the synthetic set, with its OOD detector."""
    from spinexr.config import CVConfig, TrainConfig
    from spinexr.evaluation.holdout import run_train
    out = tmp_path_factory.mktemp("trained")
    run_train(synth_dir, "small", CVConfig(image_size=64, bootstrap=20, attention="mhsa", test_fraction=0.2),
              TrainConfig(epochs=4, batch_size=8, device="cpu", lr=2e-3, warmup_epochs=0.5), out, progress=False)
    return out / "model.safetensors"


@pytest.fixture(scope="session")
def bundled():
    """The bundled models as one pipeline, loaded once for every test that reads it (never changed by one)."""
    from spinexr.pipeline import Pipeline

    return Pipeline.load()


@pytest.fixture(scope="session")
def tiny_bundle(tiny_models: dict[str, Path], synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of the tiny models with its rule fitted on the synthetic films: for tests of behaviour
    (outputs, resume, executors), where the bundled models would only cost time."""
    from spinexr.cli import main

    out = tmp_path_factory.mktemp("bundles") / "mine"
    assert main(["bundle", "create", str(out), "--classifier", str(tiny_models["classifier"]),
                 "--landmarks", str(tiny_models["landmarks"]), "--fit-on", str(synth_dir), "--name", "mine",
                 "--quiet"]) == 0
    # The tiny classifier's detector, trained for a few epochs, flags synthetic films at random: this bundle
    # analyses what it flags (the documented edit of bundle.json), so outputs are tested on every film.
    manifest = json.loads((out / "bundle.json").read_text())
    manifest["intended_use"]["out_of_distribution"] = "flag"
    (out / "bundle.json").write_text(json.dumps(manifest, indent=2))
    return out


@pytest.fixture(scope="session")
def tiny(tiny_bundle: Path):
    """The tiny bundle as one pipeline, loaded once (never changed by a test)."""
    from spinexr.pipeline import Pipeline

    return Pipeline.load(tiny_bundle)


def serve_in_thread(app, timeout: float = 60.0):
    """``app`` on a free loopback port in a uvicorn thread: (server, thread, base URL). Set
    ``server.should_exit`` and join the thread to stop it."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.monotonic() + timeout
    while not srv.started:
        assert time.monotonic() < deadline and th.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    return srv, th, f"http://127.0.0.1:{port}"


def non_spine_images(root: Path) -> list[Path]:
    """Photos, chest radiographs, a near-blank film and a document: things a spine model must flag."""
    from spinexr.data.synth import write_negative_controls

    return write_negative_controls(root)


@pytest.fixture(scope="session")
def cv_run(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A 2-fold CV of the small model (both protocols) on the synthetic set: its run folder and results."""
    from spinexr.config import CVConfig, TrainConfig
    from spinexr.evaluation.cv import run_cv
    out = tmp_path_factory.mktemp("cv")
    cfg = CVConfig(models=["small"], folds=2, image_size=48, bootstrap=50, protocol="both", attention="cbam")
    res = run_cv(synth_dir, cfg, TrainConfig(epochs=2, batch_size=8, device="cpu", patience=5), out, progress=False)
    return out, res


@pytest.fixture(scope="session")
def tiny_models(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from spinexr.cli import main
    from spinexr.config import LandmarkConfig
    from spinexr.evaluation.landmark_cv import run_landmark_cv

    root = tmp_path_factory.mktemp("models")
    assert main(["train", "--data", str(synth_dir), "--model", "small", "--epochs", "1", "--image-size", "40",
                 "--device", "cpu", "--bootstrap", "20", "--out", str(root / "clf"), "--quiet"]) == 0
    cfg = LandmarkConfig(input_height=128, input_width=64, epochs=1, batch_size=4, device="cpu")
    run_landmark_cv(synth_dir / "landmarks.csv", cfg, root / "lm", folds=2, progress=False, n_boot=20)
    return {"classifier": root / "clf" / "model.safetensors", "landmarks": root / "lm" / "models" / "landmarks.safetensors"}


def stream(pipeline, paths, out=None, *, resume=False, batch_size=16, workers=0, jobs=1, overlays=None,
           dicom=None, on_batch=None, progress=False):
    """The driver as ``predict`` runs it: the outputs asked for as sinks (overlays, DICOM, the result file
    last), the executor by ``jobs``; returns the run's tally."""
    from spinexr.outputs.dicom import DicomSink
    from spinexr.outputs.images import OverlaySink
    from spinexr.outputs.results import ResultFile
    from spinexr.pipeline.driver import run_films
    from spinexr.pipeline.executors import InProcess, Jobs

    sinks = [OverlaySink(overlays)] if overlays is not None else []
    sinks += [DicomSink(dicom)] if dicom is not None else []
    sinks += [ResultFile(out, resume=resume)] if out is not None else []
    executor = Jobs(jobs, batch_size) if jobs != 1 else InProcess(batch_size, workers)
    return run_films(pipeline, list(paths), sinks, executor, progress=progress, on_batch=on_batch).tally


def expand(items, recursive=False):
    """The film paths ``predict`` would read from ``items``."""
    from spinexr.pipeline.source import expand_paths

    return expand_paths(items, recursive=recursive).paths
