"""``spinexr data check``: what is in a dataset before anyone trains on it.

Counts per class, unreadable files with reasons, exact duplicates (sha256), near-duplicates
(thumbnail correlation) that get a shared group id, size and aspect per class, and the *shortcut
baseline*: how well image width, height and aspect alone predict the class.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from spinexr import CLASSES
from spinexr.data.imread import DEFAULT_MAX_PIXELS, read_image
from spinexr.data.manifest import Manifest, load_manifest
from spinexr.errors import ImageReadError

log = logging.getLogger(__name__)

THUMB_SIZE = (32, 64)  # width, height: the aspect of a spine film
NEAR_DUP_THRESHOLD = 0.97
SHORTCUT_MARGIN = 0.05


@dataclass
class CheckResult:
    """Everything ``data check`` found; ``to_dict`` is what ``--json`` prints.

    Args:
        source: the folder or manifest checked.
        n_files: files found.
        counts: films by class.
        formats: files by format.
        unreadable: the files that could not be read, with why.
        exact_duplicates: groups of byte-identical files.
        near_duplicates: pairs of near-identical films.
        size_summary: width, height and aspect by class.
        shortcut: what size alone predicts (:func:`shortcut_baseline`).
        warnings: what a user should act on.
        read_warnings: readable files the decoders warned about.
        manifest_path: the manifest written, if any.
        report_path: the report written, if any.
    """

    source: str
    n_files: int
    counts: dict[str, int]
    formats: dict[str, int]
    unreadable: list[dict[str, Any]]
    exact_duplicates: list[list[str]]
    near_duplicates: list[dict[str, Any]]
    size_summary: dict[str, dict[str, dict[str, float]]]
    shortcut: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    read_warnings: list[dict[str, Any]] = field(default_factory=list)  # readable files the decoders warned about
    manifest_path: str | None = None
    report_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def thumbnail(img: np.ndarray) -> np.ndarray:
    """A zero-mean unit-norm 32x64 thumbnail for near-duplicate correlation."""
    t = np.asarray(
        Image.fromarray((img * 255).astype(np.uint8)).resize(THUMB_SIZE, Image.Resampling.BILINEAR),
        dtype=np.float64,
    ).ravel()
    t -= t.mean()
    n = np.linalg.norm(t)
    return t / n if n > 0 else t


def near_duplicate_pairs(thumbs: np.ndarray, threshold: float = NEAR_DUP_THRESHOLD) -> list[tuple[int, int, float]]:
    """Index pairs whose thumbnails correlate above ``threshold``."""
    if len(thumbs) < 2:
        return []
    corr = thumbs @ thumbs.T
    iu = np.triu_indices(len(thumbs), k=1)
    hits = np.nonzero(corr[iu] > threshold)[0]
    return [(int(iu[0][k]), int(iu[1][k]), float(corr[iu][k])) for k in hits]


def merge_groups(groups: list[str], pairs: list[tuple[int, int]]) -> list[str]:
    """Union-find over index pairs; each merged set takes its smallest group name."""
    parent = list(range(len(groups)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Records that already share a group start joined.
    first: dict[str, int] = {}
    for i, g in enumerate(groups):
        if g in first:
            parent[find(i)] = find(first[g])
        else:
            first[g] = i
    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    names: dict[int, str] = {}
    for i, g in enumerate(groups):
        r = find(i)
        names[r] = min(names.get(r, g), g)
    return [names[find(i)] for i in range(len(groups))]


def shortcut_baseline(
    widths: np.ndarray, heights: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0
) -> dict[str, Any]:
    """Cross-validated accuracy of logistic regression on (w, h, aspect, log area) alone.

    Args:
        widths: each film's width in pixels.
        heights: each film's height.
        labels: each film's class index.
        folds: the stratified folds (fewer where the smallest class has fewer films).
        seed: the folds' shuffle.

    Returns:
        the cross-validated accuracy, the majority-class rate and the folds used.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(labels, minlength=len(CLASSES))
    majority = float(counts.max() / max(len(labels), 1))
    k = int(min(folds, counts[counts > 0].min())) if len(labels) else 0
    if k < 2 or (counts > 0).sum() < 2:
        return {"accuracy": None, "majority_rate": majority, "folds": k,
                "features": ["width", "height", "aspect", "log_area"],
                "note": "too few images per class to cross-validate"}
    X = np.column_stack([widths, heights, heights / widths, np.log(widths * heights)]).astype(float)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    acc = float(cross_val_score(clf, X, labels, cv=cv).mean())
    return {"accuracy": acc, "majority_rate": majority, "folds": k,
            "features": ["width", "height", "aspect", "log_area"], "model": "logistic regression"}


def _summary(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    return {"min": float(values.min()), "median": float(np.median(values)),
            "max": float(values.max()), "mean": float(values.mean())}


@dataclass
class _Scan:
    """What one pass over the files found: the readable films and what each weighs in the checks."""

    ok: list[int] = field(default_factory=list)
    unreadable: list[dict[str, Any]] = field(default_factory=list)
    read_warnings: list[dict[str, Any]] = field(default_factory=list)
    shas: list[str] = field(default_factory=list)
    thumbs: list[np.ndarray] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    formats: dict[str, int] = field(default_factory=dict)


def _scan(records: list, max_pixels: int, progress: bool) -> _Scan:
    """Read every file once: its hash, thumbnail, size and format, or why it cannot be read."""
    sc = _Scan()
    for i, r in enumerate(tqdm(records, desc="checking", unit="img", disable=not progress)):
        try:
            img, meta = read_image(r.path, max_pixels=max_pixels)
        except ImageReadError as e:
            sc.unreadable.append({"path": str(r.path), "label": r.label, "reason": e.reason, "kind": e.kind.value,
                                  "notes": e.notes})
            continue
        if meta.warnings:
            sc.read_warnings.append({"path": str(r.path), "warnings": meta.warnings})
        sc.ok.append(i)
        sc.shas.append(hashlib.sha256(r.path.read_bytes()).hexdigest())
        sc.thumbs.append(thumbnail(img))
        sc.widths.append(meta.width)
        sc.heights.append(meta.height)
        sc.formats[meta.format] = sc.formats.get(meta.format, 0) + 1
    return sc


def _duplicates(good: list, sc: _Scan, threshold: float) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """Exact (same bytes) and near (thumbnail correlation) duplicates; both put their films in one group."""
    by_sha: dict[str, list[int]] = {}
    for j, s in enumerate(sc.shas):
        by_sha.setdefault(s, []).append(j)
    exact = [[str(good[j].path) for j in js] for js in by_sha.values() if len(js) > 1]
    exact_pairs = [(js[0], j) for js in by_sha.values() for j in js[1:]]
    near = near_duplicate_pairs(np.array(sc.thumbs), threshold) if sc.thumbs else []
    exact_set = {frozenset(p) for p in exact_pairs}
    near_report = [
        {"a": str(good[a].path), "b": str(good[b].path), "correlation": round(c, 4),
         "same_label": good[a].label == good[b].label}
        for a, b, c in near if frozenset((a, b)) not in exact_set
    ]
    for r, g in zip(good, merge_groups([r.group for r in good], exact_pairs + [(a, b) for a, b, _ in near])):
        r.group = g
    return exact, near_report


def _warnings(unreadable: list, exact: list, near_report: list, shortcut: dict[str, Any],
              counts: dict[str, int]) -> list[str]:
    warns: list[str] = []
    if unreadable:
        warns.append(f"{len(unreadable)} file(s) could not be read and are left out of the manifest")
    if exact:
        warns.append(f"{len(exact)} set(s) of exact duplicates; they share a group id in the manifest")
    if near_report:
        warns.append(f"{len(near_report)} near-duplicate pair(s); they share a group id in the manifest")
    mismatched = [p for p in near_report if not p["same_label"]]
    if mismatched:
        warns.append(f"{len(mismatched)} near-duplicate pair(s) carry different labels: check them")
    acc = shortcut.get("accuracy")
    if acc is not None and acc > shortcut["majority_rate"] + SHORTCUT_MARGIN:
        warns.append(
            f"image size and aspect alone predict the class {acc:.1%} of the time "
            f"(majority rate {shortcut['majority_rate']:.1%}): a model can learn this shortcut; "
            "letterbox the images and test on data from another source"
        )
    warns += [f"class {c} has no readable images" for c, n in counts.items() if n == 0]
    return warns


def check_dataset(
    source: str | Path,
    out_dir: str | Path | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    near_dup_threshold: float = NEAR_DUP_THRESHOLD,
    progress: bool = True,
) -> CheckResult:
    """Check a class-folder tree or CSV manifest; writes ``manifest.csv`` and ``data_report.json``.

    Unreadable files are reported and left out of the manifest; the check goes on past them.

    Args:
        source: a class-folder tree or CSV manifest.
        out_dir: where the manifest and the report go (None: nothing written).
        max_pixels: films larger than this are reported as too large, never decoded.
        near_dup_threshold: the thumbnail correlation above which two films are near-duplicates.
        progress: show a progress bar.

    Returns:
        the counts, unreadable files, duplicates and the framing shortcut's baseline.
    """
    manifest = load_manifest(source)
    records = manifest.records
    sc = _scan(records, max_pixels, progress)
    unreadable, read_warnings, shas, widths, heights, formats = (sc.unreadable, sc.read_warnings, sc.shas, sc.widths,
                                                                 sc.heights, sc.formats)
    good = [records[i] for i in sc.ok]
    exact, near_report = _duplicates(good, sc, near_dup_threshold)
    w = np.array(widths, dtype=float)
    h = np.array(heights, dtype=float)
    y = np.array([r.label_index for r in good], dtype=int)
    size_summary = {
        c: {"width": _summary(w[y == k]), "height": _summary(h[y == k]),
            "aspect_h_over_w": _summary(h[y == k] / w[y == k]) if (y == k).any() else {}}
        for k, c in enumerate(CLASSES)
    }
    shortcut = shortcut_baseline(w, h, y) if len(good) else {"accuracy": None}
    counts = {c: 0 for c in CLASSES}
    for r in good:
        counts[r.label] += 1
    warns = _warnings(unreadable, exact, near_report, shortcut, counts)
    result = CheckResult(
        source=str(source), n_files=len(records), counts=counts, formats=formats,
        unreadable=unreadable, exact_duplicates=exact, near_duplicates=near_report,
        size_summary=size_summary, shortcut=shortcut, warnings=warns, read_warnings=read_warnings,
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        m = Manifest(records=good, source=manifest.source)
        extra = {str(r.path): {"width": int(wv), "height": int(hv), "sha256": s}
                 for r, wv, hv, s in zip(good, widths, heights, shas)}
        m.write_csv(out / "manifest.csv", extra=extra)
        result.manifest_path = str(out / "manifest.csv")
        result.report_path = str(out / "data_report.json")
        (out / "data_report.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result


def format_result(r: CheckResult) -> str:
    """The human-readable text of a check."""
    lines = [f"dataset: {r.source}", f"files: {r.n_files}, readable: {sum(r.counts.values())}"]
    lines.append("counts: " + ", ".join(f"{c} {n}" for c, n in r.counts.items()))
    lines.append("formats: " + ", ".join(f"{k} {v}" for k, v in sorted(r.formats.items())))
    lines.append(f"unreadable: {len(r.unreadable)}")
    for u in r.unreadable:
        lines.append(f"  {u['path']}: [{u['kind']}] {u['reason']}")
    if r.read_warnings:
        lines.append(f"read with decoder warnings: {len(r.read_warnings)}")
        for u in r.read_warnings:
            lines.append(f"  {u['path']}: {'; '.join(u['warnings'])}")
    lines.append(f"exact duplicates: {len(r.exact_duplicates)}")
    for group in r.exact_duplicates:
        lines.append("  " + " == ".join(group))
    lines.append(f"near-duplicates: {len(r.near_duplicates)}")
    for p in r.near_duplicates:
        lines.append(f"  {p['a']} ~ {p['b']} (r = {p['correlation']:.3f})")
    lines.append("size per class (width / height / aspect h:w, min-median-max):")
    for c, s in r.size_summary.items():
        if not s["width"]:
            continue
        lines.append(
            f"  {c:<18} w {s['width']['min']:.0f}-{s['width']['median']:.0f}-{s['width']['max']:.0f}"
            f"  h {s['height']['min']:.0f}-{s['height']['median']:.0f}-{s['height']['max']:.0f}"
            f"  aspect {s['aspect_h_over_w']['min']:.2f}-{s['aspect_h_over_w']['median']:.2f}-"
            f"{s['aspect_h_over_w']['max']:.2f}"
        )
    sc = r.shortcut
    if sc.get("accuracy") is not None:
        lines.append(
            f"shortcut: size/aspect-only classifier {sc['accuracy']:.3f} ({sc['folds']}-fold CV) "
            f"vs majority rate {sc['majority_rate']:.3f}"
        )
    for w in r.warnings:
        lines.append(f"WARNING: {w}")
    if r.manifest_path:
        lines.append(f"manifest: {r.manifest_path}")
        lines.append(f"report: {r.report_path}")
    return "\n".join(lines)
