"""``spinexr pacs watch``: find CR/DX studies on a DICOMweb server (QIDO-RS), retrieve their films (WADO-RS),
predict them with the same pipeline as ``predict``, and store each film's SR and presentation state back
into its study (STOW-RS). What was done is kept in a :class:`~spinexr.pacs.ledger.Ledger`.

Errors are handled per study: a study with no CR/DX series (a CT, an RT plan) is skipped with its
reason; a film that cannot be retrieved or read, or has no pixels, is recorded as failed with its reason
and gets no report; the round goes on. A server that cannot be reached (or answers 5xx) ends the round
and is tried again with a growing wait; refused credentials end the run with what to set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinexr.data.decoding import decode
from spinexr.data.imread import DEFAULT_MAX_PIXELS
from spinexr.deploy.dicom import checked_source, dicom_results
from spinexr.errors import SpinexrError
from spinexr.pacs.client import Unreachable, explain
from spinexr.pacs.ledger import Ledger
from spinexr.pipeline import Pipeline, PipelineSpec
from spinexr.pipeline.executors import predict_batch

log = logging.getLogger(__name__)

STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
MODALITY, MODALITIES_IN_STUDY, STUDY_INSTANCES = "00080060", "00080061", "00201208"
FILM_MODALITIES = ("CR", "DX")


def _values(item: dict[str, Any], tag: str) -> list[Any]:
    return list((item.get(tag) or {}).get("Value") or [])


def _value(item: dict[str, Any], tag: str) -> str:
    v = _values(item, tag)
    return str(v[0]) if v else ""


@dataclass
class Round:
    """What one pass over the server did.

    Args:
        studies: new studies seen.
        finished: studies finished.
        skipped: studies with no film to analyse.
        reported: films reported.
        failed: films failed.
        reasons: why, for each failure.
    """

    studies: int = 0
    finished: int = 0
    skipped: int = 0
    reported: int = 0
    failed: int = 0
    reasons: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.studies} new studies: {self.finished} finished ({self.reported} films reported, "
                f"{self.failed} failed), {self.skipped} skipped")


@dataclass(frozen=True)
class WatchQuery:
    """Which studies a worker takes: those with one of ``modalities``, from ``since`` (a StudyDate,
    YYYYMMDD) on; their films predicted ``batch_size`` at a time.

    Args:
        modalities: the modalities taken (DX, CR).
        since: the first StudyDate taken, or None.
        batch_size: films predicted together.
    """

    modalities: tuple[str, ...] = FILM_MODALITIES
    since: str | None = None
    batch_size: int = 8


class PacsWorker:
    """One server, one pipeline, one ledger; :meth:`run_round` does one pass.

    Args:
        client: the DICOMweb client.
        url: the server's DICOMweb root.
        pipeline: the pipeline, or the spec it is loaded from when the first new film arrives (a pass that
            finds nothing new loads no model).
        ledger: the state file.
        work_dir: where films are kept while analysed.
        query: which studies it takes.
    """

    def __init__(self, client: Any, url: str, pipeline: Pipeline | PipelineSpec, ledger: Ledger, work_dir: Path,
                 query: WatchQuery | None = None) -> None:
        self.client, self.url, self.ledger = client, url, ledger
        self._pipeline = pipeline if isinstance(pipeline, Pipeline) else None
        spec = pipeline if isinstance(pipeline, PipelineSpec) else pipeline.spec
        self._spec = spec
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        q = query or WatchQuery()
        self.modalities = tuple(m.upper() for m in q.modalities)
        self.since = q.since
        self.batch_size = max(1, q.batch_size)
        self.max_pixels = spec.max_pixels if spec is not None else DEFAULT_MAX_PIXELS

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline, loaded from its spec on first use."""
        if self._pipeline is None:
            assert self._spec is not None
            log.info("new films: loading the models")
            self._pipeline = Pipeline.load(self._spec)
        return self._pipeline

    def _call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """A DICOMweb call; a failure becomes :class:`Unreachable` (the round ends) or :class:`SpinexrError`."""
        try:
            return fn(*args, **kw)
        except SpinexrError:
            raise
        except Exception as e:  # noqa: BLE001 - requests and dicomweb-client raise many types
            raise explain(e, self.url) from None

    def find_studies(self) -> list[tuple[str, list[str], int | None]]:
        """Every study on the server (from ``since``, a StudyDate, on): its UID, modalities and instance count."""
        filters = {"StudyDate": f"{self.since}-"} if self.since else None
        found = self._call(self.client.search_for_studies, search_filters=filters,
                           fields=["ModalitiesInStudy", "NumberOfStudyRelatedInstances"], get_remaining=True)
        out = []
        for s in found:
            count = _value(s, STUDY_INSTANCES)
            if _value(s, STUDY_UID):
                out.append((_value(s, STUDY_UID), [str(m) for m in _values(s, MODALITIES_IN_STUDY)],
                            int(count) if count.isdigit() else None))
        return out

    def run_round(self, stop: threading.Event | None = None) -> Round:
        r = Round()
        for uid, modalities, count in self.find_studies():
            if stop is not None and stop.is_set():
                break
            if self.ledger.finished(uid, count):
                continue
            r.studies += 1
            self.process_study(uid, modalities, r, count)
        return r

    def process_study(self, uid: str, modalities: list[str], r: Round, count: int | None = None) -> None:
        """One study: its DX/CR series found, each new film retrieved, analysed and reported; the study's
        outcome recorded in the ledger.

        Args:
            uid: the Study Instance UID.
            modalities: the modalities the study listed (named when none is analysed).
            r: the round's counts, updated.
            count: the study's number of instances, when the server said.
        """
        self.ledger.seen(uid)
        series = self._call(self.client.search_for_series, uid, fields=["Modality"])
        films = [s for s in series if _value(s, MODALITY).upper() in self.modalities]
        if not films:
            found = sorted({_value(s, MODALITY) for s in series} | set(modalities)) or ["none"]
            reason = f"no {' or '.join(self.modalities)} series (modalities: {', '.join(found)})"
            log.warning("study %s skipped: %s", uid, reason)
            self.ledger.finish(uid, "skipped", reason, count)
            r.skipped += 1
            return
        todo = []
        for s in films:
            s_uid = _value(s, SERIES_UID)
            for inst in self._call(self.client.search_for_instances, uid, s_uid):
                sop = _value(inst, SOP_UID)
                if sop and not self.ledger.film_done(sop):
                    todo.append((s_uid, sop))
        stored = 0
        for start in range(0, len(todo), self.batch_size):
            stored += self._films(uid, todo[start:start + self.batch_size], r)
        failures = [f"{f['sop_uid']}: {f['reason']}" for f in self.ledger.films(uid) if f["state"] == "failed"]
        # The count the server will show once this pass's reports are in: a later count above it is new films.
        self.ledger.finish(uid, "done", "; ".join(failures)[:2000], None if count is None else count + stored)
        r.finished += 1

    def _ref(self, study: str, series: str, sop: str) -> str:
        return f"{self.url}/studies/{study}/series/{series}/instances/{sop}"

    def _fail(self, study: str, series: str, sop: str, reason: str, r: Round) -> None:
        log.warning("study %s, film %s: no report: %s", study, sop, reason)
        self.ledger.record_film((study, series, sop), reason=reason)
        r.failed += 1
        r.reasons.append(reason)

    def _films(self, study: str, films: list[tuple[str, str]], r: Round) -> int:
        """Retrieve, predict and report a few films of one study; returns the instances stored back."""
        got: list[tuple[str, str, Any, Path]] = []
        try:
            for series, sop in films:
                try:
                    ds = self._call(self.client.retrieve_instance, study, series, sop)
                except Unreachable:
                    raise
                except SpinexrError as e:
                    self._fail(study, series, sop, f"cannot be retrieved: {e}", r)
                    continue
                tmp = self.work_dir / f"{sop}.dcm"
                try:
                    ds.save_as(tmp, enforce_file_format=True)
                except Exception as e:  # noqa: BLE001 - pydicom raises many types on a dataset it cannot write
                    self._fail(study, series, sop, f"unreadable instance ({type(e).__name__}: {e})", r)
                    continue
                got.append((series, sop, ds, tmp))
            if not got:
                return 0
            decoded = [decode(str(tmp), self.max_pixels) for *_, tmp in got]
            preds = predict_batch(self.pipeline, decoded)
            stored = 0
            for (series, sop, ds, _), pred in zip(got, preds):
                doc = pred.named(self._ref(study, series, sop)).to_document()
                if doc["status"] != "ok":
                    self._fail(study, series, sop, (doc.get("error") or {}).get("reason") or "unreadable", r)
                    continue
                stored += self._report(study, series, sop, ds, doc, r)
            return stored
        finally:
            for *_, tmp in got:
                tmp.unlink(missing_ok=True)

    def _report(self, study: str, series: str, sop: str, ds: Any, doc: dict[str, Any], r: Round) -> int:
        try:
            res = dicom_results(doc, checked_source(ds, self._ref(study, series, sop)),
                                int(ds.get("InstanceNumber") or 1))
        except (SpinexrError, ValueError, TypeError) as e:
            self._fail(study, series, sop, f"no report could be made: {e}", r)
            return 0
        answer = self._call(self.client.store_instances, res.datasets, study_instance_uid=study)
        refused = [str(x.get("FailureReason", "?")) for x in answer.get("FailedSOPSequence", [])]
        if refused:
            self._fail(study, series, sop, f"the PACS refused the report (failure reason {', '.join(refused)})", r)
            return 0
        spine = doc.get("spine") or {}
        self.ledger.record_film((study, series, sop), label=doc["label"], largest=spine.get("largest"),
                                reports=(str(res.sr.SOPInstanceUID),
                                         str(res.pr.SOPInstanceUID) if res.pr is not None else None))
        r.reported += 1
        log.info("study %s, film %s: %s%s, report stored", study, sop, doc["label"],
                 f", largest Cobb angle {spine['largest']:.1f} deg" if spine.get("largest") is not None else "")
        return len(res.datasets)


def watch(worker: PacsWorker, *, once: bool = False, interval: float = 30.0, retries: int = 5,
          max_wait: float = 300.0, stop: threading.Event | None = None,
          on_round: Callable[[Round], None] | None = None) -> int:
    """Rounds until ``stop`` is set (or one round with ``once``). A server that cannot be reached is tried
    again after 1, 2, 4 ... seconds (at most ``max_wait``); with ``once`` it gives up after ``retries``
    tries.

    Args:
        worker: the server, pipeline and ledger.
        once: one round, then return.
        interval: seconds between rounds.
        retries: tries of an unreachable server before ``once`` gives up.
        max_wait: the longest wait between tries, in seconds.
        stop: set to end after the study in hand.
        on_round: called with each round's counts.

    Returns:
        the number of rounds done.
    """
    stop = stop or threading.Event()
    tries, rounds = 0, 0
    while not stop.is_set():
        try:
            r = worker.run_round(stop)
        except Unreachable as e:
            tries += 1
            if once and tries >= retries:
                raise SpinexrError(f"{e}; gave up after {tries} tries") from None
            wait = min(max_wait, 2.0 ** (tries - 1))
            log.warning("%s; trying again in %.0f s", e, wait)
            stop.wait(wait)
            continue
        tries = 0
        rounds += 1
        if on_round is not None:
            on_round(r)
        if once:
            break
        stop.wait(interval)
    return rounds


__all__ = ["FILM_MODALITIES", "PacsWorker", "Round", "WatchQuery", "watch"]
