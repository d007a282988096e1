"""What both PACS nodes do with the films they have in hand, whichever way the films came (DICOMweb or
DIMSE): predict them in one batch, record each outcome in the ledger, and store each analysed film's SR and
presentation state back through the node's ``store``. A film outside the intended use is recorded as not
analysed and nothing is stored for it; one that cannot be read or reported is recorded as failed, with its
reason (and tried again later, :mod:`spinexr.pacs.ledger`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinexr.data.decoding import decode
from spinexr.deploy.dicom import checked_source, dicom_results
from spinexr.errors import SpinexrError
from spinexr.pacs.ledger import Ledger
from spinexr.pipeline import Pipeline
from spinexr.pipeline.executors import predict_batch

log = logging.getLogger(__name__)

# Stores a film's SR and presentation state; returns None when stored, else why the PACS refused them.
# A PACS that cannot be reached raises spinexr.pacs.client.Unreachable (the films stay to be done).
Store = Callable[[list[Any], str], str | None]


@dataclass
class Round:
    """What one pass (or one drain of the inbox) did.

    Args:
        studies: new studies seen.
        finished: studies finished.
        skipped: studies with no film to analyse.
        reported: films reported.
        failed: films failed.
        reasons: why, for each failure.
        not_analysed: films outside the bundle's intended use (nothing stored for them).
    """

    studies: int = 0
    finished: int = 0
    skipped: int = 0
    reported: int = 0
    failed: int = 0
    reasons: list[str] = field(default_factory=list)
    not_analysed: int = 0

    def line(self) -> str:
        return (f"{self.studies} new studies: {self.finished} finished ({self.reported} films reported, "
                f"{self.failed} failed, {self.not_analysed} not analysed), {self.skipped} skipped")


@dataclass(frozen=True)
class Film:
    """A film in hand: its UIDs, its dataset (the header is enough), the file it was saved to, and how the
    documents name it.

    Args:
        study: Study Instance UID.
        series: Series Instance UID.
        sop: SOP Instance UID.
        dataset: the film's dataset.
        path: the file holding it.
        ref: the name its document gives it (a WADO-RS address, a DIMSE sender and UID).
    """

    study: str
    series: str
    sop: str
    dataset: Any
    path: Path
    ref: str


def fail(ledger: Ledger, film: Film | tuple[str, str, str], reason: str, r: Round) -> None:
    """Record a film as failed, with its reason."""
    study, series, sop = (film.study, film.series, film.sop) if isinstance(film, Film) else film
    log.warning("study %s, film %s: no report: %s", study, sop, reason)
    ledger.record_film((study, series, sop), reason=reason)
    r.failed += 1
    r.reasons.append(reason)


def report_films(pipeline: Pipeline, ledger: Ledger, films: list[Film], store: Store, r: Round) -> int:
    """Predict ``films`` in one batch and report each (see the module); returns the instances stored.

    Args:
        pipeline: the pipeline.
        ledger: the state file.
        films: the films in hand.
        store: stores one film's datasets in its study.
        r: the pass's counts, updated.
    """
    if not films:
        return 0
    preds = predict_batch(pipeline, [decode(str(f.path), pipeline.predictor.max_pixels) for f in films])
    stored = 0
    for film, pred in zip(films, preds):
        doc = pred.named(film.ref).to_document()
        if doc["status"] == "not_analysed":  # outside the intended use: nothing goes back to the PACS
            log.info("study %s, film %s: not analysed: %s", film.study, film.sop, doc["error"]["reason"])
            ledger.record_film((film.study, film.series, film.sop), reason=doc["error"]["reason"], analysed=False)
            r.not_analysed += 1
        elif doc["status"] != "ok":
            fail(ledger, film, (doc.get("error") or {}).get("reason") or "unreadable", r)
        else:
            stored += _report(ledger, film, doc, store, r)
    return stored


def _report(ledger: Ledger, film: Film, doc: dict[str, Any], store: Store, r: Round) -> int:
    try:
        res = dicom_results(doc, checked_source(film.dataset, film.ref), ledger.reported_in(film.study) + 1)
    except (SpinexrError, ValueError, TypeError, AttributeError) as e:
        fail(ledger, film, f"no report could be made: {e}", r)
        return 0
    refused = store(res.datasets, film.study)
    if refused:
        fail(ledger, film, f"the PACS refused the report ({refused})", r)
        return 0
    spine = doc.get("spine") or {}
    ledger.record_film((film.study, film.series, film.sop), label=doc["label"], largest=spine.get("largest"),
                       reports=(str(res.sr.SOPInstanceUID), str(res.pr.SOPInstanceUID) if res.pr is not None else None))
    r.reported += 1
    log.info("study %s, film %s: %s%s, report stored", film.study, film.sop, doc["label"],
             f", largest Cobb angle {spine['largest']:.1f} deg" if spine.get("largest") is not None else "")
    return len(res.datasets)


__all__ = ["Film", "Round", "Store", "fail", "report_films"]
