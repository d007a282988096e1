"""The CUDA path (bf16 autocast, channels_last, fused AdamW, resident data, on-device augmentation):
one epoch of each trainer on a GPU. Skipped without CUDA; `benchmarks/gpu_run.sh` runs these first."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_classifier_trains_and_predicts_on_cuda(synth_dir: Path, tmp_path: Path) -> None:
    from spinexr.cli import main
    from spinexr.deploy.predictor import Predictor

    out = tmp_path / "run"
    assert main(["train", "--data", str(synth_dir), "--model", "small", "--epochs", "2", "--image-size", "64",
                 "--device", "cuda", "--bootstrap", "20", "--out", str(out), "--quiet"]) == 0
    film = sorted((synth_dir / "Scoliosis").glob("*.jpg"))[0]
    on_gpu = Predictor(out / "model.safetensors", device="cuda").predict_file(film)[0]
    on_cpu = Predictor(out / "model.safetensors", device="cpu").predict_file(film)[0]
    assert on_gpu.status == "ok"
    assert max(abs(on_gpu.probabilities[c] - on_cpu.probabilities[c]) for c in on_cpu.probabilities) < 1e-3


def test_landmarks_train_on_cuda(synth_dir: Path, tmp_path: Path) -> None:
    from spinexr.config import LandmarkConfig
    from spinexr.evaluation.landmark_cv import run_landmark_cv

    cfg = LandmarkConfig(input_height=128, input_width=64, epochs=2, batch_size=4, device="cuda")
    res = run_landmark_cv(synth_dir / "landmarks.csv", cfg, tmp_path / "lm", folds=2, progress=False, n_boot=20)
    assert math.isfinite(res.pooled["smape"]) and res.settings["device"] == "cuda"
