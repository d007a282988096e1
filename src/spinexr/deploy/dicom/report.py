"""A prediction document as a DICOM Comprehensive SR holding a TID 1500 measurement report (highdicom).

The report has one measurement group for the film (the decision, the classifier's label and
probabilities, the largest Cobb angle and its band, the view check, the out-of-distribution flag, and
whether the decision overruled the classifier) and, for a measured spine, one group per curve of 10 degrees
or more (:mod:`spinexr.geometry.curves`: the Cobb angle in UCUM degrees, the region, the convexity side, the
end vertebrae, the apex, whether it is the major curve, and the two endplate lines the angle is measured
between as a four-point SCOORD POLYLINE on the film, under the tracking identifier OHIF's
``@cornerstonejs/adapters`` read as their editable Cobb angle tool). The algorithm is identified by name, version and
the bundle's digest; the source image is referenced; the SR is UNVERIFIED. What each item means, with
its code, is in ``docs/dicom.md``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from spinexr import __version__
from spinexr.deploy.dicom import _codes as C
from spinexr.deploy.dicom._charset import UTF8
from spinexr.geometry.overlay import clip_segment, curve_lines
from spinexr.geometry.view import LUMBAR

SR_SERIES_NUMBER = 990
PR_SERIES_NUMBER = 991
NOT_FOR_DIAGNOSIS = "not for diagnostic use"
UID_NAMESPACE = uuid.UUID("5b0c6f3e-2d0a-5e51-9a43-7370696e6578")  # spinexr's name-based UUID namespace
MANUFACTURER = "spinexr"
# The tracking identifier under which OHIF's @cornerstonejs/adapters read a measurement group as their Cobb
# angle tool (MeasurementReport.generateToolState): each curve's group carries it, its name is the Comment.
CORNERSTONE_COBB = "Cornerstone3DTools@^0.1.0:CobbAngle"


def derived_uid(*parts: Any) -> str:
    """A UID under the ``2.25`` root (ISO/IEC 9834-8) derived from ``parts``: the same source film and model
    give the same UID, so an output stored twice (a run killed after storing, then resumed) is the same
    instance, not a second one."""
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, '|'.join(str(p) for p in parts)).int}"


def model_key(doc: dict[str, Any]) -> str:
    """What made a document: the bundle's digest, the models and the backend (one compact string)."""
    return json.dumps(doc.get("model") or {}, sort_keys=True, separators=(",", ":"))


def algorithm(doc: dict[str, Any]) -> Any:
    import highdicom as hd

    m = doc.get("model") or {}
    params = [f"bundle {m.get('bundle') or 'none'}", f"bundle digest {m.get('bundle_digest') or 'none'}",
              f"classifier {m.get('name')}", f"landmark model {m.get('landmarks') or 'none'}",
              f"backend {m.get('backend')}"]
    return hd.sr.AlgorithmIdentification(name="spinexr", version=__version__, parameters=params)


def coding_schemes() -> list[Any]:
    import highdicom as hd

    return [hd.coding_schemes.CodingSchemeIdentificationItem(designator=C.SCHEME, name=C.SCHEME_NAME,
                                                             responsible_organization="spinexr project")]


def frames(source: Dataset) -> list[int] | None:
    """The frames the findings refer to: the first (the one analysed) for a film of a multi-frame IOD (an
    Enhanced DX, say), None for a single-frame IOD. Films of more than one frame are outside the intended use
    (:class:`~spinexr.deploy.intended_use.IntendedUse`), so the first frame is the film."""
    from highdicom._standard_utils import is_multiframe_image

    return [1] if is_multiframe_image(source) else None


def angles_reported(spine: dict[str, Any] | None) -> bool:
    """True when a document's Cobb angles go into the SR and the drawing: a plausible spine, measured, on a
    view the check did not take for a lumbar or lateral one (an angle there is no evidence of a curve)."""
    return bool(spine and spine.get("plausible") and spine.get("largest") is not None
                and spine.get("view") != LUMBAR)


def _library(source: Dataset, notes: list[str]) -> list[Dataset] | None:
    """The film for the report's image library, or None (and a note) where its header lacks what the
    library's descriptors hold (a radiograph's Patient Orientation and Imager Pixel Spacing)."""
    import highdicom as hd

    try:
        hd.sr.ImageLibraryEntryDescriptors(source)
    except (AttributeError, IndexError, TypeError, ValueError) as e:
        notes.append(f"no image library in the SR: the film's header lacks what it describes ({e})")
        return None
    return [source]


def _qe(name: Any, value: Any) -> Any:
    import highdicom as hd

    return hd.sr.QualitativeEvaluation(name=name, value=value)


def _film_group(doc: dict[str, Any], source: Dataset, alg: Any, key: str) -> Any:
    import highdicom as hd

    spine = doc.get("spine")
    dec = doc.get("decision") or {}
    measured = angles_reported(spine)
    evals = [_qe(C.FINDING, C.LABELS[doc["label"]])]
    clf = dec.get("classifier_label") or doc["label"]
    evals.append(_qe(C.CLASSIFIER_FINDING, C.LABELS[clf]))
    evals.append(_qe(C.OVERRULED, C.YES if clf != doc["label"] else C.NO))
    if dec.get("agreement") in C.AGREEMENTS:
        evals.append(_qe(C.AGREEMENT, C.AGREEMENTS[dec["agreement"]]))
    evals.append(_qe(C.OOD, C.YES if doc["ood"]["flag"] else C.NO))
    evals.append(_qe(C.SPINE_MEASURED, C.YES if measured else C.NO))
    if spine and spine.get("view") in C.VIEWS:
        evals.append(_qe(C.VIEW, C.VIEWS[spine["view"]]))
    if measured and spine.get("band") in C.BANDS:
        evals.append(_qe(C.SEVERITY, C.BANDS[spine["band"]]))
    measurements = [hd.sr.Measurement(name=C.probability(label), value=float(p), unit=C.UNITLESS, algorithm_id=alg)
                    for label, p in doc["probabilities"].items()]
    if doc["ood"].get("score") is not None:
        measurements.append(hd.sr.Measurement(name=C.OOD_SCORE, value=float(doc["ood"]["score"]), unit=C.UNITLESS,
                                              algorithm_id=alg))
    if measured:
        measurements.append(hd.sr.Measurement(
            name=C.COBB_ANGLE, value=float(spine["largest"]), unit=C.DEGREES, derivation=C.MAXIMUM, algorithm_id=alg,
            finding_sites=[hd.sr.FindingSite(C.SPINE)],
            referenced_images=[hd.sr.SourceImageForMeasurement.from_source_image(source, frames(source))]))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=derived_uid(source.SOPInstanceUID, key, "film"),
                                                     identifier="spinexr decision"),
        algorithm_id=alg, finding_sites=[hd.sr.FindingSite(C.SPINE)], measurements=measurements,
        qualitative_evaluations=evals,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source, frames(source))])


def reported_curves(spine: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The curves of a document's ``spine`` that the SR and the drawing report (none on a refused spine or a
    lumbar view: :func:`angles_reported`)."""
    return list(spine.get("curves") or []) if spine and angles_reported(spine) else []


def pixel_lines(spine: dict[str, Any], curve: dict[str, Any], width: int) -> np.ndarray:
    """A curve's two lines (:func:`spinexr.geometry.overlay.curve_lines`: the overlay's, the page's and the
    drawing's, the angle between them the curve's) in DICOM PIXEL units (the top-left pixel's top-left corner
    at 0.0: film pixels + 0.5), not yet clipped to the film: (2, 2, 2).

    Args:
        spine: the document's ``spine`` (its ``landmarks`` and ``centreline_weight``).
        curve: one of its ``curves``.
        width: the film's width in pixels.
    """
    return curve_lines(np.asarray(spine["landmarks"], dtype=np.float64), curve["upper_end"], curve["lower_end"],
                       width, spine.get("centreline_weight") or 0.0) + 0.5


def cobb_points(spine: dict[str, Any], curve: dict[str, Any], width: int, height: int) -> np.ndarray | None:
    """A curve's two lines as four points in DICOM PIXEL units, clipped to the film (:func:`pixel_lines`): the
    line at the upper end vertebra's upper endplate, then the one at the lower end vertebra's lower endplate.
    None where a line lies wholly outside the film.

    Args:
        spine: the document's ``spine`` (its ``landmarks`` and ``centreline_weight``).
        curve: one of its ``curves``.
        width: the film's width in pixels.
        height: its height.
    """
    parts = [clip_segment(seg[0], seg[1], width, height) for seg in pixel_lines(spine, curve, width)]
    if any(p is None for p in parts):
        return None
    return np.concatenate(parts).astype(np.float32)


def _curve_groups(doc: dict[str, Any], source: Dataset, alg: Any, key: str) -> list[Any]:
    """One measurement group per reported curve, in the shape OHIF's ``@cornerstonejs/adapters`` hydrate as
    its Cobb angle tool: the tracking identifier :data:`CORNERSTONE_COBB`, the curve's name as the group's
    Comment (the annotation's label), and the NUM Cobb angle inferred from a four-point SCOORD POLYLINE (its
    two endplate lines) selected from the film."""
    import highdicom as hd

    spine = doc.get("spine")
    groups = []
    w, h = int(source.Columns), int(source.Rows)
    for i, c in enumerate(reported_curves(spine), start=1):
        site = hd.sr.FindingSite(C.REGION_SITES[c["region"]])
        points = cobb_points(spine, c, w, h)
        coords = None if points is None else [hd.sr.CoordinatesForMeasurement(
            hd.sr.GraphicTypeValues.POLYLINE, points,
            hd.sr.SourceImageForRegion.from_source_image(source, frames(source)))]
        images = None if coords else [hd.sr.SourceImageForMeasurement.from_source_image(source, frames(source))]
        m = hd.sr.Measurement(name=C.COBB_ANGLE, value=float(c["angle"]), unit=C.DEGREES, algorithm_id=alg,
                              finding_sites=[site], referenced_coordinates=coords, referenced_images=images)
        name = curve_name(i, c)
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=derived_uid(source.SOPInstanceUID, key, name),
                                                         identifier=CORNERSTONE_COBB),
            algorithm_id=alg, finding_sites=[site], measurements=[m],
            qualitative_evaluations=[_qe(C.REGION, C.REGIONS[c["region"]]), _qe(C.CONVEXITY, C.SIDES[c["side"]]),
                                     _qe(C.UPPER_END, C.VERTEBRAE[c["upper_end"]]),
                                     _qe(C.LOWER_END, C.VERTEBRAE[c["lower_end"]]),
                                     _qe(C.APEX, C.apex_code(c["apex"])), _qe(C.MAJOR, C.YES if c["major"] else C.NO)],
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source, frames(source))])
        group[0].ContentSequence.append(hd.sr.TextContentItem(C.COMMENT, name, relationship_type="CONTAINS"))
        groups.append(group)
    return groups


def curve_name(index: int, curve: dict[str, Any]) -> str:
    """A curve's measurement group, by its Comment (the label a viewer shows): ``curve 1: right main thoracic``."""
    return f"curve {index}: {curve['side']} {curve['region']}"


def measurement_report(doc: dict[str, Any], source: Dataset, instance_number: int = 1,
                       notes: list[str] | None = None) -> Dataset:
    """The SR of one prediction document (``status`` ok) made from the DICOM film ``source`` (its header is
    enough): in the source's study, in a series of its own, with the source's patient and study attributes.
    Its Specific Character Set is UTF-8 until :func:`spinexr.deploy.dicom.dicom_results` settles it.

    Args:
        doc: the film's prediction document (``status`` ok).
        source: the DICOM film's header as :func:`~spinexr.deploy.dicom.writer_source` makes it.
        instance_number: the output's Instance Number in its series.
        notes: what was left out is added here.
    """
    import highdicom as hd

    notes = notes if notes is not None else []
    key = model_key(doc)
    digest = (doc.get("model") or {}).get("bundle_digest") or "none"
    alg = algorithm(doc)
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=derived_uid("spinexr-device", key), name="spinexr", manufacturer_name=MANUFACTURER,
        model_name=str((doc.get("model") or {}).get("bundle") or (doc.get("model") or {}).get("name"))[:64],
        serial_number=digest[:16])
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(C.DEVICE, device))
    content = hd.sr.MeasurementReport(
        observation_context=context, procedure_reported=C.PLAIN_RADIOGRAPHY,
        imaging_measurements=[_film_group(doc, source, alg, key), *_curve_groups(doc, source, alg, key)],
        referenced_images=_library(source, notes))
    return hd.sr.ComprehensiveSR(
        evidence=[source], content=content[0],
        series_instance_uid=derived_uid(source.StudyInstanceUID, key, "sr-series"), series_number=SR_SERIES_NUMBER,
        sop_instance_uid=derived_uid(source.SOPInstanceUID, key, "sr"), instance_number=instance_number,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description=f"spinexr measurement, {NOT_FOR_DIAGNOSIS}", manufacturer_model_name="spinexr",
        software_versions=__version__, device_serial_number=digest[:16], coding_schemes=coding_schemes(),
        specific_character_set=UTF8)


def _walk(items: Any, out: dict[str, dict[str, Any]]) -> None:
    """Numeric and coded items of each measurement group, by the group's Comment (a curve's name) or else
    its tracking identifier."""
    for it in items or []:
        name = it.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in it else ""
        if it.get("ValueType") != "CONTAINER":
            continue
        if name != "Measurement Group":
            _walk(it.get("ContentSequence"), out)
            continue
        values: dict[str, Any] = {}
        ident = comment = ""
        for c in it.get("ContentSequence") or []:
            cname, kind = c.ConceptNameCodeSequence[0].CodeMeaning, c.get("ValueType")
            if kind == "TEXT" and cname == "Tracking Identifier":
                ident = str(c.TextValue)
            elif kind == "TEXT" and cname == "Comment":
                comment = str(c.TextValue)
            elif kind == "NUM" and c.get("MeasuredValueSequence"):
                values[cname] = float(c.MeasuredValueSequence[0].NumericValue)
            elif kind == "CODE":
                values[cname] = c.ConceptCodeSequence[0].CodeMeaning
        out[comment or ident] = values


def report_values(sr: Dataset) -> dict[str, dict[str, Any]]:
    """What an SR made by :func:`measurement_report` says, by measurement group (its Comment or tracking
    identifier: ``"spinexr decision"``, ``"curve 1: right main thoracic"``, ...): each numeric item's value and each coded
    item's meaning, by concept name. For checking a report read back from a PACS against ``predict``."""
    out: dict[str, dict[str, Any]] = {}
    _walk(sr.ContentSequence, out)
    return out


__all__ = ["CORNERSTONE_COBB", "PR_SERIES_NUMBER", "SR_SERIES_NUMBER", "angles_reported", "cobb_points", "curve_name",
           "derived_uid", "frames", "measurement_report", "model_key", "pixel_lines", "report_values",
           "reported_curves"]
