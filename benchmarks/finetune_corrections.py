"""Learning from corrections: how much do 10, 25 or 50 corrected films improve a landmark model on the rest?

    python benchmarks/finetune_corrections.py

A held-out AASCE case split stands in for a team's own films, and its true corners for a person's
corrections. The parent is the landmark model of that split's training side (the seed-1 fold model,
``runs/bench_aasce_cpu_reduced_seed1``: it never saw these films; the bundled model trained on all 466
films, these included, so it cannot be measured here). The split's cases are shuffled; the first cases
up to 50 films are the correction pool (10 and 25 are its first films), the rest of the split is the
evaluation set, the same for every count. Each count fine-tunes the parent with
``spinexr landmarks train --init PARENT --data CORRECTIONS.csv`` (its default schedule: 10 epochs at a
tenth of the learning rate) and measures the evaluation films with ``spinexr landmarks evaluate``'s
code: the landmark model alone, and with the split's vertebra refiner as second stage (as deployed).
``--repeats`` draws other shuffles. Writes ``benchmarks/results/finetune_corrections.json``.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _machine import header, write_result  # noqa: E402
from spinexr.data.landmarks import ANGLE_COLUMNS, N_POINTS, XY_COLUMNS, read_aasce  # noqa: E402
from spinexr.deploy.measure import SpineMeasurer  # noqa: E402
from spinexr.evaluation.landmark_eval import evaluate_landmarks  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "aasce-spine-ap"
KEEP = ("n", "smape", "mae_largest", "within_5deg", "mean_error_ge40", "n_ge40", "refused")


def write_csv(path: Path, recs: list) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", *XY_COLUMNS, *ANGLE_COLUMNS, "group"])
        for r in recs:
            p = r.landmarks.reshape(N_POINTS, 2)
            w.writerow([str(r.path.resolve()), *[f"{v:.3f}" for v in p[:, 0]], *[f"{v:.3f}" for v in p[:, 1]],
                        *[f"{a:.4f}" for a in r.angles], r.group])
    return path


def measure(model: Path, refiner: Path | None, data: Path) -> dict:
    m, _ = evaluate_landmarks(SpineMeasurer(model, refiner=refiner), data, progress=False, n_boot=200)
    out = {k: m[k] for k in KEEP}
    out["corner_error_pct_height"] = m["landmark_error_pct_height"]["mean"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/bench_aasce_cpu_reduced_seed1", help="the split's landmark CV run")
    ap.add_argument("--refiner", default="runs/refine_seed1/refiner_model.safetensors")
    ap.add_argument("--counts", default="10,25,50")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="runs/finetune_corrections")
    args = ap.parse_args(argv)
    res = header("finetune_corrections", argv)
    t0 = time.time()
    run, out = ROOT / args.run, ROOT / args.out
    parent, refiner = run / "models" / "landmarks.safetensors", ROOT / args.refiner
    held = {Path(str(p)).name for p in np.load(run / "oof_landmarks.npz")["paths"]}
    recs = [r for r in read_aasce(DATA).records if r.path.name in held]
    counts = [int(c) for c in args.counts.split(",")]
    out.mkdir(parents=True, exist_ok=True)
    repeats = []
    for rep in range(args.repeats):
        cases = sorted({r.group for r in recs})
        order = np.random.default_rng(rep).permutation(cases)
        pool: list = []
        for c in order:
            if len(pool) >= max(counts):
                break
            pool += [r for r in recs if r.group == c]
        pool = pool[:max(counts)]
        pool_cases = {r.group for r in pool}
        evaluation = [r for r in recs if r.group not in pool_cases]
        eval_csv = write_csv(out / f"eval_r{rep}.csv", evaluation)
        rows = [{"corrections": 0, "alone": measure(parent, None, eval_csv),
                 "with_refiner": measure(parent, refiner, eval_csv), "train_seconds": 0.0}]
        print(f"repeat {rep}: {len(evaluation)} evaluation films; parent SMAPE {rows[0]['with_refiner']['smape']:.2f}%")
        for n in counts:
            corr = write_csv(out / f"corrections_r{rep}_n{n}.csv", pool[:n])
            dest = out / f"r{rep}_n{n}"
            t = time.time()
            subprocess.run([sys.executable, "-m", "spinexr", "landmarks", "train", "--init", str(parent), "--data",
                            str(corr), "--out", str(dest), "--test-fraction", "0", "--device", "cpu", "--force",
                            "--quiet"], cwd=ROOT, check=True)
            model = dest / "models" / "landmarks.safetensors"
            rows.append({"corrections": n, "alone": measure(model, None, eval_csv),
                         "with_refiner": measure(model, refiner, eval_csv), "train_seconds": time.time() - t})
            print(f"  {n} corrections: SMAPE {rows[-1]['with_refiner']['smape']:.2f}% "
                  f"(alone {rows[-1]['alone']['smape']:.2f}%)")
        repeats.append({"seed": rep, "n_eval": len(evaluation), "pool_cases": len(pool_cases), "rows": rows})
    res.update({"settings": {"parent": str(parent.relative_to(ROOT)), "refiner": str(refiner.relative_to(ROOT)),
                             "held_out_films": len(recs), "counts": counts, "repeats": args.repeats,
                             "fine_tune": "spinexr landmarks train --init (10 epochs, a tenth of the parent's lr)"},
                "repeats": repeats, "wall_seconds": time.time() - t0})
    write_result("finetune_corrections.json", res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
