"""The landmark model: augmentation moves corners with the pixels (and a flip swaps left and right),
the heatmap codec decodes sub-pixel positions, and a tiny train / predict runs on synthetic films."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from spinexr.config import LandmarkConfig
from spinexr.data.augment import augment_landmarks
from spinexr.models.landmark import HeatmapCodec, LandmarkNet, vertebra_tilt


def _dots(h: int, w: int, pts: torch.Tensor) -> torch.Tensor:
    """A film with a small bright blob at each point."""
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    x = torch.zeros(h, w)
    for px, py in pts.tolist():
        x = torch.maximum(x, torch.exp(-((xx - px) ** 2 + (yy - py) ** 2) / 2.0))
    return x[None, None]


def test_augmentation_moves_points_with_pixels() -> None:
    h, w = 160, 80
    pts = torch.tensor([[[20.0 + 12 * (i % 4), 12.0 + 2 * i] for i in range(68)]])
    x = _dots(h, w, pts[0])
    cfg = LandmarkConfig(rotate_deg=20, scale_min=0.8, scale_max=1.1, translate=0.05, flip=True, intensity=0.0)
    xa, pa = augment_landmarks(x.repeat(6, 1, 1, 1), pts.repeat(6, 1, 1), cfg, torch.Generator().manual_seed(1))
    for b in range(6):
        inside = [(px, py) for px, py in pa[b].tolist() if 2 <= px < w - 2 and 2 <= py < h - 2]
        assert len(inside) > 40
        vals = [float(xa[b, 0, round(py), round(px)]) for px, py in inside]
        assert np.mean(vals) > 0.5, b  # the blobs are where the points went


def test_strip_framing_keeps_every_corner_on_its_pixels() -> None:
    """strip_p: a film cut to a strip around the spine (black beside it, as the letterbox shows a
    narrow film) or widened again by mirroring the strip's edges; the corners move with the columns."""
    from spinexr.data.augment import _mirror_index, strip_landmark_films

    h, w = 160, 80
    rng = np.random.default_rng(0)
    films, pts_all = [], []
    for k in range(8):
        cx = 22.0 + 4 * k  # the spine anywhere across the film, off centre
        pts = torch.tensor([[cx - 5 + 10 * (i % 2) + rng.normal(0, 1), 10.0 + 2 * i] for i in range(68)],
                           dtype=torch.float32)
        films.append(_dots(h, w, pts)[0] + 0.05)  # a faint film everywhere, so black margins show
        pts_all.append(pts)
    x, pts = torch.stack(films), torch.stack(pts_all)
    xa, pa = strip_landmark_films(x, pts, 1.0, torch.Generator().manual_seed(3))
    black_cols = (xa[:, 0] == 0).all(dim=1)  # (B, W): columns with nothing of the film
    assert black_cols.any(dim=1).all()  # every film was reframed with margins
    for b in range(8):
        assert ((pa[b, :, 0] >= 0) & (pa[b, :, 0] <= w - 1)).all()
        vals = [float(xa[b, 0, round(py), round(px)]) for px, py in pa[b].tolist()]
        assert np.mean(vals) > 0.5, b  # the blobs are where the points went
        kept = torch.nonzero(~black_cols[b]).flatten()
        assert kept.max() - kept.min() + 1 == len(kept)  # one band of film in the middle
        assert abs(float(kept.min()) - (w - 1 - float(kept.max()))) <= 1
    assert torch.allclose(pa[:, :, 1], pts[:, :, 1])  # only columns move
    n_wide = int(((~black_cols).sum(dim=1) > round(h / 4.0)).sum())
    assert 0 < n_wide < 8  # some strips were widened by mirroring, some not
    # The mirrored columns are numpy's symmetric padding, repeated for pads wider than the strip.
    idx = _mirror_index(3, 4, 5, torch.device("cpu"))
    assert idx.tolist() == np.pad(np.arange(3), (4, 5), mode="symmetric").tolist()


def test_flip_swaps_left_and_right_corners() -> None:
    h, w = 64, 32
    v = torch.tensor([[5.0, 10.0], [20.0, 11.0], [6.0, 16.0], [21.0, 17.0]])  # UL, UR, LL, LR
    pts = v.repeat(17, 1)[None] + torch.arange(17).repeat_interleave(4)[None, :, None] * torch.tensor([0.0, 2.0])
    cfg = LandmarkConfig(rotate_deg=0, scale_min=1.0, scale_max=1.0, translate=0.0, flip=True, intensity=0.0)
    for seed in range(6):  # until one draw flips
        _, pa = augment_landmarks(torch.zeros(1, 1, h, w), pts, cfg, torch.Generator().manual_seed(seed))
        if not torch.allclose(pa, pts):
            break
    else:
        pytest.fail("no flip was drawn")
    # The new upper-left is the mirror image of the old upper-right: x -> (w - 1) - x.
    assert torch.allclose(pa[0, 0], torch.tensor([w - 1 - 20.0, 11.0]))
    assert torch.allclose(pa[0, 1], torch.tensor([w - 1 - 5.0, 10.0]))
    assert torch.allclose(pa[0, 2], torch.tensor([w - 1 - 21.0, 17.0]))
    assert (pa[0, 0::4, 0] < pa[0, 1::4, 0]).all()
    assert torch.allclose(vertebra_tilt(pa), -vertebra_tilt(pts), atol=1e-6)  # a mirror negates each tilt


def test_codec_decodes_sub_pixel_positions() -> None:
    codec = HeatmapCodec(256, 128)
    true = torch.tensor([[[40.3, 60.7], [80.9, 200.2]]])
    # A target heatmap turned into logits decodes back to its centre, off the grid (away from the
    # borders, where a soft-argmax over a truncated heatmap is pulled inwards).
    logits = codec.target(true).clamp_min(1e-12).log()
    pred, prob = codec.decode(logits)
    assert torch.allclose(pred, true, atol=0.05)
    assert torch.allclose(prob.sum(dim=(-2, -1)), torch.ones(1, 2))
    loss, parts = codec.loss(torch.zeros(1, 68, 64, 32), torch.full((1, 68, 2), 30.0))
    assert math.isfinite(float(loss)) and parts["l1"] > 0


def test_net_shapes_and_gradients() -> None:
    net = LandmarkNet("resnet18")
    x = torch.randn(2, 1, 64, 32, requires_grad=False)
    out = net(x)
    assert out.shape == (2, 68, 16, 8)
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


@pytest.mark.slow
def test_tiny_train_and_predict_on_synthetic_films(synth_dir: Path, tmp_path: Path) -> None:
    from spinexr.data.imread import read_image
    from spinexr.evaluation.landmark_cv import run_landmark_cv
    from spinexr.geometry.cobb import cobb_angles
    from spinexr.models.files import load_landmark_model

    cfg = LandmarkConfig(input_height=128, input_width=64, epochs=2, batch_size=4, device="cpu")
    res = run_landmark_cv(synth_dir / "landmarks.csv", cfg, tmp_path / "run", folds=2, progress=False, n_boot=50)
    assert res.pooled["n"] == res.n_films and math.isfinite(res.pooled["smape"])
    assert res.label_check["n"] == res.n_films and res.label_check["clean"] == res.n_films  # synthetic labels are clean
    assert set(res.pooled["landmark_error_pct_height"]) == {"mean", "median", "p90"}
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["folds"][0]["n_test"] > 0
    html = (tmp_path / "run" / "report.html").read_text()
    for word in ("SMAPE", "Bland-Altman", "Landmark error", "best and the worst"):
        assert word in html
    assert len(list((tmp_path / "run" / "plots").glob("*.png"))) == 4
    pred, meta = load_landmark_model(tmp_path / "run" / "models" / "landmarks.safetensors")
    assert meta["data_config"]["input_width"] == 64 and meta["levels"][0] == "T1"
    assert meta["tta_scales"] == [1.0, 0.85, 1.1] and pred.tta_scales == (1.0, 0.85, 1.1)
    film = next(iter(sorted((synth_dir / "Scoliosis").glob("*.jpg"))))
    img, _ = read_image(film)
    x8, pl = pred.contract.to_input(img)
    with torch.no_grad():
        pts, conf = pred(torch.from_numpy(x8.astype(np.float32) / 255.0)[None, None])
    v = pl.points_to_original(pts[0].numpy()).reshape(17, 4, 2)
    assert v.shape == (17, 4, 2) and np.isfinite(v).all() and conf.shape == (1, 68)
    assert math.isfinite(cobb_angles(v, img.shape[0]).largest)


@pytest.fixture(scope="module")
def landmark_model(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spinexr.cli import main

    out = tmp_path_factory.mktemp("lm") / "run"
    assert main(["landmarks", "train", "--data", str(synth_dir / "landmarks.csv"), "--out", str(out), "--epochs", "2",
                 "--input-height", "128", "--input-width", "64", "--batch-size", "4", "--device", "cpu",
                 "--test-fraction", "0.3", "--quiet"]) == 0
    return out / "models" / "landmarks.safetensors"


def test_predict_measures_and_draws_overlays(trained_model: Path, landmark_model: Path, synth_dir: Path,
                                             tmp_path: Path) -> None:
    import csv

    from PIL import Image

    from spinexr.cli import main

    films = sorted((synth_dir / "Scoliosis").glob("*.jpg"))[:3]
    out = tmp_path / "p.csv"
    assert main(["predict", str(trained_model), *map(str, films), "--landmarks", str(landmark_model),
                 "--overlays", str(tmp_path / "ov"), "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 3
    for r, film in zip(rows, films):
        assert (r["spine_largest"] and r["spine_band"] in ("none", "mild", "moderate", "severe")) or r["spine_refused"]
        with Image.open(r["files_overlay"]) as ov, Image.open(film) as orig:
            assert ov.size == orig.size and ov.mode == "RGB"  # drawn at the film's original size
    js = tmp_path / "p.json"
    assert main(["predict", str(trained_model), str(films[0]), "--landmarks", str(landmark_model), "--out", str(js),
                 "--quiet"]) == 0
    spine = json.loads(js.read_text())[0]["spine"]
    assert "plausible" in spine and isinstance(spine["refused"], list)


def test_overlay_draws_end_vertebra_lines_and_refusals() -> None:
    from spinexr.geometry.cobb import cobb_angles
    from spinexr.geometry.overlay import draw_overlay

    h, w = 600, 300
    tilts = [0, 5, 20, 12, 4, -4, -12, -20, -25, -18, -8, 0, 4, 8, 9, 10, 6]
    v = []
    for j, t in enumerate(tilts):
        th = math.radians(t)
        rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        c = np.array([150.0, 40 + j * 30])
        v.append([c + rot @ np.array(q) for q in ((-30, -12), (30, -12), (-30, 12), (30, 12))])
    v = np.array(v)
    img = np.full((h, w), 0.2, np.float32)
    drawn = draw_overlay(img, v, cobb_angles(v, h))
    assert drawn.shape == (h, w, 3)
    assert (drawn[..., 0] > 200).sum() > 100  # the red PT endplate lines and text
    refused = draw_overlay(img, v, None, ["order broken: L5 is not below L4"])
    assert (refused[..., 0].astype(int) - refused[..., 1] > 100).sum() > 20  # the red refusal text


def test_landmark_onnx_parity(landmark_model: Path, synth_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from spinexr.deploy.export import export_landmark_onnx

    films = sorted((synth_dir / "Scoliosis").glob("*.jpg"))[:4]
    rep = export_landmark_onnx(landmark_model, tmp_path / "lm.onnx", parity_images=films)
    assert rep["checker"] == "passed" and rep["parity_images"] == 4
    assert rep["max_abs_px_diff"] <= 1e-2
    from spinexr.cli import main

    assert main(["export", str(landmark_model), "--onnx", str(tmp_path / "cli.onnx"), "--parity-count", "3"]) == 0
    assert (tmp_path / "cli.onnx").is_file()


def test_service_reports_the_measurement(trained_model: Path, landmark_model: Path, synth_dir: Path) -> None:
    pytest.importorskip("fastapi")
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from spinexr.serve import create_app

    film = sorted((synth_dir / "Scoliosis").glob("*.jpg"))[0]
    data = film.read_bytes()
    with TestClient(create_app(trained_model, landmarks=landmark_model)) as c:
        r = c.post("/v1/predict", files={"file": (film.name, data, "image/jpeg")})
        assert r.status_code == 200
        spine = r.json()["spine"]
        assert len(spine["landmarks"]) == 17 and "plausible" in spine
        assert ("largest" in spine and spine["bands"].startswith("none")) or spine["refused"]
        ov = c.post("/v1/overlay", files={"file": (film.name, data, "image/jpeg")})
        assert ov.status_code == 200 and ov.headers["content-type"] == "image/png"
        with Image.open(film) as orig:
            assert Image.open(io.BytesIO(ov.content)).size == orig.size
    with TestClient(create_app(trained_model)) as c:
        assert c.post("/v1/predict", files={"file": (film.name, data, "image/jpeg")}).json()["spine"] is None
        assert c.post("/v1/overlay", files={"file": (film.name, data, "image/jpeg")}).status_code == 404


def test_final_model_without_a_test_part(synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import csv

    from spinexr.cli import main

    rows = list(csv.DictReader(open(synth_dir / "landmarks.csv")))
    no_angles = tmp_path / "lm.csv"
    with open(no_angles, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows([{**r, "path": str((synth_dir / r["path"]).resolve()), "pt": "", "mt": "", "tl": ""} for r in rows])
    args = ["landmarks", "train", "--data", str(no_angles), "--epochs", "1", "--input-height", "128", "--input-width",
            "64", "--batch-size", "4", "--device", "cpu", "--quiet"]
    # Measuring a held-out part needs the angles: a clear error, exit 2.
    assert main([*args, "--out", str(tmp_path / "a"), "--test-fraction", "0.3"]) == 2
    assert "--test-fraction 0" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # nothing started, nothing left behind
    assert main([*args, "--out", str(tmp_path / "b"), "--test-fraction", "0"]) == 0
    assert "nothing held out" in capsys.readouterr().out
    assert (tmp_path / "b" / "models" / "landmarks.safetensors").is_file()


def test_explain_draws_the_measurement(trained_model: Path, landmark_model: Path, synth_dir: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from spinexr.cli import main

    film = sorted((synth_dir / "Scoliosis").glob("*.jpg"))[0]
    out = tmp_path / "x.png"
    assert main(["explain", str(trained_model), str(film), "--landmarks", str(landmark_model), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert (tmp_path / "x_cobb.png").is_file() and ("Cobb: largest" in text or "no Cobb angle" in text)


def test_offset_codec_votes_average_under_the_vertebra_heatmap() -> None:
    from spinexr.models.landmark import OffsetCodec

    codec = OffsetCodec(256, 128)
    pts = torch.rand(2, 68, 2) * torch.tensor([100.0, 220.0]) + 14
    centres = pts.reshape(2, 17, 4, 2).mean(dim=2)
    heat = HeatmapCodec(256, 128).target(centres).clamp_min(1e-12).log()
    # Zero offsets: every cell votes for itself, so each corner lands on its vertebra's centre.
    pred, prob = codec.decode(torch.cat([heat, torch.zeros(2, 8, 64, 32)], dim=1))
    assert torch.allclose(pred.reshape(2, 17, 4, 2), centres[:, :, None].expand(-1, -1, 4, -1), atol=0.05)
    assert prob.shape == (2, 68, 64, 32) and codec.channels == 25
    # A constant offset field moves every corner by exactly that offset.
    off = torch.zeros(2, 8, 64, 32)
    off[:, 0] = 0.5  # upper-left corners: dx = 0.5 * offset_scale * height = 8 px
    pred2, _ = codec.decode(torch.cat([heat, off], dim=1))
    assert torch.allclose(pred2[:, 0::4, 0] - pred[:, 0::4, 0], torch.full((2, 17), 8.0), atol=1e-3)
    assert torch.allclose(pred2[:, 1::4], pred[:, 1::4])


def test_flip_tta_is_mirror_equivariant_and_averages_both_views() -> None:
    from spinexr.data.contract import DataConfig
    from spinexr.models.landmark import MIRROR, LandmarkPredictor

    torch.manual_seed(0)
    net = LandmarkNet("resnet18").eval()
    contract = DataConfig(128, input_width=64)
    plain, tta = LandmarkPredictor(net, contract).eval(), LandmarkPredictor(net, contract, tta_flip=True).eval()
    x = torch.rand(2, 1, 128, 64)

    def mirror(p: torch.Tensor) -> torch.Tensor:
        p = p[:, MIRROR]
        return torch.stack([63 - p[..., 0], p[..., 1]], dim=-1)

    with torch.no_grad():
        a, b, t, tf = plain(x)[0], plain(x.flip(-1))[0], tta(x)[0], tta(x.flip(-1))[0]
    assert torch.allclose(t, (a + mirror(b)) / 2, atol=1e-5)
    assert torch.allclose(mirror(tf), t, atol=1e-4)  # the mirrored film gets the mirrored answer
    assert not torch.allclose(a, t)


@pytest.mark.parametrize("s", [0.85, 1.1])
def test_zoom_maps_a_point_back_to_where_it_was(s: float) -> None:
    from spinexr.models.landmark import zoom

    x = torch.zeros(1, 1, 128, 64)
    x[0, 0, 37:40, 20:23] = 1.0  # a 3 x 3 blob centred on (x, y) = (21, 38)
    z, (sx, sy, ox, oy) = zoom(x, s)
    assert z.shape == x.shape
    w = z[0, 0]
    ys, xs = torch.meshgrid(torch.arange(128.0), torch.arange(64.0), indexing="ij")
    cx, cy = float((w * xs).sum() / w.sum()), float((w * ys).sum() / w.sum())
    assert abs(cx - 21) > 0.5 or abs(cy - 38) > 0.5  # the zoom moved it
    back = ((cx + 0.5 - ox) / sx - 0.5, (cy + 0.5 - oy) / sy - 0.5)
    assert back == pytest.approx((21.0, 38.0), abs=0.1)


def test_zoom_tta_averages_every_view_mapped_back() -> None:
    from spinexr.data.contract import DataConfig
    from spinexr.models.landmark import LandmarkPredictor, zoom

    torch.manual_seed(0)
    net = LandmarkNet("resnet18").eval()
    contract = DataConfig(128, input_width=64)
    plain = LandmarkPredictor(net, contract).eval()
    tta = LandmarkPredictor(net, contract, tta_scales="1, 0.85").eval()
    x = torch.rand(2, 1, 128, 64)
    with torch.no_grad():
        a = plain(x)[0]
        z, (sx, sy, ox, oy) = zoom(x, 0.85)
        b = plain(z)[0]
        t = tta(x)[0]
    b = torch.stack([(b[..., 0] + 0.5 - ox) / sx - 0.5, (b[..., 1] + 0.5 - oy) / sy - 0.5], dim=-1)
    assert torch.allclose(t, (a + b) / 2, atol=1e-4)
    assert not torch.allclose(t, a, atol=1e-3)


@pytest.mark.parametrize("bad", ["", "2", "1,0.3", "a"])
def test_bad_test_time_zooms_are_refused_with_the_accepted_range(bad: str) -> None:
    from spinexr.errors import SpinexrError
    from spinexr.models.landmark import parse_scales

    with pytest.raises(SpinexrError, match=r"in \[0.5, 1.5\]"):
        parse_scales(bad)


def test_landmark_file_without_zooms_loads_with_the_film_as_it_is(landmark_model: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from spinexr.models.files import load_landmark_model, raw_metadata

    meta = raw_metadata(landmark_model)
    meta.pop("tta_scales")
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(landmark_model)), str(old), metadata={"spinexr": json.dumps(meta)})
    pred, _ = load_landmark_model(old)
    assert pred.tta_scales == (1.0,)
    meta["tta_scales"] = [3.0]
    save_file(load_file(str(landmark_model)), str(old), metadata={"spinexr": json.dumps(meta)})
    from spinexr.errors import WeightsError

    with pytest.raises(WeightsError, match="test-time zooms"):
        load_landmark_model(old)


def test_measurer_reads_angles_as_its_model_file_says(landmark_model: Path, synth_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import load_file, save_file

    import spinexr.deploy.measure as measure
    from spinexr.data.imread import read_image
    from spinexr.deploy.measure import SpineMeasurer
    from spinexr.errors import WeightsError
    from spinexr.geometry.cobb import cobb_angles
    from spinexr.models.files import raw_metadata

    img, _ = read_image(next(iter(sorted((synth_dir / "Scoliosis").glob("*.jpg")))))
    # The tiny test model's spines are refused as implausible; let them through to see how they are read.
    monkeypatch.setattr(measure, "implausibility", lambda v: [])
    meta = raw_metadata(landmark_model)
    assert meta["centreline_weight"] == 0.5  # written from the training settings (the default)
    for w in (None, 0.0, 1.0):  # None: a file from before the setting reads the corners alone
        if w is None:
            meta.pop("centreline_weight")
        else:
            meta["centreline_weight"] = w
        path = tmp_path / f"w{w}.safetensors"
        save_file(load_file(str(landmark_model)), str(path), metadata={"spinexr": json.dumps(meta)})
        measurer = SpineMeasurer(path)
        assert measurer.centreline_weight == (w or 0.0)
        m = measurer.measure(img)
        assert m.result.angles == cobb_angles(m.landmarks, img.shape[0], w or 0.0).angles
        assert m.to_dict()["centreline_weight"] == (w or 0.0)  # the output says how it was read
    for bad in (1.5, "half", True):
        meta["centreline_weight"] = bad
        save_file(load_file(str(landmark_model)), str(tmp_path / "bad.safetensors"), metadata={"spinexr": json.dumps(meta)})
        with pytest.raises(WeightsError, match="centreline_weight"):
            SpineMeasurer(tmp_path / "bad.safetensors")


def test_measurer_reports_the_view_its_model_file_carries(landmark_model: Path, synth_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from spinexr.data.imread import read_image
    from spinexr.deploy.measure import SpineMeasurer
    from spinexr.errors import WeightsError
    from spinexr.geometry.view import FULL_SPINE, LUMBAR, ViewCheck
    from spinexr.models.files import raw_metadata

    img, _ = read_image(next(iter(sorted((synth_dir / "Scoliosis").glob("*.jpg")))))
    assert SpineMeasurer(landmark_model).measure(img).view is None  # no check in the file: no view
    meta = raw_metadata(landmark_model)
    for line, want in ((0.0, FULL_SPINE), (1.01, LUMBAR)):
        meta["view_check"] = ViewCheck((0.0,) * 5, (1.0,) * 5, (0.1,) * 5, 0.0, line, "test").to_meta()
        path = tmp_path / f"v{line}.safetensors"
        save_file(load_file(str(landmark_model)), str(path), metadata={"spinexr": json.dumps(meta)})
        m = SpineMeasurer(path).measure(img)
        assert m.view == want and 0 <= m.view_probability <= 1
        assert m.to_dict()["view"] == want
    meta["view_check"] = {"features": ["something else"]}
    save_file(load_file(str(landmark_model)), str(tmp_path / "bad.safetensors"), metadata={"spinexr": json.dumps(meta)})
    with pytest.raises(WeightsError, match="view check"):
        SpineMeasurer(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("bad, says", [("abc", "e.g. 1,0.85,1.1"), ("3", "in [0.5, 1.5]")])
def test_bad_zoom_setting_is_refused_before_anything_is_written(bad: str, says: str, synth_dir: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from spinexr.cli import main

    out = tmp_path / "run"
    assert main(["landmarks", "train", "--data", str(synth_dir / "landmarks.csv"), "--tta-scales", bad,
                 "--out", str(out), "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "tta" in err or "zooms" in err
    assert says in err and "Traceback" not in err
    assert not out.exists()


def test_an_earlier_fold_model_is_measured_again_not_retrained(landmark_model: Path, synth_dir: Path,
                                                               tmp_path: Path) -> None:
    from spinexr.errors import DatasetError
    from spinexr.evaluation.landmark_cv import run_landmark_cv

    cfg = LandmarkConfig(input_height=128, input_width=64, epochs=2, batch_size=4, device="cpu", test_fraction=0.3,
                         tta_scales="1")
    res = run_landmark_cv(synth_dir / "landmarks.csv", cfg, tmp_path / "again", folds=1, progress=False, n_boot=20,
                          trained={0: landmark_model})
    f0 = res.folds[0]
    assert f0["reused_model"] == str(landmark_model) and f0["epochs_run"] is None and f0["n_test"] > 0
    assert math.isfinite(res.pooled["smape"]) and res.settings["tta_scales"] == "1"
    assert not (tmp_path / "again" / "checkpoints").exists()  # nothing trained
    with pytest.raises(DatasetError, match="retrain instead"):
        run_landmark_cv(synth_dir / "landmarks.csv", LandmarkConfig(input_height=160, input_width=80, device="cpu",
                                                                    test_fraction=0.3),
                        tmp_path / "other", folds=1, progress=False, n_boot=20, trained={0: landmark_model})


def test_landmark_training_resumes_to_the_same_state(synth_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed after its second epoch and resumed from its checkpoint ends with exactly the weights and
    history of a run that was never stopped."""
    import torch

    from spinexr.config import LandmarkConfig
    from spinexr.data.contract import DataConfig
    from spinexr.data.landmarks import read_landmark_csv
    from spinexr.engine import state as state_mod
    from spinexr.engine.landmarks import fit_landmarks, prepare_landmarks
    from spinexr.engine.state import FitOptions
    from spinexr.models.landmark import CODECS, LandmarkNet

    cfg = LandmarkConfig(input_height=96, input_width=48, epochs=4, batch_size=4, device="cpu", tta_flip=False,
                         tta_scales="1", patience=50)
    contract = DataConfig(cfg.input_height, input_width=cfg.input_width)
    data = prepare_landmarks(read_landmark_csv(synth_dir / "landmarks.csv"), contract, progress=False)
    fit_idx, val_idx = np.arange(0, len(data.records) - 3), np.arange(len(data.records) - 3, len(data.records))

    def run(ckpt: Path, resume: bool = False):
        torch.manual_seed(0)
        net = LandmarkNet(cfg.encoder, out_channels=CODECS[cfg.encoding].channels)
        return fit_landmarks(net, data, fit_idx, val_idx, cfg, contract,
                             FitOptions(checkpoint=ckpt, progress=False, resume=resume))

    whole = run(tmp_path / "whole.pt")
    real_save, saves = state_mod.TrainState.save, []

    def save_then_die(self, path, *a, **kw):  # the checkpoint of epoch 1 is written, then the process is "killed"
        real_save(self, path, *a, **kw)
        saves.append(self.epoch)
        if self.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(state_mod.TrainState, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed.pt")
    monkeypatch.setattr(state_mod.TrainState, "save", real_save)
    resumed = run(tmp_path / "killed.pt", resume=True)
    assert saves == [0, 1] and [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    a, b = whole.predictor.net.state_dict(), resumed.predictor.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_label_slip_is_fixed_for_training_when_asked(synth_dir: Path, tmp_path: Path) -> None:
    """A film whose T1 corners are labelled left for right is left out by default, and trains with the
    slip fixed under landmarks.fix_labels; both runs report the check's counts."""
    import csv

    from spinexr.evaluation.landmark_cv import run_landmark_cv

    rows = list(csv.DictReader(open(synth_dir / "landmarks.csv", newline="")))
    rows[0]["x1"], rows[0]["x2"] = rows[0]["x2"], rows[0]["x1"]
    for r in rows:
        r["path"] = str((synth_dir / r["path"]).resolve())
    slipped = tmp_path / "slipped.csv"
    with open(slipped, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for fix, left_out in ((False, 1), (True, 0)):
        cfg = LandmarkConfig(input_height=96, input_width=48, epochs=1, batch_size=4, device="cpu", test_fraction=0,
                             fix_labels=fix)
        res = run_landmark_cv(slipped, cfg, tmp_path / f"run{fix}", folds=1, progress=False)
        assert res.labels_implausible == left_out
        assert res.label_check["fixed"] == 1 and res.label_check["fixes_by_kind"] == {"left and right corners swapped": 1}
        f0 = res.folds[0]
        assert f0["n_train"] + f0["n_val"] == res.n_films - left_out


def _aasce_folder(synth_dir: Path, root: Path, flat: bool) -> Path:
    """Five synthetic films as an AASCE folder: the three label CSVs in ``labels/`` beside ``images/``, or
    flat beside an image folder of another name (as the data is often unpacked)."""
    import csv
    import shutil

    from spinexr.data.landmarks import read_landmark_csv

    films = read_landmark_csv(synth_dir / "landmarks.csv").records[:5]
    lab = root if flat else root / "labels"
    images = root / ("boostnet_images" if flat else "images")
    lab.mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True)
    with open(lab / "filenames.csv", "w", newline="") as f, open(lab / "landmarks.csv", "w", newline="") as g, \
            open(lab / "angles.csv", "w", newline="") as a:
        for i, r in enumerate(films):
            name = f"sunhl-1th-01-Jan-2017-{100 + i} A AP{r.path.suffix}"
            shutil.copy(r.path, images / name)
            csv.writer(f).writerow([name])
            p = r.landmarks.reshape(68, 2)
            csv.writer(g).writerow([*(p[:, 0] / r.width), *(p[:, 1] / r.height)])
            csv.writer(a).writerow([10.0, 5.0, 5.0])
    return root


def test_aasce_folders_nested_and_flat_read_the_same(synth_dir: Path, tmp_path: Path) -> None:
    from spinexr.data.landmarks import load_landmark_source

    nested = load_landmark_source(_aasce_folder(synth_dir, tmp_path / "nested", flat=False))
    flat = load_landmark_source(_aasce_folder(synth_dir, tmp_path / "flat", flat=True))
    assert len(nested.records) == len(flat.records) == 5 and not flat.skipped
    for a, b in zip(nested.records, flat.records):
        assert a.path.name == b.path.name and a.group == b.group
        np.testing.assert_allclose(a.landmarks, b.landmarks)


def test_landmarks_evaluate_reads_a_flat_folder_and_refuses_others_before_loading(
        synth_dir: Path, tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    import spinexr.evaluation.landmark_eval as le
    from spinexr.cli import main

    flat = _aasce_folder(synth_dir, tmp_path / "flat", flat=True)
    assert main(["landmarks", "evaluate", str(tiny_models["landmarks"]), "--data", str(flat),
                 "--quiet"]) == 0
    assert "5 films" in capsys.readouterr().out
    (flat / "angles.csv").unlink()
    monkeypatch.setattr(le, "measurer_for", lambda *a, **k: pytest.fail("the models loaded before the data was read"))
    assert main(["landmarks", "evaluate", "--data", str(flat)]) == 2
    err = capsys.readouterr().err
    assert "not an AASCE folder: angles.csv missing" in err and "Traceback" not in err
