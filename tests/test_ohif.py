"""OHIF's own SR reader hydrates spinexr's report: ``@cornerstonejs/adapters`` (from npm, run under Node,
``tests/node/hydrate.mjs``) turns every curve of the SR of 10 films into an editable Cobb angle annotation
whose label names the curve, whose four points are two lines through the middles of the end vertebrae's endplates ``predict``
measured (within 0.5 px)
and whose angle, both the stored one and the one its points make, is the document's (within 0.1 degrees).

The films are 10 AASCE films (real full-spine AP films) when ``../shared/data`` holds them, else 10
synthetic films."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from conftest import stream
from spinexr.data.dicom_film import FilmIdentity, dx_dataset
from spinexr.data.synth import synthesize
from spinexr.geometry.cobb import LEVELS, as_vertebrae
from spinexr.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
NODE = ROOT / "tests" / "node"
AASCE = ROOT.parent / "shared" / "data" / "aasce-spine-ap"


def hydrate(paths: list[Path]) -> dict[str, list[dict]]:
    """Each SR's Cobb angle annotations as OHIF makes them: label, four points (film pixels), angle."""
    node = shutil.which("node")
    if node is None or not (NODE / "node_modules" / "@cornerstonejs" / "adapters").is_dir():
        pytest.skip("needs Node and tests/node's packages: `make test` installs them with npm "
                    "(`npm ci --prefix tests/node`); .ci/run installs Node")
    done = subprocess.run([node, str(NODE / "hydrate.mjs"), *map(str, paths)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def films(folder: Path) -> list[Path]:
    """10 DICOM films: AASCE films made DX (patient orientation L\\F, so sides are the patient's) or synthetic."""
    folder.mkdir()
    if not AASCE.is_dir():
        synthesize(folder, n=10, seed=11, scale=0.35, fmt="dcm")
        return sorted(folder.rglob("*.dcm"))
    out = []
    for i, img in enumerate(sorted((AASCE / "images").glob("*.jpg"))[::45][:10]):
        ds = dx_dataset(np.asarray(Image.open(img).convert("L")), FilmIdentity(patient_id=f"AASCE{i}"))
        ds.PatientOrientation = ["L", "F"]
        out.append(folder / f"film{i}.dcm")
        ds.save_as(out[-1], enforce_file_format=True)
    return out


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    """The angle between direction vectors ``a`` and ``b`` in degrees, as cornerstone's Cobb angle tool
    measures its two lines (no folding to the acute angle)."""
    cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _distance_to_line(point: np.ndarray, line: np.ndarray) -> float:
    d = line[1] - line[0]
    return float(abs(d[0] * (point[1] - line[0][1]) - d[1] * (point[0] - line[0][0])) / np.linalg.norm(d))


def test_ohif_hydrates_every_curve_as_a_cobb_angle(bundled: Pipeline, tmp_path: Path) -> None:
    paths = films(tmp_path / "films")
    docs: list[dict] = []
    stream(bundled, paths, None, dicom=tmp_path / "dicom", on_batch=docs.extend)
    reports = {}
    for doc in docs:
        uid = pydicom.dcmread(doc["path"], stop_before_pixels=True).SOPInstanceUID
        reports[doc["path"]] = next((tmp_path / "dicom").rglob(f"SR_{uid}.dcm"))
    hydrated = hydrate(list(reports.values()))
    curves = 0
    for doc in docs:
        spine = doc["spine"] or {}
        want = spine.get("curves") or [] if spine.get("plausible") and spine.get("view") != "lumbar or lateral" else []
        got = hydrated[str(reports[doc["path"]])]
        assert isinstance(got, list), got  # not {"error": ...}: OHIF's reader took the file
        assert len(got) == len(want), (doc["path"], got, want)
        if not want:
            continue
        corners = as_vertebrae(np.asarray(spine["landmarks"], dtype=np.float64))
        for i, (a, c) in enumerate(zip(got, want), start=1):
            curves += 1
            assert a["label"] == f"curve {i}: {c['side']} {c['region']}"
            assert a["angle"] == pytest.approx(c["angle"], abs=0.1)
            p = np.asarray(a["points"], dtype=np.float64)
            assert p.shape == (4, 2)
            assert _angle(p[1] - p[0], p[3] - p[2]) == pytest.approx(c["angle"], abs=0.1)
            upper, lower = corners[LEVELS.index(c["upper_end"])], corners[LEVELS.index(c["lower_end"])]
            # through the middle of the upper end vertebra's upper endplate and the lower one's lower endplate
            assert _distance_to_line(upper[:2].mean(axis=0), p[:2]) < 0.5
            assert _distance_to_line(lower[2:].mean(axis=0), p[2:]) < 0.5
            assert p[1][0] > p[0][0] and p[3][0] > p[2][0]  # each line drawn left to right, as the tool reads it
    assert curves >= 5, "the films give curves to check"
