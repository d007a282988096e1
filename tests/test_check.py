"""``spinexr data check`` on small built datasets and on KAUH."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import gradient_image, save
from spinexr.cli import main
from spinexr.data.check import check_dataset, merge_groups
from spinexr.data.manifest import from_csv


def _dataset(root: Path) -> None:
    rng = np.random.default_rng(0)
    for c in ("Normal", "Scoliosis", "Spondylolisthesis"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            save((rng.random((80, 40)) * 255).astype(np.uint8), root / c / f"{c}{i}.png")
    # An exact copy, a near-duplicate (same image plus faint noise), and a broken file.
    shutil.copy(root / "Normal" / "Normal0.png", root / "Normal" / "copy.png")
    base = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(root / "Scoliosis" / "Scoliosis0.png"), float)
    near = np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
    save(near, root / "Scoliosis" / "near.png")
    (root / "Spondylolisthesis" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")


def test_check_reports_and_goes_on(tmp_path: Path) -> None:
    _dataset(tmp_path / "d")
    r = check_dataset(tmp_path / "d", tmp_path / "out", progress=False)
    assert r.n_files == 21
    assert r.counts == {"Normal": 7, "Scoliosis": 7, "Spondylolisthesis": 6}
    assert len(r.unreadable) == 1 and r.unreadable[0]["path"].endswith("broken.jpg")
    assert r.unreadable[0]["reason"]
    assert len(r.exact_duplicates) == 1 and len(r.exact_duplicates[0]) == 2
    assert len(r.near_duplicates) == 1
    pair = {Path(r.near_duplicates[0]["a"]).name, Path(r.near_duplicates[0]["b"]).name}
    assert pair == {"Scoliosis0.png", "near.png"}
    m = from_csv(tmp_path / "out" / "manifest.csv")
    assert len(m) == 20  # the broken file is left out
    groups = {rec.path.name: rec.group for rec in m.records}
    assert groups["copy.png"] == groups["Normal0.png"]
    assert groups["near.png"] == groups["Scoliosis0.png"]
    assert groups["Normal1.png"] != groups["Normal0.png"]
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report["counts"] == r.counts


def test_merge_groups_transitive() -> None:
    assert merge_groups(["a", "b", "c", "d"], [(0, 1), (1, 2)]) == ["a", "a", "a", "d"]
    assert merge_groups(["x", "y", "x"], [(1, 2)]) == ["x", "x", "x"]


def test_shortcut_warning_fires_when_size_predicts_class(tmp_path: Path) -> None:
    for c, w in (("Normal", 30), ("Scoliosis", 60), ("Spondylolisthesis", 90)):
        (tmp_path / c).mkdir()
        for i in range(8):
            save(gradient_image(w + i, 100), tmp_path / c / f"{i}.png")
    r = check_dataset(tmp_path, None, progress=False, near_dup_threshold=1.01)
    assert r.shortcut["accuracy"] > 0.9
    assert any("shortcut" in w for w in r.warnings)


def test_cli_json_and_bad_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _dataset(tmp_path / "d")
    assert main(["data", "check", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["Normal"] == 7
    assert main(["data", "check", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "Traceback" not in err
    # A second check into the same folder, or one that would replace the input manifest, is refused.
    assert main(["data", "check", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--json"]) == 2
    assert "--force" in capsys.readouterr().err
    man = tmp_path / "o" / "manifest.csv"
    before = man.read_text()
    assert main(["data", "check", str(man), "--out", str(tmp_path / "o"), "--force"]) == 2
    assert "overwrite the input" in capsys.readouterr().err
    assert man.read_text() == before


@pytest.mark.realdata
def test_kauh(kauh_dir: Path, tmp_path: Path) -> None:
    r = check_dataset(kauh_dir, tmp_path, progress=False)
    assert r.counts == {"Normal": 71, "Scoliosis": 188, "Spondylolisthesis": 79}
    assert r.formats == {"JPEG": 336, "PNG": 2}
    assert r.unreadable == [] and r.exact_duplicates == []
    pairs = [{Path(p["a"]).name, Path(p["b"]).name} for p in r.near_duplicates]
    assert {"N2,N,18,M_1_0.jpg", "N4,N,18,M_1_0.jpg"} in pairs
    assert r.shortcut["majority_rate"] == pytest.approx(188 / 338, abs=1e-3)
    assert 0.60 < r.shortcut["accuracy"] < 0.72
    assert any("shortcut" in w for w in r.warnings)
