"""``spinexr pacs watch``: find CR/DX studies on a DICOMweb server (QIDO-RS), retrieve their films (WADO-RS),
predict them with the same pipeline as ``predict``, and store each film's SR and presentation state back
into its study (STOW-RS). What was done is kept in a :class:`~spinexr.pacs.ledger.Ledger`.

Errors are handled per study: a study with no CR/DX series (a CT, an RT plan) is skipped with its
reason; a film that cannot be retrieved or read, or has no pixels, is recorded as failed with its reason
and gets no report; the round goes on. A server that cannot be reached (or answers 5xx) ends the round
and is tried again with a growing wait; refused credentials end the run with what to set. A failed film
is tried again in a later pass, after 1, 2 ... minutes, three times in all (:mod:`spinexr.pacs.ledger`).

A pass asks only for studies from the day before the last pass on (Study Date), and once every
``full_sweep_s`` (a day by default) for every study from ``since`` on, so a study filed late under an old
date is found within a day. The study list is read in pages of :data:`PAGE`, at most :data:`MAX_PAGES` a
pass; an answer that is not DICOM JSON (the address is not the server's DICOMweb root) ends the run with
the path to use, and a server that answers every page with the same studies is read once.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinexr.data.imread import DEFAULT_MAX_PIXELS
from spinexr.errors import SpinexrError
from spinexr.pacs.client import ROOT_HINT, Unreachable, explain
from spinexr.pacs.ledger import Ledger
from spinexr.pacs.reporting import Film, Round, fail, report_films
from spinexr.pipeline import Pipeline, PipelineSpec

log = logging.getLogger(__name__)

STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
MODALITY, MODALITIES_IN_STUDY, STUDY_INSTANCES = "00080060", "00080061", "00201208"
FILM_MODALITIES = ("CR", "DX")
PAGE = 200  # studies a QIDO-RS request asks for
MAX_PAGES = 500  # pages a pass reads at most (100,000 studies); the rest waits for the next pass
FULL_SWEEP_S = 86400.0
NOT_A_ROOT = "{url} is not a DICOMweb root: its /studies answered {what}, not DICOM JSON; " + ROOT_HINT


def _dicom_json(found: Any, url: str) -> list[dict[str, Any]]:
    """A QIDO-RS answer checked: a list of DICOM JSON objects (tags of 8 hex digits, each with a VR)."""
    def is_item(x: Any) -> bool:
        return isinstance(x, dict) and all(isinstance(k, str) and len(k) == 8 and isinstance(v, dict) and "vr" in v
                                           for k, v in x.items())
    if not isinstance(found, list) or not all(is_item(x) for x in found):
        sample = found[:2] if isinstance(found, list) else found
        raise SpinexrError(NOT_A_ROOT.format(url=url, what=f"{type(found).__name__} {str(sample)[:80]}"))
    return found


def _values(item: dict[str, Any], tag: str) -> list[Any]:
    return list((item.get(tag) or {}).get("Value") or [])


def _value(item: dict[str, Any], tag: str) -> str:
    v = _values(item, tag)
    return str(v[0]) if v else ""


@dataclass(frozen=True)
class WatchQuery:
    """Which studies a worker takes: those with one of ``modalities``, from ``since`` (a StudyDate,
    YYYYMMDD) on; their films predicted ``batch_size`` at a time.

    Args:
        modalities: the modalities taken (DX, CR).
        since: the first StudyDate taken, or None.
        batch_size: films predicted together.
        full_sweep_s: seconds between passes that ask for every study from ``since`` on (the others ask
            from the day before the last pass).
    """

    modalities: tuple[str, ...] = FILM_MODALITIES
    since: str | None = None
    batch_size: int = 8
    full_sweep_s: float = FULL_SWEEP_S


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
        self.full_sweep_s = q.full_sweep_s
        self._stop: threading.Event | None = None  # the pass's stop event (films are done a batch at a time)
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

    def window(self, now: float) -> tuple[str | None, bool]:
        """The first Study Date this pass asks for (None: all), and whether it is a full sweep."""
        last_sweep, last_pass = self.ledger.get("last_full_sweep"), self.ledger.get("last_pass")
        if last_sweep is None or last_pass is None or now - float(last_sweep) >= self.full_sweep_s:
            return self.since, True
        day = (dt.datetime.fromtimestamp(float(last_pass)) - dt.timedelta(days=1)).strftime("%Y%m%d")
        return max(day, self.since or ""), False

    def find_studies(self, since: str | None = None,
                     stop: threading.Event | None = None) -> list[tuple[str, list[str], int | None]]:
        """The studies on the server from ``since`` (a Study Date) on, page by page (see the module): each
        one's UID, modalities and instance count.

        Args:
            since: the first Study Date asked for (None: every study).
            stop: set to stop between pages.
        """
        filters = {"StudyDate": f"{since}-"} if since else None
        out, pages = [], set()
        for page in range(MAX_PAGES):
            if stop is not None and stop.is_set():
                break
            found = _dicom_json(self._call(self.client.search_for_studies, search_filters=filters,
                                           fields=["ModalitiesInStudy", "NumberOfStudyRelatedInstances"],
                                           limit=PAGE, offset=page * PAGE, get_remaining=False), self.url)
            uids = tuple(_value(s, STUDY_UID) for s in found)
            if uids and uids in pages:
                log.warning("%s answers every page with the same %d studies (it ignores 'offset'): read once",
                            self.url, len(uids))
                break
            pages.add(uids)
            for s in found:
                count = _value(s, STUDY_INSTANCES)
                if _value(s, STUDY_UID):
                    out.append((_value(s, STUDY_UID), [str(m) for m in _values(s, MODALITIES_IN_STUDY)],
                                int(count) if count.isdigit() else None))
            if len(found) < PAGE:
                break
        else:
            log.warning("listed %d pages of studies (%d); the rest in the next pass", MAX_PAGES, len(out))
        return out

    def run_round(self, stop: threading.Event | None = None) -> Round:
        """One pass: the studies in this pass's window (see the module), each new or grown one processed."""
        r = Round()
        self._stop = stop
        started = time.time()
        since, full = self.window(started)
        done = set()
        for uid, modalities, count in self.find_studies(since, stop):
            if stop is not None and stop.is_set():
                return r
            if self.ledger.finished(uid, count):
                continue
            r.studies += 1
            self.process_study(uid, modalities, r, count)
            done.add(uid)
        for uid in self.ledger.due(started):  # a failed film's next try, whatever the window
            if stop is not None and stop.is_set():
                return r
            if uid not in done:
                self.process_study(uid, [], r)
        if stop is not None and stop.is_set():
            return r
        self.ledger.put("last_pass", str(started))
        if full:
            self.ledger.put("last_full_sweep", str(started))
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
            if self._stop is not None and self._stop.is_set():
                return  # the study stays unfinished; its films not done are taken up by the next run
            stored += self._films(uid, todo[start:start + self.batch_size], r)
        failures = [f"{f['sop_uid']}: {f['reason']}" for f in self.ledger.films(uid) if f["state"] == "failed"]
        # The count the server will show once this pass's reports are in: a later count above it is new films.
        state = "retry" if self.ledger.retries_pending(uid) else "done"
        self.ledger.finish(uid, state, "; ".join(failures)[:2000], None if count is None else count + stored)
        r.finished += 1

    def _ref(self, study: str, series: str, sop: str) -> str:
        return f"{self.url}/studies/{study}/series/{series}/instances/{sop}"

    def _films(self, study: str, films: list[tuple[str, str]], r: Round) -> int:
        """Retrieve, predict and report a few films of one study; returns the instances stored back."""
        got: list[Film] = []
        try:
            for series, sop in films:
                try:
                    ds = self._call(self.client.retrieve_instance, study, series, sop)
                except Unreachable:
                    raise
                except SpinexrError as e:
                    fail(self.ledger, (study, series, sop), f"cannot be retrieved: {e}", r)
                    continue
                tmp = self.work_dir / f"{sop}.dcm"
                try:
                    ds.save_as(tmp, enforce_file_format=True)
                except Exception as e:  # noqa: BLE001 - pydicom raises many types on a dataset it cannot write
                    tmp.unlink(missing_ok=True)
                    fail(self.ledger, (study, series, sop), f"unreadable instance ({type(e).__name__}: {e})", r)
                    continue
                got.append(Film(study, series, sop, ds, tmp, self._ref(study, series, sop)))
            return report_films(self.pipeline, self.ledger, got, self._store, r) if got else 0
        finally:
            for f in got:
                f.path.unlink(missing_ok=True)

    def _store(self, datasets: list[Any], study: str) -> str | None:
        """STOW-RS of one film's reports into its study; None when stored, else the PACS's failure reasons."""
        answer = self._call(self.client.store_instances, datasets, study_instance_uid=study)
        refused = [str(x.get("FailureReason", "?")) for x in answer.get("FailedSOPSequence", [])]
        return f"failure reason {', '.join(refused)}" if refused else None


def watch(worker: PacsWorker, *, once: bool = False, interval: float = 30.0, retries: int = 5,
          max_wait: float = 300.0, stop: threading.Event | None = None,
          on_round: Callable[[Round], None] | None = None) -> int:
    """Rounds until ``stop`` is set (or one round with ``once``); ``interval`` seconds after a round that
    found nothing to do, none after one that did (films that arrived meanwhile are taken at once). A server
    that cannot be reached is tried again after 1, 2, 4 ... seconds (at most ``max_wait``); with ``once`` it
    gives up after ``retries`` tries.

    Args:
        worker: the server, pipeline and ledger.
        once: one round, then return.
        interval: seconds to wait after a round that found nothing to do.
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
        if not (r.studies or r.reported or r.failed or r.not_analysed):
            stop.wait(interval)  # idle: wait; a pass that found work is followed at once by the next
    return rounds


__all__ = ["FILM_MODALITIES", "PacsWorker", "Round", "WatchQuery", "watch"]
