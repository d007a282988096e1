"""Landmark datasets: the AASCE / SpineWeb 16 layout and a plain CSV for users' own films.

Both give a :class:`LandmarkSet`: per film its path, the 17 x 4 corner landmarks in pixels (y down),
the three Cobb angles when known, the film size and a patient group for splitting.

- AASCE layout: ``labels/filenames.csv`` (a file name a line), ``labels/landmarks.csv`` (x1..x68, then
  y1..y68, as fractions of the width and height), ``labels/angles.csv`` (PT, MT, TL/L), images in
  ``images/``; or flat, as the data is often unpacked: the three CSVs in the folder itself beside its one
  image folder (or the images beside them). The case number in the file name (``...-239 A AP.jpg``)
  groups a patient's films.
- Plain CSV: a header ``path, x1..x68, y1..y68`` in pixels, optional ``pt, mt, tl`` and ``group``;
  paths relative to the CSV.

A bad label row (wrong column count, a value that is not a number, NaN, a point outside its film by
more than 5% of its side)
stops the load with one error naming the file, the rows and the problems. A film that cannot be
read is left out and listed in ``skipped``, and the load goes on.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from spinexr.data.imread import is_dicom_file, read_image
from spinexr.errors import DatasetError, ImageReadError
from spinexr.geometry.cobb import N_VERTEBRAE
from spinexr.geometry.corners import OUTSIDE_TOLERANCE, outside_film

N_POINTS = N_VERTEBRAE * 4
XY_COLUMNS = [f"x{i}" for i in range(1, N_POINTS + 1)] + [f"y{i}" for i in range(1, N_POINTS + 1)]
ANGLE_COLUMNS = ("pt", "mt", "tl")
_CASE = re.compile(r"-(\d+)\s*[A-Za-z]?\s*(?:AP)?\.\w+$")
MAX_LISTED = 12


@dataclass
class LandmarkRecord:
    """One film of a landmark set.

    Args:
        path: the film.
        landmarks: (17, 4, 2) corners in pixels, y down.
        width: the film's width.
        height: its height.
        group: its case (splits keep a case together).
        angles: its three Cobb angles (PT, MT, TL/L), where given.
    """

    path: Path
    landmarks: np.ndarray  # (17, 4, 2) pixels, y down
    width: int
    height: int
    group: str
    angles: np.ndarray | None = None  # (3,) PT, MT, TL/L in degrees


@dataclass
class LandmarkSet:
    """The films of a landmark source, and the ones passed over.

    Args:
        records: the films.
        source: the folder or CSV.
        skipped: films passed over, with why.
    """

    records: list[LandmarkRecord]
    source: str
    skipped: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def groups(self) -> np.ndarray:
        return np.array([r.group for r in self.records])


def case_group(filename: str) -> str:
    """The patient group of an AASCE file name: its case number, or the name itself without one."""
    m = _CASE.search(filename)
    return f"case-{m.group(1)}" if m else Path(filename).stem


def film_size(path: Path) -> tuple[int, int]:
    """(width, height) of a film from its header, without decoding the pixels where the format allows."""

    if not path.is_file():
        raise ImageReadError(path, "file not found")
    if not is_dicom_file(path):
        try:
            with Image.open(path) as im:
                return im.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            pass  # the read boundary gives the reason
    _, meta = read_image(path)
    return meta.width, meta.height


def _check_points(pts: np.ndarray, w: int, h: int, tol: float = OUTSIDE_TOLERANCE) -> str | None:
    return outside_film(pts, w, h, tol)


def _raise(problems: list[str], where: str) -> None:
    if problems:
        more = f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        raise DatasetError(f"{where}: {len(problems)} bad landmark row(s){more}; fix them and load again:\n  "
                           + "\n  ".join(problems[:MAX_LISTED]))


def _floats(cells: list[str]) -> np.ndarray:
    return np.array([float(c) for c in cells], dtype=np.float64)


AASCE_CSVS = ("filenames.csv", "landmarks.csv", "angles.csv")


def aasce_layout(root: str | Path) -> tuple[Path, Path]:
    """Where an AASCE folder keeps its label CSVs and its images: ``labels/`` and ``images/``, or flat (the
    CSVs in ``root`` beside its one folder of images, or beside the images themselves). A DatasetError
    naming what is missing otherwise; it looks at names only, so it answers at once.

    Args:
        root: the folder.

    Returns:
        (the folder holding the three CSVs, the folder holding the images).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    for lab in (root / "labels", root):
        if all((lab / n).is_file() for n in AASCE_CSVS):
            break
    else:
        have = sorted(n for n in AASCE_CSVS if (root / "labels" / n).is_file() or (root / n).is_file())
        missing = [n for n in AASCE_CSVS if n not in have]
        raise DatasetError(f"{root}: not an AASCE folder: {', '.join(missing)} missing (looked in {root / 'labels'} "
                           f"and {root}); an AASCE folder holds filenames.csv, landmarks.csv and angles.csv, in "
                           "labels/ beside images/ or flat beside its image folder")
    if (root / "images").is_dir():
        return lab, root / "images"
    folders = [d for d in root.iterdir() if d.is_dir() and d.name != "labels" and not d.name.startswith(".")]
    return lab, folders[0] if len(folders) == 1 else root


def read_aasce(root: str | Path) -> LandmarkSet:
    """The AASCE / SpineWeb 16 folder (:func:`aasce_layout`: ``images/`` and ``labels/``, or flat)."""
    root = Path(root)
    lab, images = aasce_layout(root)
    names = [r[0] for r in csv.reader(open(lab / "filenames.csv")) if r]
    lm_rows = [r for r in csv.reader(open(lab / "landmarks.csv")) if r]
    an_rows = [r for r in csv.reader(open(lab / "angles.csv")) if r]
    if not len(names) == len(lm_rows) == len(an_rows):
        raise DatasetError(f"{lab}: filenames.csv has {len(names)} rows, landmarks.csv {len(lm_rows)} and angles.csv "
                           f"{len(an_rows)}; row k of each must describe the same film")
    recs, skipped, problems = [], {}, []
    for k, (name, lm, an) in enumerate(zip(names, lm_rows, an_rows), start=1):
        where = f"{(lab / 'landmarks.csv').relative_to(root)} row {k} ({name})"
        if len(lm) != 2 * N_POINTS or len(an) != 3:
            problems.append(f"{where}: {len(lm)} landmark values and {len(an)} angles; expected {2 * N_POINTS} and 3")
            continue
        try:
            xy, angles = _floats(lm), _floats(an)
        except ValueError as e:
            problems.append(f"{where}: not a number ({e})")
            continue
        path = images / name
        try:
            w, h = film_size(path)
        except ImageReadError as e:
            skipped[str(path)] = e.reason
            continue
        pts = np.stack([xy[:N_POINTS] * w, xy[N_POINTS:] * h], axis=1).reshape(N_VERTEBRAE, 4, 2)
        bad = _check_points(pts, w, h) or (None if np.isfinite(angles).all() else "an angle is NaN")
        if bad:
            problems.append(f"{where}: {bad}")
            continue
        recs.append(LandmarkRecord(path, pts, w, h, case_group(name), angles))
    _raise(problems, str(root))
    return LandmarkSet(recs, str(root), skipped)


def read_landmark_csv(path: str | Path) -> LandmarkSet:
    """A plain landmark CSV: ``path, x1..x68, y1..y68`` (pixels), optional ``pt, mt, tl`` and ``group``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: landmark CSV not found")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DatasetError(f"{path}: empty file; expected a header path,x1..x68,y1..y68[,pt,mt,tl][,group]")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in ["path", *XY_COLUMNS] if c not in header]
    if missing:
        raise DatasetError(f"{path}: header lacks {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}; "
                           "expected path,x1..x68,y1..y68 in pixels, then optional pt,mt,tl and group")
    col = {h: i for i, h in enumerate(header)}
    has_angles = all(a in col for a in ANGLE_COLUMNS)
    recs, skipped, problems = [], {}, []
    for k, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        where = f"{path.name} row {k}"
        if len(row) != len(header):
            problems.append(f"{where}: {len(row)} columns; the header has {len(header)}")
            continue
        film = (path.parent / row[col["path"]].strip()).resolve()
        where += f" ({row[col['path']].strip()})"
        try:
            xy = _floats([row[col[c]] for c in XY_COLUMNS])
            cells = [row[col[a]].strip() for a in ANGLE_COLUMNS] if has_angles else []
            angles = _floats(cells) if any(cells) else None  # the angle columns may be left empty
        except ValueError as e:
            problems.append(f"{where}: not a number ({e})")
            continue
        try:
            w, h = film_size(film)
        except ImageReadError as e:
            skipped[str(film)] = e.reason
            continue
        pts = np.stack([xy[:N_POINTS], xy[N_POINTS:]], axis=1).reshape(N_VERTEBRAE, 4, 2)
        bad = _check_points(pts, w, h) or (None if angles is None or np.isfinite(angles).all() else "an angle is NaN")
        if bad:
            problems.append(f"{where}: {bad}")
            continue
        group = row[col["group"]].strip() if "group" in col and row[col["group"]].strip() else film.stem
        recs.append(LandmarkRecord(film, pts, w, h, group, angles))
    _raise(problems, str(path))
    if not recs:
        raise DatasetError(f"{path}: no readable film with landmarks ({len(skipped)} unreadable)")
    return LandmarkSet(recs, str(path), skipped)


def write_landmark_csv(path: str | Path, rows: list[tuple[str, np.ndarray, tuple[float, float, float] | None, str]]) -> Path:
    """Write ``(relative path, (17, 4, 2) pixels, angles or None, group)`` rows in the plain format."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", *XY_COLUMNS, *ANGLE_COLUMNS, "group"])
        for rel, pts, angles, group in rows:
            p = np.asarray(pts, dtype=np.float64).reshape(N_POINTS, 2)
            w.writerow([rel, *[f"{v:.3f}" for v in p[:, 0]], *[f"{v:.3f}" for v in p[:, 1]],
                        *([f"{a:.4f}" for a in angles] if angles is not None else ["", "", ""]), group])
    return path


def load_landmark_source(source: str | Path) -> LandmarkSet:
    """An AASCE folder or a plain landmark CSV."""
    p = Path(source)
    if p.is_dir():
        return read_aasce(p)
    if p.suffix.lower() == ".csv":
        return read_landmark_csv(p)
    raise DatasetError(f"{p}: give an AASCE folder (images/ and labels/, or flat) or a landmark CSV "
                       "(path,x1..x68,y1..y68)")
