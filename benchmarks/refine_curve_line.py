"""What each reading of the two landmark stages does to the decision's curve line: the largest angles it
measures on films known not to be scoliosis, from another hospital (KAUH Normal films).

    python benchmarks/refine_curve_line.py \\
        --split runs/bench_aasce_cpu_reduced_seed0 runs/refine_seed0_e56/refiner.safetensors \\
        --split runs/bench_aasce_cpu_reduced_seed1 runs/refine_seed1_e56/refiner.safetensors --tag e56

The decision's curve line is fitted on those films (``spinexr.deploy.decision.fit_curve_deg``: the smallest
angle at most 2% of them reach, so with 71 films the second largest), so a reading that measures a few
of them far too high raises the line, and curves of 25 degrees or more then stand as Normal. Per split
(its landmark run's fold model, which never saw KAUH, and the refiner trained on the same cases) and per
reading of ``refine_budget.py``: the line, the films refused, the five largest angles, the median. With
``--old-refiner`` the same for an earlier refiner in one pass, for comparison. Writes
``benchmarks/results/refine_curve_line_<tag>.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from _machine import header, write_result  # noqa: E402
from refine_budget import each_reading  # noqa: E402
from refine_variants import refiner_file  # noqa: E402
from spinexr.data.imread import list_images, read_image  # noqa: E402
from spinexr.deploy.decision import fit_curve_deg  # noqa: E402
from spinexr.deploy.measure import SpineMeasurer  # noqa: E402

KAUH = HERE.parent.parent / "shared" / "data" / "kauh-spine-xray"


def _summary(angles: list[float]) -> dict:
    a = np.array(angles, dtype=np.float64)
    ok = a[np.isfinite(a)]
    return {"curve_deg": fit_curve_deg(a), "refused": int((~np.isfinite(a)).sum()),
            "largest_five": [round(float(x), 2) for x in np.sort(ok)[::-1][:5]], "median": float(np.median(ok))}


def _largest(m: SpineMeasurer, films: list, first: list) -> list[float]:
    """Each film's largest angle from the first stage's corners through ``m``'s refiner (NaN: refused)."""
    out = []
    for img, f in zip(films, first):
        v, refused = m.second_stage(img, f)
        out.append(np.nan if refused else m.angles(v, img.shape[0]).largest)
    return out


def measure_split(landmark_run: Path, refiner: Path, films: list, old_refiner: Path | None) -> dict:
    m = SpineMeasurer(landmark_run / "models" / "landmarks.safetensors", refiner=refiner_file(refiner))
    out: dict = {"landmark_run": str(landmark_run), "refiner": str(refiner), "readings": {}}
    for name, views, first in each_reading(m, films):
        r = out["readings"][name] = _summary(_largest(m, films, first))
        print(f"{landmark_run.name} {name:<45} line {r['curve_deg']:4.1f}  refused {r['refused']}  "
              f"largest {r['largest_five']}  median {r['median']:.1f}", flush=True)
        if old_refiner is not None and views == "zooms+mirror" and "old_refiner" not in out:
            old = SpineMeasurer(landmark_run / "models" / "landmarks.safetensors", refiner=refiner_file(old_refiner))
            r = out["old_refiner"] = {"refiner": str(old_refiner), **_summary(_largest(old, films, first))}
            print(f"{landmark_run.name} old refiner, zooms+mirror, 1 pass: line {r['curve_deg']:4.1f}  refused "
                  f"{r['refused']}  largest {r['largest_five']}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", nargs=2, action="append", type=Path, required=True, metavar=("LANDMARK_RUN", "REFINER"))
    ap.add_argument("--old-refiner", nargs="*", type=Path, default=[],
                    help="per split, an earlier refiner to measure in one pass beside")
    ap.add_argument("--kauh", type=Path, default=KAUH)
    ap.add_argument("--tag", default=None)
    args = ap.parse_args(argv)
    if args.old_refiner and len(args.old_refiner) != len(args.split):
        ap.error("give one --old-refiner per --split")
    head = header("refine_curve_line", argv)
    paths = list_images(args.kauh / "Normal")
    films = [read_image(p)[0] for p in paths]
    splits = [measure_split(run, ref, films, args.old_refiner[i] if args.old_refiner else None)
              for i, (run, ref) in enumerate(args.split)]
    write_result(f"refine_curve_line_{args.tag or 'splits'}.json",
                 {**head, "films": f"{len(films)} Normal films of {args.kauh.name}", "max_rate": 0.02, "splits": splits})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
