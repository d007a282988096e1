"""Seeded mutation fuzz of the read boundary: at least 5,000 mutated files, zero unhandled exceptions.

Seeds: KAUH films (downsized to 512 px on the long side and saved as JPEG, PNG and TIFF, when the
dataset is beside the repository), synthetic films in the same three formats, and pydicom's own
DICOM test files (uncompressed, RLE, JPEG baseline, 12-bit JPEG, JPEG-LS, JPEG 2000 with YBR_RCT).
Every case goes through ``read_image``; the JSON counts the outcomes by error kind and lists any
exception that escaped.

    python benchmarks/fuzz_read.py --cases 6000
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import header, write_result  # noqa: E402

KAUH = HERE.parent.parent / "shared" / "data" / "kauh-spine-xray"
DICOM_SEEDS = ("MR_small.dcm", "CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm", "examples_jpeg2k.dcm",
               "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "JPGExtended.dcm", "JPEG2000.dcm",
               "examples_ybr_color.dcm", "examples_palette.dcm", "SC_rgb_rle_16bit.dcm")


def _encodings(img, stem: str) -> dict[str, bytes]:
    out = {}
    for ext, fmt, kw in ((".jpg", "JPEG", {"quality": 90}), (".png", "PNG", {}), (".tif", "TIFF", {"compression": "tiff_lzw"})):
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        out[f"{stem}{ext}"] = buf.getvalue()
    return out


def seeds(n_kauh: int) -> dict[str, bytes]:
    import pydicom
    from PIL import Image

    from spinexr.data.imread import list_images
    from spinexr.data.synth import synthesize
    out: dict[str, bytes] = {}
    corpus = Path(pydicom.__file__).parent / "data" / "test_files"
    for n in DICOM_SEEDS:
        out[n] = (corpus / n).read_bytes()
    if KAUH.is_dir():
        files = list_images(KAUH)
        for p in files[:: max(1, len(files) // n_kauh)][:n_kauh]:
            im = Image.open(p).convert("L")
            im.thumbnail((512, 512))
            out.update(_encodings(im, f"kauh_{p.parent.name}_{len(out)}"))
    with tempfile.TemporaryDirectory() as d:
        synthesize(Path(d), n=6, seed=3, scale=0.3, progress=False)
        for p in sorted(Path(d).rglob("*.jpg")):
            out.update(_encodings(Image.open(p).convert("L"), f"synth_{p.stem}"))
    return out


def main(argv: list[str] | None = None) -> int:
    from spinexr._fuzz import fuzz_cases
    from spinexr.data.imread import read_image
    from spinexr.errors import ImageReadError
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kauh-films", type=int, default=6, help="KAUH films used as seeds (each in 3 formats)")
    ap.add_argument("--out", default="fuzz_read.json")
    a = ap.parse_args(argv)
    res = header("fuzz_read", argv)
    sd = seeds(a.kauh_films)
    outcomes: dict[str, int] = {}
    by_format: dict[str, dict[str, int]] = {}
    escapes = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        for i, name, what, data in fuzz_cases(sd, a.cases, seed=a.seed):
            p = Path(d) / f"case{Path(name).suffix}"
            p.write_bytes(data)
            try:
                read_image(p)
                o = "ok"
            except ImageReadError as e:
                o = e.kind.value
            except Exception as e:  # noqa: BLE001 - what this benchmark looks for
                o = "ESCAPED"
                escapes.append({"case": i, "seed": name, "mutation": what, "error": f"{type(e).__name__}: {e}"[:300]})
            outcomes[o] = outcomes.get(o, 0) + 1
            fmt = Path(name).suffix.lstrip(".")
            by_format.setdefault(fmt, {})
            by_format[fmt][o] = by_format[fmt].get(o, 0) + 1
    res.update({"cases": a.cases, "seed": a.seed, "seeds": {k: len(v) for k, v in sorted(sd.items())},
                "outcomes": dict(sorted(outcomes.items())), "by_format": by_format, "unhandled": len(escapes),
                "escapes": escapes[:50], "wall_seconds": time.perf_counter() - t0})
    write_result(a.out, res)
    print(f"{a.cases} cases over {len(sd)} seeds: {outcomes}; unhandled exceptions: {len(escapes)}")
    return 1 if escapes else 0


if __name__ == "__main__":
    raise SystemExit(main())
