"""Write a downsized copy of KAUH for a GPU machine (which cannot see ../shared).

Each image keeps its class folder, file name and aspect ratio; its longest side becomes at most
``--max-side`` pixels (the models read 224-299 px letterboxed inputs, so 600 px loses nothing they
use). The copy goes into a folder that git ignores (add it to .git/info/exclude) and travels with
the device tool's ``carry``:

    python benchmarks/prepare_device_data.py --out .devdata/kauh --aasce-out .devdata/aasce
    # on the GPU machine:
    bash benchmarks/gpu_run.sh .devdata/kauh .devdata/aasce

With ``--aasce-out`` the AASCE films are downsized too (longest side ``--aasce-max-side``, 1024 by
default, enough for the 1024 x 512 landmark recipe); their landmarks are fractions of the film's
width and height, so the label files are copied unchanged.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kauh-spine-xray"


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    from spinexr.data.imread import list_images
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-side", type=int, default=600)
    ap.add_argument("--aasce", default=str(DEFAULT_DATA.parent / "aasce-spine-ap"))
    ap.add_argument("--aasce-out", help="also write a downsized AASCE copy here")
    ap.add_argument("--aasce-max-side", type=int, default=1024)
    ap.add_argument("--aasce-quality", type=int, default=85)
    a = ap.parse_args(argv)
    src, out = Path(a.data), Path(a.out)
    n = 0
    for p in list_images(src):
        rel = p.relative_to(src)
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(p) as im:
            im = im.convert("L")
            im.thumbnail((a.max_side, a.max_side), Image.Resampling.LANCZOS)
            im.save(dest, quality=95) if dest.suffix.lower() in (".jpg", ".jpeg") else im.save(dest)
        n += 1
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {n} images to {out} ({size / 2**20:.1f} MiB)")
    if a.aasce_out:
        import shutil

        asrc, aout = Path(a.aasce), Path(a.aasce_out)
        shutil.copytree(asrc / "labels", aout / "labels", dirs_exist_ok=True)
        (aout / "images").mkdir(parents=True, exist_ok=True)
        for p in sorted((asrc / "images").glob("*.jpg")):
            with Image.open(p) as im:
                im = im.convert("L")
                im.thumbnail((a.aasce_max_side, a.aasce_max_side), Image.Resampling.LANCZOS)
                im.save(aout / "images" / p.name, quality=a.aasce_quality)
        size = sum(f.stat().st_size for f in aout.rglob("*") if f.is_file())
        print(f"wrote the AASCE films to {aout} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
