"""What a bundle is for, and the check that keeps every other film out of its findings.

The models were trained and measured on projection radiographs of the spine (CR or DX, images meant for
display), one film at a time. A film outside that use still decodes, and a network still answers for it:
a CT slice gets a label, a bone scan a Cobb angle. :class:`IntendedUse` says what is inside; the pipeline
asks it twice:

- **before** the models, from what the file says about itself (DICOM only; a JPEG, PNG or TIFF says
  nothing): modality, Presentation Intent Type ("FOR PROCESSING" images are raw detector data, not
  films), Body Part Examined where present, one frame (a cine or a stack is no film);
- **after** them, from what the models found: the out-of-distribution flag (the feature score over its
  threshold, or the file's own checks: a colour DICOM, a modality that is no radiograph).

A film outside gets the document status ``not_analysed``, with every reason, and no label, probability,
angle or decision; no SR or presentation state leaves for the PACS. The bundle's manifest holds the
setting (``intended_use``); a bundle without one gets the defaults below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from spinexr.errors import SpinexrError

KIND = "outside_intended_use"
# Body Part Examined values of the spine (DICOM CID 4031 defined terms and the spellings sites use).
SPINE_PARTS = ("SPINE", "CSPINE", "TSPINE", "LSPINE", "SSPINE", "LSSPINE", "TLSPINE", "CTSPINE", "WHOLESPINE",
               "LUMBAR", "THORACIC", "SACRUM", "COCCYX", "BACK", "WHOLEBODY")
# DX, MG and IO "For Processing" storage classes: raw detector data, not images meant for display.
FOR_PROCESSING_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.2.1",
                                    "1.2.840.10008.5.1.4.1.1.1.3.1"})
OOD_POLICIES = ("refuse", "flag")


def _part(value: str) -> str:
    return "".join(ch for ch in value.upper() if ch.isalnum())


@dataclass(frozen=True)
class IntendedUse:
    """The films a bundle analyses (see the module).

    Args:
        modalities: DICOM modalities analysed.
        presentation_intents: Presentation Intent Types analysed (a film without one, as CR films are, passes).
        body_parts: Body Part Examined values analysed (a film without one passes); compared without
            spaces, hyphens or case, and a value naming the spine ("L-SPINE", "LUMBAR SPINE") passes.
        out_of_distribution: ``refuse``: a film flagged out of distribution is not analysed; ``flag``:
            it is analysed and flagged.
        max_frames: the most frames a film may hold (the first is analysed).
    """

    modalities: tuple[str, ...] = ("CR", "DX")
    presentation_intents: tuple[str, ...] = ("FOR PRESENTATION",)
    body_parts: tuple[str, ...] = SPINE_PARTS
    out_of_distribution: str = "refuse"
    max_frames: int = 1

    def __post_init__(self) -> None:
        for f in ("modalities", "presentation_intents", "body_parts"):
            value = getattr(self, f)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise SpinexrError(f"intended use: {f} must be a list of strings, not {value!r}")
            object.__setattr__(self, f, tuple(v.upper() for v in value))
        if not isinstance(self.max_frames, int) or self.max_frames < 1:
            raise SpinexrError(f"intended use: max_frames must be a whole number of at least 1, not {self.max_frames!r}")
        if self.out_of_distribution not in OOD_POLICIES:
            raise SpinexrError(f"intended use: out_of_distribution must be one of {', '.join(OOD_POLICIES)}, "
                               f"not {self.out_of_distribution!r}")

    @classmethod
    def from_manifest(cls, value: Mapping[str, Any] | None) -> IntendedUse:
        """The setting a bundle manifest's ``intended_use`` holds (the defaults where it holds none)."""
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise SpinexrError(f"the bundle's intended_use must be a mapping, not {type(value).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise SpinexrError(f"the bundle's intended_use has unknown keys {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})

    def to_manifest(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def before(self, meta: Any) -> list[str]:
        """Why a decoded file is outside, from its header (empty: inside, or a file without a header)."""
        if meta is None or getattr(meta, "format", "") != "DICOM":
            return []
        extra = getattr(meta, "extra", None) or {}
        reasons = []
        modality = (getattr(meta, "modality", None) or "").upper()
        if modality not in self.modalities:
            reasons.append(f"modality {modality or 'absent'}: spinexr analyses {' and '.join(self.modalities)} films")
        intent = str(extra.get("presentation_intent") or "").upper()
        if extra.get("sop_class") in FOR_PROCESSING_CLASSES and not intent:
            intent = "FOR PROCESSING"
        if intent and intent not in self.presentation_intents:
            reasons.append(f"Presentation Intent Type {intent}: spinexr analyses images meant for display "
                           f"({', '.join(self.presentation_intents)})")
        n = int(getattr(meta, "n_frames", 1) or 1)
        if n > self.max_frames:
            reasons.append(f"{n} frames: spinexr analyses films of at most {self.max_frames} frame"
                           f"{'s' if self.max_frames > 1 else ''} (send the frame wanted as an image of its own)")
        part = str(extra.get("body_part") or "")
        if part and _part(part) not in {_part(p) for p in self.body_parts} and "SPINE" not in _part(part):
            reasons.append(f"Body Part Examined {part}: spinexr analyses films of the spine")
        return reasons

    def after(self, ood: bool | None, ood_reasons: tuple[str, ...]) -> list[str]:
        """Why an analysed film is outside, from what the models found (empty: inside)."""
        if self.out_of_distribution == "refuse" and ood:
            return [f"out of distribution ({'; '.join(ood_reasons) or 'flagged'})"]
        return []


__all__ = ["FOR_PROCESSING_CLASSES", "KIND", "SPINE_PARTS", "IntendedUse"]
