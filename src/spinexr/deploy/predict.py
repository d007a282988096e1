"""``spinexr predict``: files and folders through a pipeline, to CSV, JSON or JSON Lines, with optional heatmaps
and overlays.

A bad file is reported in its document (``status`` error, with the reason) and the batch goes on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from spinexr.config import DECODE_WORKERS
from spinexr.data.decoding import Decoded, decode, exit_with_parent
from spinexr.data.imread import DEFAULT_MAX_PIXELS, list_images
from spinexr.deploy.document import write_documents
from spinexr.deploy.pipeline import Pipeline
from spinexr.deploy.predictor import Prediction
from spinexr.deploy.stream import ResultFile, Tally, decoded_batches, in_order, predict_batch
from spinexr.errors import SpinexrError
from spinexr.explain import overlay

if TYPE_CHECKING:  # the DICOM writer (pydicom, highdicom) is imported only by runs that write DICOM
    from spinexr.deploy.dicom import DicomWriter

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


def _batch_documents(pipeline: Pipeline, batch: list[tuple[int, Decoded]], explain: str | None,
                     heatmaps: Path | None, overlays: Path | None) -> list[dict[str, Any]]:
    """Decoded films (with their places in the run's list) through the pipeline, their heatmaps and
    overlays drawn: their documents, in order."""
    preds = predict_batch(pipeline, [d for _, d in batch])
    for (i, d), p in zip(batch, preds):
        _artifacts(pipeline, p, d.img, i, explain, heatmaps, overlays)
    return [p.to_document() for p in preds]


def _in_process(pipeline: Pipeline, todo: list[tuple[int, Path]], batch_size: int, workers: int, max_pixels: int,
                explain: str | None, heatmaps: Path | None, overlays: Path | None) -> Iterator[list[dict[str, Any]]]:
    """Each batch's documents, the pipeline run here and the films decoded in ``workers`` processes."""
    places = iter([i for i, _ in todo])
    for batch in decoded_batches([p for _, p in todo], batch_size, workers, max_pixels):
        yield _batch_documents(pipeline, [(next(places), d) for d in batch], explain, heatmaps, overlays)


_JOB: dict[str, Any] = {}  # in a --jobs process: its pipeline


def _start_job(spec: dict[str, Any], threads: int) -> None:
    exit_with_parent()
    torch.set_num_threads(threads)
    _JOB["pipeline"] = Pipeline.load(spec.pop("source"), **spec, threads=threads)


def _run_job(batch: list[tuple[int, str]], max_pixels: int, explain: str | None, heatmaps: Path | None,
             overlays: Path | None) -> list[dict[str, Any]]:
    films = [(i, decode(p, max_pixels)) for i, p in batch]
    return _batch_documents(_JOB["pipeline"], films, explain, heatmaps, overlays)


def _in_jobs(pipeline: Pipeline, todo: list[tuple[int, Path]], batch_size: int, jobs: int, max_pixels: int,
             explain: str | None, heatmaps: Path | None, overlays: Path | None) -> Iterator[list[dict[str, Any]]]:
    """Each batch's documents, in order, from ``jobs`` processes that each load the pipeline once (its
    threads this machine's CPUs shared among them) and decode and predict whole batches: on a CPU, two
    one-thread pipelines keep two cores busier than one pipeline with two threads. At most two batches
    a process are in flight, so memory stays bounded."""
    if pipeline.spec is None:
        raise SpinexrError("--jobs needs a pipeline made by Pipeline.load (it is loaded again in each process)")
    threads = max(1, _cpus() // jobs)
    batches = [[(i, str(p)) for i, p in todo[s:s + batch_size]] for s in range(0, len(todo), batch_size)]
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_start_job,
                             initargs=(dict(pipeline.spec), threads)) as pool:
        try:
            yield from in_order(pool, _run_job, batches, 2 * jobs, max_pixels, explain, heatmaps, overlays)
        except BrokenProcessPool as e:
            raise SpinexrError("a --jobs process ended abruptly (out of memory? killed?); what was written "
                               "so far is kept: run again with --resume, with fewer --jobs") from e


def _cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def stream_paths(pipeline: Pipeline, paths: list[Path], out: Path | None = None, *, resume: bool = False,
                 batch_size: int = 16, workers: int = DECODE_WORKERS, jobs: int = 1, explain: str | None = None,
                 heatmaps: Path | None = None, overlays: Path | None = None, progress: bool = True,
                 max_pixels: int = DEFAULT_MAX_PIXELS, on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
                 dicom: DicomWriter | None = None) -> Tally:
    """Every path through the pipeline in batches, films decoded in ``workers`` processes, each batch's
    documents appended to ``out`` (:class:`~spinexr.deploy.stream.ResultFile`) and handed to
    ``on_batch``; with ``resume`` the films already in ``out`` (same path and content) are skipped.
    With ``jobs`` > 1 the pipeline runs in that many processes instead, each decoding its own batches
    (``workers`` unused); the documents and the output are the same, in the same order.
    With ``dicom``, each DICOM film's SR and presentation state are written before its document
    reaches ``out``, so a resumed run never skips a film whose report is missing.
    Returns the run's tally (films already in ``out`` included)."""
    if batch_size < 1:
        raise SpinexrError(f"--batch-size must be 1 or more, got {batch_size}")
    if jobs < 1:
        raise SpinexrError(f"--jobs must be 1 or more, got {jobs}")
    _check_artifacts(pipeline, explain, heatmaps, overlays)
    sink = ResultFile(out, pipeline.labels, pipeline.model_info.get("bundle_digest"), resume) if out else None
    todo = list(enumerate(paths))
    if sink is not None and sink.done:
        todo = [(i, p) for i, p in todo if not sink.has(p)]
        log.info("resuming: %d of %d films already in %s", len(paths) - len(todo), len(paths), out)
    tally = sink.tally if sink is not None else Tally()
    bar = tqdm(total=len(todo), desc="predicting", unit="film", disable=not progress, smoothing=0.1)
    batches = (_in_jobs(pipeline, todo, batch_size, jobs, max_pixels, explain, heatmaps, overlays) if jobs > 1 else
               _in_process(pipeline, todo, batch_size, workers, max_pixels, explain, heatmaps, overlays))
    try:
        for docs in batches:
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
            bar.update(len(docs))
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
