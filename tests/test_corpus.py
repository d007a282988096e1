"""Every file a user can hand us: pydicom's real-world DICOM corpus and a seeded mutation fuzz.

The read boundary turns any decoder failure into an ImageReadError for that file; predict and data
check finish over the corpus with a row per file and no traceback; the service never answers 500.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spinexr._fuzz import fuzz_cases
from spinexr.data.imread import read_image
from spinexr.errors import ImageReadError, ReadErrorKind

pydicom = pytest.importorskip("pydicom")
CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"
DCM = sorted(CORPUS.rglob("*.dcm"))
HAVE_CODECS = all(__import__("importlib").util.find_spec(m) for m in ("pylibjpeg", "libjpeg", "openjpeg"))
needs_codecs = pytest.mark.skipif(not HAVE_CODECS, reason="the dicom-codecs extra is not installed")


def test_corpus_is_there() -> None:
    assert len(DCM) >= 70, f"pydicom's wheel ships its test files in {CORPUS}"


@pytest.mark.parametrize("path", DCM, ids=lambda p: p.name)
def test_every_corpus_file_reads_or_gives_image_read_error(path: Path) -> None:
    try:
        img, meta = read_image(path)
    except ImageReadError as e:
        assert isinstance(e.kind, ReadErrorKind) and e.reason and str(path) in str(e)
        return
    assert img.dtype == np.float32 and img.ndim == 2 and 0.0 <= img.min() <= img.max() <= 1.0
    assert meta.format == "DICOM"


def test_corpus_kinds_name_the_problem() -> None:
    def kind(name: str) -> str:
        with pytest.raises(ImageReadError) as ei:
            read_image(CORPUS / name)
        return ei.value.kind.value

    assert kind("rtplan.dcm") == "no_pixels"
    assert kind("MR_truncated.dcm") == "corrupt"
    assert kind("rtdose_1frame.dcm") == "too_small"


@needs_codecs
@pytest.mark.parametrize("compressed", ["MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm"])
def test_lossless_codecs_match_the_uncompressed_reference(compressed: str) -> None:
    ref, _ = read_image(CORPUS / "MR_small.dcm")
    img, _ = read_image(CORPUS / compressed)
    np.testing.assert_array_equal(img, ref)


@needs_codecs
def test_jpeg2000_ybr_rct_reads_like_an_independent_decoder() -> None:
    """YBR_RCT J2K (the file that escaped before): pydicom's plugin and Pillow's own OpenJPEG agree."""
    from PIL import Image
    from pydicom.encaps import generate_frames

    name = "examples_jpeg2k.dcm"
    _, meta2 = read_image(CORPUS / "GDCMJ2K_TextGBR.dcm")  # the other YBR_RCT file of the corpus
    assert meta2.photometric == "YBR_RCT"
    img, meta = read_image(CORPUS / name)
    assert meta.photometric == "YBR_RCT"
    ds = pydicom.dcmread(CORPUS / name)
    frame = next(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
    rgb = np.asarray(Image.open(io.BytesIO(frame)).convert("RGB"), dtype=np.float64)
    gray = rgb @ np.array([0.299, 0.587, 0.114])
    gray = (gray - gray.min()) / (gray.max() - gray.min())
    assert np.abs(img - gray).max() < 1e-4


@needs_codecs
def test_twelve_bit_jpeg_and_jpeg_ls_read() -> None:
    img, meta = read_image(CORPUS / "JPGExtended.dcm")
    assert meta.bit_depth == 12 and img.shape == (1024, 256) and img.std() > 0.01
    raw = pydicom.dcmread(CORPUS / "JPGExtended.dcm").pixel_array
    assert raw.max() < 4096
    img, _ = read_image(CORPUS / "SC_rgb_jls_lossy_line.dcm")
    assert img.shape == (100, 100)


_NO_CODECS = r"""
import importlib.abc, sys, json
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pylibjpeg", "libjpeg", "openjpeg", "rle", "gdcm", "jpeg_ls"):
            raise ImportError(f"blocked {name}")
sys.meta_path.insert(0, Block())
from spinexr.data.imread import read_image
from spinexr.errors import ImageReadError
out = {}
for p in sys.argv[1:]:
    try:
        read_image(p); out[p] = ["ok", ""]
    except ImageReadError as e:
        out[p] = [e.kind.value, e.reason]
print(json.dumps(out))
"""


def test_without_codecs_the_message_names_the_extra() -> None:
    names = ["MR_small_jpeg_ls_lossless.dcm", "JPGExtended.dcm", "SC_rgb_jls_lossy_line.dcm", "MR_small_jp2klossless.dcm"]
    r = subprocess.run([sys.executable, "-c", _NO_CODECS, *[str(CORPUS / n) for n in names]],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip() == ""
    res = json.loads(r.stdout)
    for n in names[:3]:
        kind, reason = res[str(CORPUS / n)]
        assert kind == "codec", (n, kind, reason)
        assert "spinexr[dicom-codecs]" in reason and "transfer syntax" in reason and "photometric" in reason
    # JPEG 2000 still reads through Pillow's own OpenJPEG, or says which extra would read it.
    kind, reason = res[str(CORPUS / names[3])]
    assert kind == "ok" or (kind == "codec" and "dicom-codecs" in reason)


def test_library_messages_are_folded_into_the_result(capfd: pytest.CaptureFixture) -> None:
    import logging

    logging.basicConfig(level=logging.INFO)  # as the CLI does: records would reach the terminal
    _, meta = read_image(CORPUS / "MR_small_padded.dcm")
    assert any("padding" in w for w in meta.warnings)
    assert len(meta.warnings) == len(set(meta.warnings)) == 1  # pydicom logs and warns it: said once
    with pytest.raises(ImageReadError) as ei:
        read_image(CORPUS / "badVR.dcm")
    assert any("1A" in n for n in ei.value.notes)
    out, err = capfd.readouterr()
    assert "padding" not in err and "1A" not in err and "Traceback" not in err


def _fuzz_seeds(tmp: Path) -> dict[str, bytes]:
    from PIL import Image

    y, x = np.mgrid[0:96, 0:64]
    img = Image.fromarray(((x * 3 + y * 2) % 256).astype(np.uint8))
    seeds = {}
    for ext, kw in ((".jpg", {"quality": 90}), (".png", {}), (".tif", {"compression": "tiff_lzw"})):
        buf = io.BytesIO()
        img.save(buf, format={".jpg": "JPEG", ".png": "PNG", ".tif": "TIFF"}[ext], **kw)
        seeds[f"gradient{ext}"] = buf.getvalue()
    for n in ("MR_small.dcm", "CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm", "examples_jpeg2k.dcm",
              "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "JPGExtended.dcm"):
        seeds[n] = (CORPUS / n).read_bytes()
    return seeds


N_FUZZ = 330


def test_fuzz_reads_or_gives_image_read_error(tmp_path: Path) -> None:
    seeds = _fuzz_seeds(tmp_path)
    outcomes: dict[str, int] = {}
    for i, name, what, data in fuzz_cases(seeds, N_FUZZ, seed=1):
        p = tmp_path / f"case{i}{Path(name).suffix}"
        p.write_bytes(data)
        try:
            read_image(p)
            outcomes["ok"] = outcomes.get("ok", 0) + 1
        except ImageReadError as e:
            outcomes[e.kind.value] = outcomes.get(e.kind.value, 0) + 1
        except Exception as e:  # pragma: no cover - this is what the test is for
            pytest.fail(f"case {i} ({name}, {what}) escaped the read boundary: {type(e).__name__}: {e}")
        p.unlink()
    assert sum(outcomes.values()) == N_FUZZ
    assert outcomes.get("ok", 0) > 0 and len(outcomes) > 2  # the fuzz exercises both sides


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    return subprocess.run([sys.executable, "-m", "spinexr", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def test_predict_over_the_corpus_finishes(trained_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds.csv"
    r = _run_cli("predict", str(trained_model), str(CORPUS), "--out", str(out), "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    import csv

    rows = list(csv.DictReader(open(out)))
    listed = {str(p) for p in CORPUS.iterdir() if p.suffix.lower() in (".dcm", ".dicom") or p.suffix == ""
              and p.is_file()}
    assert {r["path"] for r in rows} >= {str(p) for p in DCM if p.parent == CORPUS}
    assert len(rows) == len({r["path"] for r in rows})
    by = {Path(r["path"]).name: r for r in rows}
    if HAVE_CODECS:  # decoded (its modality keeps it out of the analysis, but its pixels were read)
        assert by["examples_jpeg2k.dcm"]["status"] != "error" and by["examples_jpeg2k.dcm"]["image_width"]
    assert by["rtplan.dcm"]["status"] == "error" and by["rtplan.dcm"]["error_kind"] == "no_pixels"
    # Files that say they are not radiographs are not analysed, and flagged, with the reasons.
    for name in ("CT_small.dcm", "MR_small.dcm", "examples_rgb_color.dcm"):
        assert by[name]["status"] == "not_analysed" and by[name]["error_kind"] == "outside_intended_use", name
        assert by[name]["label"] == "" and "modality" in by[name]["error_reason"], name
        assert by[name]["ood_flag"] == "true" and by[name]["ood_reasons"], name
    assert "padding" in by["MR_small_padded.dcm"]["warnings"]
    assert len(listed) >= 0


def test_data_check_over_the_corpus_finishes(tmp_path: Path) -> None:
    tree = tmp_path / "tree" / "Normal"
    tree.mkdir(parents=True)
    for p in DCM:
        if p.parent == CORPUS:
            shutil.copy(p, tree / p.name)
    n = len(list(tree.iterdir()))
    r = _run_cli("data", "check", str(tree.parent), "--out", str(tmp_path / "chk"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    rep = json.loads((tmp_path / "chk" / "data_report.json").read_text())
    assert len(rep["unreadable"]) + sum(rep["counts"].values()) == n
    assert all(u["kind"] and u["reason"] for u in rep["unreadable"])


@pytest.fixture(scope="module")
def client(trained_model: Path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from spinexr.serve import create_app

    with TestClient(create_app(trained_model, max_upload_mb=4)) as c:
        yield c


def test_service_answers_every_corpus_file_and_fuzz_case(client, tmp_path: Path) -> None:
    seen: dict[int, int] = {}
    cases = [(p.name, p.read_bytes()) for p in DCM]
    cases += [(f"f{i}{Path(name).suffix}", data) for i, name, _, data in fuzz_cases(_fuzz_seeds(tmp_path), N_FUZZ, seed=2)]
    for name, data in cases:
        r = client.post("/v1/predict", files={"file": (name, data, "application/octet-stream")})
        assert r.status_code in (200, 413, 415, 422), (name, r.status_code, r.text[:300])
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
    assert seen.get(200) and (seen.get(415) or seen.get(422))
    r = client.post("/v1/predict", files={"file": ("x.dcm", (CORPUS / "rtplan.dcm").read_bytes())})
    assert r.status_code == 415 and r.json()["detail"]["kind"] == "no_pixels"
    r = client.post("/v1/predict", files={"file": ("ct.dcm", (CORPUS / "CT_small.dcm").read_bytes())})
    assert r.status_code == 200 and r.json()["ood"]["flag"] is True
    assert any("CT" in x for x in r.json()["ood"]["reasons"])
