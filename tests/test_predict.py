"""Predicting files, OOD flags, explanations and their geometry."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import non_spine_images
from spinexr.cli import main
from spinexr.deploy.predictor import Predictor
from spinexr.explain import (
    cam_ready,
    explain,
    faithfulness,
    overlay,
    random_map,
    road_scores,
)
from spinexr.models import create_model


def test_predict_mix_of_good_and_bad(trained_model: Path, synth_dir: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    good = sorted((synth_dir / "Scoliosis").glob("*.jpg"))[:2] + sorted((synth_dir / "Normal").glob("*.jpg"))[:1]
    (tmp_path / "in").mkdir()
    bad1 = tmp_path / "in" / "notes.jpg"
    bad1.write_text("not an image")
    bad2 = tmp_path / "in" / "empty.png"
    bad2.write_bytes(b"")
    out = tmp_path / "preds.csv"
    rc = main(["predict", str(trained_model), *map(str, good), str(tmp_path / "in"), str(tmp_path / "missing.dcm"),
               "--out", str(out), "--explain", "gradcam", "--heatmaps", str(tmp_path / "hm"), "--quiet"])
    assert rc == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 6
    by = {Path(r["path"]).name: r for r in rows}
    for g in good:
        r = by[g.name]
        assert r["status"] == "ok" and r["label"] in ("Normal", "Scoliosis", "Spondylolisthesis")
        p = [float(r[f"probabilities_{c}"]) for c in ("Normal", "Scoliosis", "Spondylolisthesis")]
        assert abs(sum(p) - 1) < 1e-4
        assert r["ood_flag"] in ("true", "false") and r["schema"] == "spinexr-prediction/2"
        assert Path(r["files_heatmap"]).is_file()
    assert by["notes.jpg"]["status"] == "error" and "not a recognised image" in by["notes.jpg"]["error_reason"]
    assert by["empty.png"]["status"] == "error" and "empty" in by["empty.png"]["error_reason"]
    assert by["missing.dcm"]["status"] == "error" and "not found" in by["missing.dcm"]["error_reason"]
    # The heatmap is drawn on the original image at its original size.
    from PIL import Image

    hm = Image.open(by[good[0].name]["files_heatmap"])
    assert hm.size == Image.open(good[0]).size
    assert "3 predicted" in capsys.readouterr().err


def test_predict_exit_code_when_nothing_readable(trained_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "x.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["predict", str(trained_model), str(bad), "--quiet"]) == 1
    out = tmp_path / "o.json"
    assert main(["predict", str(trained_model), str(bad), "--out", str(out), "--quiet"]) == 1
    assert json.loads(out.read_text())[0]["status"] == "error"
    # Never overwrite an input with the output.
    assert main(["predict", str(trained_model), str(bad), "--out", str(bad), "--quiet", "--force"]) == 2


def test_ood_fires_on_non_spine_images(trained_model: Path, synth_dir: Path, tmp_path: Path) -> None:
    pred = Predictor(trained_model)
    assert pred.ood_threshold is not None
    spine = sorted(synth_dir.rglob("*.jpg"))
    flags_spine = [pred.predict_file(p)[0].ood for p in spine]
    others = non_spine_images(tmp_path / "neg")
    flags_other = [pred.predict_file(p)[0].ood for p in others]
    assert np.mean(flags_other) >= 0.8, flags_other
    assert np.mean(flags_spine) <= 0.2


@pytest.mark.parametrize("name", ["xception", "inception_v3", "densenet121"])
def test_cam_shape_matches_one_channel_input(name: str) -> None:
    torch.manual_seed(0)
    m = cam_ready(create_model(name, attention="mhsa"))
    s = 160 if name == "inception_v3" else 96  # Inception's Mixed_7c must be spatial (> 1x1)
    x = torch.randn(1, 1, s, s)
    for method in ("gradcam", "gradcam++", "attention"):
        heat, t = explain(m, x, method)
        assert heat.shape == (s, s)
        assert np.isfinite(heat).all() and 0 <= heat.min() and heat.max() <= 1
        assert heat.max() > heat.min(), (name, method)  # a real map, not a constant


def test_densenet_inplace_relu_is_handled() -> None:
    m = create_model("densenet121", attention="none")
    assert m.backbone.features.norm5.act.inplace  # the trap of pytorch-grad-cam#147 is really there
    c = cam_ready(m)
    assert not c.backbone.features.norm5.act.inplace
    assert m.backbone.features.norm5.act.inplace  # the original model is untouched


def test_heatmap_undoes_letterbox(trained_model: Path) -> None:
    pred = Predictor(trained_model)
    img = np.zeros((300, 100), np.float32)
    img[::7] = 1.0
    heat, _ = pred.explain(img, "attention")
    assert heat.shape == img.shape
    rgb = overlay(img, heat)
    assert rgb.shape == (300, 100, 3) and rgb.dtype == np.uint8


def test_faithfulness_reports_against_random(trained_model: Path, synth_dir: Path) -> None:
    pred = Predictor(trained_model)
    from spinexr.data.imread import read_image
    xs = []
    for p in sorted(synth_dir.rglob("*.jpg"))[:4]:
        x, _ = pred.prepare(read_image(p)[0])
        xs.append(pred.contract.normalize(torch.from_numpy(x)))
    r = faithfulness(pred.model, torch.cat(xs), "gradcam", steps=5)
    assert 0 <= r["deletion_auc"] <= 1 and 0 <= r["random_deletion_auc"] <= 1 and r["n"] == 4
    assert -1 <= r["road"] <= 1 and -1 <= r["random_road"] <= 1 and 0 <= r["road_wins"] <= 1


class _SquareModel(torch.nn.Module):
    """Class 0's logit is the brightness of one known square, and nothing else."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 12 * x[:, 0, 8:24, 8:24].mean(dim=(1, 2)) - 6
        return torch.stack([z, torch.zeros_like(z), torch.zeros_like(z)], 1)


def test_road_ranks_the_true_evidence_above_a_wrong_map() -> None:
    x = torch.zeros(2, 1, 40, 40)
    x[:, :, 8:24, 8:24] = 1.0
    x += 0.05 * torch.rand_like(x)
    right = np.zeros((40, 40), np.float32)
    right[8:24, 8:24] = 1
    wrong = np.zeros((40, 40), np.float32)
    wrong[24:40, 24:40] = 1
    good = road_scores(_SquareModel(), x, np.stack([right, right]), [0, 0])
    bad = road_scores(_SquareModel(), x, np.stack([wrong, wrong]), [0, 0])
    assert good.shape == (2,) and (good > 0.1).all()
    assert (good > bad + 0.1).all()


def test_random_map_is_smooth_like_a_cam() -> None:
    rng = np.random.default_rng(0)
    m = random_map(96, rng)
    assert m.shape == (96, 96) and m.min() == 0 and m.max() == 1
    # neighbouring pixels differ far less than in white noise (mean |diff| about 1/3)
    assert np.abs(np.diff(m, axis=1)).mean() < 0.05
    assert not np.allclose(m, random_map(96, rng))


def test_explain_cli(trained_model: Path, synth_dir: Path, tmp_path: Path) -> None:
    img = sorted(synth_dir.rglob("*.jpg"))[0]
    out = tmp_path / "e.png"
    assert main(["explain", str(trained_model), str(img), "--method", "gradcam++", "--out", str(out)]) == 0
    assert out.is_file()
    assert main(["explain", str(trained_model), str(img), "--out", str(img), "--force"]) == 2  # never overwrite input


def test_a_map_from_a_one_by_one_feature_grid_is_flagged() -> None:
    model = create_model("small", attention="mhsa").eval()
    x = torch.randn(2, 1, 32, 32)  # stride 32: the last feature map is 1 x 1
    with pytest.warns(RuntimeWarning, match="too coarse"):
        heat, _ = explain(cam_ready(model), x[:1], "gradcam")
    assert heat.shape == (32, 32) and heat.max() == heat.min()
    with pytest.warns(RuntimeWarning, match="single token"):
        explain(model, x[:1], "attention")
    r = faithfulness(model, x, "gradcam", steps=2, road=False)
    assert r["constant_maps"] == 2 and "road" not in r
