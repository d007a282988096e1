"""The corrections store: corners a person fixed in the page, kept so the next landmark model can learn them.

A folder (``spinexr serve --corrections DIR``) holding:

- ``films/<sha256>.<ext>``: each corrected film, once (its bytes as uploaded);
- ``records/<sha256>/v<N>.json``: one JSON record per saved correction (schema ``spinexr-correction/1``):
  the corners, the angles measured on them, the film's content hash, the bundle's digest, the model's
  own corners, when and by whom. A second correction of the same film is version N + 1; a record is
  created exclusively and never rewritten;
- ``corrections.csv``: every saved correction, one row each, in the plain landmark format
  (``path, x1..x68, y1..y68, pt, mt, tl, group``) plus ``version, sha256, saved_at, saved_by``; only
  ever appended to;
- ``latest.csv``: the latest version of each film in the same format, rewritten whole (a temporary file,
  then a rename) after each save: ``spinexr landmarks train --data DIR/latest.csv`` trains on it.

:meth:`CorrectionStore.scan` reads the folder back: a record that is not valid JSON, or a row of
``corrections.csv`` cut short, is reported with its place and left out; every other correction stays.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spinexr.data.landmarks import ANGLE_COLUMNS, N_POINTS, XY_COLUMNS
from spinexr.errors import SpinexrError
from spinexr.geometry.corners import check_corners, measure_corners
from spinexr.geometry.curves import AASCE_KEYS

SCHEMA = "spinexr-correction/1"
EXTRA_COLUMNS = ("version", "sha256", "saved_at", "saved_by")
COLUMNS = ["path", *XY_COLUMNS, *ANGLE_COLUMNS, "group", *EXTRA_COLUMNS]
_SHA = re.compile(r"^[0-9a-f]{64}$")
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,5}$")
MAX_NAME = 80


def valid_sha(sha: str) -> str:
    if not isinstance(sha, str) or not _SHA.match(sha):
        raise SpinexrError("a film's content hash is 64 lower-case hex digits (SHA-256)")
    return sha


@dataclass
class Scan:
    """What the folder holds: the latest record of each film, and what could not be read (by place).

    Args:
        latest: the latest record of each film.
        versions: each film's number of versions.
        problems: what could not be read, by place.
        rows: records read.
    """

    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    rows: int = 0


def _aasce(m: dict[str, Any], i: int) -> float:
    """The AASCE triple's ``i``-th angle of a measurement (the landmark CSV's pt, mt, tl columns), in the
    document's form (``aasce_angles``) or as records saved before it (``pt``, ``mt``, ``tl``)."""
    if "aasce_angles" in m:
        return float(m["aasce_angles"][AASCE_KEYS[i]]["angle"])
    return float(m[ANGLE_COLUMNS[i]]["angle"])


def _row(rec: dict[str, Any]) -> list[str]:
    p = np.asarray(rec["corners"], dtype=np.float64).reshape(N_POINTS, 2)
    m = rec["measurement"]
    return [rec["film"], *[f"{v:.3f}" for v in p[:, 0]], *[f"{v:.3f}" for v in p[:, 1]],
            *[f"{_aasce(m, i):.4f}" for i in range(len(ANGLE_COLUMNS))], rec["sha256"][:16],
            str(rec["version"]), rec["sha256"], rec["saved_at"], rec.get("saved_by") or ""]


@dataclass(frozen=True)
class CorrectionContext:
    """What a saved correction records beside the corners: who saved it, the bundle whose measurement
    was corrected, the model's own corners and model information, and the angle reading's centreline weight."""

    saved_by: str = ""
    bundle_digest: str | None = None
    model_corners: Any = None
    model: dict[str, Any] | None = None
    centreline_weight: float = 0.0


class CorrectionStore:
    """A corrections folder (see the module); safe to share between the service's threads.

    Args:
        root: the corrections folder (made if missing).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise SpinexrError(f"--corrections {self.root}: not a folder")
        for sub in ("films", "records"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.log_csv = self.root / "corrections.csv"
        self.latest_csv = self.root / "latest.csv"
        self._lock = threading.Lock()

    # -- reading ------------------------------------------------------------------------------------
    def _record(self, path: Path) -> dict[str, Any]:
        rec = json.loads(path.read_text())
        if not isinstance(rec, dict) or rec.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} record")
        check_corners(rec["corners"], rec["width"], rec["height"])
        return rec

    def scan(self) -> Scan:
        """Every record and every row of ``corrections.csv``, the bad ones reported per place."""
        out = Scan()
        for d in sorted((self.root / "records").iterdir()):
            if not d.is_dir() or not _SHA.match(d.name):
                continue
            for f in sorted(d.glob("v*.json"), key=lambda p: int(p.stem[1:]) if p.stem[1:].isdigit() else -1):
                try:
                    rec = self._record(f)
                except (ValueError, KeyError, TypeError, OSError) as e:  # json's error is a ValueError
                    out.problems.append(f"{f.relative_to(self.root)}: unreadable record ({e}); left out")
                    continue
                out.versions[d.name] = max(out.versions.get(d.name, 0), int(rec["version"]))
                if rec["version"] >= out.latest.get(d.name, {}).get("version", 0):
                    out.latest[d.name] = rec
        if self.log_csv.is_file():
            with open(self.log_csv, newline="") as fh:
                rows = list(csv.reader(fh))
            header = rows[0] if rows else []
            for k, row in enumerate(rows[1:], start=2):
                if len(row) != len(header):
                    out.problems.append(f"corrections.csv row {k}: {len(row)} columns, the header has {len(header)} "
                                        "(a row cut short); left out")
                    continue
                try:
                    [float(c) for c in row[1:1 + 2 * N_POINTS]]
                except ValueError:
                    out.problems.append(f"corrections.csv row {k}: a corner is not a number; left out")
                    continue
                out.rows += 1
        return out

    def latest(self, sha: str) -> tuple[dict[str, Any] | None, int]:
        """The latest correction of the film with this content hash, and how many versions it has."""
        d = self.root / "records" / valid_sha(sha)
        best, n = None, 0
        for f in d.glob("v*.json") if d.is_dir() else []:
            try:
                rec = self._record(f)
            except (ValueError, KeyError, TypeError, OSError):
                continue
            n += 1
            if best is None or rec["version"] > best["version"]:
                best = rec
        return best, n

    # -- writing ------------------------------------------------------------------------------------
    def save(self, film: bytes, filename: str, corners: Any, size: tuple[int, int],
             about: CorrectionContext | None = None) -> dict[str, Any]:
        """Keep one correction: the film (once), a new version's record, a row of the log, and ``latest.csv``.

        Args:
            film: the film's bytes as uploaded.
            filename: its name as the client gave it (kept made safe, never used as a path).
            corners: the 68 corrected corners, in the film's pixels.
            size: the film's (width, height); the corners are checked against it (ValueError with the reason).
            about: who saved it and what the model had measured (:class:`CorrectionContext`).

        Returns:
            the saved record.
        """
        width, height = size
        a = about or CorrectionContext()
        saved_by, bundle_digest, model_corners, model = a.saved_by, a.bundle_digest, a.model_corners, a.model
        centreline_weight = a.centreline_weight
        v = check_corners(corners, width, height)
        sha = hashlib.sha256(film).hexdigest()
        suffix = Path(filename or "").suffix.lower()
        suffix = suffix if _SUFFIX.match(suffix) else ".bin"
        name = re.sub(r"[^\w.\- ]", "_", Path(filename or "film").name)[:MAX_NAME]
        with self._lock:
            film_path = self.root / "films" / f"{sha}{suffix}"
            if not film_path.exists():
                tmp = film_path.with_name(film_path.name + ".tmp")
                tmp.write_bytes(film)
                os.replace(tmp, film_path)
            rec_dir = self.root / "records" / sha
            rec_dir.mkdir(exist_ok=True)
            version = 1 + max([int(p.stem[1:]) for p in rec_dir.glob("v*.json") if p.stem[1:].isdigit()], default=0)
            rec = {"schema": SCHEMA, "version": version, "sha256": sha, "filename": name,
                   "film": f"films/{film_path.name}", "width": int(width), "height": int(height),
                   "corners": np.round(v, 3).tolist(),
                   "measurement": measure_corners(v, width, height, centreline_weight),
                   "model_corners": None if model_corners is None else np.round(np.asarray(model_corners, float), 3).tolist(),
                   "bundle_digest": bundle_digest, "model": model or {},
                   "saved_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "saved_by": (saved_by or "").strip()[:MAX_NAME]}
            with open(rec_dir / f"v{version}.json", "x") as fh:  # a version is never rewritten
                json.dump(rec, fh, indent=1)
            self._append_log(rec)
            self._write_latest()
        return rec

    def _append_log(self, rec: dict[str, Any]) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        new = not self.log_csv.is_file() or self.log_csv.stat().st_size == 0
        if new:
            w.writerow(COLUMNS)
        w.writerow(_row(rec))
        data = buf.getvalue()
        if not new:
            with open(self.log_csv, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":  # a row cut short stays its own (reported) row
                    data = "\n" + data
        with open(self.log_csv, "a", newline="") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def _write_latest(self) -> None:
        scan = self.scan()
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        for sha in sorted(scan.latest):
            w.writerow(_row(scan.latest[sha]))
        tmp = self.latest_csv.with_name("latest.csv.tmp")
        tmp.write_text(buf.getvalue())
        os.replace(tmp, self.latest_csv)


__all__ = ["COLUMNS", "SCHEMA", "CorrectionStore", "Scan", "valid_sha"]
