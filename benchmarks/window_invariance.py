"""Does an input contract hand the model the same pixels when only the framing changes?

    python benchmarks/window_invariance.py

For every resize mode compared (letterbox, strip, window), on the KAUH films the framing stress test
uses (Normal strips and their widened versions; full-AP Scoliosis films and their strips, spine
found by the brightest band), the model input of the film as it is and of the reframed film, at the
bundled classifier's input size: how many are identical, how many differ by under one grey level on
average (uint8), and the median and largest mean difference. No model runs: this checks the
contract alone.

Writes benchmarks/results/window_invariance.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import header, write_result  # noqa: E402

KAUH = HERE.parent.parent / "shared" / "data" / "kauh-spine-xray"
MODES = ("letterbox", "strip", "window")


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from spinexr.data.contract import fit_to_box
    from spinexr.data.framing import FULL_AP_MAX_ASPECT, FULL_ASPECT, bounded, pad_to_aspect, strip_crop
    from spinexr.data.imread import read_image
    from spinexr.data.manifest import load_manifest

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(KAUH))
    ap.add_argument("--size", type=int, default=96, help="input size (the bundled classifier's)")
    a = ap.parse_args(argv)
    if not Path(a.data).is_dir():
        print(f"KAUH data not found at {a.data}; pass --data", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    diffs: dict[str, dict[str, list[float]]] = {m: {"normal_strip_to_full": [], "scoliosis_ap_to_strip": []}
                                                 for m in MODES}
    man = load_manifest(a.data)
    for rec in man.records:
        c = rec.label
        img = bounded(read_image(rec.path)[0])  # as the framing stress test reads them
        r = img.shape[0] / img.shape[1]
        if c == "Normal" and r > FULL_ASPECT:
            key, other = "normal_strip_to_full", pad_to_aspect(img)
        elif c == "Scoliosis" and r <= FULL_AP_MAX_ASPECT:
            key, other = "scoliosis_ap_to_strip", strip_crop(img)
        else:
            continue
        for m in MODES:
            x0 = fit_to_box(img, a.size, a.size, m)[0].astype(np.int16)
            x1 = fit_to_box(other, a.size, a.size, m)[0].astype(np.int16)
            diffs[m][key].append(float(np.abs(x0 - x1).mean()))
    res = {m: {k: {"n": len(v), "identical": int(sum(d == 0 for d in v)), "under_1_grey_level": int(sum(d < 1 for d in v)),
                   "median_mean_abs_diff": float(np.median(v)), "max_mean_abs_diff": float(np.max(v))}
               for k, v in d.items()} for m, d in diffs.items()}
    for m, d in res.items():
        print(m, {k: (v["identical"], v["under_1_grey_level"], v["n"]) for k, v in d.items()})
    write_result("window_invariance.json", {**header("window_invariance", argv), "size": a.size, "modes": res,
                                            "wall_seconds": time.perf_counter() - t0})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
