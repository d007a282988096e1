"""Training: early stopping restores the best weights, model files round-trip, CPU runs reproduce."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spinexr.config import TrainConfig
from spinexr.data.contract import DataConfig, fit_to_square
from spinexr.data.dataset import prepare_dataset
from spinexr.engine.inference import unit_batches
from spinexr.engine.train import FitOptions, FitSplit, fit
from spinexr.models import create_model

CPU = torch.device("cpu")
C48 = DataConfig(48)


def _logits(model, data, idx) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(C48.normalize(xb)) for xb in unit_batches(data.tensors[48], idx, CPU)]).numpy()


@pytest.fixture(scope="module")
def tiny(synth_dir: Path):
    return prepare_dataset(synth_dir, [48], progress=False)


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=4, batch_size=8, patience=10, lr=3e-3, device="cpu", warmup_epochs=0.5)
    base.update(kw)
    return TrainConfig(**base)


def _fit(model, data, fit_idx, val_idx, cfg: TrainConfig, **options):
    return fit(model, FitSplit(data.tensors[48], data.labels, fit_idx, val_idx), cfg, C48, FitOptions(**options))


def _val_loss(model, data, idx) -> float:
    lg = _logits(model, data, idx)
    return float(torch.nn.functional.cross_entropy(torch.from_numpy(lg), torch.from_numpy(data.labels[idx])).item())


def test_early_stopping_restores_best(tiny) -> None:
    idx = np.arange(len(tiny.labels))
    fit_idx, val_idx = idx[::2], idx[1::2]
    torch.manual_seed(0)
    m = create_model("small", attention="cbam")
    # A high learning rate makes validation loss bounce, so the last epoch is rarely the best.
    res = _fit(m, tiny, fit_idx, val_idx, _cfg(epochs=6, lr=3e-2, patience=2), progress=False)
    assert res.best_epoch < len(res.history) - 1, "the test needs a run whose last epoch is not its best"
    best = res.history[res.best_epoch]["val_loss"]
    assert best == min(h["val_loss"] for h in res.history)
    assert _val_loss(m, tiny, val_idx) == pytest.approx(best, abs=1e-5)
    if res.stopped_early:
        assert len(res.history) - 1 - res.best_epoch == 2


def test_cpu_training_is_reproducible(tiny) -> None:
    idx = np.arange(len(tiny.labels))
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        m = create_model("small", attention="mhsa")
        r = _fit(m, tiny, idx[:20], idx[20:], _cfg(epochs=2), progress=False)
        outs.append(([h["train_loss"] for h in r.history], _logits(m, tiny, None)))
    assert outs[0][0] == outs[1][0]
    assert np.array_equal(outs[0][1], outs[1][1])


def test_checkpoint_written_atomically(tiny, tmp_path: Path) -> None:
    idx = np.arange(len(tiny.labels))
    m = create_model("small", attention="none")
    ck = tmp_path / "ck.pt"
    _fit(m, tiny, idx[:20], idx[20:], _cfg(epochs=2), checkpoint=ck, progress=False)
    state = torch.load(ck, weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]) == 2
    assert not (tmp_path / "ck.pt.tmp").exists()


@pytest.mark.parametrize("attention", ["mhsa", "cbam", "none"])
def test_model_file_round_trip(tmp_path: Path, attention: str) -> None:
    from spinexr.models.files import (
        build_metadata,
        load_model,
        read_metadata,
        save_model,
    )
    torch.manual_seed(3)
    m = create_model("small", attention=attention).eval()
    meta = build_metadata(m, contract=DataConfig(64), tta_flip=True, temperature=1.7,
                          weights="none", data_summary={"counts": {"Normal": 1}})
    p = save_model(m, meta, tmp_path / "m.safetensors")
    m2, meta2, ood = load_model(p)
    assert ood is None
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    assert meta2["temperature"] == 1.7 and meta2["labels"] == ["Normal", "Scoliosis", "Spondylolisthesis"]
    assert meta2["attention"] == attention and meta2["tta_flip"] is True
    assert DataConfig.from_meta(meta2) == DataConfig(64, resize="letterbox")
    assert read_metadata(p)["spinexr_version"]
    assert (tmp_path / "m.json").is_file()


def test_letterbox_keeps_aspect() -> None:
    img = np.zeros((200, 50), np.float32)
    img[:, :] = 1.0
    out, pl = fit_to_square(img, 64, "letterbox")
    cols = np.nonzero(out.max(0) > 0)[0]
    assert out.shape == (64, 64)
    assert 14 <= len(cols) <= 18  # 50/200 of 64 = 16 columns of image, the rest black padding
    assert pl.scale_x == pytest.approx(pl.scale_y, rel=0.1)
    back = pl.to_original(out.astype(np.float32))
    assert back.shape == (200, 50)
    stretched, _ = fit_to_square(img, 64, "stretch")
    assert (stretched > 0).all()


def test_strip_mode_cuts_a_wide_film_around_the_spine_and_maps_back() -> None:
    from spinexr.data.contract import STRIP_ASPECT
    from spinexr.data.framing import pad_to_aspect, strip_crop

    rng = np.random.default_rng(0)
    img = rng.uniform(0.1, 0.3, (400, 200)).astype(np.float32)
    img[:, 110:130] = 0.9  # the spine, right of the centre
    out, pl = fit_to_square(img, 64, "strip")
    # A 100-px strip (400 / 4) around x = 120: letterboxed, it is 16 of the 64 columns, the spine at its middle.
    cols = np.nonzero(out.max(0) > 0)[0]
    assert 15 <= len(cols) <= 17
    bright = np.nonzero(out[32] > 200)[0]
    assert abs(bright.mean() - 31.5) <= 1.5
    assert pl.points_to_original(pl.points_to_input(np.array([[120.0, 200.0]])))[0] == pytest.approx([120, 200])
    assert pl.points_to_input(np.array([[120.0, 0.0]]))[0, 0] == pytest.approx(31.5, abs=1.5)
    heat = np.zeros((64, 64), np.float32)
    heat[:, cols] = 1.0
    back = pl.to_original(heat)
    assert back.shape == (400, 200)
    assert back[:, 115:125].mean() > 0.9 and back[:, :50].max() == 0 and back[:, 190:].max() == 0
    # Framing is gone by construction: the film cut to a strip, or a strip widened, reaches the model as the strip.
    strip = strip_crop(img, STRIP_ASPECT)
    assert np.array_equal(fit_to_square(strip, 64, "strip")[0], out)
    widened = pad_to_aspect(strip, 2.5)
    assert np.abs(fit_to_square(widened, 64, "strip")[0].astype(int) - out).mean() < 8


def test_weight_average_is_what_validation_and_the_model_keep(tiny, tmp_path: Path, monkeypatch) -> None:
    """With ema_decay (and mixup) the early stopping judges the averaged weights and the model leaves
    with them; a run killed after its second epoch and resumed from its checkpoint ends the same."""
    import spinexr.engine.train as train_mod

    idx = np.arange(len(tiny.labels))
    cfg = _cfg(epochs=4, ema_decay=0.9, mixup_alpha=0.4)

    def run(ck: Path | None, resume: bool = False) -> tuple:
        torch.manual_seed(0)
        m = create_model("small", attention="none")
        r = _fit(m, tiny, idx[:20], idx[20:], cfg, checkpoint=ck, progress=False, resume=resume)
        return r, _logits(m, tiny, None)

    res, logits = run(None)
    best = res.history[res.best_epoch]["val_loss"]
    assert _val_loss_of(logits, tiny, idx[20:]) == pytest.approx(best, abs=1e-5)

    real_epoch = train_mod._epoch

    def killed_after_two(run_, state, epoch, *a):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(run_, state, epoch, *a)

    ck = tmp_path / "ck.pt"
    monkeypatch.setattr(train_mod, "_epoch", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run(ck)
    monkeypatch.setattr(train_mod, "_epoch", real_epoch)
    state = torch.load(ck, weights_only=True)
    assert state["epoch"] == 1 and state["ema_steps"] > 0
    resumed, resumed_logits = run(ck, resume=True)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in res.history]
    assert np.array_equal(resumed_logits, logits)


def _val_loss_of(logits: np.ndarray, data, idx) -> float:
    lg = torch.from_numpy(logits[idx])
    return float(torch.nn.functional.cross_entropy(lg, torch.from_numpy(data.labels[idx])).item())


def test_resuming_with_an_average_from_a_checkpoint_without_one_is_refused(tiny, tmp_path: Path) -> None:
    from spinexr.errors import SpinexrError

    idx = np.arange(len(tiny.labels))
    ck = tmp_path / "ck.pt"
    _fit(create_model("small", attention="none"), tiny, idx[:20], idx[20:], _cfg(epochs=1), checkpoint=ck, progress=False)
    with pytest.raises(SpinexrError, match="without a weight average"):
        _fit(create_model("small", attention="none"), tiny, idx[:20], idx[20:], _cfg(epochs=2, ema_decay=0.9),
             checkpoint=ck, progress=False, resume=True)
