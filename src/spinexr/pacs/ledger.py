"""What ``spinexr pacs`` has done, in SQLite: a restart after a kill processes nothing twice and skips nothing.

A study is *finished* once every one of its films has an outcome (reported, or failed with a reason), or
when it holds no film to read (skipped, with the reason). Its instance count on the server is kept: a
finished study whose count has grown since (a film that arrived after the pass, a transfer caught
half-way) is taken up again, and only its new films are predicted. A study seen but not finished (the run was
killed in it) is taken up again on the next round; its films already reported are not predicted again,
and a report stored just before a kill and stored again after it is the same DICOM instance (its UID is
derived from the film and the model: :func:`spinexr.deploy.dicom.report.derived_uid`), so the PACS keeps
one. Each change is its own committed transaction.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from spinexr.errors import SpinexrError

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    state TEXT NOT NULL,              -- seen | done | skipped | retry (a failed film waits for another try)
    reason TEXT NOT NULL DEFAULT '',
    first_seen REAL NOT NULL,
    finished REAL,
    instances INTEGER                 -- the study's instance count when finished, our reports included
);
CREATE TABLE IF NOT EXISTS films (
    sop_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    state TEXT NOT NULL,              -- reported | failed | not_analysed
    reason TEXT NOT NULL DEFAULT '',
    label TEXT,
    largest REAL,
    sr_uid TEXT,
    pr_uid TEXT,
    stored REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,  -- tries so far (a failed film is tried again, at most RETRIES times)
    next_try REAL                     -- when a failed film may be tried again (NULL: never)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
FINISHED = ("done", "skipped", "retry")  # a study to retry is taken up by its due films (Ledger.due), or if it grows
RETRIES = 3  # tries of a failed film in all, across passes
RETRY_WAIT_S = 60.0  # the wait after the first failure; doubled after each next one
RETRY_MAX_WAIT_S = 3600.0


def same_server(url: str) -> tuple[str, tuple[str, ...], int, str]:
    """What identifies a server behind an address: the scheme, the addresses its host resolves to (so
    ``localhost`` and ``127.0.0.1`` are one server), the port (the scheme's default when none is given)
    and the path without its trailing slash; a host that does not resolve stands for itself, lower-cased."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(url.strip())
    scheme = (u.scheme or "http").lower()
    host = (u.hostname or "").lower()
    try:
        port = u.port or (443 if scheme == "https" else 80)
    except ValueError:  # a port that is not a number: the address as it is written
        return scheme, (host,), 0, url.strip()
    try:
        found = tuple(sorted({a[4][0] for a in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)}))
    except (OSError, UnicodeError):
        found = (host,)
    loopback = {"127.0.0.1", "::1"}
    if found and set(found) <= loopback:  # localhost resolves to one or both loopbacks
        found = ("loopback",)
    return scheme, found, port, u.path.rstrip("/")


class Ledger:
    """The state file (``--state``): opened, created if missing, refused if it is not a spinexr ledger or
    was written for another PACS address (``url`` None: whichever address it records).

    Args:
        path: the state file.
        url: the server's address, or None.
    """

    def __init__(self, path: str | Path, url: str | None) -> None:
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self.db.executescript(SCHEMA)
            row = self.db.execute("SELECT value FROM meta WHERE key = 'url'").fetchone()
        except sqlite3.DatabaseError as e:
            raise SpinexrError(f"{self.path} is not a spinexr pacs state file ({e}); give another --state") from None
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(studies)")}
        if "instances" not in cols:  # a state file from before the count was kept
            self.db.execute("ALTER TABLE studies ADD COLUMN instances INTEGER")
        film_cols = {r[1] for r in self.db.execute("PRAGMA table_info(films)")}
        if "attempts" not in film_cols:  # a state file from before failed films were retried
            self.db.execute("ALTER TABLE films ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1")
            self.db.execute("ALTER TABLE films ADD COLUMN next_try REAL")
        self.url = row[0] if row is not None else url
        if row is None and url is not None:
            self.db.execute("INSERT INTO meta VALUES ('url', ?)", (url,))
        elif row is not None and url is not None and same_server(row[0]) != same_server(url):
            raise SpinexrError(f"{self.path} records the work done on {row[0]}, not {url}; give another --state "
                               "for this server")

    def close(self) -> None:
        self.db.close()

    def get(self, key: str) -> str | None:
        """A value the worker keeps between passes (the last pass, the last full sweep)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def finished(self, study_uid: str, instances: int | None = None) -> bool:
        """True when the study was finished and, given the server's ``instances`` count for it now, that
        count is the one recorded (a film that arrived later takes the study up again; so does a count
        recorded too high, after a report stored twice across a kill: the next pass finds nothing new
        and records the true count)."""
        row = self.db.execute("SELECT state, instances FROM studies WHERE study_uid = ?", (study_uid,)).fetchone()
        if row is None or row[0] not in FINISHED:
            return False
        return instances is None or row[1] is None or instances == row[1]

    def seen(self, study_uid: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO studies (study_uid, state, first_seen) VALUES (?, 'seen', ?)",
                        (study_uid, time.time()))

    def film_done(self, sop_uid: str, now: float | None = None) -> bool:
        """True when a film needs nothing now: reported, not analysed, or failed and not yet due for
        another try (or out of tries)."""
        row = self.db.execute("SELECT state, next_try FROM films WHERE sop_uid = ?", (sop_uid,)).fetchone()
        if row is None:
            return False
        state, next_try = row
        return state != "failed" or next_try is None or next_try > (time.time() if now is None else now)

    def retrying(self, sop_uid: str) -> bool:
        """True when a film failed and will be tried again."""
        return self.db.execute("SELECT 1 FROM films WHERE sop_uid = ? AND state = 'failed' AND next_try IS NOT NULL",
                               (sop_uid,)).fetchone() is not None

    def due_films(self, now: float | None = None) -> list[str]:
        """Failed films (SOP Instance UIDs) due for another try now."""
        now = time.time() if now is None else now
        return [r[0] for r in self.db.execute("SELECT sop_uid FROM films WHERE state = 'failed' AND "
                                              "next_try IS NOT NULL AND next_try <= ?", (now,))]

    def due(self, now: float | None = None) -> list[str]:
        """Studies with a failed film due for another try now."""
        now = time.time() if now is None else now
        return [r[0] for r in self.db.execute("SELECT DISTINCT study_uid FROM films WHERE state = 'failed' AND "
                                              "next_try IS NOT NULL AND next_try <= ?", (now,))]

    def retries_pending(self, study_uid: str) -> int:
        """Failed films of a study that will be tried again."""
        return int(self.db.execute("SELECT COUNT(*) FROM films WHERE study_uid = ? AND state = 'failed' AND "
                                   "next_try IS NOT NULL", (study_uid,)).fetchone()[0])

    def record_film(self, ref: tuple[str, str, str], *, reason: str = "", label: str | None = None,
                    largest: float | None = None, reports: tuple[str, str | None] | None = None,
                    analysed: bool = True) -> None:
        """One film's outcome: ``ref`` (study, series, SOP instance UIDs); reported with ``reports`` (the SR's
        and the presentation state's UIDs), failed with ``reason``, or not analysed (``analysed`` False:
        outside the bundle's intended use, with ``reason``; nothing is stored for it, and it is not retried).

        Args:
            ref: (study, series, SOP instance) UIDs.
            reason: why the film failed ("" when it was reported).
            label: the decision's label.
            largest: the largest Cobb angle.
            reports: the structured report's and the presentation state's SOP instance UIDs.
            analysed: False for a film outside the intended use.
        """
        study_uid, series_uid, sop_uid = ref
        sr_uid, pr_uid = reports or (None, None)
        state = "reported" if sr_uid else "failed" if analysed else "not_analysed"
        row = self.db.execute("SELECT attempts FROM films WHERE sop_uid = ?", (sop_uid,)).fetchone()
        attempts = 1 + (row[0] if row is not None else 0)
        now = time.time()
        next_try = None  # a failed film waits 1, 2, 4 ... minutes (at most an hour) for each next try
        if state == "failed" and attempts < RETRIES:
            next_try = now + min(RETRY_MAX_WAIT_S, RETRY_WAIT_S * 2 ** (attempts - 1))
        self.db.execute("INSERT OR REPLACE INTO films VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (sop_uid, study_uid, series_uid, state, reason, label, largest, sr_uid, pr_uid, now,
                         attempts, next_try))

    def finish(self, study_uid: str, state: str, reason: str = "", instances: int | None = None) -> None:
        """A study's outcome: ``done``, ``skipped`` or ``failed``, with the reason.

        Args:
            study_uid: the Study Instance UID.
            state: its outcome.
            reason: why, where it was not done.
            instances: its number of instances, when known (a study that grows is looked at again; None keeps
                the count recorded before).
        """
        self.db.execute("UPDATE studies SET state = ?, reason = ?, finished = ?, instances = COALESCE(?, instances) "
                        "WHERE study_uid = ?",
                        (state, reason, time.time(), instances, study_uid))

    def counts(self) -> dict[str, int]:
        out = {s: n for s, n in self.db.execute("SELECT state, COUNT(*) FROM studies GROUP BY state")}
        films = dict(self.db.execute("SELECT state, COUNT(*) FROM films GROUP BY state").fetchall())
        out["films reported"] = films.get("reported", 0)
        out["films failed"] = films.get("failed", 0)
        out["films not analysed"] = films.get("not_analysed", 0)
        out["films waiting to be tried again"] = int(self.db.execute(
            "SELECT COUNT(*) FROM films WHERE state = 'failed' AND next_try IS NOT NULL").fetchone()[0])
        return out

    def reported_in(self, study_uid: str) -> int:
        """How many films of a study have their reports stored (the next report's Instance Number is one more)."""
        return int(self.db.execute("SELECT COUNT(*) FROM films WHERE study_uid = ? AND state = 'reported'",
                                   (study_uid,)).fetchone()[0])

    def studies(self) -> list[dict[str, Any]]:
        # A study's film counts come from its films, never stored twice.
        cur = self.db.execute("SELECT s.*, COUNT(f.sop_uid) AS films, COALESCE(SUM(f.state = 'reported'), 0) AS reported, "
                              "COALESCE(SUM(f.state = 'failed'), 0) AS failed, "
                              "COALESCE(SUM(f.state = 'not_analysed'), 0) AS not_analysed FROM studies s LEFT JOIN films f "
                              "ON f.study_uid = s.study_uid GROUP BY s.study_uid ORDER BY s.first_seen")
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def films(self, study_uid: str | None = None) -> list[dict[str, Any]]:
        q, args = "SELECT * FROM films", ()
        if study_uid is not None:
            q, args = q + " WHERE study_uid = ?", (study_uid,)
        cur = self.db.execute(q + " ORDER BY stored", args)
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


__all__ = ["Ledger", "same_server"]
