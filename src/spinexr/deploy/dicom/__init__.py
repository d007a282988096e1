"""Results where clinicians look: each film predicted from a DICOM file gets, in its own study, a TID 1500
Comprehensive SR (:mod:`~spinexr.deploy.dicom.report`) and a Grayscale Softcopy Presentation State
(:mod:`~spinexr.deploy.dicom.presentation`), both made from the film's prediction document.

A film that is not DICOM (JPEG, PNG, TIFF) is skipped with a reason: it has no patient or study to
file a report under, and a Secondary Capture with made-up identifiers would start a new patient in a
PACS. ``spinexr predict --dicom-out DIR`` (:mod:`spinexr.outputs.dicom`) writes ``DIR/<StudyInstanceUID>/SR_<SOPInstanceUID>.dcm``
and ``PR_<SOPInstanceUID>.dcm`` (the source's SOP Instance UID); ``spinexr pacs`` stores the same
two instances back over DICOMweb.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from spinexr.deploy.dicom import _charset
from spinexr.deploy.dicom.presentation import presentation_state
from spinexr.deploy.dicom.report import measurement_report
from spinexr.errors import SpinexrError

log = logging.getLogger(__name__)

NOT_DICOM = ("not a DICOM file: a JPEG, PNG or TIFF has no patient or study to file a report under, so no SR "
             "is written (spinexr makes no Secondary Capture)")
_NEEDED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Rows", "Columns")
# Type 2 patient and study attributes the SR and GSPS carry: copied when the film has them, empty when not.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate",
          "StudyTime", "ReferringPhysicianName")
_PIXELS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def require_highdicom() -> None:
    try:
        import highdicom  # noqa: F401
    except ImportError:
        raise SpinexrError("DICOM output needs highdicom: pip install 'spinexr[dicom]'") from None


def read_header(path: str | Path) -> Dataset:
    """The DICOM header of ``path`` (pixels not read), or a :class:`SpinexrError` saying why it cannot
    carry a report."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as e:  # noqa: BLE001 - pydicom raises many types on malformed headers
        raise SpinexrError(f"{path}: the DICOM header cannot be read ({e})") from None
    return checked_source(ds, str(path))


def checked_source(ds: Dataset, where: str) -> Dataset:
    missing = [k for k in _NEEDED if k not in ds or ds.get(k) in (None, "")]
    if missing:
        raise SpinexrError(f"{where}: the DICOM file lacks {', '.join(missing)}, which a report must reference")
    return ds


def writer_source(source: Dataset) -> Dataset:
    """The film's header as the writers take it: its elements without the pixels, and each Type 2 patient or
    study attribute it lacks present with its empty value (a film exported without a name or a study date
    gets a report with those empty, never invented)."""
    ds = Dataset()
    for elem in source:
        if elem.keyword not in _PIXELS:
            ds.add(copy.deepcopy(elem))
    if hasattr(source, "file_meta"):
        ds.file_meta = copy.deepcopy(source.file_meta)
    for kw in _TYPE2:
        if kw not in ds or ds[kw].value is None:
            setattr(ds, kw, "")
    return ds


@dataclass
class DicomResults:
    """The SR and, for a one-sample (grayscale) film, the presentation state of one document.

    Args:
        sr: the structured report.
        pr: the presentation state, or None.
        notes: what was left out, and why.
    """

    sr: Dataset
    pr: Dataset | None
    notes: list[str] = field(default_factory=list)

    @property
    def datasets(self) -> list[Dataset]:
        return [self.sr] + ([self.pr] if self.pr is not None else [])


def dicom_results(doc: dict[str, Any], source: Dataset, instance_number: int = 1) -> DicomResults:
    """The DICOM outputs of a prediction document (``status`` ok) made from the film whose header is
    ``source``.

    Args:
        doc: the film's prediction document (``status`` ok).
        source: the DICOM film's dataset (its header is enough).
        instance_number: the output's Instance Number in its series.
    """
    require_highdicom()
    if doc.get("status") != "ok":
        raise SpinexrError(f"{doc.get('path')}: the film was not predicted ({(doc.get('error') or {}).get('reason')})")
    notes: list[str] = []
    film = writer_source(source)
    sr = measurement_report(doc, film, instance_number, notes)
    pr = None
    if int(source.get("SamplesPerPixel", 1)) == 1:
        pr = presentation_state(doc, film, instance_number)
    else:
        notes.append("a colour film: no grayscale presentation state is written (the SR is)")
    charset = source.get("SpecificCharacterSet")
    for kind, ds in (("SR", sr), ("presentation state", pr)):
        chosen = _charset.settle(ds, charset) if ds is not None else ""
        if chosen and "(the film's)" not in chosen:  # said only where it is not simply the film's set
            notes.append(f"{kind} character set: {chosen}")
    return DicomResults(sr=sr, pr=pr, notes=notes)


__all__ = ["DicomResults", "NOT_DICOM", "checked_source", "dicom_results", "read_header", "require_highdicom",
           "writer_source"]
