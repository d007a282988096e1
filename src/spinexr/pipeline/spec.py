"""The pipeline's spec: what to load and how to run it, one frozen object built once and passed whole.

A :class:`PipelineSpec` is made from ``predict``'s or ``serve``'s flags (:meth:`PipelineSpec.from_args`),
from a mapping such as a YAML file's section (:meth:`PipelineSpec.from_dict`), or from a bundle path
alone. The pipeline, the service, the batch executors (``--jobs`` processes, Ray actors) and the PACS
worker all receive this one object, and load the pipeline from it (:meth:`spinexr.pipeline.Pipeline.load`),
so the settings are never retyped layer by layer.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinexr.data.imread import DEFAULT_MAX_PIXELS
from spinexr.errors import SpinexrError

BACKENDS = ("torch", "onnx")


@dataclass(frozen=True)
class PipelineSpec:
    """What a pipeline loads and how it runs.

    Args:
        source: a bundle (folder or ``bundle.json``) or a classifier file (``.safetensors``, ``.onnx``);
            None: the bundle that ships with spinexr.
        landmarks: a landmark model file, or ``"bundled"``; None: the bundle's own (if any).
        no_landmarks: classify only, without measuring the spine.
        backend: ``torch`` or ``onnx`` (None: torch, or onnx for an ``.onnx`` classifier).
        device: where torch runs (``cpu``, ``cuda``, ``cuda:N``).
        onnx_path: an ONNX export of the classifier to run on ONNX Runtime.
        threads: intra-op threads of each model (None: the library's default).
        max_pixels: films larger than this are refused before decoding (a decompression-bomb guard).
    """

    source: str | None = None
    landmarks: str | None = None
    no_landmarks: bool = False
    backend: str | None = None
    device: str = "cpu"
    onnx_path: str | None = None
    threads: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        for name in ("source", "landmarks", "onnx_path"):  # paths travel as strings (picklable, JSON-able)
            v = getattr(self, name)
            if isinstance(v, Path):
                object.__setattr__(self, name, str(v))
        if self.backend is not None and self.backend not in BACKENDS:
            raise SpinexrError(f"backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int) or self.max_pixels < 1:
            raise SpinexrError(f"max_pixels {self.max_pixels!r}: give a whole number of pixels, 1 or more")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise SpinexrError(f"threads {self.threads!r}: give a whole number, 1 or more (or leave it unset)")

    def replace(self, **changes: Any) -> PipelineSpec:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> PipelineSpec:
        """From a mapping (a YAML section, a saved run); an unknown key is an error, not ignored."""
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpinexrError(f"unknown pipeline setting(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_args(cls, args: argparse.Namespace, source: str | None = None) -> PipelineSpec:
        """From a verb's parsed flags (those it has; the rest keep their defaults) and the bundle or
        classifier file its items started with."""
        d = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
             if f.name != "source" and getattr(args, f.name, None) is not None}
        if getattr(args, "onnx", None):
            d["onnx_path"] = args.onnx
        return cls(source=source, **d)


__all__ = ["BACKENDS", "PipelineSpec"]
