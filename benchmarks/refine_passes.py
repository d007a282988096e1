"""How many refiner passes to ship, chosen on validation films, never on the held-out ones.

    python benchmarks/refine_passes.py --landmark-run runs/bench_aasce_cpu_reduced_seed1 \\
        --refiner runs/refine_seed1/refiner.safetensors --tag seed1

The films: the refiner run's validation films (a tenth of the landmark run's training cases, which
chose the refiner's epoch and never trained it) choose; the landmark run's held-out films are then
measured with each pass count for the record. Both go through the deployed
:class:`~spinexr.deploy.measure.SpineMeasurer` (the fold's first stage with its test-time zooms, then
the refiner, angles from the corners alone as the refiner file says). The rule, fixed before looking:
the pass count with the lower validation SMAPE. Writes ``benchmarks/results/refine_passes_<tag>.json``.

The refiner's validation cases are the landmark run's own validation cases (the same labels filter and
the same draw): neither stage trained on them, but they chose the first stage's epoch, so its corners
there may be a little closer than on held-out films. With about 30 films a split, the choice is noisy:
on both splits the validation films chose one pass while on the seed-0 held-out films two passes
measured better (see the results page).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from _machine import header, write_result  # noqa: E402
from aasce_refine import _split  # noqa: E402
from refine_variants import refiner_file  # noqa: E402
from spinexr.data.imread import read_image  # noqa: E402
from spinexr.data.landmarks import load_landmark_source  # noqa: E402
from spinexr.deploy.measure import SpineMeasurer  # noqa: E402
from spinexr.evaluation.landmark_cv import tolerance_scores  # noqa: E402
from spinexr.geometry.cobb import cobb_angles  # noqa: E402

AASCE = HERE.parent.parent / "shared" / "data" / "aasce-spine-ap"
PASSES = (1, 2)


def _scores(m: SpineMeasurer, recs: list) -> dict:
    films = [read_image(r.path)[0] for r in recs]
    pred = []
    for img in films:
        s = m.measure(img)
        pred.append(cobb_angles(s.landmarks, img.shape[0], m.centreline_weight).angles)
    return tolerance_scores(np.array(pred), np.array([r.angles for r in recs]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--landmark-run", type=Path, required=True)
    ap.add_argument("--refiner", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=AASCE)
    ap.add_argument("--tag", default=None)
    args = ap.parse_args(argv)
    head = header("refine_passes", argv)
    run_cfg = json.loads((args.landmark_run / "config.json").read_text())["landmarks"]
    oof = np.load(args.landmark_run / "oof_landmarks.npz", allow_pickle=False)
    recs = load_landmark_source(args.data).records
    _, val_idx, te = _split(recs, run_cfg, {str(Path(p).resolve()) for p in oof["paths"]})
    m = SpineMeasurer(args.landmark_run / "models" / "landmarks.safetensors", refiner=refiner_file(args.refiner))
    results: dict[str, dict] = {"validation": {}, "held_out": {}}
    for part, idx in (("validation", val_idx), ("held_out", te)):
        for passes in PASSES:
            m.refiner.iterations = passes
            r = results[part][str(passes)] = _scores(m, [recs[i] for i in idx])
            bias = "n/a" if r["mean_error_ge40"] is None else f"{r['mean_error_ge40']:+.1f}"
            print(f"{part:<10} {passes} pass(es): SMAPE {r['smape']:5.2f}%  MAE {r['mae_largest']:4.2f}  "
                  f"within 5° {r['within_5deg']:.0%}  >=40° bias {bias} ({r['n_ge40']})", flush=True)
    chosen = min(PASSES, key=lambda p: results["validation"][str(p)]["smape"])
    print(f"chosen on the validation films: {chosen} pass(es)")
    tag = args.tag or args.landmark_run.name.replace("bench_aasce_", "")
    write_result(f"refine_passes_{tag}.json", {**head, "landmark_run": str(args.landmark_run),
                                               "refiner": str(args.refiner), "n_validation": int(len(val_idx)),
                                               "n_held_out": int(len(te)), "rule": "lower validation SMAPE",
                                               "chosen_passes": chosen, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
