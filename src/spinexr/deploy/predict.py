"""``spinexr predict``: files and folders through a pipeline, to CSV, JSON or JSON Lines, with optional heatmaps
and overlays.

A bad file is reported in its document (``status`` error, with the reason) and the batch goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from spinexr.config import DECODE_WORKERS
from spinexr.data.imread import DEFAULT_MAX_PIXELS, list_images
from spinexr.deploy.dicom import DicomWriter
from spinexr.deploy.document import write_documents
from spinexr.deploy.pipeline import Pipeline
from spinexr.deploy.predictor import Prediction
from spinexr.deploy.stream import ResultFile, Tally, decoded_batches, predict_batch
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
    _check_artifacts(pipeline, explain, heatmaps, overlays)
    preds: list[Prediction] = []
    for i, p in enumerate(tqdm(paths, desc="predicting", unit="img", disable=not progress)):
        pred, img = pipeline.predict_file(p)
        _artifacts(pipeline, pred, img, i, explain, heatmaps, overlays)
        preds.append(pred)
    return preds


def _artifacts(pipeline: Pipeline, pred: Prediction, img: np.ndarray | None, i: int, explain: str | None,
               heatmaps: Path | None, overlays: Path | None) -> None:
    """The heatmap and the measurement overlay of one film, named in its prediction."""
    path = Path(pred.path)
    if img is not None and explain and heatmaps is not None:
        try:
            heat, _ = pipeline.explain(img, explain)
            dest = heatmaps / _artifact_name(i, path, explain)
            Image.fromarray(overlay(img, heat)).save(dest)
            pred.heatmap = str(dest)
        except SpinexrError as e:
            pred.warnings.append(f"no heatmap: {e}")
    if img is not None and overlays is not None and pred.spine is not None:
        dest = overlays / _artifact_name(i, path, "cobb")
        Image.fromarray(pipeline.overlay(img, pred.spine)).save(dest)
        pred.overlay = str(dest)


def _check_artifacts(pipeline: Pipeline, explain: str | None, heatmaps: Path | None, overlays: Path | None) -> None:
    if explain and heatmaps is None:
        raise SpinexrError("--explain needs --heatmaps DIR to write the overlays into")
    if overlays is not None and pipeline.measurer is None:
        raise SpinexrError("--overlays needs a landmark model to measure the spine with (a bundle with one, or --landmarks)")
    for folder in (heatmaps, overlays):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)


def stream_paths(pipeline: Pipeline, paths: list[Path], out: Path | None = None, *, resume: bool = False,
                 batch_size: int = 16, workers: int = DECODE_WORKERS, explain: str | None = None, heatmaps: Path | None = None,
                 overlays: Path | None = None, progress: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS,
                 on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
                 dicom: DicomWriter | None = None) -> Tally:
    """Every path through the pipeline in batches, films decoded in ``workers`` processes, each batch's
    documents appended to ``out`` (:class:`~spinexr.deploy.stream.ResultFile`) and handed to
    ``on_batch``; with ``resume`` the films already in ``out`` (same path and content) are skipped.
    With ``dicom``, each DICOM film's SR and presentation state are written before its document
    reaches ``out``, so a resumed run never skips a film whose report is missing.
    Returns the run's tally (films already in ``out`` included)."""
    if batch_size < 1:
        raise SpinexrError(f"--batch-size must be 1 or more, got {batch_size}")
    _check_artifacts(pipeline, explain, heatmaps, overlays)
    sink = ResultFile(out, pipeline.labels, pipeline.model_info.get("bundle_digest"), resume) if out else None
    index = {str(p): i for i, p in enumerate(paths)}
    todo = paths
    if sink is not None and sink.done:
        todo = [p for p in paths if not sink.has(p)]
        log.info("resuming: %d of %d films already in %s", len(paths) - len(todo), len(paths), out)
    tally = sink.tally if sink is not None else Tally()
    bar = tqdm(total=len(todo), desc="predicting", unit="film", disable=not progress, smoothing=0.1)
    try:
        for batch in decoded_batches(todo, batch_size, workers, max_pixels):
            preds = predict_batch(pipeline, batch)
            for d, p in zip(batch, preds):
                _artifacts(pipeline, p, d.img, index[d.path], explain, heatmaps, overlays)
            docs = [p.to_document() for p in preds]
            if dicom is not None:
                for doc in docs:
                    dicom.write(doc)
            if sink is not None:
                sink.append(docs)
            else:
                for doc in docs:
                    tally.add(doc)
            if on_batch is not None:
                on_batch(docs)
            bar.update(len(batch))
    finally:
        bar.close()
        if sink is not None:
            sink.close()
    return tally


def write_predictions(preds: list[Prediction], out: Path) -> Path:
    """The predictions' documents to ``out``: ``.json`` (an array), ``.jsonl`` (a line each) or CSV (flattened)."""
    return write_documents((p.to_document() for p in preds), out)


def summarize(preds: list[Prediction]) -> str:
    """The end-of-run line: films predicted by label, unreadable, flagged out-of-distribution."""
    tally = Tally()
    for p in preds:
        tally.add(p.to_document())
    return tally.line()


__all__ = ["Prediction", "expand_paths", "predict_paths", "stream_paths", "summarize", "write_predictions"]
