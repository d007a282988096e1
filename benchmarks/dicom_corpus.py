"""The DICOM corpus through ``spinexr predict --dicom-out``: every film accounted for, no crash, dciodvfy
silent on every SR and presentation state, no label or angle for a film outside the intended use, and
every curve of every SR hydrated by OHIF's own reader (``@cornerstonejs/adapters`` under Node,
``tests/node/hydrate.mjs``; ``make node-deps`` installs it) as a Cobb angle with the document's points
and angle.

The corpus (``spinexr._dicom_corpus``): synthetic DX/CR films in nine character sets, MONOCHROME1, JPEG
baseline, JPEG 2000, RLE, two frames, films missing Patient Orientation, Imager Pixel Spacing, Study Date
or Patient's Name, CT, MR, NM, XA, an RGB secondary capture, a DX "for processing", a chest film and a file
with no image; plus real radiographs written as DX when the datasets are beside the repository (KAUH
and AASCE films, downsized to 1024 px on the long side).

    python benchmarks/dicom_corpus.py --real 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _machine import header, write_result  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def real_films(n: int) -> list[tuple[object, str]]:
    """Up to ``n`` real radiographs (half KAUH, half AASCE), gray in [0, 1], at most 1024 px on the long side."""
    import numpy as np
    from PIL import Image

    from spinexr.data.imread import list_images, read_image

    out = []
    kauh, aasce = DATA / "kauh-spine-xray", DATA / "aasce-spine-ap" / "images"
    for folder, k, name in ((kauh, n - n // 2, "KAUH"), (aasce, n // 2, "AASCE")):
        if not folder.is_dir() or k == 0:
            continue
        files = list_images(folder, recursive=True)
        for p in files[:: max(1, len(files) // k)][:k]:
            img, _ = read_image(p)
            im = Image.fromarray((img * 255).astype("uint8"))
            im.thumbnail((1024, 1024))
            label = p.parent.name if folder == kauh else "AP full spine"
            out.append((np.asarray(im, dtype=np.float32) / 255.0, f"{name} {label}"))
    return out


def dciodvfy(path: Path) -> list[str]:
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [ln for ln in (done.stdout + done.stderr).splitlines() if ln.startswith("Error")]


def check(cases: list, docs: dict[str, dict], dicom: Path, corpus: Path) -> tuple[list[dict], dict[str, int]]:
    """Each case's outcome against what it should be, and the totals."""
    import pydicom

    rows, totals = [], {"films": len(cases), "unaccounted": 0, "wrong_outcome": 0, "dciodvfy_errors": 0,
                        "findings_outside_intended_use": 0, "reports_outside_intended_use": 0,
                        "real_films_flagged_out_of_distribution": 0}
    for c in cases:
        path = str(corpus / f"{c.name}.dcm")
        doc = docs.get(path)
        row = {"name": c.name, "what": c.what, "expect": c.expect}
        if doc is None:
            totals["unaccounted"] += 1
            rows.append({**row, "status": None})
            continue
        status = {"ok": "analysed", "not_analysed": "not_analysed", "error": "unreadable"}[doc["status"]]
        row.update(status=status, reason=(doc.get("error") or {}).get("reason"), label=doc.get("label"))
        if c.name.startswith("real_") and status == "not_analysed" and row["reason"].startswith("out of distribution"):
            totals["real_films_flagged_out_of_distribution"] += 1  # the detector's call on a real film, not a fault
        else:
            totals["wrong_outcome"] += status != c.expect
        outputs = []
        if status != "unreadable":
            head = pydicom.dcmread(path, stop_before_pixels=True)
            outputs = sorted((dicom / str(head.StudyInstanceUID)).glob(f"*_{head.SOPInstanceUID}.dcm"))
        if c.expect != "analysed":
            totals["findings_outside_intended_use"] += bool(doc.get("label") or doc.get("spine"))
            totals["reports_outside_intended_use"] += len(outputs)
        errors = {o.name[:2]: dciodvfy(o) for o in outputs}
        row["outputs"] = sorted(errors)
        row["dciodvfy_errors"] = {k: v[:5] for k, v in errors.items() if v}
        totals["dciodvfy_errors"] += sum(len(v) for v in errors.values())
        if outputs:
            sr = pydicom.dcmread(next(o for o in outputs if o.name.startswith("SR")), stop_before_pixels=True)
            row["sr_character_set"] = str(sr.get("SpecificCharacterSet") or "")
            row["sr_instance_number"] = int(sr.InstanceNumber)
        rows.append(row)
    return rows, totals


def ohif(docs: dict[str, dict], dicom: Path, corpus: Path) -> dict[str, object]:
    """Every SR's curves as OHIF hydrates them, against the documents: counts, and the largest point offset
    (px) and angle differences (degrees, the stored one and the one the four points make)."""
    import numpy as np
    import pydicom

    from spinexr.deploy.dicom.report import cobb_points, reported_curves

    node, script = shutil.which("node"), ROOT / "tests" / "node" / "hydrate.mjs"
    if node is None or not (ROOT / "tests" / "node" / "node_modules" / "@cornerstonejs" / "adapters").is_dir():
        return {"skipped": "Node or tests/node's packages missing (make node-deps)"}
    pairs = []
    for path, doc in docs.items():
        if doc.get("status") != "ok" or not Path(path).is_relative_to(corpus):
            continue
        head = pydicom.dcmread(path, stop_before_pixels=True)
        sr = dicom / str(head.StudyInstanceUID) / f"SR_{head.SOPInstanceUID}.dcm"
        if sr.is_file():
            pairs.append((sr, doc, int(head.Columns), int(head.Rows)))
    done = subprocess.run([node, str(script), *(str(p[0]) for p in pairs)], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    got = json.loads(done.stdout)
    out = {"reports": len(pairs), "unreadable": {}, "curves_expected": 0, "curves_hydrated": 0,
           "max_point_offset_px": 0.0, "max_angle_error_deg": 0.0, "max_drawn_angle_error_deg": 0.0}
    for sr, doc, w, h in pairs:
        curves, anns = reported_curves(doc.get("spine")), got[str(sr)]
        out["curves_expected"] += len(curves)
        if isinstance(anns, dict):  # the reader refused the file
            out["unreadable"][Path(doc["path"]).name] = anns["error"][:300]
            continue
        out["curves_hydrated"] += sum(a["label"] == f"curve {i}: {c['side']} {c['region']}"
                                      for i, (a, c) in enumerate(zip(anns, curves), start=1))
        for a, c in zip(anns, curves):
            pts, want = np.asarray(a["points"]), cobb_points(doc["spine"], c, w, h) - 0.5
            u, v = pts[1] - pts[0], pts[3] - pts[2]
            drawn = float(np.degrees(np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1))))
            out["max_point_offset_px"] = max(out["max_point_offset_px"], float(np.abs(pts - want).max()))
            out["max_angle_error_deg"] = max(out["max_angle_error_deg"], abs(a["angle"] - c["angle"]))
            out["max_drawn_angle_error_deg"] = max(out["max_drawn_angle_error_deg"], abs(drawn - c["angle"]))
    return out


def main(argv: list[str] | None = None) -> int:
    from spinexr._dicom_corpus import write_corpus

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", type=int, default=10, help="real radiographs written as DX (when the data is here)")
    ap.add_argument("--out", default="dicom_corpus.json")
    a = ap.parse_args(argv)
    if shutil.which("dciodvfy") is None:
        raise SystemExit("dciodvfy (Debian dicom3tools) is needed: apt-get install dicom3tools")
    res = header("dicom_corpus", argv)
    with tempfile.TemporaryDirectory() as d:
        corpus, out, dicom = Path(d) / "corpus", Path(d) / "predictions.jsonl", Path(d) / "dicom"
        cases = write_corpus(corpus, real=real_films(a.real))
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "spinexr", "predict", str(corpus), "--out", str(out),
                               "--dicom-out", str(dicom), "--quiet"], cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        docs = {d["path"]: d for d in map(json.loads, out.read_text().splitlines())} if out.exists() else {}
        rows, totals = check(cases, docs, dicom, corpus)
        hydrated = ohif(docs, dicom, corpus)
    totals["crashes"] = int(done.returncode != 0 or "Traceback" in done.stderr)
    res.update({"command_exit": done.returncode, "summary": done.stderr.strip().splitlines()[-2:],
                "seconds": seconds, "totals": totals, "ohif": hydrated, "cases": rows})
    write_result(a.out, res)
    print(json.dumps(totals), json.dumps(hydrated))
    missed = (hydrated["curves_expected"] - hydrated["curves_hydrated"] + len(hydrated["unreadable"])
              if "reports" in hydrated else 0)
    bad = missed + totals["crashes"] + totals["unaccounted"] + totals["wrong_outcome"] + totals["dciodvfy_errors"] \
        + totals["findings_outside_intended_use"] + totals["reports_outside_intended_use"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
