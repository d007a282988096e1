"""``spinexr predict`` over an archive: films decoded in worker processes while the pipeline runs on
batches, results written as each batch completes, memory bounded whatever the folder's size, and a
run that was killed picked up where it stopped (``--resume``).

The output file (``.csv``, ``.jsonl`` or ``.json``) is only ever replaced whole, by an atomic rename,
so it is a complete file at every moment. Each finished batch is first appended to a journal beside
it (``OUT.journal``, one prediction document a line, written and synced in one go); when the journal
has grown to a quarter of the output (or 1 MiB), and at the end, its documents are folded into the
output (a copy, then a rename; the copying stays linear in the output's size because it waits for
the output to grow by a quarter) and the journal is emptied. A kill at any moment loses at most the
batch in flight: a torn last journal line is dropped, and ``--resume`` folds in what the journal
holds, then skips every film already in the output by its path and content digest (SHA-256).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

from spinexr.data.decoding import Decoded, decode, exit_with_parent
from spinexr.data.imread import file_digest
from spinexr.deploy.document import document_columns, flatten, output_format
from spinexr.deploy.pipeline import Pipeline
from spinexr.deploy.predictor import Prediction
from spinexr.errors import SpinexrError

log = logging.getLogger(__name__)

T = TypeVar("T")
_END = object()
JOURNAL_SUFFIX = ".journal"
MIN_FOLD_BYTES = 1 << 20


@dataclass
class Tally:
    """The end-of-run summary, counted as results pass (nothing else is kept)."""

    labels: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    flagged: int = 0

    def add(self, doc: dict[str, Any]) -> None:
        if doc["status"] != "ok":
            self.errors += 1
            return
        self.labels[doc["label"]] = self.labels.get(doc["label"], 0) + 1
        self.flagged += bool(doc["ood"]["flag"])

    @property
    def ok(self) -> int:
        return sum(self.labels.values())

    def line(self) -> str:
        return "; ".join([f"{self.ok} predicted ({', '.join(f'{k} {v}' for k, v in sorted(self.labels.items()))})",
                          f"{self.errors} unreadable", f"{self.flagged} flagged out-of-distribution"])


def _key(path: Any, digest: Any) -> tuple[str, str]:
    return str(path), str(digest or "")


class ResultFile:
    """A prediction output that grows batch by batch and is complete at every moment (see the module).

    Args:
        out: the output file; its suffix picks the format.
        labels: the classifier's labels (the CSV columns).
        digest: the bundle digest every document must carry (None: a pipeline without a bundle);
            an existing output made by another bundle is refused on resume.
        resume: continue an existing output (else it must not exist, or is replaced).
    """

    def __init__(self, out: Path, labels: list[str], digest: str | None, resume: bool = False) -> None:
        self.out = Path(out)
        self.fmt = output_format(self.out)
        self.columns = document_columns(labels)
        self.digest = digest
        self.journal = self.out.with_name(self.out.name + JOURNAL_SUFFIX)
        self.done: set[tuple[str, str]] = set()
        self._paths: set[str] = set()
        self.tally = Tally()
        self.n_out = 0
        if resume and self.out.exists():
            for doc in self._read_output():
                self._remember(doc)
            pending = [d for d in self._read_journal() if _key(d["path"], d.get("sha256")) not in self.done]
            for d in pending:
                self._remember(d)
            self._fold(pending)
        else:
            self._replace(self._head() + self._tail())
        self.journal.unlink(missing_ok=True)
        self._pending = 0

    # -- the file's layout per format ---------------------------------------------------------------
    def _head(self) -> bytes:
        if self.fmt == "csv":
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerow(self.columns)
            return buf.getvalue().encode()
        return b"[\n" if self.fmt == "json" else b""

    def _tail(self) -> bytes:
        return b"]\n" if self.fmt == "json" else b""

    def _rows(self, docs: list[dict[str, Any]], first: bool) -> bytes:
        if self.fmt == "csv":
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=self.columns, restval="", extrasaction="ignore", lineterminator="\n")
            w.writerows(flatten(d) for d in docs)
            return buf.getvalue().encode()
        lines = [json.dumps(d) for d in docs]
        if self.fmt == "json":
            return (("" if first else ",\n") + ",\n".join(lines) + "\n").encode() if lines else b""
        return "".join(line + "\n" for line in lines).encode()

    # -- reading what is there ----------------------------------------------------------------------
    def _read_output(self) -> Iterator[dict[str, Any]]:
        what = f"{self.out} is not a spinexr prediction output"
        with open(self.out, newline="") as f:
            if self.fmt == "csv":
                reader = csv.DictReader(f)
                if reader.fieldnames != self.columns:
                    raise SpinexrError(f"{what} with this pipeline's columns (its header differs); write to a new "
                                       "file, or predict again without --resume and with --force")
                for row in reader:
                    yield self._checked({"path": row["path"], "sha256": row["sha256"] or None,
                                         "status": row["status"], "label": row["label"],
                                         "ood": {"flag": row["ood_flag"] == "true"},
                                         "model": {"bundle_digest": row["model_bundle_digest"] or None}})
                return
            for n, line in enumerate(f, start=1):
                text = line.strip().rstrip(",")
                if text in ("", "[", "]"):
                    continue
                try:
                    doc = json.loads(text)
                except json.JSONDecodeError:
                    raise SpinexrError(f"{what}: line {n} is not a prediction document; write to a new file") from None
                yield self._checked(doc)

    def _checked(self, doc: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(doc, dict) or "path" not in doc or "status" not in doc:
            raise SpinexrError(f"{self.out} holds something other than prediction documents; write to a new file")
        got = (doc.get("model") or {}).get("bundle_digest")
        if doc["status"] == "ok" and got != self.digest:
            raise SpinexrError(f"{self.out} was made by another bundle (digest {str(got)[:12]}, this one "
                               f"{str(self.digest)[:12]}); resuming would mix two models' results: write to a new file")
        return doc

    def _read_journal(self) -> list[dict[str, Any]]:
        if not self.journal.exists():
            return []
        docs = []
        for line in self.journal.read_bytes().split(b"\n"):
            try:
                docs.append(self._checked(json.loads(line)))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # the batch a kill cut short: its films are predicted again
        return docs

    def has(self, path: str | Path) -> bool:
        """True when the output holds this film: the same path, and the same bytes (read only for a path it holds)."""
        if str(path) not in self._paths:
            return False
        return _key(path, file_digest(path)) in self.done

    def _remember(self, doc: dict[str, Any]) -> None:
        self.done.add(_key(doc["path"], doc.get("sha256")))
        self._paths.add(str(doc["path"]))
        self.tally.add(doc)
        self.n_out += 1

    # -- writing ------------------------------------------------------------------------------------
    def _replace(self, data: bytes, keep: int = 0) -> None:
        """The output's first ``keep`` bytes, then ``data``, to a temporary file renamed over the output."""
        tmp = self.out.with_name(self.out.name + ".tmp")
        with open(tmp, "wb") as dst:
            if keep:
                with open(self.out, "rb") as src:
                    left = keep
                    while left > 0:
                        chunk = src.read(min(left, 1 << 22))
                        if not chunk:
                            break
                        dst.write(chunk)
                        left -= len(chunk)
            dst.write(data)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, self.out)

    def _fold(self, docs: list[dict[str, Any]]) -> None:
        """Fold ``docs`` into the output (after what it holds) and empty the journal."""
        if docs:
            first = self.n_out == len(docs)  # nothing before them in a JSON array
            # A JSON array's last document loses its line end to the comma that follows it.
            keep = self.out.stat().st_size - len(self._tail()) - (self.fmt == "json" and not first)
            self._replace(self._rows(docs, first) + self._tail(), keep=keep)
        self.journal.unlink(missing_ok=True)
        self._pending = 0

    def append(self, docs: list[dict[str, Any]]) -> None:
        """One finished batch: to the journal in one synced write, folded in when the journal is large."""
        if not docs:
            return
        data = "".join(json.dumps(d) + "\n" for d in docs).encode()
        fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        for d in docs:
            self._remember(d)
        self._pending += len(data)
        if self._pending >= max(MIN_FOLD_BYTES, self.out.stat().st_size // 4):
            self.close()

    def close(self) -> None:
        """Fold everything the journal holds into the output."""
        if self.journal.exists():
            self._fold(self._read_journal())


def in_order(pool: Executor, fn: Callable[..., T], items: Iterable[Any], ahead: int, *args: Any) -> Iterator[T]:
    """``fn(item, *args)`` for each item, run in ``pool`` at most ``ahead`` at a time, the results in the
    items' order (memory stays bounded whatever their number)."""
    pending: deque[Future[T]] = deque()
    it = iter(items)
    try:
        while True:
            while len(pending) < ahead and (item := next(it, _END)) is not _END:
                pending.append(pool.submit(fn, item, *args))
            if not pending:
                return
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()


def decoded_batches(paths: list[Path], batch_size: int, workers: int, max_pixels: int) -> Iterator[list[Decoded]]:
    """Decoded films in order, ``batch_size`` at a time; with ``workers`` > 0 read in that many processes,
    at most a few batches ahead of the pipeline (memory stays bounded)."""
    if workers <= 0:
        for s in range(0, len(paths), batch_size):
            yield [decode(str(p), max_pixels) for p in paths[s:s + batch_size]]
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=exit_with_parent) as pool:
        batch: list[Decoded] = []
        for d in in_order(pool, decode, map(str, paths), batch_size * (workers + 1), max_pixels):
            batch.append(d)
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def predict_batch(pipeline: Pipeline, batch: list[Decoded]) -> list[Prediction]:
    """A decoded batch through the pipeline (the classifier in one call); unreadable files get their error."""
    good = [d for d in batch if d.img is not None]
    preds = iter(pipeline.predict_images([d.img for d in good], [d.path for d in good], [d.meta for d in good])
                 if good else [])
    out = []
    for d in batch:
        if d.error is not None:
            p = Prediction.unreadable(d.path, d.error)
            p.model = dict(pipeline.model_info)
        else:
            p = next(preds)
        p.sha256 = d.sha256
        out.append(p)
    return out


__all__ = ["Decoded", "ResultFile", "Tally", "decode", "decoded_batches", "in_order", "predict_batch"]
