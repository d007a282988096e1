"""The coded concepts of spinexr's DICOM output, in one place (documented in ``docs/dicom.md``).

Standard codes where a standard concept exists: SNOMED CT (``SCT``) for the findings, the vertebrae,
the severity bands and yes/no, DICOM (``DCM``) for the report's structure, UCUM for units. Every code
from DICOM's own tables is taken from pydicom's dictionary of them (``pydicom.sr.codedict``), so a
typing slip cannot make a wrong one. The two disorders the classifier names are SNOMED CT codes that
DICOM's tables do not list: *Scoliosis deformity of spine* (298382003) and *Spondylolisthesis*
(274152003).

Concepts no standard names (the classifier's own label and probabilities, the end vertebrae of a
curve, the view check, the out-of-distribution flag) are private codes of the scheme ``99SPINEXR``,
declared in each instance's Coding Scheme Identification Sequence, as DICOM PS3.16 section 8.2 asks of
a private scheme (designators starting with ``99``).
"""

from __future__ import annotations

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

SCHEME = "99SPINEXR"
SCHEME_NAME = "spinexr private codes"


def _private(value: str, meaning: str) -> Code:
    return Code(value, SCHEME, meaning)


# The decision's label (and the classifier's) as a finding.
LABELS: dict[str, Code] = {
    "Normal": codes.SCT.Normal,  # 17621005
    "Scoliosis": Code("298382003", "SCT", "Scoliosis deformity of spine"),
    "Spondylolisthesis": Code("274152003", "SCT", "Spondylolisthesis"),
}
FINDING = codes.DCM.Finding  # 121071: the decision
CLASSIFIER_FINDING = _private("CLASSIFIER-FINDING", "Classifier finding")
OVERRULED = _private("OVERRULED", "Decision overruled the classifier")
AGREEMENT = _private("AGREEMENT", "Classifier and measured curve")
AGREEMENTS: dict[str, Code] = {a: _private("AGREE-" + a.upper().replace(" ", "-"), a) for a in
                               ("agree", "consistent", "disagree", "overruled", "no angle", "check the film")}


def probability(label: str) -> Code:
    """The classifier's calibrated probability of ``label`` (unit: UCUM ``1``)."""
    return _private("P-" + label.upper()[:12], f"Classifier probability of {label}")


OOD = _private("OOD", "Out of distribution")
OOD_SCORE = _private("OOD-SCORE", "Out-of-distribution score")
SPINE_MEASURED = _private("SPINE-MEASURED", "Spine measured")
VIEW = _private("VIEW", "View check")
VIEWS: dict[str, Code] = {"full-spine AP": _private("VIEW-FULL-AP", "full-spine AP"),
                          "lumbar or lateral": _private("VIEW-LUMBAR", "lumbar or lateral")}
YES, NO = codes.SCT.Yes, codes.SCT.No  # 373066001, 373067005

COBB_ANGLE = codes.SCT.CobbAngle  # 285285000
MAXIMUM = codes.SCT.Maximum  # 56851009: the largest of the three angles (TID 300 derivation)
SEVERITY = codes.SCT.Severity  # 246112005
BANDS: dict[str, Code] = {"none": codes.SCT.None_, "mild": codes.SCT.Mild, "moderate": codes.SCT.Moderate,
                          "severe": codes.SCT.Severe}
SPINE = codes.SCT.Spine  # 421060004: the finding site of every curve
UPPER_END = _private("UPPER-END", "Upper end vertebra")
LOWER_END = _private("LOWER-END", "Lower end vertebra")
APEX = _private("APEX", "Apex")
VERTEBRAE: dict[str, Code] = {lv: getattr(codes.SCT, f"{lv}Vertebra") for lv in
                              [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]}
# Each curve (spinexr.geometry.curves): its region (no standard code names the proximal/main thoracic
# subdivision: private codes), the part of the spine it lies in (SNOMED CT, as finding site), its convexity
# (SNOMED CT Laterality: Right/Left; the image's side where the patient's is not known: private codes), its
# apex (a vertebra, or a disc: SNOMED CT codes of DICOM's tables) and whether it is the major curve.
REGION = _private("CURVE-REGION", "Curve region")
REGIONS: dict[str, Code] = {r: _private("REGION-" + r.upper().replace(" ", "-"), r) for r in
                            ("proximal thoracic", "main thoracic", "thoracolumbar", "lumbar")}
REGION_SITES: dict[str, Code] = {"proximal thoracic": codes.SCT.ThoracicSpine, "main thoracic": codes.SCT.ThoracicSpine,
                                 "thoracolumbar": codes.SCT.ThoracoLumbarSpine, "lumbar": codes.SCT.LumbarSpine}
CONVEXITY = codes.SCT.Laterality  # 272741003
SIDES: dict[str, Code] = {"right": codes.SCT.Right, "left": codes.SCT.Left,
                          "image right": _private("IMAGE-RIGHT", "image right (patient orientation unknown)"),
                          "image left": _private("IMAGE-LEFT", "image left (patient orientation unknown)")}
MAJOR = _private("MAJOR-CURVE", "Major curve")
LEVELS = [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
DISCS: dict[str, Code] = {f"{a}-{b}": getattr(codes.SCT, f"{a}{b}Disc") for a, b in zip(LEVELS, LEVELS[1:])}


def apex_code(apex: str) -> Code:
    """The apex of a curve: a vertebra (``T9``) or a disc (``T11-T12``)."""
    return VERTEBRAE[apex] if apex in VERTEBRAE else DISCS[apex]

DEGREES = codes.UCUM.Degree  # deg
UNITLESS = codes.UCUM.NoUnits  # 1
PLAIN_RADIOGRAPHY = codes.SCT.PlainRadiography  # 168537006: the procedure reported
DEVICE = codes.DCM.Device  # 121007: the observer is an algorithm
COMMENT = codes.DCM.Comment  # 121106: a curve's name, the label a viewer shows for its annotation
