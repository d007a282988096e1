"""A bundle: what a user runs, as one folder with a manifest.

A bundle pairs a classifier with an optional landmark model and the decision rule that joins them
(its curve line and the view check, fitted on films whose label is known), in the habit of a MONAI
bundle's ``metadata.json``::

    my-bundle/
      bundle.json               the manifest (format spinexr-bundle/1)
      classifier.safetensors    a spinexr model file (+ classifier.md, its card, when there is one)
      landmarks.safetensors     a spinexr landmark model file (+ landmarks.md), optional
      refiner.safetensors       a vertebra refiner (the landmark model's second stage, + refiner.md), optional

The manifest names each file with its SHA-256, so a bundle that was changed after it was made is
refused, and the bundle's digest (:attr:`Bundle.digest`, the SHA-256 of the manifest) names exactly
what made a prediction. The rule in the manifest is the one that runs: a landmark model file alone
carries the rule it was bundled with before (``decision`` and ``view_check`` in its metadata), which
:func:`rule_section` reads when a bundle is made from it without fitting a new one.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from spinexr import __version__
from spinexr.data.imread import file_digest, read_image
from spinexr.data.manifest import load_manifest
from spinexr.deploy.decision import RULE_VERSION, DecisionRule, fit_curve_deg
from spinexr.deploy.intended_use import IntendedUse
from spinexr.errors import DatasetError, ImageReadError, SpinexrError, WeightsError
from spinexr.geometry.view import ViewCheck, fit_view_check, spine_view_features
from spinexr.models.files import KINDS, LANDMARK_FORMAT, REFINER_FORMAT, raw_metadata, read_metadata

FORMAT = "spinexr-bundle/1"
MANIFEST = "bundle.json"
log = logging.getLogger(__name__)
PARTS = {k.name: k.bundle_file for k in KINDS.values()}  # each part's file name in a bundle folder


def sha256_file(path: Path) -> str:
    """:func:`~spinexr.data.imread.file_digest` for a file that must be there."""
    digest = file_digest(path)
    if digest is None:
        raise FileNotFoundError(path)
    return digest


def is_bundle(path: str | Path) -> bool:
    """A bundle folder (holding ``bundle.json``) or a bundle manifest itself."""
    p = Path(path)
    return (p.is_dir() and (p / MANIFEST).is_file()) or (p.is_file() and p.name == MANIFEST)


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle manifest. ``landmarks`` is None for a classifier-only bundle.

    Args:
        root: the bundle's folder.
        manifest: its ``bundle.json``, checked.
    """

    root: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.root.name))

    @property
    def classifier(self) -> Path:
        return self.root / self.manifest["classifier"]["file"]

    @property
    def landmarks(self) -> Path | None:
        part = self.manifest.get("landmarks")
        return None if not part else self.root / part["file"]

    @property
    def refiner(self) -> Path | None:
        part = self.manifest.get("refiner")
        return None if not part else self.root / part["file"]

    @property
    def digest(self) -> str:
        """SHA-256 of the manifest as written (it names every file by its own SHA-256)."""
        return sha256_file(self.root / MANIFEST)

    @property
    def rule(self) -> DecisionRule:
        return DecisionRule.from_meta(self.manifest.get("rule"))

    @property
    def intended_use(self) -> IntendedUse:
        """The films this bundle analyses (its manifest's ``intended_use``, the defaults without one)."""
        return IntendedUse.from_manifest(self.manifest.get("intended_use"))

    @property
    def view_check(self) -> ViewCheck | None:
        return ViewCheck.from_meta(self.manifest.get("rule"))

    def card(self, part: str) -> Path | None:
        entry = self.manifest.get(part) or {}
        return self.root / entry["card"] if entry.get("card") else None


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read and check a bundle (its folder or ``bundle.json``): the format, each named file present and,
    with ``verify``, unchanged since the bundle was made (SHA-256)."""
    p = Path(path)
    root = p.parent if p.name == MANIFEST and p.is_file() else p
    mf = root / MANIFEST
    if not mf.is_file():
        raise WeightsError(f"{root}: not a spinexr bundle (no {MANIFEST}); make one with `spinexr bundle create`")
    try:
        manifest = json.loads(mf.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{mf}: not a readable bundle manifest ({e}); make the bundle again") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise WeightsError(f"{mf}: bundle format {got!r} is not {FORMAT!r}; upgrade spinexr or make the bundle again")
    if not isinstance(manifest.get("classifier"), dict):
        raise WeightsError(f"{mf}: the manifest names no classifier; make the bundle again")
    for part in PARTS:
        entry = manifest.get(part)
        if not entry:
            continue
        f = root / str(entry.get("file", ""))
        if f.resolve().parent != root.resolve():
            raise WeightsError(f"{mf}: the {part} file {entry.get('file')!r} lies outside the bundle folder")
        if not f.is_file():
            raise WeightsError(f"{f}: the bundle's {part} model file is missing; copy the whole bundle folder")
        if verify and sha256_file(f) != entry.get("sha256"):
            raise WeightsError(f"{f}: changed since the bundle was made (SHA-256 differs from {MANIFEST}); "
                               "make the bundle again with `spinexr bundle create`")
    bundle = Bundle(root, manifest)
    try:
        bundle.intended_use  # noqa: B018 - checked now, not at the first film
    except SpinexrError as e:
        raise WeightsError(f"{mf}: {e}") from None
    return bundle


def rule_section(rule: DecisionRule, view_check: ViewCheck | None, fitted: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest's ``rule``: the decision rule's lines (``decision``), its view check and how they were fitted.

    Args:
        rule: the decision rule.
        view_check: the view check, or None.
        fitted: how the lines were fitted (films, rates), merged into ``decision``.
    """
    return {"version": RULE_VERSION,
            "decision": {"curve_deg": rule.curve_deg, "straight_deg": rule.straight_deg,
                         "doubted_view_deg": rule.doubted_view_deg, "large_curve_deg": rule.large_curve_deg,
                         **(fitted or {})},
            "view_check": None if view_check is None else view_check.to_meta()}


def rule_from_landmark_file(path: Path) -> dict[str, Any]:
    """The rule a landmark model file carries in its metadata, as a manifest ``rule`` section."""
    meta = raw_metadata(path)
    d = meta.get("decision") or {}
    rule = DecisionRule.from_meta(meta)
    fitted = {k: v for k, v in d.items() if k not in ("curve_deg", "straight_deg", "doubted_view_deg", "large_curve_deg")}
    return rule_section(rule, ViewCheck.from_meta(meta), fitted)


def fit_rule(measurer: Any, source: str | Path, max_rate: float = 0.02, keep_lumbar_out: float = 0.9,
             progress: bool = True) -> dict[str, Any]:
    """Fit a landmark model's decision rule on a labelled folder or manifest: the curve line on its
    Normal films' measured angles (:func:`~spinexr.deploy.decision.fit_curve_deg`, at most ``max_rate``
    of them reach it) and the view check on every film's view features (Spondylolisthesis films:
    lumbar views; Normal and Scoliosis films: full-spine AP), its line keeping ``keep_lumbar_out`` of
    the lumbar films out. An unreadable film is left out and counted. Returns the manifest's ``rule``.

    Args:
        measurer: the :class:`~spinexr.deploy.measure.SpineMeasurer` whose measurements the rule reads.
        source: a labelled folder (one subfolder a class) or a manifest.
        max_rate: the largest share of the Normal films allowed to reach the curve line.
        keep_lumbar_out: the share of lumbar views the view check's line keeps out.
        progress: show a progress bar.

    Returns:
        the manifest's ``rule`` section (curve line, view check, what they were fitted on).
    """
    man = load_manifest(source)
    feats, full, normal, lumbar, unreadable = [], [], [], [], 0
    for rec in tqdm(man.records, desc="fitting the rule", unit="film", disable=not progress):
        try:
            img, _ = read_image(rec.path)
        except ImageReadError:
            unreadable += 1
            continue
        m = measurer.measure(img)
        feats.append(spine_view_features(m.landmarks, img.shape[0], m.confidence, m.first_stage))
        full.append(rec.label != "Spondylolisthesis")
        angle = m.result.largest if m.result is not None else float("nan")
        (normal if rec.label == "Normal" else lumbar if rec.label == "Spondylolisthesis" else []).append(angle)
    if not normal:
        raise DatasetError(f"{source}: no readable Normal films to fit the curve line on; the rule needs "
                           "films known not to be scoliosis")
    if len(normal) * max_rate < 1:  # the share the line may override is less than one film
        log.warning("%s: the curve line is fitted on %d Normal films only; %.0f%% of them is less than one film, "
                    "so the line sits just above the largest angle measured; fit on more Normal films",
                    source, len(normal), 100 * max_rate)
    feats_a, full_a = np.array(feats), np.array(full)
    ok = np.isfinite(feats_a).all(axis=1)
    if full_a[ok].all() or not full_a[ok].any():
        raise DatasetError(f"{source}: the view check needs Spondylolisthesis (lumbar) films and Normal or "
                           "Scoliosis (full-spine AP) films that the landmark model measures")
    check = fit_view_check(feats_a[ok], full_a[ok], keep_lumbar_out, f"{int(ok.sum())} films of {Path(source).name}")
    rule = DecisionRule(curve_deg=fit_curve_deg(np.array(normal), max_rate=max_rate))
    lumbar_a = np.asarray(lumbar, dtype=np.float64)
    lumbar_a = lumbar_a[np.isfinite(lumbar_a)]
    return rule_section(rule, check, {"fitted_on": f"{len(normal)} Normal films of {Path(source).name}",
                                      "max_rate": max_rate, "unreadable_films": unreadable,
                                      "lumbar_median_deg": float(np.median(lumbar_a)) if len(lumbar_a) else None})


def _part(src: Path, dest_dir: Path, name: str, card: Path | None) -> dict[str, Any]:
    dest = dest_dir / PARTS[name]
    if src.resolve() != dest.resolve():
        shutil.copyfile(src, dest)
    entry: dict[str, Any] = {"file": dest.name, "sha256": sha256_file(dest)}
    if card is not None and card.is_file():
        card_dest = dest.with_suffix(".md")
        if card.resolve() != card_dest.resolve():
            shutil.copyfile(card, card_dest)
        entry["card"] = card_dest.name
    return entry


def write_bundle(dest: str | Path, classifier: str | Path, landmarks: str | Path | None, rule: dict[str, Any] | None,
                 name: str, description: str = "",
                 refiner: str | Path | None = None) -> Bundle:
    """Make a bundle folder: the model files (and ``<file>.md`` cards beside them) copied in, the
    manifest written last (atomically), so a folder with a manifest is always complete.

    Args:
        dest: the bundle folder.
        classifier: the classifier model file.
        landmarks: the landmark model file (None: the bundle classifies only).
        rule: the decision rule fitted for this pair (:func:`fit_rule`; None: the landmark model's own).
        name: the bundle's name.
        description: one line on what it is for.
        refiner: the vertebra refiner, the landmark model's second stage (None: none).

    Returns:
        the bundle as loaded back from its manifest.
    """
    dest = Path(dest)
    clf, lm = Path(classifier), (Path(landmarks) if landmarks else None)
    meta = read_metadata(clf)  # refuses a file that is not a classifier model file
    if lm is not None and raw_metadata(lm).get("format") != LANDMARK_FORMAT:
        raise WeightsError(f"{lm}: not a spinexr landmark model file")
    if refiner is not None and (lm is None or raw_metadata(refiner).get("format") != REFINER_FORMAT):
        raise WeightsError(f"{refiner}: a vertebra refiner needs a landmark model beside it, and must be a spinexr "
                           "refiner file")
    dest.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "format": FORMAT, "name": name, "description": description,
        "spinexr_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "labels": list(meta["labels"]),
        "classifier": {**_part(clf, dest, "classifier", clf.with_suffix(".md")),
                       "architecture": meta.get("architecture"), "data_config": meta.get("data_config")},
        "landmarks": None, "rule": None,
        # The films it analyses (spinexr.deploy.intended_use); a site may edit this section of bundle.json.
        "intended_use": IntendedUse().to_manifest(),
    }
    if lm is not None:
        lm_meta = raw_metadata(lm)
        manifest["landmarks"] = {**_part(lm, dest, "landmarks", lm.with_suffix(".md")),
                                 "encoder": lm_meta.get("encoder"), "data_config": lm_meta.get("data_config")}
        manifest["rule"] = rule if rule is not None else rule_from_landmark_file(dest / PARTS["landmarks"])
    if refiner is not None:
        rf = Path(refiner)
        manifest["refiner"] = {**_part(rf, dest, "refiner", rf.with_suffix(".md")),
                               "encoder": raw_metadata(rf).get("encoder")}
    tmp = dest / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(dest / MANIFEST)
    return load_bundle(dest)


__all__ = ["FORMAT", "MANIFEST", "Bundle", "fit_rule", "is_bundle", "load_bundle",
           "rule_from_landmark_file", "rule_section", "sha256_file", "write_bundle"]
