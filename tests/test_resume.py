"""Fault tolerance and scale: resume after SIGKILL, CV resume, torchrun with gloo, OOM halving."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from spinexr.config import TrainConfig
from spinexr.data.contract import DataConfig
from spinexr.engine.train import FitOptions, FitSplit, fit
from spinexr.errors import SpinexrError
from spinexr.models import create_model

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "spinexr", *args]


def _train_args(data: Path, out: Path, epochs: int = 6) -> list[str]:
    return ["train", "--data", str(data), "--model", "small", "--epochs", str(epochs), "--image-size", "40",
            "--batch-size", "8", "--device", "cpu", "--bootstrap", "20", "--patience", "50", "--seed", "3",
            "--out", str(out), "--quiet"]


def _wait_for(cond, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"process ended before the condition held (rc={proc.returncode})")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("condition not reached in time")
        time.sleep(0.002)


class _Writes:
    """How many distinct versions of a file have been seen (by inode and mtime), polled with ``stat``."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen = path, []

    def count(self) -> int:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return len(self.seen)
        key = (st.st_ino, st.st_mtime_ns)
        if not self.seen or self.seen[-1] != key:
            self.seen.append(key)
        return len(self.seen)


def _ck_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["epoch"])
    except Exception:  # noqa: BLE001 - not written yet
        return -1


def _losses(run: Path) -> list[float]:
    """Training and validation loss of every epoch, flattened."""
    import csv

    return [float(r[k]) for r in csv.DictReader(open(run / "history.csv")) for k in ("train_loss", "val_loss")]


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_matches(synth_dir: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    subprocess.run(_cli(*_train_args(synth_dir, ref)), check=True, env=ENV, timeout=600)
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*_train_args(synth_dir, run)), env=ENV)
    # An epoch here takes a few hundred milliseconds: watch the checkpoint's file (rewritten atomically after
    # each epoch) with a cheap stat, freeze the process the moment the second one lands, then kill it.
    writes = _Writes(run / "checkpoint.pt")
    _wait_for(lambda: writes.count() >= 2, 300, proc)
    proc.send_signal(signal.SIGSTOP)
    killed_after = _ck_epoch(run / "checkpoint.pt")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "model.safetensors").exists()  # it really died mid-run
    assert 1 <= killed_after < 5, killed_after  # epochs were left for the resumed run to train
    subprocess.run(_cli("train", "--resume", str(run), "--quiet"), check=True, env=ENV, timeout=600)
    a = json.loads((ref / "metrics.json").read_text())
    b = json.loads((run / "metrics.json").read_text())
    assert b["models"]["small"]["pooled"]["accuracy"] == a["models"]["small"]["pooled"]["accuracy"]
    assert b["models"]["small"]["pooled"]["nll"] == pytest.approx(a["models"]["small"]["pooled"]["nll"], abs=1e-6)
    assert _losses(run) == pytest.approx(_losses(ref), abs=1e-6)


@pytest.mark.slow
def test_cv_killed_mid_fold_resumes_to_the_same_out_of_fold_predictions(synth_dir: Path, tmp_path: Path) -> None:
    """Killed in the middle of fold 1 (fold 0 finished, fold 1's first epoch checkpointed): the resumed run
    reuses fold 0, continues fold 1 from its checkpoint, and ends with the uninterrupted run's out-of-fold
    predictions."""
    import csv

    args = ["cv", "--data", str(synth_dir), "--models", "small", "--folds", "2", "--epochs", "2", "--image-size", "40",
            "--batch-size", "8", "--device", "cpu", "--bootstrap", "20", "--quiet"]
    ref = tmp_path / "ref"
    subprocess.run(_cli(*args, "--out", str(ref)), check=True, env=ENV, timeout=600)
    run = tmp_path / "run"
    proc = subprocess.Popen(_cli(*args, "--out", str(run)), env=ENV)
    writes = _Writes(run / "checkpoints" / "small_r0_f1.pt")
    _wait_for(lambda: writes.count() >= 1, 300, proc)
    proc.send_signal(signal.SIGSTOP)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "metrics.json").exists() and not (run / "folds" / "small_r0_f1.json").exists()
    assert _ck_epoch(run / "checkpoints" / "small_r0_f1.pt") == 0  # killed with fold 1's last epoch left to train
    f0 = (run / "folds" / "small_r0_f0.json").stat().st_mtime_ns
    subprocess.run(_cli("cv", "--resume", str(run), "--quiet"), check=True, env=ENV, timeout=600)
    assert (run / "folds" / "small_r0_f0.json").stat().st_mtime_ns == f0  # the finished fold was not redone

    def oof(r: Path) -> list[tuple]:
        return [(row["path"], row["model"], *(round(float(row[k]), 6) for k in row if k.startswith("p_")))
                for row in csv.DictReader(open(r / "oof_predictions.csv"))]

    assert oof(run) == oof(ref)
    a = json.loads((ref / "metrics.json").read_text())["models"]["small"]
    b = json.loads((run / "metrics.json").read_text())["models"]["small"]
    assert [f["accuracy"] for f in b["folds"]] == [f["accuracy"] for f in a["folds"]]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_matches_single(synth_dir: Path, tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(torchrun).exists():
        pytest.skip("torchrun not found beside the interpreter")
    single = tmp_path / "single"
    subprocess.run(_cli(*_train_args(synth_dir, single, epochs=5)), check=True, env=ENV, timeout=600)
    multi = tmp_path / "ddp"
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "spinexr", *_train_args(synth_dir, multi, epochs=5)]
    r = subprocess.run(cmd, env=ENV, timeout=900, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    a = json.loads((single / "metrics.json").read_text())
    b = json.loads((multi / "metrics.json").read_text())
    # Rank 0 alone wrote the run; the global batch and epochs match the single-process run.
    assert (multi / "model.safetensors").is_file()
    hist = b["config"]["train"]
    assert hist["batch_size"] == 8
    acc_a, acc_b = a["models"]["small"]["pooled"]["accuracy"], b["models"]["small"]["pooled"]["accuracy"]
    assert abs(acc_a - acc_b) <= 0.34  # 6 test images: within two of them
    la, lb = _losses(single), _losses(multi)
    assert len(la) == len(lb)
    assert abs(la[-2] - lb[-2]) < 0.35 * la[-2]  # final training loss within 35%


class _OOMOnce(torch.nn.Module):
    """Wraps a model and raises CUDA-style OOM for batches larger than ``limit`` (simulated on CPU)."""

    def __init__(self, inner: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit = inner, limit
        self.classifier = inner.classifier
        self.forward_features, self.forward_head = inner.forward_features, inner.forward_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


def test_oom_halves_batch_and_carries_on(synth_dir: Path) -> None:
    from spinexr.data.dataset import prepare_dataset
    d = prepare_dataset(synth_dir, [32], progress=False)
    idx = np.arange(len(d.labels))
    m = _OOMOnce(create_model("small", attention="none"), limit=4)
    cfg = TrainConfig(epochs=2, batch_size=16, device="cpu", patience=5)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = fit(m, FitSplit(d.tensors[32], d.labels, idx[:20], idx[20:]), cfg, DataConfig(32), FitOptions(progress=False))
    assert res.batch_size == 4 and all(h["batch_size"] == 4 for h in res.history)
    assert any("halved" in str(x.message) for x in w)
    m2 = _OOMOnce(create_model("small", attention="none"), limit=4)
    cfg2 = TrainConfig(epochs=1, batch_size=16, device="cpu", auto_batch=False)
    with pytest.raises(SpinexrError, match="--batch-size"):
        fit(m2, FitSplit(d.tensors[32], d.labels, idx[:20], idx[20:]), cfg2, DataConfig(32), FitOptions(progress=False))
