"""Datasets: class-folder aliases, the unknown-folder error, and CSV manifests."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import gradient_image, save
from spinexr.data.manifest import canonical_label, from_csv, load_manifest
from spinexr.errors import DatasetError


@pytest.mark.parametrize("name,label", [
    ("Normal", "Normal"), ("NORMAL", "Normal"), ("NormalFinal", "Normal"),
    ("scol", "Scoliosis"), ("Scoliosis", "Scoliosis"), ("ScolFinal", "Scoliosis"),
    ("Spond", "Spondylolisthesis"), ("spondylolisthesis", "Spondylolisthesis"),
    ("Olisthesis", "Spondylolisthesis"), ("SpondFinal", "Spondylolisthesis"),
])
def test_aliases(name: str, label: str) -> None:
    assert canonical_label(name) == label


def _tree(root: Path, names: list[str]) -> None:
    for i, n in enumerate(names):
        (root / n).mkdir(parents=True)
        save(gradient_image(32 + i, 64), root / n / f"img{i}.png")


def test_folder_aliases_case_insensitive(tmp_path: Path) -> None:
    _tree(tmp_path, ["normal", "SCOL", "Olisthesis"])
    m = load_manifest(tmp_path)
    assert m.counts() == {"Normal": 1, "Scoliosis": 1, "Spondylolisthesis": 1}
    assert len(set(m.groups)) == 3


def test_unknown_folder_lists_found_and_accepted(tmp_path: Path) -> None:
    _tree(tmp_path, ["Normal", "Kyphosis"])
    with pytest.raises(DatasetError) as ei:
        load_manifest(tmp_path)
    msg = str(ei.value)
    assert "Kyphosis" in msg and "Normal" in msg  # what was found
    assert "scol" in msg and "olisthesis" in msg  # what is accepted


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_manifest(tmp_path / "nope")
    (tmp_path / "Normal").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        load_manifest(tmp_path)


def test_csv_manifest_relative_paths_groups_views(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        save(gradient_image(40, 80), tmp_path / "imgs" / f"{i}.png")
    (tmp_path / "m.csv").write_text(
        "path,label,group,view\nimgs/0.png,Normal,p1,AP\nimgs/1.png,scol,p1,AP\nimgs/2.png,Spondylolisthesis,,lateral\n"
    )
    m = from_csv(tmp_path / "m.csv")
    assert [r.label for r in m.records] == ["Normal", "Scoliosis", "Spondylolisthesis"]
    assert m.records[0].path == tmp_path / "imgs" / "0.png"
    assert m.groups[:2] == ["p1", "p1"] and m.groups[2] == "imgs/2.png"
    assert m.records[2].view == "lateral"


def test_csv_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("file,diagnosis\na.png,Normal\n")
    with pytest.raises(DatasetError, match="path,label"):
        from_csv(tmp_path / "bad.csv")
    (tmp_path / "lab.csv").write_text("path,label\na.png,Kyphosis\n")
    with pytest.raises(DatasetError, match="line 2.*Kyphosis"):
        from_csv(tmp_path / "lab.csv")
