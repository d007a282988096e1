"""The pipeline, its bundles and the one prediction document (spinexr-prediction/2)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from spinexr.cli import main
from spinexr.data.decoding import Decoded
from spinexr.data.imread import list_images, read_image
from spinexr.deploy.bundle import MANIFEST, load_bundle, write_bundle
from spinexr.deploy.decision import RULE_VERSION
from spinexr.deploy.document import SCHEMA, flatten, schema
from spinexr.deploy.measure import SpineMeasurer
from spinexr.deploy.predictor import Predictor
from spinexr.errors import SpinexrError, WeightsError
from spinexr.pipeline import Pipeline

jsonschema = pytest.importorskip("jsonschema")
pytestmark = pytest.mark.slow


def _validate(doc: dict) -> None:
    jsonschema.Draft202012Validator(schema()).validate(doc)


@pytest.fixture(scope="module")
def films(synth_dir: Path) -> list[Path]:
    return [sorted(list_images(synth_dir / c))[0] for c in ("Normal", "Scoliosis", "Spondylolisthesis")]


@pytest.fixture(scope="module")
def bundle_dir(tiny_bundle: Path) -> Path:
    return tiny_bundle


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())
    assert schema()["properties"]["schema"]["const"] == SCHEMA


@pytest.mark.parametrize("with_landmarks", [False, True])
def test_predict_json_follows_the_schema(tiny_models: dict[str, Path], films: list[Path], tmp_path: Path,
                                         with_landmarks: bool) -> None:
    out = tmp_path / "x.json"
    lm = ["--landmarks", str(tiny_models["landmarks"])] if with_landmarks else []
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert main(["predict", str(tiny_models["classifier"]), *map(str, films), str(bad), *lm, "--out", str(out),
                 "--quiet"]) == 0
    docs = json.loads(out.read_text())
    assert len(docs) == 4
    for d in docs:
        _validate(d)
    ok = [d for d in docs if d["status"] == "ok"]
    assert len(ok) == 3 and docs[-1]["status"] == "error" and docs[-1]["error"]["kind"] == "format"
    assert all((d["spine"] is not None) == with_landmarks and (d["decision"] is not None) == with_landmarks for d in ok)
    if with_landmarks:
        assert all(np.asarray(d["spine"]["landmarks"]).shape == (17, 4, 2) for d in ok)
        assert all(d["label"] == d["decision"]["label"] for d in ok)


def test_service_answers_with_the_document(tiny_models: dict[str, Path], films: list[Path]) -> None:
    from fastapi.testclient import TestClient

    from spinexr.serve import create_app

    for lm in (None, tiny_models["landmarks"]):
        with TestClient(create_app(tiny_models["classifier"], landmarks=lm)) as c:
            r = c.post("/v1/predict", files={"file": (films[1].name, films[1].read_bytes(), "image/jpeg")})
            assert r.status_code == 200, r.text
            doc = r.json()
            _validate(doc)
            assert doc["path"] == "upload" and (doc["spine"] is None) == (lm is None)
            assert doc["timing_ms"]["total"] > 0
            assert c.get("/v1/schema").json() == schema()


def test_csv_and_jsonl_are_the_same_documents(tiny_models: dict[str, Path], films: list[Path], tmp_path: Path) -> None:
    lm = ["--landmarks", str(tiny_models["landmarks"])]
    src = [str(tiny_models["classifier"]), *map(str, films)]
    for name in ("p.json", "p.jsonl", "p.csv"):
        assert main(["predict", *src, *lm, "--out", str(tmp_path / name), "--quiet"]) == 0
    docs = json.loads((tmp_path / "p.json").read_text())
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    rows = list(csv.DictReader(open(tmp_path / "p.csv", newline="")))
    strip = [{k: v for k, v in d.items() if k != "timing_ms"} for d in docs]
    assert strip == [{k: v for k, v in d.items() if k != "timing_ms"} for d in lines]
    for d, r in zip(docs, rows):
        flat = flatten(d)
        # Every row has the schema's columns: a null block (here ``error``) is empty cells under its fields.
        assert {k: flat.get(k, "") for k in r if not k.startswith("timing_ms")} == \
            {k: v for k, v in r.items() if not k.startswith("timing_ms")}
        assert {k for k in flat if k not in r} == {"error"} and r["error_reason"] == r["error_kind"] == ""
        assert json.loads(r["spine_landmarks"]) == d["spine"]["landmarks"]


def test_bundle_create_fits_the_rule_and_records_the_pairing(bundle_dir: Path, tiny_models: dict[str, Path],
                                                             synth_dir: Path) -> None:
    b = load_bundle(bundle_dir)
    rule = b.manifest["rule"]
    assert b.name == "mine" and rule["view_check"] is not None and "Normal films of" in rule["decision"]["fitted_on"]
    assert b.manifest["classifier"]["architecture"] == "small" and b.landmarks is not None
    assert len(b.digest) == 64
    # The pipeline runs the bundle's rule and view check, not the landmark file's (which has none).
    p = Pipeline.load(bundle_dir)
    assert p.rule.curve_deg == rule["decision"]["curve_deg"] and p.measurer.view_check is not None
    assert SpineMeasurer(tiny_models["landmarks"]).view_check is None
    film = sorted(list_images(synth_dir / "Scoliosis"))[0]
    pred, _ = p.predict_file(film)
    doc = pred.to_document()
    _validate(doc)
    assert doc["model"]["bundle"] == "mine" and doc["model"]["bundle_digest"] == b.digest
    assert doc["spine"]["view"] in ("full-spine AP", "lumbar or lateral")


def test_the_pipeline_is_its_parts(bundle_dir: Path, synth_dir: Path) -> None:
    """One film through the pipeline gives exactly what its classifier, landmark model and rule give."""
    b = load_bundle(bundle_dir)
    p = Pipeline.load(bundle_dir)
    img, meta = read_image(sorted(list_images(synth_dir / "Normal"))[0])
    whole = p.predict_decoded([Decoded("f", None, img, meta)])[0]
    alone = Predictor(b.classifier).predict_image(img)
    measurer = SpineMeasurer(b.landmarks)
    measurer.view_check = b.view_check
    m = measurer.measure(img)
    assert whole.probabilities == alone.probabilities
    assert np.array_equal(whole.spine.landmarks, m.landmarks) and whole.spine.view == m.view
    assert whole.decision == b.rule.decide(alone.label, alone.probabilities, m)


def test_a_prediction_is_built_once_and_never_changed(bundle_dir: Path, synth_dir: Path, tmp_path: Path) -> None:
    """A film's Prediction is frozen through and through (its measurement, probabilities, timings); an output
    that draws returns a changed copy, and the document of the original is what it was."""
    import pickle

    from spinexr.outputs.images import OverlaySink

    p = Pipeline.load(bundle_dir)
    pred, img = p.predict_file(sorted(list_images(synth_dir / "Scoliosis"))[0])
    before = json.dumps(pred.to_document())
    for change in (lambda: setattr(pred, "label", "Normal"), lambda: setattr(pred.spine, "view", "x"),
                   lambda: pred.probabilities.__setitem__("Normal", 1.0), lambda: pred.model.__setitem__("bundle", "x"),
                   lambda: pred.timing_ms.__setitem__("landmarks", 0.0)):
        with pytest.raises((AttributeError, TypeError)):
            change()
    drawn = OverlaySink(tmp_path / "overlays").draw(p, pred, img, 0)
    assert drawn is not pred and Path(drawn.overlay).is_file() and drawn.to_document()["files"]["overlay"] == drawn.overlay
    assert json.dumps(pred.to_document()) == before and pred.overlay == ""
    assert pickle.loads(pickle.dumps(drawn)).to_document() == drawn.to_document()  # --jobs and Ray carry it
    with pytest.raises(ValueError, match="unknown drawn file kinds"):
        pred.with_file("thumbnail", tmp_path / "t.png")


def test_a_changed_or_foreign_bundle_is_refused(bundle_dir: Path, tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(bundle_dir, copy)
    with open(copy / "classifier.safetensors", "ab") as f:
        f.write(b"\0")
    with pytest.raises(WeightsError, match="changed since the bundle was made"):
        load_bundle(copy)
    (copy / "landmarks.safetensors").unlink()
    with pytest.raises(WeightsError, match="missing"):
        load_bundle(copy, verify=False)
    evil = tmp_path / "evil"
    evil.mkdir()
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    manifest["classifier"]["file"] = "../outside.safetensors"
    (evil / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="outside the bundle folder"):
        load_bundle(evil)
    (evil / MANIFEST).write_text("{ not json")
    with pytest.raises(WeightsError, match="not a readable bundle manifest"):
        load_bundle(evil)
    # The CLI says what was wrong, no traceback; and a landmark model is no classifier.
    assert main(["predict", str(evil), str(tiny_models["classifier"])]) == 2
    with pytest.raises(SpinexrError, match="is a landmark model"):
        Pipeline.load(tiny_models["landmarks"])


def test_bundle_create_refuses_to_overwrite(bundle_dir: Path, tiny_models: dict[str, Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    before = (bundle_dir / MANIFEST).read_text()
    assert main(["bundle", "create", str(bundle_dir), "--classifier", str(tiny_models["classifier"])]) == 2
    assert "not empty" in capsys.readouterr().err and (bundle_dir / MANIFEST).read_text() == before
    assert main(["bundle", "show", str(bundle_dir)]) == 0 and f"rule v{RULE_VERSION}" in capsys.readouterr().out


def test_predict_with_a_bundle_writes_its_digest(bundle_dir: Path, films: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "b.jsonl"
    assert main(["predict", str(bundle_dir), *map(str, films), "--out", str(out), "--quiet"]) == 0
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    assert {d["model"]["bundle_digest"] for d in docs} == {load_bundle(bundle_dir).digest}
    assert all(d["spine"] is not None for d in docs)
    assert main(["predict", str(bundle_dir), *map(str, films), "--no-landmarks", "--out", str(tmp_path / "c.json"),
                 "--quiet"]) == 0
    assert all(d["spine"] is None for d in json.loads((tmp_path / "c.json").read_text()))


def test_evaluate_takes_a_bundle(bundle_dir: Path, synth_dir: Path, tmp_path: Path) -> None:
    assert main(["evaluate", str(bundle_dir), "--data", str(synth_dir), "--out", str(tmp_path / "ev"),
                 "--device", "cpu", "--bootstrap", "20", "--quiet"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "ev" / "predictions.csv")))
    assert rows and all(r["decision"] in ("Normal", "Scoliosis", "Spondylolisthesis") for r in rows)
    assert main(["evaluate", str(bundle_dir), "--data", str(synth_dir), "--out", str(tmp_path / "ev2"),
                 "--bootstrap", "5", "--quiet"]) == 2  # under cv.bootstrap's bound: refused by the setting itself


def test_write_bundle_copies_the_models(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    b = write_bundle(tmp_path / "clf-only", tiny_models["classifier"], None, None, name="c")
    assert b.landmarks is None and b.manifest["rule"] is None
    p = Pipeline.load(b.root)
    assert p.measurer is None and p.rule is None


def test_a_refused_spine_has_the_same_fields() -> None:
    """The spine block has the same keys for a measured and a refused spine, so CSV columns never depend on the films."""
    from spinexr.geometry.cobb import cobb_angles

    v = np.stack([np.array([[0, 0], [60, 0], [0, 24], [60, 24]], float) + [0, 40 * j] for j in range(17)])
    from spinexr.deploy.measure import Measurement

    ok = Measurement(v, cobb_angles(v, 800), [], 0.5).to_dict()
    refused = Measurement(v, None, ["order broken"], 0.5).to_dict()
    assert set(ok) == set(refused) and set(flatten(ok)) == set(flatten(refused))
    assert refused["largest"] is None and refused["curves"] == [] and ok["largest"] is not None
    assert refused["aasce_angles"]["first"]["angle"] is None


def test_a_pipeline_is_checked_without_being_built(bundle_dir: Path, tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    """``Pipeline.check`` refuses what ``load`` would (a missing or wrong file), and passes a good bundle."""
    from spinexr.pipeline import PipelineSpec

    Pipeline.check(PipelineSpec(source=str(bundle_dir)))
    with pytest.raises(SpinexrError, match="not found"):
        Pipeline.check(PipelineSpec(source=str(tmp_path / "missing.safetensors")))
    with pytest.raises(SpinexrError, match="landmark model"):
        Pipeline.check(PipelineSpec(source=str(tiny_models["landmarks"])))
    with pytest.raises(SpinexrError, match="not found"):
        Pipeline.check(PipelineSpec(source=str(tiny_models["classifier"]), landmarks=str(tmp_path / "no.safetensors")))
