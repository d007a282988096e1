"""The result file of ``predict --out``: prediction documents to CSV, JSON or JSON Lines, written as
batches finish and resumable after a kill (:class:`ResultFile`, a :class:`~spinexr.outputs._base.Sink`).

The output file is only ever replaced whole, by an atomic rename, so it is a complete file at every
moment. Each finished batch is first appended to a journal beside it (``OUT.journal``, one prediction
document a line, written and synced in one go); when the journal has grown to a quarter of the output
(or 1 MiB), when ``fold_seconds`` have passed since the last fold (a person tailing the output sees
results), and at the end, its documents are folded into the output (a copy, then a rename; the copying
stays linear in the output's size because it waits for the output to grow by a quarter) and the
journal is emptied. A kill at any moment loses at most the batch in flight: a torn last journal line is
dropped, and ``--resume`` folds in what the journal holds, then skips every film already in the output
by its path and content digest (SHA-256). An output made with other settings (another bundle, backend,
or with the landmark model switched on or off) is refused on resume, with the difference named.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinexr.data.imread import file_digest
from spinexr.deploy.document import OUTPUT_SUFFIXES, document_columns, flatten
from spinexr.errors import SpinexrError
from spinexr.outputs._base import RunInfo, Sink, writable_folder, write_failed

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".journal"
MIN_FOLD_BYTES = 1 << 20
FOLD_SECONDS = 10.0
FORMATS = {suffix: suffix[1:] for suffix in OUTPUT_SUFFIXES}  # .json (an array), .jsonl, .csv
# What a document's "model" says about the settings that shaped it, compared on resume.
_SETTINGS = {"bundle_digest": "bundle", "backend": "backend", "landmarks": "landmark model"}


@dataclass
class Tally:
    """The end-of-run summary, counted as results pass (nothing else is kept).

    Args:
        labels: films by label.
        errors: films that could not be read.
        flagged: films flagged out of distribution.
        not_analysed: films outside the bundle's intended use.
    """

    labels: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    flagged: int = 0
    not_analysed: int = 0

    def add(self, doc: dict[str, Any]) -> None:
        if doc["status"] == "not_analysed":
            self.not_analysed += 1
            return
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
                          f"{self.errors} unreadable", f"{self.flagged} flagged out-of-distribution",
                          *([f"{self.not_analysed} not analysed (outside the intended use)"] if self.not_analysed
                            else [])])


def _key(path: Any, digest: Any) -> tuple[str, str]:
    return str(path), str(digest or "")


class ResultFile(Sink):
    """A prediction output that grows batch by batch and is complete at every moment (see the module).

    Args:
        out: the output file; its suffix picks the format (``.csv``, ``.json``, ``.jsonl``; others are refused).
        resume: continue an existing output (else it must not exist, or is replaced).
        fold_seconds: fold the journal into the output at least this often while films arrive.
    """

    def __init__(self, out: Path, resume: bool = False, fold_seconds: float = FOLD_SECONDS) -> None:
        self.out = Path(out)
        suffix = self.out.suffix.lower()
        if suffix not in FORMATS:
            raise SpinexrError(f"--out {self.out}: unknown output format {suffix or '(no suffix)'!r}; name the file "
                               f"with one of {', '.join(FORMATS)}")
        if self.out.is_dir():
            raise SpinexrError(f"--out {self.out} is a folder; give a file name ending in {', '.join(FORMATS)}")
        writable_folder(self.out.parent if str(self.out.parent) else Path("."), "the output's folder")
        if self.out.exists() and not os.access(self.out, os.W_OK):
            raise SpinexrError(f"--out {self.out}: the file is not writable; choose another path")
        self.fmt = FORMATS[suffix]
        self.resume, self.fold_seconds = resume, fold_seconds
        self.journal = self.out.with_name(self.out.name + JOURNAL_SUFFIX)
        self.done: set[tuple[str, str]] = set()
        self._paths: set[str] = set()
        self.tally = Tally()
        self.n_out = 0
        self.columns: list[str] = []
        self.expected: dict[str, Any] = {}
        self._pending = 0
        self._last_fold = time.monotonic()

    def open(self, run: RunInfo) -> None:
        self.columns = document_columns(run.labels)
        self.expected = {"bundle_digest": run.digest, **{k: run.settings[k] for k in ("backend", "landmarks")
                                                          if k in run.settings}}
        try:
            if self.resume and self.out.exists():
                for doc in self._read_output():
                    self._remember(doc)
                pending = [d for d in self._read_journal() if _key(d["path"], d.get("sha256")) not in self.done]
                for d in pending:
                    self._remember(d)
                self._fold(pending)
            else:
                self._replace(self._head() + self._tail())
            self.journal.unlink(missing_ok=True)
        except OSError as e:
            raise write_failed(self.out, e) from None
        self._pending = 0

    def holds(self, path: Path) -> bool:
        return self.has(path)

    def write(self, docs: list[dict[str, Any]]) -> None:
        try:
            self.append(docs)
        except OSError as e:
            raise write_failed(self.out, e) from None

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
                                         "model": {"bundle_digest": row["model_bundle_digest"] or None,
                                                   "backend": row["model_backend"] or None,
                                                   "landmarks": row["model_landmarks"] or None}})
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
        if doc["status"] != "ok":
            return doc
        model = doc.get("model") or {}
        for key, got_what in _SETTINGS.items():
            if key not in self.expected or key not in model:
                continue
            got, want = model.get(key), self.expected[key]
            if got != want:
                if key == "bundle_digest":
                    got, want = str(got)[:12], str(want)[:12]
                raise SpinexrError(f"{self.out} was made with another {got_what} ({got or 'none'}; this run: "
                                   f"{want or 'none'}); resuming would mix two kinds of results in one output: "
                                   "run with the settings it was made with, or write to a new file")
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
        try:
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
        except BaseException:  # a full disk or an interrupt mid-copy: the output stays as it was, no stale copy
            tmp.unlink(missing_ok=True)
            raise

    def _fold(self, docs: list[dict[str, Any]]) -> None:
        """Fold ``docs`` into the output (after what it holds) and empty the journal."""
        if docs:
            first = self.n_out == len(docs)  # nothing before them in a JSON array
            # A JSON array's last document loses its line end to the comma that follows it.
            keep = self.out.stat().st_size - len(self._tail()) - (self.fmt == "json" and not first)
            self._replace(self._rows(docs, first) + self._tail(), keep=keep)
        self.journal.unlink(missing_ok=True)
        self._pending = 0
        self._last_fold = time.monotonic()

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
        if (self._pending >= max(MIN_FOLD_BYTES, self.out.stat().st_size // 4)
                or time.monotonic() - self._last_fold >= self.fold_seconds):
            self._fold(self._read_journal())

    def close(self) -> str | None:
        """Fold everything the journal holds into the output (``predict`` says where it wrote)."""
        try:
            if self.journal.exists():
                self._fold(self._read_journal())
        except OSError as e:
            raise write_failed(self.out, e) from None
        return None


__all__ = ["FORMATS", "ResultFile", "Tally"]
