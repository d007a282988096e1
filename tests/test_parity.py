"""What is evaluated is what is deployed: evaluate, predict (torch and ONNX) and the service give the
same probabilities for the same films, the flip TTA is inside the deployed graph, the torch OOD score
equals the numpy detector's, and explanations use the trained resize."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from spinexr import CLASSES
from spinexr.data.contract import DataConfig, fit_to_square
from spinexr.data.imread import list_images, read_image
from spinexr.deploy.predictor import Predictor

TOL = 1e-5


def _eight(src: Path, dest: Path) -> Path:
    """Eight films of ``src`` (a class-folder tree), spread over the classes, copied to ``dest``."""
    files = list_images(src)
    picks = [files[i] for i in np.linspace(0, len(files) - 1, 8).astype(int)]
    for p in picks:
        (dest / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dest / p.parent.name / p.name)
    return dest


def _parity(model: Path, films: Path, tmp: Path) -> dict[str, np.ndarray]:
    pytest.importorskip("onnxruntime")
    from fastapi.testclient import TestClient

    from spinexr.deploy.export import export_onnx
    from spinexr.evaluation.external import evaluate_model
    from spinexr.pipeline import PipelineSpec
    from spinexr.serve import create_app

    evaluate_model(PipelineSpec(source=str(model), device="cpu"), films, tmp / "eval", bootstrap=20, progress=False)
    rows = {Path(r["path"]).name: r for r in csv.DictReader(open(tmp / "eval" / "predictions.csv"))}
    names = sorted(rows)
    paths = {p.name: p for p in list_images(films)}
    out = {"evaluate": np.array([[float(rows[n][f"p_{c}"]) for c in CLASSES] for n in names])}
    torch_pred = Predictor(model)
    out["predict_torch"] = np.array([[torch_pred.predict_file(paths[n])[0].probabilities[c] for c in CLASSES]
                                     for n in names])
    export_onnx(model, tmp / "m.onnx")
    onnx_pred = Predictor(tmp / "m.onnx")
    out["predict_onnx"] = np.array([[onnx_pred.predict_file(paths[n])[0].probabilities[c] for c in CLASSES]
                                    for n in names])
    with TestClient(create_app(model)) as client:
        svc = []
        for n in names:
            r = client.post("/v1/predict", files={"file": (n, paths[n].read_bytes())})
            assert r.status_code == 200, r.text
            svc.append([r.json()["probabilities"][c] for c in CLASSES])
    out["service"] = np.array(svc)
    return out


def _assert_agree(out: dict[str, np.ndarray]) -> None:
    ref = out["predict_torch"]
    assert ref.shape == (8, 3)
    for k, v in out.items():
        assert np.abs(v - ref).max() <= TOL, (k, np.abs(v - ref).max())


def test_parity_on_synthetic_films(trained_model: Path, synth_dir: Path, tmp_path: Path) -> None:
    _assert_agree(_parity(trained_model, _eight(synth_dir, tmp_path / "films"), tmp_path))


@pytest.mark.realdata
def test_parity_on_kauh_films(trained_model: Path, kauh_dir: Path, tmp_path: Path) -> None:
    _assert_agree(_parity(trained_model, _eight(kauh_dir, tmp_path / "films"), tmp_path))


def test_flip_tta_is_in_the_model_file_and_the_graph(trained_model: Path, synth_dir: Path) -> None:
    from spinexr.models.files import load_inference

    module, meta = load_inference(trained_model)
    assert meta["tta_flip"] is True and module.tta_flip
    img, _ = read_image(next(iter(list_images(synth_dir))))
    x8, _ = module.contract.to_input(img)
    x = torch.from_numpy(x8.astype(np.float32) / 255.0)[None, None]
    with torch.no_grad():
        lg_tta = module(x)[0]
        module.tta_flip = False
        lg_plain = module(x)[0]
        lg_mirror = module(torch.flip(x, dims=[3]))[0]
    assert torch.allclose(lg_tta, 0.5 * (lg_plain + lg_mirror), atol=1e-5)
    assert not torch.allclose(lg_plain, lg_mirror, atol=1e-4)  # the flip changes something to average


def test_torch_ood_score_equals_numpy(trained_model: Path, synth_dir: Path) -> None:
    from spinexr.engine.inference import extract_features
    from spinexr.models.files import load_inference

    module, _ = load_inference(trained_model)
    assert module.ood is not None
    imgs = [read_image(p)[0] for p in list_images(synth_dir)[:8]]
    x_u8 = torch.from_numpy(np.stack([module.contract.to_input(i)[0] for i in imgs])[:, None])
    feats = extract_features(module.model, module.contract, x_u8, None, torch.device("cpu"))
    with torch.no_grad():
        _, _, score = module(x_u8.float() / 255.0)
    np.testing.assert_allclose(score.numpy(), module.ood.score(feats), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("mode", ["crop", "stretch", "strip", "window"])
def test_gallery_uses_the_trained_resize(mode: str, synth_dir: Path, tmp_path: Path) -> None:
    from spinexr.data.dataset import prepare_dataset
    from spinexr.deploy.predictor import InferenceModule
    from spinexr.evaluation._common import explain_fold
    from spinexr.models import create_model

    torch.manual_seed(0)
    contract = DataConfig(64, resize=mode)
    module = InferenceModule(create_model("small", attention="none"), contract).eval()
    data = prepare_dataset(synth_dir, [64], mode, progress=False)
    seen: list[torch.Tensor] = []
    module.model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    te = np.arange(6)
    probs = np.eye(3)[data.labels[te]] * 0.8 + 0.2 / 3
    info = explain_fold(module, data, te, probs, tmp_path, "small", n_each=2)
    assert info["gallery"]
    singles = [x for x in seen if x.shape[0] == 1]
    assert singles
    for path in data.paths[:6]:
        img, _ = read_image(path)
        want = contract.normalize(torch.from_numpy(fit_to_square(img, 64, mode)[0].astype(np.float32) / 255.0))
        other = contract.normalize(torch.from_numpy(fit_to_square(img, 64, "letterbox")[0].astype(np.float32) / 255.0))
        if any(torch.allclose(x[0, 0], want, atol=1e-6) for x in singles):
            assert not torch.allclose(want, other, atol=1e-3)  # the modes really differ for this film
            break
    else:
        pytest.fail(f"no gallery input matched the {mode} contract")
