"""DICOM output: ``predict --dicom-out`` writes a TID 1500 SR and a presentation state per DICOM film that say
what the prediction document says, that dciodvfy accepts, in the film's study; other films are skipped."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from conftest import stream
from spinexr.data.dicom_film import FilmIdentity, dx_dataset
from spinexr.data.synth import synthesize
from spinexr.deploy.dicom import NOT_DICOM, dicom_results
from spinexr.deploy.dicom.report import report_values
from spinexr.geometry.overlay import clip_segment
from spinexr.outputs.dicom import DicomSink
from spinexr.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dx_films(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("dx")
    synthesize(d, n=6, seed=11, scale=0.35, fmt="dcm")
    return d


def assert_report_matches(sr: pydicom.Dataset, doc: dict) -> None:
    """The SR says what the prediction document says: label, probabilities, each angle within 0.01 deg,
    end vertebrae and apex, the view, the OOD flag and whether the classifier was overruled."""
    got = report_values(sr)
    film = got["spinexr decision"]
    names = {"Normal": "Normal", "Scoliosis": "Scoliosis deformity of spine", "Spondylolisthesis": "Spondylolisthesis"}
    assert film["Finding"] == names[doc["label"]]
    assert film["Classifier finding"] == names[doc["decision"]["classifier_label"]]
    assert film["Decision overruled the classifier"] == ("Yes" if doc["label"] != doc["decision"]["classifier_label"]
                                                         else "No")
    assert film["Out of distribution"] == ("Yes" if doc["ood"]["flag"] else "No")
    for label, p in doc["probabilities"].items():
        assert film[f"Classifier probability of {label}"] == pytest.approx(p, abs=1e-6)
    spine = doc["spine"]
    if spine and spine.get("view"):
        assert film["View check"] == spine["view"]
    if spine and spine["plausible"] and spine.get("view") != "lumbar or lateral":  # no angle on a lumbar view
        assert film["Cobb angle"] == pytest.approx(spine["largest"], abs=0.01)
        for i, c in enumerate(spine["curves"], start=1):
            group = got[f"curve {i}: {c['side']} {c['region']}"]
            assert group["Cobb angle"] == pytest.approx(c["angle"], abs=0.01)
            assert group["Curve region"] == c["region"]
            assert group["Upper end vertebra"] == f"{c['upper_end']} vertebra"
            assert group["Lower end vertebra"] == f"{c['lower_end']} vertebra"
            assert group["Major curve"] == ("Yes" if c["major"] else "No")
        assert sum(g.startswith("curve ") for g in got) == len(spine["curves"])
    else:
        assert film["Spine measured"] == "No" and not any(g.startswith("curve ") for g in got)


def dciodvfy_errors(path: Path) -> list[str]:
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed; .ci/run installs it")
    out = subprocess.run([exe, str(path)], capture_output=True, text=True)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def test_predict_dicom_out_reports_each_film_in_its_study(dx_films: Path, tmp_path: Path) -> None:
    src = tmp_path / "films"
    shutil.copytree(dx_films, src)
    shutil.copy(next(dx_films.rglob("*.dcm")), src / "copy.dcm")  # the same film twice: reported twice, same UIDs
    film = pydicom.dcmread(next(dx_films.rglob("*.dcm"))).pixel_array  # a film as PNG: analysed, not DICOM
    Image.fromarray((film >> 4).astype(np.uint8)).save(src / "photo.png")
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    out, dicom = tmp_path / "preds.jsonl", tmp_path / "dicom"
    done = subprocess.run([sys.executable, "-m", "spinexr", "predict", str(src), "--recursive", "--out", str(out),
                           "--dicom-out", str(dicom), "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "DICOM: 7 films reported" in done.stderr and "not a DICOM file" in done.stderr  # the PNG, with its reason
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    by_path = {d["path"]: d for d in docs}
    for path in sorted(src.rglob("*.dcm")):
        film = pydicom.dcmread(path, stop_before_pixels=True)
        folder = dicom / film.StudyInstanceUID
        sr = pydicom.dcmread(folder / f"SR_{film.SOPInstanceUID}.dcm")
        pr = pydicom.dcmread(folder / f"PR_{film.SOPInstanceUID}.dcm")
        for ds in (sr, pr):  # in the film's study, for its patient, in a series of its own
            assert ds.StudyInstanceUID == film.StudyInstanceUID
            assert ds.PatientID == film.PatientID and ds.PatientName == film.PatientName
            assert ds.SeriesInstanceUID != film.SeriesInstanceUID
            assert "not for diagnostic use" in ds.SeriesDescription
        assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
        assert sr.VerificationFlag == "UNVERIFIED" and sr.CompletionFlag == "COMPLETE"
        assert sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0] \
            .ReferencedSOPSequence[0].ReferencedSOPInstanceUID == film.SOPInstanceUID
        assert pr.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID == film.SOPInstanceUID
        assert_report_matches(sr, by_path[str(path)])
        assert {a.GraphicLayer for a in pr.GraphicAnnotationSequence} >= {"CORNERS", "TEXT"}
    assert {p: p.read_bytes() for p in before} == before  # nothing the user gave was touched
    one = next(dicom.rglob("SR_*.dcm"))
    assert dciodvfy_errors(one) == []
    assert dciodvfy_errors(one.with_name(one.name.replace("SR_", "PR_"))) == []


def test_presentation_state_draws_the_overlay_lines(bundled: Pipeline, dx_films: Path, tmp_path: Path) -> None:
    """The endplate lines in the presentation state are the overlay's, in DICOM pixel units (+0.5), one pair
    per curve; each curve is labelled by its side and region at its upper line."""
    from spinexr.geometry.overlay import endplate_lines

    scoliosis = sorted((dx_films / "Scoliosis").glob("*.dcm"))[0]
    docs: list[dict] = []
    stream(bundled, [scoliosis], None, workers=0, progress=False, on_batch=docs.extend)
    doc = docs[0]
    assert doc["spine"]["plausible"] and doc["spine"]["curves"], "the synthetic scoliosis film is measured"
    film = pydicom.dcmread(scoliosis, stop_before_pixels=True)
    pr = dicom_results(doc, film).pr
    lines = [np.asarray(o.GraphicData).reshape(-1, 2) for a in pr.GraphicAnnotationSequence if
             a.GraphicLayer == "ENDPLATES" for o in a.GraphicObjectSequence]
    want = endplate_lines(np.asarray(doc["spine"]["landmarks"]), doc["spine"]["curves"], film.Columns,
                          doc["spine"]["centreline_weight"])
    expected = [clip_segment(s[0] + 0.5, s[1] + 0.5, film.Columns, film.Rows) for pair in want for s in pair]
    assert len(lines) == len([e for e in expected if e is not None]) == 2 * len(doc["spine"]["curves"])
    for got, exp in zip(lines, [e for e in expected if e is not None]):
        np.testing.assert_allclose(got, exp, atol=1e-3)
    texts = [t.UnformattedTextValue for a in pr.GraphicAnnotationSequence for t in a.get("TextObjectSequence", [])]
    for c in doc["spine"]["curves"]:
        assert any(t.startswith(f"{c['side']} {c['region']} {c['angle']:.1f}") for t in texts), (c, texts)


def test_same_film_same_model_same_uids_and_colour_films_get_no_presentation_state(bundled: Pipeline,
                                                                                    tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    film = dx_dataset(rng.integers(0, 255, (200, 90), dtype=np.uint8), FilmIdentity(patient_id="P1"))
    path = tmp_path / "a.dcm"
    film.save_as(path, enforce_file_format=True)
    docs: list[dict] = []
    stream(bundled, [path], None, workers=0, progress=False, on_batch=docs.extend)
    a, b = dicom_results(docs[0], film), dicom_results(docs[0], film)
    assert a.sr.SOPInstanceUID == b.sr.SOPInstanceUID and a.pr.SOPInstanceUID == b.pr.SOPInstanceUID
    assert a.sr.SOPInstanceUID != a.pr.SOPInstanceUID and a.sr.SOPInstanceUID.startswith("2.25.")
    other = dict(docs[0], model={**docs[0]["model"], "backend": "onnx"})
    assert dicom_results(other, film).sr.SOPInstanceUID != a.sr.SOPInstanceUID  # another model: another report
    colour = film.copy()
    colour.SamplesPerPixel, colour.PhotometricInterpretation = 3, "RGB"
    res = dicom_results(docs[0], colour)
    assert res.pr is None and "colour" in res.notes[0]


def test_writer_skips_with_reasons(bundled: Pipeline, tmp_path: Path) -> None:
    w = DicomSink(tmp_path / "out")
    assert w.write_one({"path": str(tmp_path / "x.jpg"), "status": "ok"}) == []
    bad = tmp_path / "bad.dcm"
    ds = dx_dataset(np.zeros((64, 32), np.uint8), FilmIdentity(patient_id="P2"))
    del ds.StudyInstanceUID
    ds.save_as(bad, enforce_file_format=True)
    assert w.write_one({"path": str(bad), "status": "ok"}) == []
    assert w.write_one({"path": str(bad), "status": "error"}) == []  # its error is in its document
    assert w.written == 0
    assert w.skipped[NOT_DICOM] == 1
    assert any("lacks StudyInstanceUID" in r for r in w.skipped)
    assert "2 skipped" not in w.close() and "1 skipped" in w.close()


def test_clip_segment() -> None:
    np.testing.assert_allclose(clip_segment(np.array([-10.0, 5.0]), np.array([30.0, 5.0]), 20, 10), [[0, 5], [20, 5]])
    assert clip_segment(np.array([-10.0, -5.0]), np.array([-1.0, -5.0]), 20, 10) is None
    seg = clip_segment(np.array([-5.0, -5.0]), np.array([25.0, 25.0]), 20, 10)
    np.testing.assert_allclose(seg, [[0, 0], [10, 10]])


def test_synthetic_dx_film_is_valid_dicom(dx_films: Path) -> None:
    f = sorted(dx_films.rglob("*.dcm"))[0]
    assert dciodvfy_errors(f) == []
    ds = pydicom.dcmread(f)
    assert ds.Modality == "DX" and ds.PresentationIntentType == "FOR PRESENTATION" and ds.BitsStored == 12
