"""Only what was analysed is reported: films outside the bundle's intended use (a CT, a bone scan, a "for
processing" image, a chest film, a stack of frames, a film the detector flags) get no label, no angle and
nothing for the PACS; every character set, photometry and header the corpus holds is written validly."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import stream
from spinexr._dicom_corpus import write_corpus
from spinexr.data.imread import ImageMeta
from spinexr.deploy.dicom import _charset, dicom_results
from spinexr.deploy.document import schema
from spinexr.deploy.intended_use import IntendedUse
from spinexr.errors import SpinexrError
from spinexr.pipeline import Pipeline
from test_dicom_out import dciodvfy_errors


def _meta(modality: str | None = "DX", frames: int = 1, fmt: str = "DICOM", **extra: str) -> ImageMeta:
    return ImageMeta(path="f.dcm", format=fmt, width=100, height=200, bit_depth=12, mode="MONOCHROME2",
                     modality=modality, n_frames=frames, extra=extra)


def test_the_header_check_names_every_reason() -> None:
    use = IntendedUse()
    assert use.before(_meta("DX", presentation_intent="FOR PRESENTATION", body_part="L-SPINE")) == []
    assert use.before(_meta("CR")) == []  # no intent, no body part: nothing says it is outside
    assert use.before(_meta(None, fmt="JPEG")) == []  # a plain image says nothing about itself
    assert "modality CT" in use.before(_meta("CT"))[0]
    assert "FOR PROCESSING" in use.before(_meta("DX", sop_class="1.2.840.10008.5.1.4.1.1.1.1.1"))[0]
    assert "Body Part Examined CHEST" in use.before(_meta("DX", body_part="CHEST"))[0]
    assert "2 frames" in use.before(_meta("DX", frames=2))[0]
    assert len(use.before(_meta("NM", frames=3, body_part="WHOLEBODY"))) == 2  # modality and frames
    wider = IntendedUse(modalities=("CR", "DX", "RF"), max_frames=4)
    assert wider.before(_meta("RF", frames=3)) == []


def test_the_bundle_setting_is_checked_and_round_trips() -> None:
    use = IntendedUse(modalities=("dx",), out_of_distribution="flag")
    assert use.modalities == ("DX",)
    assert IntendedUse.from_manifest(use.to_manifest()) == use
    assert IntendedUse.from_manifest(None) == IntendedUse()
    for bad, said in (({"modalities": "DX"}, "list of strings"), ({"colour": True}, "unknown keys"),
                      ({"out_of_distribution": "ignore"}, "refuse, flag"), ({"max_frames": 0}, "at least 1")):
        with pytest.raises(SpinexrError, match=said):
            IntendedUse.from_manifest(bad)


def test_a_flagged_film_is_not_analysed_and_the_document_says_why(tiny: Pipeline, synth_dir: Path) -> None:
    """With the threshold below every score, every film is flagged: refused by the default setting, kept with
    ``flag`` (the setting of a model file given alone, and of the tests' tiny bundle)."""
    import jsonschema

    film = sorted((synth_dir / "Scoliosis").glob("*.jpg"))[0]
    refusing = Pipeline(tiny.predictor, tiny.measurer, tiny.bundle)
    refusing.intended_use = IntendedUse()  # the default setting: a flagged film is not analysed
    refusing.predictor = replace_threshold(tiny.predictor)
    pred, _ = refusing.predict_file(film)
    doc = pred.to_document()
    jsonschema.validate(doc, schema())
    assert doc["status"] == "not_analysed" and doc["error"]["kind"] == "outside_intended_use"
    assert doc["error"]["reason"].startswith("out of distribution (feature score")
    assert doc["label"] is None and doc["probabilities"] == {} and doc["spine"] is None and doc["decision"] is None
    assert doc["ood"]["flag"] is True and doc["ood"]["score"] is not None
    kept_by = flagging(refusing)
    kept_by.predictor = refusing.predictor
    kept = kept_by.predict_file(film)[0].to_document()
    assert kept["status"] == "ok" and kept["label"] and kept["ood"]["flag"] is True


def replace_threshold(predictor):
    """A shallow copy of a predictor whose OOD threshold is below every score."""
    import copy

    if predictor.ood_threshold is None:
        pytest.skip("the tiny model has no detector")
    p = copy.copy(predictor)
    p.ood_threshold = -1e9
    return p


def flagging(pipeline: Pipeline) -> Pipeline:
    """The same models analysing films the detector flags (``out_of_distribution: flag``)."""
    p = Pipeline(pipeline.predictor, pipeline.measurer, pipeline.bundle)
    p.intended_use = replace(p.intended_use, out_of_distribution="flag")
    return p


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    d = tmp_path_factory.mktemp("corpus")
    return d, write_corpus(d, scale=0.3)


def test_the_corpus_through_dicom_out(tiny: Pipeline, corpus: tuple[Path, list], tmp_path: Path) -> None:
    """Every film accounted for with the outcome it should have; an SR and a presentation state dciodvfy
    accepts for each analysed film, in the film's character set where it carries the text; nothing at
    all for a film outside the intended use; reports of one study numbered 1, 2."""
    folder, cases = corpus
    out, dicom = tmp_path / "preds.jsonl", tmp_path / "dicom"
    tally = stream(tiny, sorted(folder.glob("*.dcm")), out, dicom=dicom)
    docs = {Path(d["path"]).stem: d for d in map(json.loads, out.read_text().splitlines())}
    assert len(docs) == len(cases) >= 40
    assert tally.not_analysed == sum(c.expect == "not_analysed" for c in cases)
    for c in cases:
        doc = docs[c.name]
        want = {"analysed": "ok", "not_analysed": "not_analysed", "unreadable": "error"}[c.expect]
        flagged = doc["status"] == "not_analysed" and doc["error"]["reason"].startswith("out of distribution")
        assert doc["status"] == want or (c.expect == "analysed" and flagged), (c.name, doc["status"], doc["error"])
        if c.expect == "unreadable":
            continue
        head = pydicom.dcmread(folder / f"{c.name}.dcm", stop_before_pixels=True)
        written = sorted((dicom / head.StudyInstanceUID).glob(f"*_{head.SOPInstanceUID}.dcm"))
        if doc["status"] != "ok":
            assert written == [] and doc["label"] is None and doc["spine"] is None, c.name
            continue
        assert [p.name[:2] for p in written] == ["PR", "SR"], c.name
        for p in written:
            assert dciodvfy_errors(p) == [], (c.name, p.name)
            ds = pydicom.dcmread(p)
            assert ds.PatientName == head.get("PatientName", ""), c.name  # the name survives re-encoding
            if c.name.startswith("charset_") and c.name not in ("charset_ISO_IR_144", "charset_none"):
                extended = isinstance(head.SpecificCharacterSet, pydicom.multival.MultiValue)  # code extensions:
                want = "ISO_IR 192" if extended else head.SpecificCharacterSet  # UTF-8, which OHIF's dcmjs reads
                assert ds.SpecificCharacterSet == want, c.name  # else it carries "°": kept
    reported = sum(d["status"] == "ok" for d in docs.values())
    assert reported >= 25, f"only {reported} films analysed: the SR checks would say little"
    cyrillic = pydicom.dcmread(folder / "charset_ISO_IR_144.dcm", stop_before_pixels=True)
    pr = pydicom.dcmread(next((dicom / cyrillic.StudyInstanceUID).glob("PR_*.dcm")))
    texts = [t.UnformattedTextValue for a in pr.GraphicAnnotationSequence for t in a.get("TextObjectSequence", [])]
    assert pr.SpecificCharacterSet == "ISO_IR 144" and not any("°" in t for t in texts)  # no "°" in that set
    numbers = sorted(int(pydicom.dcmread(p).InstanceNumber) for p in
                     (dicom / pydicom.dcmread(folder / "same_study_0.dcm", stop_before_pixels=True).StudyInstanceUID)
                     .glob("SR_*.dcm"))
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) == sum(
        docs[f"same_study_{k}"]["status"] == "ok" for k in range(2))


def test_character_set_chosen_by_what_the_set_carries() -> None:
    from pydicom.dataset import Dataset

    def settled(charset, name: str, text: str) -> Dataset:
        ds = Dataset()
        ds.PatientName, ds.ContentDescription = name, text
        _charset.settle(ds, charset)
        return ds

    japanese = settled(["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎", "20.5°")  # code extensions: OHIF's
    assert japanese.SpecificCharacterSet == "ISO_IR 192" and japanese.PatientName == "Yamada^Tarou=山田^太郎"  # dcmjs
    assert settled("ISO_IR 100", "Müller^Jürgen", "x").SpecificCharacterSet == "ISO_IR 100"  # reads one set only
    one = settled("ISO_IR 144", "Иванов^Иван", "20.5°")
    assert one.SpecificCharacterSet == "ISO_IR 144" and one.ContentDescription == "20.5 deg"
    plain = settled(None, "Smith^John", "20.5°")
    assert "SpecificCharacterSet" not in plain and plain.ContentDescription == "20.5 deg"
    mixed = settled("ISO_IR 100", "Müller^Jürgen", "王 20.5°")  # Latin-1 cannot carry the ideograph
    assert mixed.SpecificCharacterSet == "ISO_IR 192" and mixed.ContentDescription == "王 20.5°"
    assert settled("ISO_IR 999", "Smith^John", "x").SpecificCharacterSet == "ISO_IR 192"  # unknown set


def _render(film: pydicom.Dataset, pr: pydicom.Dataset) -> np.ndarray:
    """What a viewer shows for ``film`` under ``pr``: modality rescale, the state's window, then its
    presentation LUT shape (PS3.4 N.2), as display values in [0, 1] with 1 white."""
    a = film.pixel_array.astype(np.float64) * float(pr.get("RescaleSlope", 1)) + float(pr.get("RescaleIntercept", 0))
    voi = pr.get("SoftcopyVOILUTSequence")
    if voi:
        c, w = float(voi[0].WindowCenter), float(voi[0].WindowWidth)
        a = np.clip((a - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    else:
        a = (a - a.min()) / max(a.max() - a.min(), 1e-9)
    return 1.0 - a if pr.PresentationLUTShape == "INVERSE" else a


def test_a_monochrome1_film_displays_as_its_modality_meant(corpus: tuple[Path, list], tiny: Pipeline) -> None:
    """Rendered through its presentation state, a MONOCHROME1 film looks like its MONOCHROME2 twin (the
    same film stored the usual way), not like its negative."""
    from spinexr.data.dicom_film import FilmIdentity, dx_dataset
    from spinexr.data.imread import read_image

    folder, _ = corpus
    path = folder / "monochrome1.dcm"
    doc = flagging(tiny).predict_file(path)[0].named(str(path)).to_document()
    assert doc["status"] == "ok"
    film = pydicom.dcmread(path)
    pr = dicom_results(doc, film).pr
    assert pr.PresentationLUTShape == "INVERSE"
    shown = _render(film, pr)
    twin = read_image(path)[0]  # the reader's gray, low = black, as displayed
    assert np.corrcoef(shown.ravel(), twin.ravel())[0, 1] > 0.99
    plain = dx_dataset(twin, FilmIdentity(patient_id="X"))
    plain_pr = dicom_results(doc, plain).pr
    assert plain_pr.PresentationLUTShape == "IDENTITY"
    assert np.corrcoef(_render(plain, plain_pr).ravel(), shown.ravel())[0, 1] > 0.99


def test_the_shipped_bundle_refuses_flagged_films_and_a_model_file_alone_flags_them(tiny_models) -> None:
    from spinexr.deploy.bundle import load_bundle
    from spinexr.deploy.bundled import bundled_bundle_dir

    assert load_bundle(bundled_bundle_dir()).intended_use == IntendedUse()
    assert IntendedUse().out_of_distribution == "refuse"
    alone = Pipeline.load(tiny_models["classifier"], landmarks=str(tiny_models["landmarks"]))
    assert alone.intended_use.out_of_distribution == "flag" and alone.intended_use.modalities == ("CR", "DX")
