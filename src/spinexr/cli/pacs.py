"""``spinexr pacs watch``, ``spinexr pacs listen`` and ``spinexr pacs status``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import tempfile
import threading
from pathlib import Path

from spinexr.cli._common import say
from spinexr.errors import SpinexrError
from spinexr.pacs import Ledger, PacsWorker, connect, load_credentials
from spinexr.pacs import watch as watch_loop
from spinexr.pacs.worker import WatchQuery
from spinexr.pipeline import Pipeline, PipelineSpec

log = logging.getLogger(__name__)


def watch(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/")
    if args.since and not (len(args.since) == 8 and args.since.isdigit()):
        raise SpinexrError(f"--since {args.since}: give a date as YYYYMMDD, e.g. 20260101")
    modalities = [m.strip().upper() for m in args.modalities.split(",") if m.strip()]
    if not modalities:
        raise SpinexrError("--modalities: give at least one, e.g. CR,DX")
    if not args.full_sweep > 0:
        raise SpinexrError(f"--full-sweep {args.full_sweep}: give hours above 0, e.g. 24")
    client = connect(url, load_credentials(args.auth_file))
    ledger = Ledger(args.state, url)
    spec = PipelineSpec.from_args(args, args.model)
    Pipeline.check(spec)  # the models load when the first new film arrives; a wrong one is said now
    stop = _stop_on_signals()
    with tempfile.TemporaryDirectory(prefix="spinexr-pacs-") as tmp:
        worker = PacsWorker(client, url, spec, ledger, Path(args.work) if args.work else Path(tmp),
                            WatchQuery(tuple(modalities), args.since, args.batch_size, args.full_sweep * 3600))
        try:
            watch_loop(worker, once=args.once, interval=args.interval, retries=args.retries, stop=stop,
                       on_round=lambda r: say(r.line(), err=True))
        finally:
            ledger.close()
    return 0


def _stop_on_signals() -> threading.Event:
    """An event set by the first SIGINT or SIGTERM; a second one stops at once."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():  # a second signal: stop now (the ledger keeps what was done; films in hand are redone)
            log.warning("signal %d again: stopping now", signum)
            raise KeyboardInterrupt
        log.info("signal %d: stopping after the films in hand (send it again to stop now)", signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    return stop


def listen(args: argparse.Namespace) -> int:
    from spinexr.pacs.dimse import Inbox, Listener, NodeSettings, Peer

    dest = Peer.parse(args.destination)
    allowed = tuple(a.strip() for a in args.allow.split(",") if a.strip())
    node = NodeSettings(args.ae_title, dest, allowed, max(1, args.batch_size))
    if not 0 < args.port < 65536:
        raise SpinexrError(f"--port {args.port}: give a port between 1 and 65535")
    try:
        import pynetdicom  # noqa: F401
    except ImportError:
        raise SpinexrError("spinexr pacs listen needs pynetdicom: pip install 'spinexr[dicom]'") from None
    ledger = Ledger(args.state, dest.url)
    spec = PipelineSpec.from_args(args, args.model)
    Pipeline.check(spec)  # the models load when the first film arrives; a wrong one is said now
    inbox = Inbox(Path(args.inbox) if args.inbox else Path(str(args.state) + ".inbox"))
    stop = _stop_on_signals()
    listener = Listener(spec, ledger, inbox, node)
    try:
        listener.serve((args.bind, args.port), stop, on_drain=lambda r: say(
            f"{r.reported} films reported, {r.failed} failed, {r.not_analysed} not analysed", err=True))
    except OSError as e:
        raise SpinexrError(f"cannot listen on {args.bind}:{args.port} ({e.strerror or e}); give another --port "
                           "or --bind") from None
    finally:
        ledger.close()
    return 0


def status(args: argparse.Namespace) -> int:
    path = Path(args.state)
    if not path.is_file():
        raise SpinexrError(f"{path}: no such state file; `spinexr pacs watch --state {path}` makes it")
    ledger = Ledger(path, None)
    try:
        if args.json:
            say(json.dumps({"url": ledger.url, "studies": ledger.studies(), "films": ledger.films()}, indent=2))
        else:
            say(f"{ledger.url or '?'}: " + ", ".join(f"{k} {v}" for k, v in ledger.counts().items()))
    finally:
        ledger.close()
    return 0
