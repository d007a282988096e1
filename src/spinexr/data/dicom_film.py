"""A film as a Digital X-Ray Image (For Presentation) DICOM file, with the attributes a modality writes:
patient, study, series, equipment, the DX modules (detector spacing, anatomy, view) and a window.

For synthetic films (``spinexr data synth --format dcm``), the demo and the PACS tests: their patients
are made up, and their names say so.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
# DICOM CID 4010 (DX View): SNOMED CT codes of the projections written.
VIEW_CODES = {v: (c.value, c.scheme_designator, c.meaning) for v, c in
              (("AP", codes.SCT.AnteroPosterior), ("PA", codes.SCT.PosteroAnterior), ("LL", codes.SCT.LeftLateral))}


@dataclass
class FilmIdentity:
    """Who and which study a film belongs to; the UIDs are made when not given.

    Args:
        patient_id: Patient ID.
        patient_name: Patient's Name.
        patient_sex: Patient's Sex.
        patient_birth_date: Patient's Birth Date (YYYYMMDD).
        accession: Accession Number.
        study_uid: Study Instance UID.
        series_uid: Series Instance UID.
        sop_uid: SOP Instance UID.
        study_datetime: Study Date and Time.
        study_description: Study Description.
        view: View Position.
        instance_number: Instance Number.
    """

    patient_id: str
    patient_name: str = "SYNTHETIC^PATIENT"
    patient_sex: str = "O"
    patient_birth_date: str = ""
    accession: str = ""
    study_uid: str = field(default_factory=lambda: str(generate_uid()))
    series_uid: str = field(default_factory=lambda: str(generate_uid()))
    sop_uid: str = field(default_factory=lambda: str(generate_uid()))
    study_datetime: dt.datetime = field(default_factory=lambda: dt.datetime.now().replace(microsecond=0))
    study_description: str = "XR SPINE AP"
    view: str = "AP"
    instance_number: int = 1


def dx_dataset(img: np.ndarray, who: FilmIdentity, pixel_spacing: float = 0.15) -> Dataset:
    """``img`` (uint8, or float in [0, 1]; H x W) as a 12-bit MONOCHROME2 DX dataset.

    Args:
        img: the film, uint8 or float in [0, 1], H x W.
        who: the patient and study it belongs to.
        pixel_spacing: millimetres a pixel (Imager Pixel Spacing).
    """
    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(np.asarray(a, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    if a.ndim != 2:
        raise ValueError(f"a film is one gray channel (H x W); got shape {a.shape}")
    pixels = (a.astype(np.uint16) * 16)  # 8 -> 12 bits
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = who.sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128  # written as a DICOM file (preamble and 'DICM') even when sent as a dataset
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = DX_FOR_PRESENTATION, who.sop_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    day, time = who.study_datetime.strftime("%Y%m%d"), who.study_datetime.strftime("%H%M%S")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = day
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = time
    ds.AccessionNumber = who.accession
    ds.Modality = "DX"
    ds.Manufacturer = "spinexr synthetic"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = who.study_description
    ds.SeriesDescription = f"SPINE {who.view}"
    ds.PatientName, ds.PatientID = who.patient_name, who.patient_id
    ds.PatientBirthDate, ds.PatientSex = who.patient_birth_date, who.patient_sex
    ds.BodyPartExamined = "SPINE"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = who.study_uid, who.series_uid
    ds.StudyID = who.accession[:16] or "1"
    ds.SeriesNumber, ds.InstanceNumber = 1, who.instance_number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    _dx_modules(ds, who, pixel_spacing)
    ds.PixelData = pixels.tobytes()
    return ds


def _dx_modules(ds: Dataset, who: FilmIdentity, pixel_spacing: float) -> None:
    """The DX series, image, detector, anatomy and positioning modules, and the window."""
    ds.PatientOrientation = ["R", "F"] if who.view == "AP" else ["A", "F"]
    ds.ViewPosition = who.view if who.view in ("AP", "PA", "LL", "RL") else ""
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LOG", 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.ImagerPixelSpacing = ds.PixelSpacing = [pixel_spacing, pixel_spacing]
    ds.DetectorType = "DIRECT"
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "421060004", "SCT", "Spine"
    ds.AnatomicRegionSequence = Sequence([region])
    ds.ImageLaterality = "U"  # the spine is unpaired
    ds.PositionerType = ""
    if who.view in VIEW_CODES:
        view = Dataset()
        view.CodeValue, view.CodingSchemeDesignator, view.CodeMeaning = VIEW_CODES[who.view]
        ds.ViewCodeSequence = Sequence([view])
    ds.AcquisitionContextSequence = Sequence([])


def write_dx(path: str | Path, img: np.ndarray, who: FilmIdentity, pixel_spacing: float = 0.15) -> Path:
    """Write ``img`` as a DX file at ``path`` (see :func:`dx_dataset`).

    Args:
        path: the file to write.
        img: the film, float in [0, 1].
        who: the patient and study it belongs to.
        pixel_spacing: millimetres a pixel (Imager Pixel Spacing).
    """
    ds = dx_dataset(img, who, pixel_spacing)
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


__all__ = ["DX_FOR_PRESENTATION", "FilmIdentity", "dx_dataset", "write_dx"]
