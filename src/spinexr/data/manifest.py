"""Datasets as manifests: (path, label, group, view) records from a class-folder tree or a CSV.

Folder names are matched case-insensitively against known aliases, so ``ScolFinal`` or ``scol`` both
mean Scoliosis. A CSV (``path,label[,group][,view]``, paths relative to the CSV) suits data exported
from a PACS. The ``group`` keeps a patient's (or a near-duplicate's) images on one side of a split.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from spinexr import CLASSES
from spinexr.data.imread import list_images
from spinexr.errors import DatasetError

LABEL_ALIASES: dict[str, str] = {
    "normal": "Normal",
    "normalfinal": "Normal",
    "norm": "Normal",
    "scol": "Scoliosis",
    "scoliosis": "Scoliosis",
    "scolfinal": "Scoliosis",
    "spond": "Spondylolisthesis",
    "spondylolisthesis": "Spondylolisthesis",
    "olisthesis": "Spondylolisthesis",
    "spondfinal": "Spondylolisthesis",
}


def canonical_label(name: str) -> str | None:
    """The class a folder or label name stands for, or None when it is not known."""
    key = name.strip().lower().replace(" ", "").replace("_", "").replace("-", "")
    return LABEL_ALIASES.get(key)


@dataclass
class Record:
    """One radiograph of a dataset.

    Args:
        path: the film.
        label: its class.
        group: its patient or case (splits keep a group together).
        view: its view, where known.
    """

    path: Path
    label: str
    group: str
    view: str = ""

    @property
    def label_index(self) -> int:
        return CLASSES.index(self.label)


@dataclass
class Manifest:
    """A list of records plus where they came from.

    Args:
        records: the films.
        source: the folder or CSV they were read from.
    """

    records: list[Record]
    source: str

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> list[int]:
        return [r.label_index for r in self.records]

    @property
    def groups(self) -> list[str]:
        return [r.group for r in self.records]

    def counts(self) -> dict[str, int]:
        out = {c: 0 for c in CLASSES}
        for r in self.records:
            out[r.label] += 1
        return out

    def write_csv(self, path: str | Path, extra: dict[str, dict[str, object]] | None = None) -> None:
        """Write ``path,label,group,view`` (+ extra columns) with paths relative to the CSV."""
        path = Path(path)
        base = path.parent.resolve()
        extra = extra or {}
        extra_cols: list[str] = sorted({k for v in extra.values() for k in v})
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "group", "view", *extra_cols])
            for r in self.records:
                rel = _relpath(r.path.resolve(), base)
                ex = extra.get(str(r.path), {})
                w.writerow([rel, r.label, r.group, r.view, *[ex.get(c, "") for c in extra_cols]])


def _relpath(p: Path, base: Path) -> str:
    return Path(os.path.relpath(p, base)).as_posix()


def from_folder(root: str | Path) -> Manifest:
    """Records from ``root/<class folder>/**/image``; class folders are matched by alias."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: folder not found; give the folder that holds one sub-folder per class")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; give a class-folder tree or a CSV manifest")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    known = {d: canonical_label(d.name) for d in subdirs}
    unknown = [d.name for d, lab in known.items() if lab is None]
    if not subdirs:
        raise DatasetError(
            f"{root}: no class folders found. Expected sub-folders named like "
            f"{accepted_names()}, or pass a CSV manifest (path,label[,group][,view])"
        )
    if unknown:
        raise DatasetError(
            f"{root}: unknown class folder(s) {unknown}; found {[d.name for d in subdirs]}. "
            f"Accepted names (case-insensitive): {accepted_names()}. Rename or move the folder, "
            "or use a CSV manifest"
        )
    records: list[Record] = []
    for d, label in known.items():
        assert label is not None
        for p in list_images(d):
            rel = p.relative_to(root).as_posix()
            records.append(Record(path=p, label=label, group=rel))
    if not records:
        raise DatasetError(f"{root}: the class folders hold no image files (.jpg .png .tif .dcm)")
    return Manifest(records=records, source=str(root))


def from_csv(csv_path: str | Path) -> Manifest:
    """Records from a CSV with columns ``path,label[,group][,view]`` (paths relative to the CSV)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path}: manifest file not found")
    base = csv_path.parent
    records: list[Record] = []
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = [c.strip().lower() for c in (reader.fieldnames or [])]
        if "path" not in cols or "label" not in cols:
            raise DatasetError(
                f"{csv_path}: a manifest needs the columns path,label (optional: group,view); "
                f"found {reader.fieldnames}"
            )
        for i, row in enumerate(reader, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            label = canonical_label(row["label"]) or (row["label"] if row["label"] in CLASSES else None)
            if label is None:
                raise DatasetError(
                    f"{csv_path}, line {i}: unknown label {row['label']!r}; accepted: {accepted_names()}"
                )
            rel = Path(row["path"])
            p = rel if rel.is_absolute() else (base / rel)
            group = row.get("group") or rel.as_posix()
            records.append(Record(path=p, label=label, group=group, view=row.get("view", "")))
    if not records:
        raise DatasetError(f"{csv_path}: the manifest has no rows")
    return Manifest(records=records, source=str(csv_path))


def load_manifest(source: str | Path) -> Manifest:
    """A class-folder tree or a CSV manifest, whichever ``source`` is."""
    source = Path(source)
    if source.suffix.lower() == ".csv":
        return from_csv(source)
    return from_folder(source)


def accepted_names() -> str:
    by_class: dict[str, list[str]] = {c: [] for c in CLASSES}
    for alias, c in LABEL_ALIASES.items():
        by_class[c].append(alias)
    return "; ".join(f"{c}: {', '.join(v)}" for c, v in by_class.items())
