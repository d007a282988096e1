"""A prediction document drawn as a Grayscale Softcopy Presentation State (highdicom): a viewer that
opens it draws the measurement on the original film, as the overlay PNG does.

Three graphic layers: ``CORNERS`` (each vertebra's four corners as a closed polyline), ``ENDPLATES``
(the endplate lines of each curve's end vertebrae, the same lines as the overlay:
:func:`spinexr.geometry.overlay.curve_lines`) and ``TEXT`` (the decision; each curve's side, region, angle,
end vertebrae and apex beside its upper line; or why the spine was not measured). Film coordinates (pixel centres at whole
numbers) become DICOM's PIXEL units (the top-left pixel's top-left corner at 0.0) by adding half a
pixel; lines are clipped to the film.

A MONOCHROME1 film (low values white) gets the presentation LUT shape INVERSE, so a viewer that applies
the state shows it as the modality meant; a multi-frame film's drawing names its first frame, the one
analysed. No endplate line or angle is drawn on a view the check took for a lumbar or lateral one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from spinexr import __version__
from spinexr.deploy.dicom._charset import UTF8
from spinexr.deploy.dicom.report import (
    MANUFACTURER,
    NOT_FOR_DIAGNOSIS,
    PR_SERIES_NUMBER,
    angles_reported,
    derived_uid,
    frames,
    model_key,
    pixel_lines,
    reported_curves,
)
from spinexr.geometry.cobb import as_vertebrae
from spinexr.geometry.overlay import clip_segment


def curve_label(c: dict[str, Any]) -> str:
    """``right main thoracic 42.1° T5-T12, apex T9 (major)``."""
    return (f"{c['side']} {c['region']} {c['angle']:.1f}° {c['upper_end']}-{c['lower_end']}, apex {c['apex']}"
            f"{' (major)' if c.get('major') else ''}")


def _layers() -> list[Any]:
    import highdicom as hd

    return [hd.pr.GraphicLayer("CORNERS", order=1, description="vertebra corners"),
            hd.pr.GraphicLayer("ENDPLATES", order=2, description="endplate lines of each curve's end vertebrae"),
            hd.pr.GraphicLayer("TEXT", order=3, description="decision and angles")]


def decision_text(doc: dict[str, Any]) -> list[str]:
    """The lines of text drawn at the film's top left."""
    spine = doc.get("spine")
    lines = [f"spinexr: {doc['label']} ({NOT_FOR_DIAGNOSIS})"]
    dec = doc.get("decision") or {}
    if dec.get("note"):
        lines.append(str(dec["note"])[:200])
    if spine and not spine.get("plausible"):
        lines.append("implausible spine, no angle: " + "; ".join(spine.get("refused") or [])[:200])
    elif spine and spine.get("largest") is not None and not angles_reported(spine):
        lines.append(f"{spine.get('view')} view: no Cobb angle")
    elif spine and spine.get("largest") is not None:
        lines.append(f"largest Cobb angle {spine['largest']:.1f}°: {spine['band']}; {spine.get('pattern') or ''}")
    return lines


def presentation_state(doc: dict[str, Any], source: Dataset, instance_number: int = 1) -> Dataset:
    """The GSPS of one prediction document over the DICOM film ``source`` (one sample per pixel).

    Args:
        doc: the film's prediction document (``status`` ok).
        source: the DICOM film's dataset (its header is enough).
        instance_number: the output's Instance Number in its series.
    """
    import highdicom as hd

    h, w = int(source.Rows), int(source.Columns)
    frame = (frames(source) or [None])[0]
    layers = {layer.GraphicLayer: layer for layer in _layers()}
    spine = doc.get("spine")
    annotations = []
    if spine and spine.get("landmarks"):
        v = as_vertebrae(np.asarray(spine["landmarks"], dtype=np.float64)) + 0.5
        quads = [np.clip(q[[0, 1, 3, 2, 0]], [0, 0], [w, h]) for q in v]
        annotations.append(hd.pr.GraphicAnnotation(
            referenced_images=[source], graphic_layer=layers["CORNERS"], referenced_frame_number=frame,
            graphic_objects=[hd.pr.GraphicObject("POLYLINE", q, "PIXEL") for q in quads]))
    curves = reported_curves(spine)
    texts = []
    if curves:
        objects = []
        # Each curve's label at the right end of its own upper endplate line: curves run top to bottom
        # with distinct upper end vertebrae, so no two labels share an anchor.
        for c in curves:
            segs = pixel_lines(spine, c, w)
            for seg in segs:
                part = clip_segment(seg[0], seg[1], w, h)
                if part is not None:
                    objects.append(hd.pr.GraphicObject("POLYLINE", part, "PIXEL"))
            anchor = np.clip(segs[0][1], [0, 0], [w, h])
            texts.append(hd.pr.TextObject(curve_label(c), "PIXEL", anchor_point=(float(anchor[0]), float(anchor[1])),
                                          anchor_point_visible=False))
        if objects:
            annotations.append(hd.pr.GraphicAnnotation(referenced_images=[source], graphic_layer=layers["ENDPLATES"],
                                                       graphic_objects=objects, referenced_frame_number=frame))
    for i, line in enumerate(decision_text(doc)):
        top = 1.0 + i * max(h / 40, 12.0)
        texts.append(hd.pr.TextObject(line, "PIXEL", bounding_box=(1.0, top, max(w - 1.0, 2.0),
                                                                   min(top + max(h / 40, 12.0), float(h))),
                                      text_justification="LEFT"))
    annotations.append(hd.pr.GraphicAnnotation(referenced_images=[source], graphic_layer=layers["TEXT"],
                                               text_objects=texts, referenced_frame_number=frame))
    key = model_key(doc)
    digest = (doc.get("model") or {}).get("bundle_digest") or "none"
    pr = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[source], series_instance_uid=derived_uid(source.StudyInstanceUID, key, "pr-series"),
        series_number=PR_SERIES_NUMBER, sop_instance_uid=derived_uid(source.SOPInstanceUID, key, "pr"),
        instance_number=instance_number, manufacturer=MANUFACTURER, manufacturer_model_name="spinexr",
        software_versions=__version__, device_serial_number=digest[:16], content_label="SPINEXR",
        content_description=f"spinexr measurement, {NOT_FOR_DIAGNOSIS}"[:64],
        graphic_annotations=annotations, graphic_layers=list(layers.values()),
        series_description=f"spinexr drawing, {NOT_FOR_DIAGNOSIS}", specific_character_set=UTF8,
        presentation_lut_transformation=hd.PresentationLUTTransformation(
            presentation_lut_shape=hd.PresentationLUTShapeValues.INVERSE
            if source.get("PhotometricInterpretation") == "MONOCHROME1" else hd.PresentationLUTShapeValues.IDENTITY))
    if frame is not None:  # the film's reference names the frame analysed
        for series in pr.ReferencedSeriesSequence:
            for image in series.ReferencedImageSequence:
                image.ReferencedFrameNumber = frame
    # General Series: the body part tells a reader that Laterality (type 2C) is absent because the spine is
    # unpaired; a film that states a laterality keeps it.
    for kw in ("BodyPartExamined", "Laterality"):
        if source.get(kw):
            setattr(pr, kw, source.get(kw))
    if not source.get("Laterality") and not source.get("BodyPartExamined"):
        pr.Laterality = ""  # unknown
    return pr


__all__ = ["curve_label", "decision_text", "presentation_state"]
