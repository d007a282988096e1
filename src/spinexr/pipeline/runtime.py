"""The pipeline: a bundle's classifier, landmark model and decision rule, run as one object.

:meth:`Pipeline.load` takes a :class:`~spinexr.pipeline.spec.PipelineSpec`: a bundle (its folder or
``bundle.json``), a single classifier model file (``.safetensors`` or ``.onnx``, optionally with a landmark
model file), or nothing (the bundle that ships with spinexr), and how to run them.
:meth:`Pipeline.predict_file` and :meth:`Pipeline.predict_images` turn films into
:class:`~spinexr.deploy.prediction.Prediction` objects, built once per film, whose
:meth:`~spinexr.deploy.prediction.Prediction.to_document` is the one wire format. ``predict``,
``serve``, ``explain``, ``evaluate``, the demo and the benchmarks all run a film through this object,
so what is measured is what is deployed.

For one film: decode -> classifier (calibrated probabilities, OOD score) -> the file's own checks ->
landmark model (corners, Cobb angles, plausibility, view check) -> the decision rule.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from spinexr.config import BUNDLED
from spinexr.data.decoding import Decoded, decode
from spinexr.deploy.bundle import Bundle, is_bundle, load_bundle
from spinexr.deploy.bundled import bundled_bundle_dir, bundled_path
from spinexr.deploy.decision import DecisionRule
from spinexr.deploy.export import cached_onnx
from spinexr.deploy.intended_use import IntendedUse
from spinexr.deploy.measure import Measurement, SpineMeasurer
from spinexr.deploy.prediction import Classification, Prediction
from spinexr.deploy.predictor import Predictor
from spinexr.errors import SpinexrError
from spinexr.models.files import landmark_metadata, model_kind, read_metadata
from spinexr.pipeline.spec import PipelineSpec

MODEL_SUFFIXES = (".safetensors", ".onnx")


class Pipeline:
    """A classifier, an optional landmark model and the decision rule that joins them.

    Args:
        predictor: the classifier's :class:`~spinexr.deploy.predictor.Predictor`.
        measurer: the landmark model's :class:`~spinexr.deploy.measure.SpineMeasurer`, or None.
        bundle: the :class:`~spinexr.deploy.bundle.Bundle` they came from, if any: its rule and view
            check replace the ones the landmark model file carries.
    """

    def __init__(self, predictor: Predictor, measurer: SpineMeasurer | None = None, bundle: Bundle | None = None) -> None:
        self.predictor = predictor
        self.measurer = measurer
        self.bundle = bundle
        self.rule: DecisionRule | None = None
        if measurer is not None:
            self.rule = bundle.rule if bundle is not None and bundle.manifest.get("rule") else measurer.rule
            if bundle is not None and bundle.manifest.get("rule"):
                measurer.view_check = bundle.view_check
        # The films it analyses: the bundle's setting (spinexr.deploy.intended_use). A model file given alone (a
        # researcher's, not a deployment) has no setting: the header checks apply, a flagged film is flagged.
        self.intended_use = bundle.intended_use if bundle is not None else IntendedUse(out_of_distribution="flag")
        self._measure_lock = threading.Lock()  # one film through the landmark model at a time
        self.spec: PipelineSpec | None = None  # set by :meth:`load`
        self.model_info = self._model_info()

    @classmethod
    def load(cls, spec: PipelineSpec | str | Path | None = None, **changes: Any) -> Pipeline:
        """Load the pipeline a :class:`~spinexr.pipeline.spec.PipelineSpec` names; a path (or None: the
        bundle that ships with spinexr) with ``changes`` is read as the spec ``PipelineSpec(source, **changes)``."""
        if not isinstance(spec, PipelineSpec):
            spec = PipelineSpec(source=None if spec is None else str(spec), **changes)
        elif changes:
            spec = spec.replace(**changes)
        bundle, clf, lm = _parts(spec)
        onnx_path, lm_onnx = spec.onnx_path, None
        if spec.backend == "onnx":  # the exports are made once and cached (spinexr.deploy.export.cached_onnx)
            if onnx_path is None and clf.suffix.lower() != ".onnx":
                onnx_path = str(cached_onnx(clf))
            lm_onnx = cached_onnx(lm) if lm is not None else None
        predictor = Predictor(clf, backend=spec.backend, device=spec.device, onnx_path=onnx_path, threads=spec.threads,
                              max_pixels=spec.max_pixels)
        measurer = None
        if lm is not None:
            refiner = bundle.refiner if bundle is not None else None  # the bundle's second stage, with its model
            measurer = SpineMeasurer(lm, device=spec.device, backend="onnx" if lm_onnx else "torch", onnx_path=lm_onnx,
                                     threads=spec.threads, refiner=refiner,
                                     refiner_onnx_path=cached_onnx(refiner) if refiner and lm_onnx else None)
        pipe = cls(predictor, measurer, bundle)
        pipe.spec = spec  # how to load this pipeline again, in another process (--jobs, Ray)
        return pipe

    @staticmethod
    def check(spec: PipelineSpec) -> None:
        """Refuse what :meth:`load` would refuse without building a network: the bundle verified, each model
        file found and its metadata read (a service that loads its models later says what is wrong now)."""
        _, clf, lm = _parts(spec)
        if clf.suffix.lower() == ".safetensors":
            read_metadata(clf)
        elif not clf.is_file():
            raise SpinexrError(f"{clf}: model file not found")
        if lm is not None:
            landmark_metadata(lm)

    def _model_info(self) -> dict[str, Any]:
        p = self.predictor
        info: dict[str, Any] = {"name": p.name, "version": p.meta.get("spinexr_version"), "backend": p.backend,
                                "landmarks": None if self.measurer is None else self.measurer.meta.get("encoder"),
                                "bundle": None, "bundle_digest": None}
        if self.bundle is not None:
            info.update(bundle=self.bundle.name, bundle_digest=self.bundle.digest)
        return info

    @property
    def labels(self) -> list[str]:
        return self.predictor.labels

    def classify(self, imgs: list[np.ndarray]) -> list[Classification]:
        """The classifier alone on decoded films, in one model call (the service micro-batches this)."""
        return self.predictor.predict_images(imgs)

    def measure(self, img: np.ndarray) -> Measurement:
        if self.measurer is None:
            raise SpinexrError("this pipeline has no landmark model; load a bundle with one, or pass --landmarks")
        with self._measure_lock:
            return self.measurer.measure(img)

    def complete(self, c: Classification, film: Decoded) -> Prediction:
        """The rest of the path for a classified film: its file checks, the measurement and the decision."""
        return self.complete_batch([c], [film])[0]

    def complete_batch(self, classified: list[Classification], films: list[Decoded]) -> list[Prediction]:
        """Classified films made whole: each film's :class:`~spinexr.deploy.prediction.Prediction`, built
        once from its classification, its file's checks (where ``meta`` is known), the landmark model's
        measurement (run on the films in one call; each film's ``timing_ms.landmarks`` is its share of
        that call) and the decision. A film outside the intended use (:attr:`intended_use`: its header, or
        the out-of-distribution flag) is ``not_analysed`` instead, with its reasons; it is not measured.

        Args:
            classified: the classifier's answers, one a film.
            films: the decoded films (:class:`~spinexr.data.decoding.Decoded`: path, digest, pixels, metadata).
        """
        use = self.intended_use
        outside = [use.before(f.meta) for f in films]
        t0 = time.perf_counter()
        spines: list[Measurement | None] = [None] * len(classified)
        inside = [i for i, why in enumerate(outside) if not why]
        if self.measurer is not None and self.rule is not None and inside:
            with self._measure_lock:
                for i, m in zip(inside, self.measurer.measure_batch([films[i].img for i in inside])):
                    spines[i] = m
        share = (time.perf_counter() - t0) * 1e3 / max(1, len(inside))
        out = []
        for c, m, f, why in zip(classified, spines, films, outside):
            if why:
                out.append(Prediction.outside(f.path, why, meta=f.meta, model=self.model_info, sha256=f.sha256))
                continue
            p = Prediction.of(c, f.path, meta=f.meta, spine=m, rule=self.rule, model=self.model_info,
                              timing_ms={"classifier": c.seconds * 1e3, "landmarks": share}, sha256=f.sha256)
            why = use.after(p.ood, p.ood_reasons)
            out.append(p.not_analysed(why) if why else p)
        return out

    def predict_decoded(self, films: list[Decoded]) -> list[Prediction]:
        """Decoded films through the whole pipeline (the classifier and the landmark model in one call each);
        a file that could not be read gets its error."""
        good = [f for f in films if f.error is None]  # a decoded film holds its pixels or its error
        done = iter(self.complete_batch(self.classify([f.img for f in good]), good) if good else [])
        return [next(done) if f.error is None else
                Prediction.unreadable(f.path, f.error, model=self.model_info, sha256=f.sha256) for f in films]

    def predict_images(self, imgs: list[np.ndarray], paths: list[str] | None = None) -> list[Prediction]:
        """Films already decoded (arrays, no file checks) through the whole pipeline."""
        return self.predict_decoded([Decoded(p, None, img) for p, img in zip(paths or [""] * len(imgs), imgs)])

    def predict_image(self, img: np.ndarray, path: str = "") -> Prediction:
        return self.predict_images([img], [path])[0]

    def predict_file(self, path: str | Path) -> tuple[Prediction, np.ndarray | None]:
        """One file through the pipeline; a bad file gives ``status='error'`` with the reason, never an exception."""
        film = decode(str(path), self.predictor.max_pixels)
        return self.predict_decoded([film])[0], film.img

    def overlay(self, img: np.ndarray, m: Measurement) -> np.ndarray:
        """The measurement drawn on the film at its original size."""
        if self.measurer is None:
            raise SpinexrError("this pipeline has no landmark model to draw")
        return self.measurer.overlay(img, m)

    def explain(self, img: np.ndarray, method: str = "gradcam", target: int | None = None) -> tuple[np.ndarray, int]:
        """The classifier's heatmap in the film's frame; the arguments and what it returns:
        :meth:`~spinexr.deploy.predictor.Predictor.explain`."""
        return self.predictor.explain(img, method, target)

    def describe(self) -> dict[str, Any]:
        """What this pipeline runs, for ``GET /v1/model`` and ``spinexr models``: the classifier's metadata,
        the landmark model's encoder and the rule, and the bundle's manifest when there is one."""
        out: dict[str, Any] = {**self.predictor.meta, "backend": self.predictor.backend, "pipeline": self.model_info}
        if self.rule is not None:
            out["rule"] = {"curve_deg": self.rule.curve_deg, "straight_deg": self.rule.straight_deg,
                           "doubted_view_deg": self.rule.doubted_view_deg,
                           "view_check": self.measurer is not None and self.measurer.view_check is not None}
        if self.bundle is not None:
            out["bundle"] = self.bundle.manifest
        return out


def _parts(spec: PipelineSpec) -> tuple[Bundle | None, Path, Path | None]:
    """The bundle (if the pipeline runs one whole), the classifier file and the landmark model file a spec names."""
    source, bundle = spec.source, None
    if source is None:
        bundle = load_bundle(bundled_bundle_dir())
    elif is_bundle(source):
        bundle = load_bundle(source)
    elif Path(source).suffix.lower() not in MODEL_SUFFIXES:
        raise SpinexrError(f"{source}: not a bundle folder, bundle.json or model file (.safetensors, .onnx)")
    elif Path(source).suffix.lower() == ".safetensors" and model_kind(source) != "classifier":
        what = "a landmark model" if model_kind(source) == "landmarks" else "a vertebra refiner"
        raise SpinexrError(f"{source} is {what}: give a classifier or a bundle first, and the landmark model with "
                           "--landmarks")
    clf = bundle.classifier if bundle is not None else Path(str(source))
    lm: Path | None = None
    if spec.landmarks is not None and spec.landmarks == BUNDLED:
        lm = bundled_path("landmarks")
    elif spec.landmarks is not None:
        lm = Path(spec.landmarks)
    elif bundle is not None:
        lm = bundle.landmarks
    if spec.no_landmarks:
        lm = None
    if bundle is not None and lm is not None and lm != bundle.landmarks:
        bundle = None  # another landmark model than the bundle's: its own rule runs, not the bundle's
    return bundle, clf, lm


__all__ = ["BUNDLED", "MODEL_SUFFIXES", "Pipeline"]
