"""The vertebra refiner (the second landmark stage): its crop geometry round-trips, a crop shows the
film where the geometry says, the mirror reading maps back, and training on synthetic spines lowers
its corner error."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from spinexr.data.landmarks import LandmarkRecord
from spinexr.data.synth import ap_landmarks, render_ap
from spinexr.engine.refine import RefineConfig, fit_refiner, jittered_frames, prepare_refine_data, sample_batch, val_error
from spinexr.engine.state import FitOptions
from spinexr.models.landmark import LandmarkNet
from spinexr.models.refine import MIRROR4, VertebraRefiner, cut_crops, frames, from_crop, to_crop, vertebra_turns


def _spines(n: int, seed: int = 0) -> torch.Tensor:
    """Synthetic ordered spines of the synth generator's films, (n, 17, 4, 2) pixels."""
    rng = np.random.default_rng(seed)
    return torch.as_tensor(np.stack([ap_landmarks(render_ap(rng, float(rng.uniform(0, 60)), scale=0.5))
                                     for _ in range(n)]), dtype=torch.float32)


def test_crop_coordinates_round_trip_on_synthetic_spines() -> None:
    c = _spines(6)
    fr = frames(c)
    assert fr.shape == (6, 17, 5)
    q = to_crop(c, fr, 96)
    back = from_crop(q, fr, 96)
    assert torch.allclose(back, c, atol=1e-3)
    # Each vertebra's own corners fall inside its crop, around the middle.
    assert (q > 0).all() and (q < 95).all()
    assert torch.allclose(q.mean(dim=-2), torch.full_like(q.mean(dim=-2), 47.5), atol=1e-3)


def test_jittered_frames_still_decode_what_they_encode() -> None:
    c = _spines(3)
    cfg = RefineConfig()
    fr = jittered_frames(c, cfg, torch.Generator().manual_seed(1))
    assert not torch.allclose(fr, frames(c))  # moved
    assert torch.allclose(fr[..., 2:4].norm(dim=-1), torch.ones(3, 17))  # still a unit direction
    assert torch.allclose(from_crop(to_crop(c, fr, 64), fr, 64), c, atol=1e-3)


@pytest.mark.parametrize("turn", [0.0, 0.5, -1.2])
def test_a_crop_shows_the_film_where_the_geometry_puts_it(turn: float) -> None:
    film = torch.zeros(1, 1, 400, 300)
    ey = torch.tensor([np.sin(turn), np.cos(turn)], dtype=torch.float32)
    fr = torch.tensor([[140.0, 210.0, float(ey[0]), float(ey[1]), 30.0]])
    for point in ([140.0, 210.0], [150.0, 200.0], [128.0, 230.0]):
        film.zero_()
        film[0, 0, int(point[1]), int(point[0])] = 1.0
        crop = cut_crops(film, fr, 64)[0, 0]
        where = to_crop(torch.tensor([[point]]), fr, 64)[0, 0]
        iy, ix = np.unravel_index(int(crop.argmax()), crop.shape)
        assert abs(ix - float(where[0])) <= 1.0 and abs(iy - float(where[1])) <= 1.0


def test_mirror_reading_maps_back_to_the_same_corners() -> None:
    """A net that reads a crop and its mirror image consistently gives the same corners with the flip
    as without: the mirrored reading is mapped back (x -> S - 1 - x, left and right corners swapped)."""
    torch.manual_seed(0)
    ref = VertebraRefiner(LandmarkNet("resnet18", out_channels=4), crop=64, tta_flip=False).eval()
    crops = torch.rand(2, 1, 64, 64)
    sym = torch.cat([crops[..., :32], crops[..., :32].flip(-1)], dim=-1)  # mirror-symmetric crops
    with torch.no_grad():
        plain = ref.read_crops(sym)
        ref.tta_flip = True
        both = ref.read_crops(sym)
    mirrored = plain[:, MIRROR4]
    mirrored = torch.stack([63 - mirrored[..., 0], mirrored[..., 1]], dim=-1)
    assert torch.allclose(both, (plain + mirrored) / 2, atol=1e-4)


def test_passes_before_the_last_read_the_mirror_only_when_told() -> None:
    """Two passes with ``flip_every_pass`` False: the first pass reads the 17 crops as they are, the last
    one the crops and their mirror images (34); with it True both passes read 34. The corners are those of
    the same two readings done by hand."""
    torch.manual_seed(1)
    ref = VertebraRefiner(LandmarkNet("resnet18", out_channels=4), crop=32, film_height=128, iterations=2,
                          flip_every_pass=False).eval()
    film = torch.rand(1, 1, 128, 64)
    case = render_ap(np.random.default_rng(0), 20.0, scale=0.25)
    start = torch.as_tensor(ap_landmarks(case).reshape(17, 4, 2) * 128 / case.image.shape[0], dtype=torch.float32)
    seen: list[int] = []

    def reader(crops: torch.Tensor) -> torch.Tensor:
        seen.append(crops.shape[0])
        return ref.read_plain(crops)

    with torch.no_grad():
        got = ref(film, start, reader)
        fr = frames(start[None], ref.span)[0]
        once = from_crop(ref.read_crops(cut_crops(film, fr, 32), flip=False), fr, 32)
        fr = frames(once[None], ref.span)[0]
        want = from_crop(ref.read_crops(cut_crops(film, fr, 32), flip=True), fr, 32)
        assert seen == [17, 34] and torch.allclose(got, want, atol=1e-4)
        ref.flip_every_pass = True
        seen.clear()
        both = ref(film, start, reader)
    assert seen == [34, 34] and not torch.allclose(both, got, atol=1e-3)


def _turned(v: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """(17, 4, 2) corners with vertebra k turned by ``degrees[k]`` about its centre."""
    t = torch.deg2rad(degrees)[:, None]
    c = v.mean(dim=1, keepdim=True)
    w = v - c
    return c + torch.stack([w[..., 0] * torch.cos(t) - w[..., 1] * torch.sin(t),
                            w[..., 0] * torch.sin(t) + w[..., 1] * torch.cos(t)], dim=-1)


def test_vertebra_turns_are_the_turn_of_each_midline() -> None:
    v = _spines(1, seed=4)[0]
    turn = torch.linspace(-30, 30, 17)
    assert torch.allclose(vertebra_turns(v, _turned(v, turn)), turn.abs(), atol=1e-3)
    assert torch.allclose(vertebra_turns(v, v), torch.zeros(17), atol=1e-4)


def test_a_later_pass_that_turns_a_vertebra_too_far_keeps_the_earlier_pass() -> None:
    """With ``max_turn``, a second pass that turns vertebra k by k degrees (a hand-made reader) is taken
    where k is within the limit and refused (the first pass's corners kept) where it is not; without a
    limit every vertebra takes the second pass."""
    ref = VertebraRefiner(None, crop=32, film_height=128, tta_flip=False, iterations=2)
    film = torch.rand(1, 1, 128, 64)
    case = render_ap(np.random.default_rng(0), 20.0, scale=0.25)
    start = torch.as_tensor(ap_landmarks(case).reshape(17, 4, 2) * 128 / case.image.shape[0], dtype=torch.float32)
    box = torch.tensor([[8.0, 10.0], [23.0, 10.0], [8.0, 21.0], [23.0, 21.0]])  # centred in the 32 px crop
    calls: list[int] = []

    def reader(crops: torch.Tensor) -> torch.Tensor:
        calls.append(crops.shape[0])
        level = torch.arange(17, dtype=torch.float32)
        flat = box.expand(17, 4, 2) - 15.5
        return _turned(flat, level if len(calls) % 2 == 0 else torch.zeros(17)) + 15.5

    with torch.no_grad():
        first, free = ref.passes(film, start, reader)
        assert torch.allclose(vertebra_turns(first, free), torch.arange(17.0), atol=1e-3)
        ref.max_turn = 8.5
        first_again, held = ref.passes(film, start, reader)
        assert torch.allclose(first_again, first)
        assert torch.allclose(held[:9], free[:9]) and torch.allclose(held[9:], first[9:])
        assert torch.allclose(ref(film, start, reader), held)


def test_the_limit_on_turning_travels_in_the_refiner_file(refiner_file, tmp_path) -> None:
    from spinexr.errors import WeightsError
    from spinexr.models.files import load_refiner_model, save_refiner_model, write_model_file

    ref, meta = load_refiner_model(refiner_file)
    assert ref.max_turn is None  # the default, and what files written before it mean
    ref.iterations, ref.max_turn = 2, 4.0
    again = save_refiner_model(ref, tmp_path / "guarded.safetensors", meta["settings"], meta["training_data"])
    assert load_refiner_model(again)[0].max_turn == 4.0
    from safetensors.torch import load_file

    bad_meta = {**load_refiner_model(again)[1], "max_turn": "four"}
    bad = write_model_file(load_file(str(again)), bad_meta, tmp_path / "bad_turn.safetensors")
    with pytest.raises(WeightsError, match="max_turn 'four'"):
        load_refiner_model(bad)


def test_a_gain_on_tilts_in_the_refiner_file_widens_what_is_measured_and_drawn(refiner_file, tiny_models, synth_dir,
                                                                               tmp_path) -> None:
    """``tilt_gain`` in a refiner file: each refined vertebra is turned away from the spine's mean tilt by
    that gain, so the corners returned (and drawn) read angles that many times as large; a malformed gain
    is refused with its value."""
    from safetensors.torch import load_file

    from spinexr.data.imread import read_image
    from spinexr.deploy.measure import SpineMeasurer
    from spinexr.errors import WeightsError
    from spinexr.geometry.cobb import widen_tilts
    from spinexr.models.files import load_refiner_model, save_refiner_model, write_model_file

    ref, meta = load_refiner_model(refiner_file)
    assert meta.get("tilt_gain", 1.0) == 1.0
    widened = save_refiner_model(ref, tmp_path / "gain.safetensors", meta["settings"], meta["training_data"],
                                 tilt_gain=1.25)
    plain = SpineMeasurer(tiny_models["landmarks"], refiner=refiner_file)
    wide = SpineMeasurer(tiny_models["landmarks"], refiner=widened)
    assert plain.tilt_gain == 1.0 and wide.tilt_gain == 1.25
    img, _ = read_image(sorted(synth_dir.rglob("*.jpg"))[0])
    first, _ = plain.first_stage([img])[0]
    # The tiny refiner places every corner of a vertebra at one point, with no tilt to widen: the refiner's
    # corners are those of a curved spine here (its own reading is tested above), what follows is the file's.
    curved = _turned(_spines(1, seed=3)[0], torch.linspace(-12, 15, 17)).double().numpy()
    for m in (plain, wide):
        m.refine = lambda img, corners: curved.copy()
    a, b = plain.second_stage(img, first)[0], wide.second_stage(img, first)[0]
    assert np.allclose(a, curved) and np.allclose(b, widen_tilts(a, 1.25), atol=1e-6)
    assert not np.allclose(a, b, atol=1e-3)
    h = img.shape[0]
    assert wide.angles(b, h).angles == pytest.approx(tuple(1.25 * x for x in plain.angles(a, h).angles), abs=1e-4)
    bad = write_model_file(load_file(str(widened)), {**load_refiner_model(widened)[1], "tilt_gain": 7},
                           tmp_path / "bad_gain.safetensors")
    with pytest.raises(WeightsError, match="tilt_gain 7"):
        SpineMeasurer(tiny_models["landmarks"], refiner=bad)


@pytest.mark.parametrize("bad", [0, -3, 181, True, "abc", [4]])
def test_a_limit_on_turning_that_is_not_degrees_is_refused_with_its_value(bad) -> None:
    from spinexr.models.refine import turn_limit

    with pytest.raises(ValueError, match="max_turn"):
        turn_limit(bad)
    assert turn_limit(None) is None and turn_limit("6") == 6.0 and turn_limit(180) == 180.0


def _records(tmp_path, n: int, seed: int) -> list[LandmarkRecord]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        case = render_ap(rng, float(rng.uniform(5, 50)), scale=0.5)
        p = tmp_path / f"film{i}.png"
        Image.fromarray(case.image).save(p)
        h, w = case.image.shape
        recs.append(LandmarkRecord(p, ap_landmarks(case), w, h, f"case{i}"))
    return recs


def test_training_lowers_the_corner_error_on_synthetic_films(tmp_path) -> None:
    cfg = replace(RefineConfig(), crop=48, film_height=256, epochs=4, batch_size=16, lr=3e-3, patience=10,
                  encoder="resnet18")
    data = prepare_refine_data(_records(tmp_path, 8, 0), cfg.film_height, progress=False)
    x, y = sample_batch(data, np.array([[0, 3], [1, 8]]), cfg, torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 48, 48) and y.shape == (2, 4, 2)
    torch.manual_seed(0)
    ref = VertebraRefiner(LandmarkNet(cfg.encoder, out_channels=4), crop=cfg.crop, film_height=cfg.film_height)
    fit_idx = np.arange(6)
    before = val_error(ref, data, fit_idx, cfg)
    fit = fit_refiner(ref, data, fit_idx, np.arange(6, 8), cfg, FitOptions(progress=False))
    after = val_error(ref, data, fit_idx, cfg)
    assert len(fit["history"]) == cfg.epochs
    assert after < before * 0.8
    # The deployed path: a film's corners in, refined corners out, nearer the truth than a nudged start.
    start = data.corners[0] + torch.tensor([2.0, -1.5])
    with torch.no_grad():
        out = ref(data.films[0], start)
    assert out.shape == (17, 4, 2)
    assert float((out - data.corners[0]).norm(dim=-1).mean()) < float((start - data.corners[0]).norm(dim=-1).mean())


@pytest.fixture(scope="module")
def refiner_file(tmp_path_factory) -> Path:
    from spinexr.models.files import save_refiner_model

    torch.manual_seed(3)
    ref = VertebraRefiner(LandmarkNet("resnet18", out_channels=4), crop=32, film_height=256)
    return save_refiner_model(ref, tmp_path_factory.mktemp("refiner") / "refiner.safetensors",
                              RefineConfig(crop=32, film_height=256).to_dict(), {"n_train": 0})


def test_a_refiner_file_loads_as_it_was_written(refiner_file) -> None:
    from spinexr.models.files import load_refiner_model, model_kind

    ref, meta = load_refiner_model(refiner_file)
    assert model_kind(refiner_file) == "refiner"
    assert (ref.crop, ref.film_height, ref.tta_flip, ref.iterations) == (32, 256, True, 1)
    assert meta["centreline_weight"] == 0.0 and meta["format"] == "spinexr-refiner/1"
    torch.manual_seed(3)
    again = VertebraRefiner(LandmarkNet("resnet18", out_channels=4), crop=32, film_height=256).eval()
    crops = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ref.read_crops(crops), again.read_crops(crops), atol=1e-5)


def test_a_malformed_refiner_file_is_refused_with_its_name(tmp_path) -> None:
    from spinexr.errors import WeightsError
    from spinexr.models.files import load_refiner_model, write_model_file

    bad = write_model_file({"w": torch.zeros(1)}, {"format": "spinexr-refiner/1", "encoder": "resnet18"},
                           tmp_path / "bad.safetensors")
    with pytest.raises(WeightsError, match="bad.safetensors"):
        load_refiner_model(bad)


def test_the_measurer_runs_the_refiner_as_the_bundle_names_it(refiner_file, tiny_models, synth_dir, tmp_path) -> None:
    """A bundle with a refiner: verified like its other files; the pipeline's measurer reads each
    vertebra again (the corners differ from the first stage's, by exactly what the refiner does)."""
    from spinexr.data.contract import fit_to_box
    from spinexr.data.imread import read_image
    from spinexr.deploy.bundle import load_bundle, write_bundle
    from spinexr.deploy.measure import SpineMeasurer
    from spinexr.errors import WeightsError
    from spinexr.models.refine import refiner_box
    from spinexr.pipeline import Pipeline

    b = write_bundle(tmp_path / "b", tiny_models["classifier"], tiny_models["landmarks"], None, name="b",
                     refiner=refiner_file)
    assert b.refiner is not None and b.manifest["refiner"]["sha256"]
    pipe = Pipeline.load(tmp_path / "b")
    assert pipe.measurer is not None and pipe.measurer.refiner is not None
    img, _ = read_image(sorted(synth_dir.rglob("*.jpg"))[0])
    plain = SpineMeasurer(tiny_models["landmarks"]).measure(img).landmarks
    refined = pipe.measurer.measure(img).landmarks
    x8, pl = fit_to_box(img, *refiner_box(*img.shape, 256), "stretch")
    film = torch.from_numpy(x8.astype(np.float32) / 255.0)[None, None]
    start = torch.as_tensor(pl.points_to_input(plain.reshape(-1, 2)).reshape(17, 4, 2), dtype=torch.float32)
    with torch.no_grad():
        by_hand = pl.points_to_original(pipe.measurer.refiner(film, start).numpy().reshape(-1, 2)).reshape(17, 4, 2)
    assert np.allclose(refined, by_hand, atol=1e-3) and not np.allclose(refined, plain, atol=1e-3)
    assert pipe.measurer.centreline_weight == 0.0  # the refiner's file says how its corners are read
    (tmp_path / "b" / "refiner.safetensors").write_bytes(refiner_file.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(WeightsError, match="changed since the bundle was made"):
        load_bundle(tmp_path / "b")


def test_the_onnx_backend_reads_the_crops_with_the_refiners_export(refiner_file, tiny_models, synth_dir, tmp_path,
                                                                   monkeypatch) -> None:
    """``--backend onnx`` with a bundle's refiner: its crop reading is exported once (cached under the
    file's digest) and gives PyTorch's corners."""
    from spinexr.data.imread import read_image
    from spinexr.deploy.bundle import write_bundle
    from spinexr.pipeline import Pipeline

    monkeypatch.setenv("SPINEXR_CACHE", str(tmp_path / "cache"))
    write_bundle(tmp_path / "b", tiny_models["classifier"], tiny_models["landmarks"], None, name="b",
                 refiner=refiner_file)
    onnx, torch_ = Pipeline.load(tmp_path / "b", backend="onnx"), Pipeline.load(tmp_path / "b")
    assert onnx.measurer.refiner_session is not None and torch_.measurer.refiner_session is None
    assert len(list((tmp_path / "cache" / "onnx").glob("refiner-*.onnx"))) == 1
    for p in sorted(synth_dir.rglob("*.jpg"))[:3]:
        img, _ = read_image(p)
        a, b = onnx.measurer.measure(img).landmarks, torch_.measurer.measure(img).landmarks
        assert np.abs(a - b).max() < 0.05  # film pixels
    # Two passes, the mirror read on the last one alone, a limit on turning (the settings travel in the file): the export
    # reads the crops as they are, the mirror reading is done around it, and the corners still agree.
    from spinexr.models.files import load_refiner_model, save_refiner_model

    ref, meta = load_refiner_model(refiner_file)
    ref.iterations, ref.flip_every_pass, ref.max_turn = 2, False, 3.0
    two = save_refiner_model(ref, tmp_path / "two" / "refiner.safetensors", meta["settings"], meta["training_data"])
    assert load_refiner_model(two)[0].flip_every_pass is False
    write_bundle(tmp_path / "b2", tiny_models["classifier"], tiny_models["landmarks"], None, name="b2", refiner=two)
    onnx, torch_ = Pipeline.load(tmp_path / "b2", backend="onnx"), Pipeline.load(tmp_path / "b2")
    for p in sorted(synth_dir.rglob("*.jpg"))[:3]:
        img, _ = read_image(p)
        a, b = onnx.measurer.measure(img).landmarks, torch_.measurer.measure(img).landmarks
        assert np.abs(a - b).max() < 0.05


def test_int8_weights_decode_to_within_half_a_step_and_load_as_a_refiner(refiner_file, tmp_path) -> None:
    """The bundled refiner's storage: weight-only int8 with one scale per output channel. Each weight
    comes back within half a quantisation step; the packed file is about a quarter of float32's; the
    refiner it loads reads crops as the float32 one does; a scale that does not fit is refused."""
    from safetensors.torch import load_file

    from spinexr.deploy.bundled import bundled_models, pack
    from spinexr.errors import WeightsError
    from spinexr.models.files import INT8_SCALE, dequantized, int8_weights, load_refiner_model, write_model_file

    state = load_file(str(refiner_file))
    q = int8_weights(state)
    back = dequantized(q)
    assert set(back) == set(state)
    for k, v in state.items():
        if v.is_floating_point() and v.dim() >= 2:
            assert q[k].dtype == torch.int8
            step = q[k + INT8_SCALE].view(-1, *[1] * (v.dim() - 1))
            assert bool(((back[k] - v).abs() <= step / 2 + 1e-7).all()), k
    dest = pack(refiner_file, "refiner", "# refiner card\n", headline="tiny", root=tmp_path / "bundled")
    assert dest.stat().st_size < 0.3 * refiner_file.stat().st_size
    listed = {m.name: m for m in bundled_models(tmp_path / "bundled")}
    assert listed["refiner"].kind == "refiner" and "vertebra refiner" in listed["refiner"].describe()
    full, _ = load_refiner_model(refiner_file)
    small, meta = load_refiner_model(dest)
    assert meta["bundled"]["weights_dtype"] == "int8"
    crops = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert float((full.read_crops(crops) - small.read_crops(crops)).abs().max()) < 1.0  # crop pixels
    k = next(k for k in q if k.endswith(INT8_SCALE))
    bad = write_model_file({**q, k: q[k][:1]}, meta, tmp_path / "bad.safetensors", sidecar=False)
    with pytest.raises(WeightsError, match="bad.safetensors"):
        load_refiner_model(bad)


def test_cv_landmarks_takes_a_bundle_and_its_refiner(refiner_file, tiny_models, tmp_path) -> None:
    """``cv --landmarks BUNDLE`` scores the decision on the bundle's two-stage measurement; the stored
    folds' evidence digest changes with the refiner, so no fold keeps figures of another measurement."""
    from spinexr.deploy.bundle import write_bundle
    from spinexr.errors import SpinexrError
    from spinexr.evaluation.cv import landmark_stages
    from spinexr.evaluation.decision_cv import evidence_digest

    write_bundle(tmp_path / "b", tiny_models["classifier"], tiny_models["landmarks"], None, name="b",
                 refiner=refiner_file)
    lm, ref = landmark_stages(str(tmp_path / "b"))
    assert lm.name == "landmarks.safetensors" and ref is not None and ref.name == "refiner.safetensors"
    assert landmark_stages(str(tiny_models["landmarks"])) == (tiny_models["landmarks"], None)
    assert evidence_digest(lm, ref) != evidence_digest(lm)
    write_bundle(tmp_path / "c", tiny_models["classifier"], None, None, name="c")
    with pytest.raises(SpinexrError, match="has no landmark model"):
        landmark_stages(str(tmp_path / "c"))
    with pytest.raises(SpinexrError, match="no such file"):
        landmark_stages(str(tmp_path / "nothing.safetensors"))


def test_a_refined_spine_is_judged_on_its_order_not_on_crossing_endplates() -> None:
    """Neighbouring endplates placed one vertebra at a time may cross across a thin disc: the spine is
    still measured (the whole-spine model's corners judge it); a refined spine out of order is not."""
    from spinexr.deploy.measure import SpineMeasurer
    from spinexr.geometry.plausibility import implausibility

    v = _spines(1)[0].numpy().astype(np.float64)
    assert not implausibility(v)
    crossed = v.copy()
    h = float(np.mean(v[:, 2:, 1] - v[:, :2, 1]))
    crossed[6, :2, 1] -= 0.8 * h  # T7's upper endplate pulled well into T6
    assert any("overlap" in r for r in implausibility(crossed))
    assert SpineMeasurer.judge_refined([], crossed) == []
    assert SpineMeasurer.judge_refined(["gap between T1 and T2"], crossed) == ["gap between T1 and T2"]
    swapped = v.copy()
    swapped[[8, 9]] = swapped[[9, 8]]
    assert any("order broken" in r for r in SpineMeasurer.judge_refined([], swapped))


def test_the_measurer_runs_both_networks_folded_with_the_trained_networks_corners(refiner_file, tiny_models,
                                                                                   synth_dir) -> None:
    """On PyTorch the measurer runs each network in its inference form (batch norms folded, channels-last):
    no batch norm is left, and the corners are those of the networks as trained, to float rounding. A
    network that cannot be traced runs as it is."""
    from spinexr.data.imread import read_image
    from spinexr.deploy.measure import SpineMeasurer
    from spinexr.models.files import load_landmark_model, load_refiner_model
    from spinexr.models.landmark import ChannelsLast, inference_form

    m = SpineMeasurer(tiny_models["landmarks"], refiner=refiner_file)
    for net in (m.predictor.net, m.refiner.net):
        assert isinstance(net, ChannelsLast)
        assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in net.modules())
    pred, _ = load_landmark_model(tiny_models["landmarks"])
    ref, _ = load_refiner_model(refiner_file)
    img, _ = read_image(sorted(synth_dir.rglob("*.jpg"))[0])
    x8, _ = m.contract.to_input(img)
    x = torch.from_numpy(x8.astype(np.float32) / 255.0)[None, None]
    crops = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(m.predictor(x)[0], pred(x)[0], atol=1e-3)
        assert torch.allclose(m.refiner.read_crops(crops), ref.read_crops(crops), atol=1e-3)

    class Branchy(torch.nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return t if float(t.sum()) > 0 else -t

    branchy = Branchy()
    assert inference_form(branchy) is branchy


def test_refiner_card_only_rewrites_the_card_and_headline_and_nothing_else(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``scripts/bundle_models.py --refiner-card-only``: the card and the headline in the file change, the tensors
    come back as they were, the manifest's SHA-256 follows (the bundle still loads, verified), and a second run
    with nothing new writes nothing."""
    import shutil
    import sys

    from safetensors.torch import load_file

    from spinexr.deploy.bundle import load_bundle
    from spinexr.deploy.bundled import BUNDLE_DIR
    from spinexr.models.files import raw_metadata

    root = Path(__file__).resolve().parents[1]
    monkeypatch.syspath_prepend(str(root / "scripts"))
    sys.modules.pop("bundle_models", None)
    import bundle_models

    copy = tmp_path / "bundled"
    shutil.copytree(BUNDLE_DIR, copy)
    monkeypatch.setattr(bundle_models, "BUNDLE_DIR", copy)
    monkeypatch.setattr(bundle_models, "refiner_card", lambda a, meta: ("# a new card\n", "a new headline"))
    before = load_file(str(copy / "refiner.safetensors"))
    others = {f: (copy / f).read_bytes() for f in ("classifier.safetensors", "landmarks.safetensors")}
    assert bundle_models.main(["--refiner-card-only"]) == 0
    assert (copy / "refiner.md").read_text() == "# a new card\n"
    assert raw_metadata(copy / "refiner.safetensors")["bundled"]["headline"] == "a new headline"
    after = load_file(str(copy / "refiner.safetensors"))
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert all((copy / f).read_bytes() == b for f, b in others.items())
    load_bundle(copy)  # the manifest's digests match the files
    stamp = (copy / "refiner.safetensors").stat().st_mtime_ns
    assert bundle_models.main(["--refiner-card-only"]) == 0
    assert (copy / "refiner.safetensors").stat().st_mtime_ns == stamp


def test_a_two_stage_view_check_judges_a_refined_film_from_both_stages(refiner_file, tiny_models, synth_dir, tmp_path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A landmark file whose view check reads both stages: with its refiner each measurement keeps the first
    stage's corners and is judged from both; without one the films are not judged, and the user is told why."""
    from safetensors.torch import load_file

    from spinexr.data.imread import read_image
    from spinexr.deploy.measure import SpineMeasurer
    from spinexr.geometry.view import TWO_STAGE_FEATURES, fit_view_check, spine_view_features
    from spinexr.models.files import raw_metadata, write_model_file

    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0.0, 1.0, (30, 8)), rng.normal(1.0, 1.0, (30, 8))]
    check = fit_view_check(x, np.r_[np.ones(30), np.zeros(30)].astype(bool), 0.9, "test")
    src = tiny_models["landmarks"]
    lm = write_model_file(load_file(str(src)), {**raw_metadata(src), "view_check": check.to_meta()},
                          tmp_path / "landmarks.safetensors")
    img, _ = read_image(sorted(synth_dir.rglob("*.jpg"))[0])
    m = SpineMeasurer(lm, refiner=refiner_file).measure(img)
    assert m.first_stage is not None and m.first_stage.shape == (17, 4, 2)
    assert m.view is not None and check.features == TWO_STAGE_FEATURES
    assert m.view_probability == pytest.approx(
        check.probability(spine_view_features(m.landmarks, img.shape[0], m.confidence, m.first_stage)))
    assert "first_stage" not in m.to_dict()  # not part of the output
    with caplog.at_level("WARNING"):
        alone = SpineMeasurer(lm).measure(img)
    assert alone.first_stage is None and alone.view is None
    assert "reads the vertebra refiner's corners too" in caplog.text


def test_the_refiner_has_a_verb(synth_dir: Path, tmp_path: Path, capsys) -> None:
    """`spinexr landmarks train --stage refiner` trains the shipped kind of refiner on a landmark set and writes a
    file a bundle takes; flags that are not a refiner's setting are refused by name."""
    from spinexr.cli import main
    from spinexr.models.files import model_kind, raw_metadata

    out = tmp_path / "ref"
    assert main(["landmarks", "train", "--stage", "refiner", "--data", str(synth_dir / "landmarks.csv"), "--out",
                 str(out), "--epochs", "1", "--batch-size", "64", "--quiet"]) == 0
    said = capsys.readouterr().out
    f = out / "models" / "refiner.safetensors"
    assert model_kind(f) == "refiner" and "refiner.safetensors" in said
    meta = raw_metadata(f)
    rec = json.loads((out / "metrics.json").read_text())
    assert meta["settings"]["epochs"] == 1 and rec["epochs_run"] == 1 and rec["n_train"] + rec["n_val"] > 1
    assert main(["landmarks", "train", "--stage", "refiner", "--data", str(synth_dir / "landmarks.csv"), "--out",
                 str(tmp_path / "bad"), "--input-height", "256", "--quiet"]) == 2
    assert "--input-height: not a setting of the vertebra refiner" in capsys.readouterr().err


def test_every_kind_of_model_file_has_one_registry_entry_and_an_exporter(refiner_file, tiny_models, tmp_path,
                                                                         capsys) -> None:
    """The registry tells each file's kind from its metadata, loads it, names its bundle part; every kind
    has an exporter, and ``spinexr export`` takes each kind (a refiner's crop reading included)."""
    import onnx as onnx_lib

    from spinexr.cli import main
    from spinexr.deploy.bundle import PARTS
    from spinexr.deploy.export import EXPORTERS
    from spinexr.models.files import KINDS, file_kind

    assert set(KINDS) == set(EXPORTERS) == set(PARTS) == {"classifier", "landmarks", "refiner"}
    for name, path in (("classifier", tiny_models["classifier"]), ("landmarks", tiny_models["landmarks"]),
                       ("refiner", refiner_file)):
        kind = file_kind(path)
        assert kind.name == name and kind.metadata(path)["format"] in kind.formats
        assert kind.load(path, "cpu")[1]["format"] in kind.formats
    out = tmp_path / "refiner.onnx"
    assert main(["export", str(refiner_file), "--onnx", str(out)]) == 0
    onnx_lib.checker.check_model(str(out))
    assert "crop pixels of PyTorch" in capsys.readouterr().out
