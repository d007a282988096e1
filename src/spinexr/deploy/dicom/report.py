"""A prediction document as a DICOM Comprehensive SR holding a TID 1500 measurement report (highdicom).

The report has one measurement group for the film (the decision, the classifier's label and
probabilities, the largest Cobb angle and its band, the view check, the out-of-distribution flag, and
whether the decision overruled the classifier) and, for a measured spine, one group per curve of 10 degrees
or more (:mod:`spinexr.geometry.curves`: the Cobb angle in UCUM degrees, the region, the convexity side, the
end vertebrae, the apex and whether it is the major curve). The algorithm is identified by name, version and
the bundle's digest; the source image is referenced; the SR is UNVERIFIED. What each item means, with
its code, is in ``docs/dicom.md``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydicom.dataset import Dataset

from spinexr import __version__
from spinexr.deploy.dicom import _codes as C
from spinexr.deploy.dicom._charset import UTF8
from spinexr.geometry.view import LUMBAR

SR_SERIES_NUMBER = 990
PR_SERIES_NUMBER = 991
NOT_FOR_DIAGNOSIS = "not for diagnostic use"
UID_NAMESPACE = uuid.UUID("5b0c6f3e-2d0a-5e51-9a43-7370696e6578")  # spinexr's name-based UUID namespace
MANUFACTURER = "spinexr"


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


def _curve_groups(doc: dict[str, Any], source: Dataset, alg: Any, key: str) -> list[Any]:
    import highdicom as hd

    spine = doc.get("spine")
    if not angles_reported(spine):
        return []
    groups = []
    for i, c in enumerate(spine.get("curves") or [], start=1):
        site = hd.sr.FindingSite(C.REGION_SITES[c["region"]])
        m = hd.sr.Measurement(name=C.COBB_ANGLE, value=float(c["angle"]), unit=C.DEGREES, algorithm_id=alg,
                              finding_sites=[site],
                              referenced_images=[hd.sr.SourceImageForMeasurement.from_source_image(source,
                                                                                                   frames(source))])
        name = curve_name(i, c)
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=derived_uid(source.SOPInstanceUID, key, name),
                                                         identifier=name),
            algorithm_id=alg, finding_sites=[site], measurements=[m],
            qualitative_evaluations=[_qe(C.REGION, C.REGIONS[c["region"]]), _qe(C.CONVEXITY, C.SIDES[c["side"]]),
                                     _qe(C.UPPER_END, C.VERTEBRAE[c["upper_end"]]),
                                     _qe(C.LOWER_END, C.VERTEBRAE[c["lower_end"]]),
                                     _qe(C.APEX, C.apex_code(c["apex"])), _qe(C.MAJOR, C.YES if c["major"] else C.NO)],
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source, frames(source))]))
    return groups


def curve_name(index: int, curve: dict[str, Any]) -> str:
    """A curve's measurement group, by its tracking identifier: ``curve 1: right main thoracic``."""
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


def _walk(items: Any, group: str, out: dict[str, dict[str, Any]]) -> None:
    """Numeric and coded items by the tracking identifier of their measurement group."""
    for it in items or []:
        name = it.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in it else ""
        kind = it.get("ValueType")
        if kind == "CONTAINER":  # a measurement group starts a group of its own
            _walk(it.get("ContentSequence"), "" if name == "Measurement Group" else group, out)
        elif kind == "TEXT" and name == "Tracking Identifier":
            group = str(it.TextValue)
            out.setdefault(group, {})
        elif kind == "NUM" and group and it.get("MeasuredValueSequence"):
            out[group][name] = float(it.MeasuredValueSequence[0].NumericValue)
        elif kind == "CODE" and group:
            out[group][name] = it.ConceptCodeSequence[0].CodeMeaning


def report_values(sr: Dataset) -> dict[str, dict[str, Any]]:
    """What an SR made by :func:`measurement_report` says, by measurement group (its tracking
    identifier: ``"spinexr decision"``, ``"curve 1: right main thoracic"``, ...): each numeric item's value and each coded
    item's meaning, by concept name. For checking a report read back from a PACS against ``predict``."""
    out: dict[str, dict[str, Any]] = {}
    _walk(sr.ContentSequence, "", out)
    return out


__all__ = ["PR_SERIES_NUMBER", "SR_SERIES_NUMBER", "angles_reported", "derived_uid", "frames", "measurement_report",
           "model_key", "report_values", "curve_name"]
