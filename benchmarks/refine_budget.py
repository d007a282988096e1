"""Two refiner passes within today's compute: which test-time views each stage can give up, chosen on
validation films.

    python benchmarks/refine_budget.py \\
        --split runs/bench_aasce_cpu_reduced_seed0 runs/refine_seed0_e56/refiner.safetensors \\
        --split runs/bench_aasce_cpu_reduced_seed1 runs/refine_seed1_e56/refiner.safetensors --tag e56

A second refiner pass measures better but reads 34 more crops a film (17 and their mirror images), about
as much arithmetic as the first stage's six views (zooms 1, 0.85 and 1.1, each with its mirror). This
measures each combination of

* the first stage's views: zooms and mirror (6), mirror only (2), the film alone (1);
* the refiner's reading: one pass with mirrors, two passes with mirrors, two passes with the mirror
  read on the second pass only,

through the deployed :class:`~spinexr.deploy.measure.SpineMeasurer` (PyTorch) of each split (its landmark
run's fold model, then the refiner trained on the same training cases), on the refiner's validation films
and, for the record, on the landmark run's held-out films. The cost of each is counted, not timed: the
forward FLOPs a film (``torch.utils.flop_counter``) of the first stage's views and of the refiner's crops.

The rule, fixed before looking: among the variants that cost no more FLOPs than today's bundle (six views,
one pass with mirrors), the one with the lowest mean validation SMAPE over the splits. Writes
``benchmarks/results/refine_budget_<tag>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _machine import header, write_result  # noqa: E402
from aasce_refine import _split  # noqa: E402
from refine_variants import refiner_file  # noqa: E402
from spinexr.data.imread import read_image  # noqa: E402
from spinexr.data.landmarks import load_landmark_source  # noqa: E402
from spinexr.deploy.measure import SpineMeasurer  # noqa: E402
from spinexr.evaluation.landmark_cv import tolerance_scores  # noqa: E402
from spinexr.geometry.cobb import cobb_angles  # noqa: E402

AASCE = HERE.parent.parent / "shared" / "data" / "aasce-spine-ap"
VIEWS = {"zooms+mirror": ((1.0, 0.85, 1.1), True), "mirror": ((1.0,), True), "film": ((1.0,), False)}
READINGS = {"1 pass, mirrors": (1, True), "2 passes, mirrors": (2, True), "2 passes, mirror on the last": (2, False)}
TODAY = ("zooms+mirror", "1 pass, mirrors")


def each_reading(m: SpineMeasurer, films: list):
    """Sets ``m`` to each reading in turn (first stage measured once per view set) and yields
    ``(name, views, first-stage corners of the films)``; the refiner is set, the films not yet refined."""
    for views, (scales, mirror) in VIEWS.items():
        m.predictor.tta_scales, m.predictor.tta_flip = scales, mirror
        first = [f for f, _ in m.first_stage(films)]
        for reading, (passes, every) in READINGS.items():
            m.refiner.iterations, m.refiner.flip_every_pass = passes, every
            yield f"{views} | {reading}", views, first


def _flops(fn, *args) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        fn(*args)
    return int(fc.get_total_flops())


def costs(m: SpineMeasurer) -> dict[str, float]:
    """GFLOPs a film: one first-stage view (the network on one input) and one refiner crop."""
    c = m.contract
    view = _flops(m.predictor.net, torch.rand(1, c.in_chans, c.height, c.width))
    crop = _flops(m.refiner.net, torch.rand(1, 1, m.refiner.crop, m.refiner.crop))
    return {"first_stage_view": view / 1e9, "refiner_crop": crop / 1e9}


def variant_gflops(unit: dict[str, float], views: str, reading: str) -> float:
    scales, mirror = VIEWS[views]
    passes, every = READINGS[reading]
    n_views = len(scales) * (2 if mirror else 1)
    n_crops = 17 * (2 * passes if every else passes + 1)
    return n_views * unit["first_stage_view"] + n_crops * unit["refiner_crop"]


def measure_split(landmark_run: Path, refiner: Path, data: Path) -> dict:
    run_cfg = json.loads((landmark_run / "config.json").read_text())["landmarks"]
    oof = np.load(landmark_run / "oof_landmarks.npz", allow_pickle=False)
    recs = load_landmark_source(data).records
    _, val_idx, te = _split(recs, run_cfg, {str(Path(p).resolve()) for p in oof["paths"]})
    m = SpineMeasurer(landmark_run / "models" / "landmarks.safetensors", refiner=refiner_file(refiner))
    out: dict = {"landmark_run": str(landmark_run), "refiner": str(refiner), "n_validation": int(len(val_idx)),
                 "n_held_out": int(len(te)), "gflops": costs(m), "validation": {}, "held_out": {}}
    for part, idx in (("validation", val_idx), ("held_out", te)):
        films = [read_image(recs[i].path)[0] for i in idx]
        true = np.array([recs[i].angles for i in idx])
        for name, _, first in each_reading(m, films):
            pred = [cobb_angles(m.refine(img, f), img.shape[0], m.centreline_weight).angles
                    for img, f in zip(films, first)]
            r = out[part][name] = tolerance_scores(np.array(pred), true)
            bias = "n/a" if r["mean_error_ge40"] is None else f"{r['mean_error_ge40']:+.1f}"
            print(f"{landmark_run.name} {part:<10} {name:<45} SMAPE {r['smape']:5.2f}%  "
                  f"MAE {r['mae_largest']:4.2f}  within 5° {r['within_5deg']:.0%}  >=40° {bias}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", nargs=2, action="append", type=Path, required=True, metavar=("LANDMARK_RUN", "REFINER"),
                    help="a finished aasce_cobb_cv.py run and the refiner trained on its training cases")
    ap.add_argument("--data", type=Path, default=AASCE)
    ap.add_argument("--tag", default=None)
    args = ap.parse_args(argv)
    head = header("refine_budget", argv)
    splits = [measure_split(run, ref, args.data) for run, ref in args.split]
    unit = splits[0]["gflops"]
    gflops = {f"{v} | {r}": variant_gflops(unit, v, r) for v in VIEWS for r in READINGS}
    budget = gflops[" | ".join(TODAY)]
    within = [k for k, g in gflops.items() if g <= budget + 1e-9]
    val = {k: float(np.mean([s["validation"][k]["smape"] for s in splits])) for k in gflops}
    chosen = min(within, key=lambda k: val[k])
    for k in gflops:
        print(f"{k:<45} {gflops[k]:6.2f} GFLOPs  validation SMAPE (mean) {val[k]:5.2f}%"
              f"{'  within budget' if k in within else ''}{'  <- chosen' if k == chosen else ''}")
    write_result(f"refine_budget_{args.tag or 'splits'}.json",
                 {**head, "rule": "lowest mean validation SMAPE among variants costing no more GFLOPs than today's",
                  "today": " | ".join(TODAY), "gflops_per_film": gflops, "within_budget": within,
                  "mean_validation_smape": val, "chosen": chosen, "splits": splits})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
