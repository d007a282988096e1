"""``spinexr predict``: files and folders through a pipeline, to CSV, JSON or JSON Lines, with optional heatmaps
and overlays.

A bad file is reported in its document (``status`` error, with the reason) and the batch goes on.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from spinexr.data.imread import list_images
from spinexr.deploy.document import write_documents
from spinexr.deploy.pipeline import Pipeline
from spinexr.deploy.predictor import Prediction
from spinexr.errors import SpinexrError
from spinexr.explain import overlay

log = logging.getLogger(__name__)


def expand_paths(paths: list[str | Path], recursive: bool = False) -> list[Path]:
    """Files as given, folders expanded to their images (sub-folders only with ``recursive``)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = list_images(p, recursive=recursive)
            if not found:
                log.warning("%s: no image files found%s", p, "" if recursive else " (use --recursive for sub-folders)")
            out.extend(found)
        else:
            out.append(p)  # missing or unreadable files are reported per row, not fatal
    return out


def _artifact_name(i: int, path: Path, method: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in path.stem)[:80]
    return f"{i:05d}_{safe}_{method.replace('+', 'p')}.png"


def predict_paths(pipeline: Pipeline, paths: list[Path], explain: str | None = None, heatmaps: Path | None = None,
                  progress: bool = True, overlays: Path | None = None) -> list[Prediction]:
    """Every path through the pipeline; one :class:`Prediction` per path (``status`` ok or error). With
    ``heatmaps`` (and ``explain``) the classifier's map, and with ``overlays`` the measurement drawn on
    the film at its original size, are written beside and named in the document's ``files``."""
    if explain and heatmaps is None:
        raise SpinexrError("--explain needs --heatmaps DIR to write the overlays into")
    if overlays is not None and pipeline.measurer is None:
        raise SpinexrError("--overlays needs a landmark model to measure the spine with (a bundle with one, or --landmarks)")
    for folder in (heatmaps, overlays):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    preds: list[Prediction] = []
    for i, p in enumerate(tqdm(paths, desc="predicting", unit="img", disable=not progress)):
        pred, img = pipeline.predict_file(p)
        if img is not None and explain and heatmaps is not None:
            try:
                heat, _ = pipeline.explain(img, explain)
                dest = heatmaps / _artifact_name(i, p, explain)
                Image.fromarray(overlay(img, heat)).save(dest)
                pred.heatmap = str(dest)
            except SpinexrError as e:
                pred.warnings.append(f"no heatmap: {e}")
        if img is not None and overlays is not None and pred.spine is not None:
            dest = overlays / _artifact_name(i, p, "cobb")
            Image.fromarray(pipeline.overlay(img, pred.spine)).save(dest)
            pred.overlay = str(dest)
        preds.append(pred)
    return preds


def write_predictions(preds: list[Prediction], out: Path) -> Path:
    """The predictions' documents to ``out``: ``.json`` (an array), ``.jsonl`` (a line each) or CSV (flattened)."""
    return write_documents((p.to_document() for p in preds), out)


def summarize(preds: list[Prediction]) -> str:
    ok = [p for p in preds if p.status == "ok"]
    counts: dict[str, int] = {}
    for p in ok:
        counts[p.label] = counts.get(p.label, 0) + 1
    flagged = sum(1 for p in ok if p.ood)
    parts = [f"{len(ok)} predicted ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})",
             f"{len(preds) - len(ok)} unreadable", f"{flagged} flagged out-of-distribution"]
    return "; ".join(parts)


__all__ = ["Prediction", "expand_paths", "predict_paths", "summarize", "write_predictions"]
