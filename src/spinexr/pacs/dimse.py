"""``spinexr pacs listen``: spinexr as a DICOM node on the hospital network (DIMSE, with pynetdicom).

A router or a modality sends films by C-STORE to spinexr's AE title; spinexr answers C-ECHO, accepts only
the calling AE titles it is told to (``--allow``), and refuses any other caller at association. Each film
received is written to the inbox folder (atomically, named by its SOP Instance UID) before the C-STORE is
answered, so a film acknowledged is never lost: a run killed with films in the inbox takes them up when it
starts again. A worker thread drains the inbox in batches through the same steps as ``pacs watch``
(:mod:`spinexr.pacs.reporting`: the intended-use check, the ledger, the retries) and C-STOREs each film's SR
and presentation state to the destination AE. Their UIDs are derived from the film and the model, so a
report sent twice (a kill between sending and recording) is the same instance twice, which the PACS keeps
once. A destination that cannot be reached keeps the films in the inbox and is tried again after 1, 2, 4 ...
seconds (at most five minutes).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinexr.errors import SpinexrError
from spinexr.pacs.client import Unreachable
from spinexr.pacs.ledger import Ledger
from spinexr.pacs.reporting import Film, Round, fail, report_films
from spinexr.pipeline import Pipeline, PipelineSpec

log = logging.getLogger(__name__)

SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000
_AE = re.compile(r"^[ -~]{1,16}$")  # an AE title: 1-16 printable ASCII characters
_UID = re.compile(r"^[0-9.]{1,64}$")


def _ae_title(text: str, what: str) -> str:
    title = text.strip()
    if not _AE.match(title) or "\\" in title:
        raise SpinexrError(f"{what} {text!r}: an AE title is 1 to 16 printable ASCII characters, no backslash")
    return title


@dataclass(frozen=True)
class Peer:
    """A DICOM node: AE title, host and port.

    Args:
        ae_title: its AE title.
        host: its host name or address.
        port: its DICOM port.
    """

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Peer:
        """``AE@host:port`` (for example ``ORTHANC@pacs.example.org:4242``)."""
        ae, at, address = text.rpartition("@")
        host, colon, port = address.rpartition(":")
        if not at or not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SpinexrError(f"--destination {text!r}: give the node as AE@host:port, e.g. ORTHANC@127.0.0.1:4242")
        return cls(_ae_title(ae, "--destination"), host, int(port))

    @property
    def url(self) -> str:
        """How the ledger names this destination (a state file belongs to one)."""
        return f"dicom://{self.host}:{self.port}/{self.ae_title}"

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class NodeSettings:
    """How the node is known and whom it talks to.

    Args:
        ae_title: spinexr's AE title.
        destination: where the reports go.
        allowed: the calling AE titles accepted (``("*",)``: any caller).
        batch_size: films predicted together.
    """

    ae_title: str
    destination: Peer
    allowed: tuple[str, ...]
    batch_size: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", _ae_title(self.ae_title, "--ae-title"))
        if not self.allowed:
            raise SpinexrError("--allow: name the calling AE titles to accept (a router's, a modality's), "
                               "or '*' for any caller")
        if self.allowed != ("*",):
            object.__setattr__(self, "allowed", tuple(_ae_title(a, "--allow") for a in self.allowed))


class Inbox:
    """Films received and not yet done, one file each, surviving a kill.

    Args:
        folder: where they are kept (made if missing).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob("*.tmp"):  # a film whose C-STORE was never answered: the sender resends it
            stale.unlink(missing_ok=True)

    def put(self, sop_uid: str, data: bytes) -> Path:
        if not _UID.match(sop_uid):
            raise SpinexrError(f"SOP Instance UID {sop_uid[:80]!r} is not a UID")
        dest = self.folder / f"{sop_uid}.dcm"
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(dest)
        return dest

    def pending(self) -> list[Path]:
        """The films waiting, oldest first."""
        files = [p for p in self.folder.glob("*.dcm") if p.is_file()]
        return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))


class Listener:
    """spinexr's DICOM node (see the module): a C-STORE SCP, an inbox and a worker that reports.

    Args:
        pipeline: the pipeline, or the spec it is loaded from when the first film arrives.
        ledger: the state file.
        inbox: where films wait.
        node: AE titles, destination, allowed callers.
    """

    def __init__(self, pipeline: Pipeline | PipelineSpec, ledger: Ledger, inbox: Inbox, node: NodeSettings) -> None:
        self._pipeline = pipeline if isinstance(pipeline, Pipeline) else None
        self._spec = pipeline if isinstance(pipeline, PipelineSpec) else pipeline.spec
        self.ledger, self.inbox, self.node = ledger, inbox, node
        self.received = threading.Event()  # set by each C-STORE: the worker wakes up

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            assert self._spec is not None
            log.info("films arrived: loading the models")
            self._pipeline = Pipeline.load(self._spec)
        return self._pipeline

    # The SCP side, in pynetdicom's threads.
    def on_echo(self, _event: Any) -> int:
        return SUCCESS

    def on_store(self, event: Any) -> int:
        """Keep the film in the inbox, then answer (a film acknowledged is on disk)."""
        try:
            sop = str(event.request.AffectedSOPInstanceUID)
            self.inbox.put(sop, event.encoded_dataset())
        except SpinexrError as e:
            log.warning("C-STORE from %s refused: %s", event.assoc.requestor.ae_title, e)
            return CANNOT_UNDERSTAND
        except OSError as e:
            log.error("C-STORE from %s: the inbox %s cannot take the film (%s)", event.assoc.requestor.ae_title,
                      self.inbox.folder, e)
            return OUT_OF_RESOURCES
        log.info("received %s from %s", sop, event.assoc.requestor.ae_title)
        self.received.set()
        return SUCCESS

    def application_entity(self) -> Any:
        """The pynetdicom AE: storage and verification as SCP, the calling AE titles checked."""
        try:
            from pynetdicom import AE, StoragePresentationContexts
            from pynetdicom.sop_class import Verification
        except ImportError:
            raise SpinexrError("spinexr pacs listen needs pynetdicom: pip install 'spinexr[dicom]'") from None
        ae = AE(ae_title=self.node.ae_title)
        ae.supported_contexts = StoragePresentationContexts[:127]
        ae.add_supported_context(Verification)
        if self.node.allowed != ("*",):
            ae.require_calling_aet = list(self.node.allowed)
        return ae

    # The worker side.
    def send(self, datasets: list[Any], _study: str) -> str | None:
        """C-STORE one film's reports to the destination: None when stored, else the statuses it answered."""
        from pynetdicom import AE

        dest = self.node.destination
        ae = AE(ae_title=self.node.ae_title)
        for ds in datasets:
            ae.add_requested_context(ds.SOPClassUID)
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
        if not assoc.is_established:
            raise Unreachable(f"the destination {dest} refused or did not answer the association")
        try:
            bad = []
            for ds in datasets:
                status = assoc.send_c_store(ds)
                if not status:
                    raise Unreachable(f"the destination {dest} did not answer a C-STORE")
                if int(status.Status) not in (SUCCESS, 0xB000, 0xB006, 0xB007):
                    bad.append(f"0x{int(status.Status):04X}")
        finally:
            assoc.release()
        return f"C-STORE status {', '.join(bad)}" if bad else None

    def drain(self, stop: threading.Event | None = None) -> Round:
        """Every film waiting in the inbox, a batch at a time (see the module)."""
        import pydicom

        r = Round()
        pending = self.inbox.pending()
        for start in range(0, len(pending), self.node.batch_size):
            if stop is not None and stop.is_set():
                break
            films = []
            for path in pending[start:start + self.node.batch_size]:
                try:
                    ds = pydicom.dcmread(path, stop_before_pixels=True)
                    study, series, sop = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
                except Exception as e:  # noqa: BLE001 - pydicom raises many types on a damaged header
                    log.warning("%s: not a readable DICOM file (%s); removed from the inbox", path.name, e)
                    path.unlink(missing_ok=True)
                    continue
                if self.ledger.film_done(sop):
                    if not self.ledger.retrying(sop):
                        path.unlink(missing_ok=True)  # done (or out of tries): a resent film is not redone
                    continue
                self.ledger.seen(study)
                films.append(Film(study, series, sop, ds, path, f"dicom://{self.node.ae_title}/{sop}"))
            if not films:
                continue
            try:
                report_films(self.pipeline, self.ledger, films, self.send, r)
            except Unreachable:
                raise  # the films stay in the inbox
            except SpinexrError as e:
                for f in films:
                    fail(self.ledger, f, str(e), r)
            for f in films:
                if not self.ledger.retrying(f.sop):  # a failed film to retry keeps its file
                    f.path.unlink(missing_ok=True)
                    self.ledger.finish(f.study, "done")
        return r

    def serve(self, address: tuple[str, int], stop: threading.Event, max_wait: float = 300.0,
              on_drain: Callable[[Round], None] | None = None) -> None:
        """Accept films on ``address`` and report them until ``stop`` is set.

        Args:
            address: (host, port) to listen on.
            stop: set to stop (the films in hand are finished first; the rest wait in the inbox).
            max_wait: the longest wait before trying an unreachable destination again, in seconds.
            on_drain: called with what each drain of the inbox did.
        """
        from pynetdicom import evt

        server = self.application_entity().start_server(
            address, block=False, evt_handlers=[(evt.EVT_C_STORE, self.on_store), (evt.EVT_C_ECHO, self.on_echo)])
        log.info("listening as %s on %s:%d; reports go to %s", self.node.ae_title, *address, self.node.destination)
        tries = 0
        self.received.set()  # films left in the inbox by an earlier run
        try:
            while not stop.is_set():
                if not self.received.wait(timeout=1.0):
                    if any((self.inbox.folder / f"{sop}.dcm").is_file() for sop in self.ledger.due_films(time.time())):
                        self.received.set()  # a failed film in the inbox is due for another try
                    continue
                if stop.is_set():
                    break
                self.received.clear()
                try:
                    r = self.drain(stop)
                except Unreachable as e:
                    tries += 1
                    wait = min(max_wait, 2.0 ** (tries - 1))
                    log.warning("%s; the films wait in the inbox; trying again in %.0f s", e, wait)
                    stop.wait(wait)
                    self.received.set()
                    continue
                tries = 0
                if (r.reported or r.failed or r.not_analysed) and on_drain is not None:
                    on_drain(r)
        finally:
            server.shutdown()


__all__ = ["Inbox", "Listener", "NodeSettings", "Peer"]
