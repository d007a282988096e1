"""How to read Cobb angles off predicted corners: the centreline weight, measured on a landmark CV run.

    python benchmarks/angle_reading.py --landmark-run runs/bench_aasce_cpu_reduced
    python benchmarks/angle_reading.py --landmark-run runs/bench_aasce_cpu_reduced_seed1 \
        --exclude-run runs/bench_aasce_cpu_reduced --tag seed1

The corners are the run's own (its fold model, with its test-time augmentation); only the reading
changes (``spinexr.geometry.cobb``: each vertebra's tilt, ``1 - w`` from its own corners and ``w`` from
the spine's centreline). For each weight ``w``:

- on the fold's held-out AASCE films: SMAPE, the largest angle's MAE and mean error, and how many films
  of 25° or more are measured at or over the curve line;
- the same on the fold's validation films (10% of its training cases, which chose the epoch, never
  trained on): where the weight is chosen;
- KAUH (which the landmark model never saw): the curve line the decision would fit (the smallest
  angle at most 2% of the Normal films reach, ``spinexr.deploy.decision.fit_curve_deg``) and how well
  the largest angle separates Scoliosis from Normal films (ROC-AUC).

``--exclude-run`` leaves out the held-out films of cases another run held out, so that a second
split's figures rest only on films the first split's choices never looked at.

Writes benchmarks/results/angle_reading[_TAG].json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from _machine import header, write_result  # noqa: E402
from spinexr.data.imread import list_images, read_image  # noqa: E402
from spinexr.data.landmarks import case_group, load_landmark_source  # noqa: E402
from spinexr.data.splits import case_splits, fit_val_split  # noqa: E402
from spinexr.deploy.decision import fit_curve_deg  # noqa: E402
from spinexr.deploy.measure import SpineMeasurer  # noqa: E402
from spinexr.evaluation.landmark_cv import smape  # noqa: E402
from spinexr.geometry.cobb import cobb_angles  # noqa: E402
from spinexr.geometry.plausibility import implausibility  # noqa: E402

AASCE = HERE.parent.parent / "shared" / "data" / "aasce-spine-ap"
KAUH = HERE.parent.parent / "shared" / "data" / "kauh-spine-xray"


def _case(path: str) -> str:
    return case_group(Path(path).name)


def _films(rows: list, w: float, line: float) -> dict:
    """The angles of ``rows`` (record, predicted corners) read with centreline weight ``w``, against the truth."""
    pred = np.array([cobb_angles(v, r.height, w).angles for r, v in rows])
    true = np.array([r.angles for r, _ in rows])
    big = true.max(1) >= 25
    err = pred.max(1) - true.max(1)
    return {"n": len(rows), "smape": smape(pred, true), "mae_largest": float(np.abs(err).mean()),
            "mean_error_largest": float(err.mean()), "n_ge25": int(big.sum()),
            "mean_error_largest_ge25": float(err[big].mean()) if big.any() else None,
            "ge25_at_or_over_line": float((pred.max(1)[big] >= line).mean()) if big.any() else None}


def _held_out_and_validation(run: Path, cfg: dict, measurer: SpineMeasurer, exclude_run: str | None
                             ) -> tuple[list, list, set[str]]:
    """Held-out films (the run's own predictions) and the fold's validation films (measured now)."""
    oof = np.load(run / "oof_landmarks.npz", allow_pickle=False)
    ds = load_landmark_source(AASCE)
    by_path = {str(Path(r.path).resolve()): r for r in ds.records}
    test = [(by_path[str(Path(p).resolve())], v) for p, v in zip(oof["paths"], oof["landmarks"])]
    excluded: set[str] = set()
    if exclude_run:
        other = np.load(Path(exclude_run) / "oof_landmarks.npz", allow_pickle=False)
        excluded = {_case(p) for p in other["paths"]}
        test = [(r, v) for r, v in test if r.group not in excluded]
    recs = ds.records
    groups = np.array([r.group for r in recs])
    (tr, _te), = case_splits(groups, 1, cfg["seed"], cfg["test_fraction"])  # as run_landmark_cv split fold 0
    tr = tr[np.array([not implausibility(recs[i].landmarks) for i in tr], dtype=bool)]
    _fit, val_idx = fit_val_split(groups, tr, cfg["val_fraction"], cfg["seed"], 0)
    val = [(recs[i], measurer.measure(read_image(recs[i].path)[0]).landmarks) for i in val_idx]
    return test, val, excluded


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--landmark-run", required=True, help="a landmark CV run folder (config.json, models/, oof_landmarks.npz)")
    ap.add_argument("--exclude-run", default=None, help="leave out held-out films of cases this other run held out")
    ap.add_argument("--weights", default="0,0.25,0.5,0.75,1")
    ap.add_argument("--tag", default=None)
    a = ap.parse_args(argv)
    run = Path(a.landmark_run)
    for need in ("config.json", "oof_landmarks.npz", "models/landmarks.safetensors"):
        if not (run / need).is_file():
            print(f"--landmark-run {run}: no {need} there; give the folder of a finished landmark CV run", file=sys.stderr)
            return 2
    if not AASCE.is_dir() or not KAUH.is_dir():
        print(f"needs the AASCE and KAUH data in {AASCE.parent}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    cfg = json.loads((run / "config.json").read_text())["landmarks"]
    measurer = SpineMeasurer(run / "models" / "landmarks.safetensors")
    test, val, excluded = _held_out_and_validation(run, cfg, measurer, a.exclude_run)
    kauh = []  # (is scoliosis, corners, height) of every KAUH Normal and Scoliosis film
    for cls in ("Normal", "Scoliosis"):
        for p in list_images(KAUH / cls):
            img, _ = read_image(p)
            kauh.append((cls == "Scoliosis", measurer.measure(img).landmarks, img.shape[0]))
    y = np.array([k[0] for k in kauh])
    rows = []
    for w in (float(w) for w in a.weights.split(",")):
        k = np.array([cobb_angles(v, h, w).largest for _, v, h in kauh])
        line = fit_curve_deg(k[~y])
        rows.append({"centreline_weight": w, "kauh_curve_line": line, "kauh_auc": float(roc_auc_score(y, k)),
                     "kauh_median_normal": float(np.median(k[~y])), "kauh_median_scoliosis": float(np.median(k[y])),
                     "test": _films(test, w, line), "validation": _films(val, w, line)})
    out = {**header("angle_reading", argv), "landmark_run": str(run), "model_centreline_weight": measurer.centreline_weight,
           "tta_scales": cfg.get("tta_scales"), "seed": cfg["seed"], "input": f"{cfg['input_height']}x{cfg['input_width']}",
           "excluded_run": a.exclude_run, "excluded_cases": len(excluded), "n_kauh_normal": int((~y).sum()),
           "n_kauh_scoliosis": int(y.sum()), "rows": rows, "wall_seconds": time.perf_counter() - t0}
    write_result(f"angle_reading_{a.tag}.json" if a.tag else "angle_reading.json", out)
    for r in rows:
        t, v = r["test"], r["validation"]
        print(f"w={r['centreline_weight']:g}: line {r['kauh_curve_line']:.1f}, KAUH AUC {r['kauh_auc']:.3f} | validation "
              f"({v['n']}) MAE {v['mae_largest']:.2f} | held out ({t['n']}) SMAPE {t['smape']:.2f} MAE "
              f"{t['mae_largest']:.2f}, >=25 at/over line {t['ge25_at_or_over_line']:.1%} of {t['n_ge25']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
