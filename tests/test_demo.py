"""`make demo` runs `spinexr demo`: the whole path on a few synthetic films ends with a report and a model."""

from __future__ import annotations

from pathlib import Path

import pytest

from spinexr.cli import main


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n", "30", "--epochs", "1"]) == 0
    text = capsys.readouterr().out
    assert "3-fold CV on 30 synthetic radiographs" in text
    assert (out / "cv" / "report.html").is_file() and (out / "cv" / "models" / "small.safetensors").is_file()
    # The tour ends with the bundled models on synthetic AP films: label, angle, decision, overlays.
    assert "bundled models (spinexr-bundled: xception and resnet18" in text and "spinexr-prediction/2" in text
    import json

    preds = json.loads((out / "bundled" / "predictions.json").read_text())
    assert preds and all(p["status"] == "ok" and p["decision"] is not None for p in preds)
    assert len(list((out / "bundled" / "overlays").glob("*.png"))) == len(preds)
    assert main(["demo", "--out", str(out), "--n", "30", "--epochs", "1"]) == 2  # never over an earlier run
