"""A corpus of DICOM files a hospital's PACS holds, for the DICOM-output tests and
``benchmarks/dicom_corpus.py``: spine radiographs in every character set, photometry and compression the
writers must carry, films missing attributes that exported films often lack, and files outside the
intended use (CT, NM, MR, a DX "for processing", a file with no image) that must get no finding.

Each :class:`Case` says what should become of it: ``analysed`` (a document with a label, an SR and a
presentation state), ``not_analysed`` (no label, no angle, nothing for the PACS) or ``unreadable``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless, generate_uid

from spinexr.data.dicom_film import FilmIdentity, dx_dataset

CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
CT_IMAGE, MR_IMAGE, NM_IMAGE = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.20"

# Patient names in the character sets a site may use (PS3.5 annex H-J examples and their likes).
NAMES = {
    "ISO_IR 100": "Müller^Jürgen",
    "ISO_IR 192": "Wang^XiaoDong=王^小東",
    "\\ISO 2022 IR 87": "Yamada^Tarou=山田^太郎=やまだ^たろう",
    "\\ISO 2022 IR 149": "Hong^Gildong=洪^吉洞=홍^길동",
    "ISO_IR 144": "Иванов^Иван",
    "ISO_IR 126": "Παπαδόπουλος^Γιώργος",
    "ISO_IR 101": "Dvořák^Antonín",
    "GB18030": "Wang^XiaoDong=王^小东",
    "": "Smith^John",
}


@dataclass(frozen=True)
class Case:
    """One file of the corpus.

    Args:
        name: the file's stem.
        expect: ``analysed``, ``not_analysed`` or ``unreadable``.
        what: what is special about it.
    """

    name: str
    expect: str
    what: str


def _who(i: int, **kw: object) -> FilmIdentity:
    return FilmIdentity(patient_id=f"CORPUS{i:03d}", accession=f"ACC{i:05d}", **kw)  # type: ignore[arg-type]


def _charset(cs: str) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        if cs:
            ds.SpecificCharacterSet = ["", cs.strip("\\")] if cs.startswith("\\") else cs
        else:
            del ds.SpecificCharacterSet
        ds.PatientName = NAMES[cs]
        local = NAMES[cs].split("=")[-1].split("^")[0]  # the family name in the set's own script
        ds.StudyDescription = f"XR SPINE {local}"
        ds.InstitutionName = f"Clinic {local}"
    return edit


def _monochrome1(ds: Dataset) -> None:
    a = np.frombuffer(ds.PixelData, dtype=np.uint16).reshape(int(ds.Rows), int(ds.Columns))
    ds.PixelData = (4095 - a).astype(np.uint16).tobytes()
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.PresentationLUTShape = "INVERSE"
    ds.PixelIntensityRelationshipSign = -1


def _as_8bit(ds: Dataset) -> np.ndarray:
    a = np.frombuffer(ds.PixelData, dtype=np.uint16).reshape(int(ds.Rows), int(ds.Columns))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.WindowCenter, ds.WindowWidth = 128, 256
    return (a >> 4).astype(np.uint8)


def _jpeg_baseline(ds: Dataset) -> None:
    a = _as_8bit(ds)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=90)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = f"{a.size / len(buf.getvalue()):.2f}"[:16]
    ds.LossyImageCompressionMethod = "ISO_10918_1"


def _jpeg2000(ds: Dataset) -> None:
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")


def _rle(ds: Dataset) -> None:
    ds.compress(RLELossless)


def _multiframe(ds: Dataset) -> None:
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = 100


def _drop(*keywords: str) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        for kw in keywords:
            if kw in ds:
                delattr(ds, kw)
    return edit


def _empty(*keywords: str) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        for kw in keywords:
            setattr(ds, kw, "")
    return edit


def _other_modality(modality: str, sop_class: str) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        ds.Modality = modality
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.StudyDescription = ds.SeriesDescription = f"{modality} SPINE"
        for kw in ("PresentationIntentType", "DetectorType", "ImagerPixelSpacing", "ViewPosition",
                   "PixelIntensityRelationship", "PixelIntensityRelationshipSign", "ViewCodeSequence"):
            if kw in ds:
                delattr(ds, kw)
    return edit


def _for_processing(ds: Dataset) -> None:
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DX_FOR_PROCESSING
    ds.PresentationIntentType = "FOR PROCESSING"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]


def _cr(ds: Dataset) -> None:
    ds.Modality = "CR"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CR_IMAGE
    for kw in ("PresentationIntentType", "DetectorType", "ViewCodeSequence", "AnatomicRegionSequence",
               "ImageLaterality", "PositionerType", "AcquisitionContextSequence", "ImagerPixelSpacing"):
        if kw in ds:
            delattr(ds, kw)


def _body_part(part: str) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        ds.BodyPartExamined = part
        ds.StudyDescription = f"XR {part}"
    return edit


def _colour(ds: Dataset) -> None:
    a = _as_8bit(ds)
    rgb = np.stack([a, a // 2, 255 - a], axis=-1)
    ds.Modality = "OT"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    for kw in ("WindowCenter", "WindowWidth", "PresentationLUTShape", "RescaleIntercept", "RescaleSlope",
               "RescaleType", "PresentationIntentType"):
        if kw in ds:
            delattr(ds, kw)
    ds.PixelData = rgb.tobytes()


def _no_image(ds: Dataset) -> None:
    del ds.PixelData


def _both(*edits: Callable[[Dataset], None]) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        for e in edits:
            e(ds)
    return edit


# (name, expect, what, edit): the cases that change a spine film.
EDITS: list[tuple[str, str, str, Callable[[Dataset], None]]] = [
    *[(f"charset_{(cs.strip(chr(92)) or 'none').replace(' ', '_')}", "analysed",
       f"Specific Character Set {cs or 'absent'} with a name in it", _charset(cs)) for cs in NAMES],
    ("monochrome1", "analysed", "MONOCHROME1 (white is low)", _monochrome1),
    ("jpeg_baseline", "analysed", "JPEG baseline 8-bit", _jpeg_baseline),
    ("jpeg2000", "analysed", "JPEG 2000 lossless", _jpeg2000),
    ("rle", "analysed", "RLE lossless", _rle),
    ("multiframe", "not_analysed", "two frames (no film: a cine or a stack)", _multiframe),
    ("no_patient_orientation", "analysed", "no Patient Orientation", _drop("PatientOrientation")),
    ("no_imager_pixel_spacing", "analysed", "no Imager Pixel Spacing nor Pixel Spacing",
     _drop("ImagerPixelSpacing", "PixelSpacing")),
    ("no_study_date", "analysed", "no Study Date/Time", _drop("StudyDate", "StudyTime")),
    ("no_patient_name", "analysed", "no Patient's Name", _drop("PatientName")),
    ("empty_identifiers", "analysed", "empty Patient's Name, ID, accession, Study ID, dates",
     _empty("PatientName", "PatientID", "AccessionNumber", "StudyID", "StudyDate", "PatientBirthDate")),
    ("no_optional_modules", "analysed", "no institution, description, body part, view, window or orientation",
     _drop("StudyDescription", "SeriesDescription", "BodyPartExamined", "ViewPosition", "ViewCodeSequence",
           "WindowCenter", "WindowWidth", "PatientOrientation", "AnatomicRegionSequence", "Manufacturer")),
    ("cr", "analysed", "CR (Computed Radiography Image Storage)", _cr),
    ("cr_monochrome1_latin1", "analysed", "CR, MONOCHROME1, ISO_IR 100", _both(_cr, _monochrome1,
                                                                               _charset("ISO_IR 100"))),
    ("body_part_lspine", "analysed", "Body Part Examined LSPINE", _body_part("LSPINE")),
    ("ct", "not_analysed", "a CT image", _other_modality("CT", CT_IMAGE)),
    ("mr", "not_analysed", "an MR image", _other_modality("MR", MR_IMAGE)),
    ("nm", "not_analysed", "a nuclear-medicine image", _other_modality("NM", NM_IMAGE)),
    ("for_processing", "not_analysed", "DX For Processing", _for_processing),
    ("body_part_chest", "not_analysed", "Body Part Examined CHEST", _body_part("CHEST")),
    ("no_presentation_intent", "analysed", "DX without Presentation Intent Type", _drop("PresentationIntentType")),
    ("xa_spine", "not_analysed", "an angiography (XA) frame", _other_modality("XA", "1.2.840.10008.5.1.4.1.1.12.1")),
    ("colour_secondary_capture", "not_analysed", "an RGB secondary capture", _colour),
    ("no_image", "unreadable", "no Pixel Data", _no_image),
]


def spine_films(n: int, seed: int, scale: float) -> list[tuple[np.ndarray, str]]:
    """``n`` synthetic spine films (gray, [0, 1]) with their labels."""
    import tempfile

    from spinexr.data.imread import read_image
    from spinexr.data.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        synthesize(tmp, n=n, seed=seed, scale=scale, fmt="png")
        paths = sorted(Path(tmp).rglob("*.png"))
        return [(read_image(p)[0], p.parent.name) for p in paths]


def write_corpus(out: str | Path, films: list[tuple[np.ndarray, str]] | None = None, *, scale: float = 0.35,
                 real: list[tuple[np.ndarray, str]] | None = None) -> list[Case]:
    """Write the corpus into ``out`` (one file per case) and return its cases.

    Args:
        out: the folder (made if missing).
        films: the spine films the edits apply to, in turn (default: 6 synthetic films).
        scale: the synthetic films' size factor when ``films`` is not given.
        real: further films (real radiographs) written as plain DX films, one case each.

    Returns:
        the cases, in the order written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    films = films or spine_films(6, seed=21, scale=scale)
    aps = [f for f in films if f[1] != "Spondylolisthesis"] or films
    cases: list[Case] = []
    for i, (name, expect, what, edit) in enumerate(EDITS):
        img = aps[i % len(aps)][0]
        ds = dx_dataset(img, _who(i, view="AP"))
        edit(ds)
        ds.save_as(out / f"{name}.dcm", enforce_file_format=True)
        cases.append(Case(name, expect, what))
    for j, (img, label) in enumerate(films):
        name = f"synthetic_{label.lower()}_{j}"
        view = "LL" if label == "Spondylolisthesis" else "AP"
        dx_dataset(img, _who(100 + j, view=view)).save_as(out / f"{name}.dcm", enforce_file_format=True)
        cases.append(Case(name, "analysed", f"a synthetic {label} film"))
    # Two films of one study: their reports are instances 1 and 2 of one output series.
    study = str(generate_uid())
    for k in range(2):
        who = _who(200 + k, study_uid=study, instance_number=k + 1)
        who = FilmIdentity(**{**who.__dict__, "patient_id": "CORPUS200"})
        dx_dataset(aps[k % len(aps)][0], who).save_as(out / f"same_study_{k}.dcm", enforce_file_format=True)
        cases.append(Case(f"same_study_{k}", "analysed", f"film {k + 1} of a two-film study"))
    for j, (img, label) in enumerate(real or []):
        ds = dx_dataset(img, _who(300 + j))
        ds.SeriesDescription = f"real radiograph ({label})"
        ds.save_as(out / f"real_{j}.dcm", enforce_file_format=True)
        cases.append(Case(f"real_{j}", "analysed", f"a real radiograph ({label}) written as DX"))
    return cases


__all__ = ["EDITS", "NAMES", "Case", "spine_films", "write_corpus"]
