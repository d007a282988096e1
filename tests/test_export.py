"""ONNX export: checker, dynamic batch, parity with PyTorch, INT8, and the onnx backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinexr.cli import main
from spinexr.deploy.export import export_onnx, parity, quantize_int8
from spinexr.deploy.predictor import Predictor


@pytest.fixture(scope="module")
def onnx_file(trained_model: Path, synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    rep = export_onnx(trained_model, out, parity_images=sorted(synth_dir.rglob("*.jpg"))[::4][:8])
    assert rep["checker"] == "passed" and rep["parity_images"] == 8
    assert rep["max_abs_prob_diff"] <= 1e-4 and rep["same_predictions"]
    return out


def test_dynamic_batch_and_parity(onnx_file: Path, trained_model: Path) -> None:
    t, o = Predictor(trained_model), Predictor(onnx_file)
    assert o.backend == "onnx" and o.labels == t.labels and o.size == t.size
    rng = np.random.default_rng(0)
    for b in (1, 3, 5):
        x = rng.random((b, 1, t.size, t.size)).astype(np.float32)
        _, pt, st = t.run(x)
        _, po, so = o.run(x)
        assert po.shape == (b, 3)
        assert np.abs(pt - po).max() <= 1e-4
        assert np.allclose(st, so, rtol=1e-3, atol=1e-2)


@pytest.mark.realdata
def test_parity_on_eight_kauh_images(onnx_file: Path, trained_model: Path, kauh_dir: Path) -> None:
    """The export made from synthetic films agrees with PyTorch on real films too (the same parity check
    export_onnx runs)."""
    imgs = sorted(kauh_dir.rglob("*.jpg"))[::40][:8]
    rep = parity(Predictor(trained_model), onnx_file, imgs)
    assert rep["parity_images"] == 8 and rep["max_abs_prob_diff"] <= 1e-4 and rep["same_predictions"]


def test_int8_runs_and_mostly_agrees(onnx_file: Path, synth_dir: Path, tmp_path: Path) -> None:
    imgs = sorted(synth_dir.rglob("*.jpg"))
    q = tmp_path / "m.int8.onnx"
    quantize_int8(onnx_file, q, imgs[:16])
    f, i8 = Predictor(onnx_file), Predictor(q)
    assert i8.meta["quantization"] == "int8-static-qdq"
    agree = np.mean([f.predict_file(p)[0].label == i8.predict_file(p)[0].label for p in imgs])
    assert agree >= 0.8


def test_export_cli_and_predict_on_onnx(trained_model: Path, synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.onnx"
    assert main(["export", str(trained_model), "--onnx", str(out), "--parity-data", str(synth_dir)]) == 0
    assert out.is_file()
    assert main(["export", str(trained_model), "--onnx", str(out), "--parity-data", str(synth_dir)]) == 2  # exists
    assert main(["export", str(trained_model), "--onnx", str(trained_model), "--force",
                 "--parity-data", str(synth_dir)]) == 2  # would overwrite the model
    preds = tmp_path / "p.csv"
    assert main(["predict", str(trained_model), "--onnx", str(out), str(synth_dir / "Normal"), "--out", str(preds),
                 "--quiet"]) == 0
    assert preds.read_text().count("\n") == 11
