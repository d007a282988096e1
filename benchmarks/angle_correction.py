"""Reading corrections for a finished landmark run, measured on its held-out films without retraining.

    python benchmarks/angle_correction.py --landmark-run runs/bench_aasce_cpu_reduced_seed1

The bundled landmark models flatten large curves (curves of 40 degrees or more read about 5 degrees
low) and read small ones a little large. Two corrections are fitted on films the held-out measurement
never sees, and scored on the run's held-out films (``oof_landmarks.npz``):

- **linear recalibration** of each angle (true ~ a * measured + b), fitted on the run's validation
  films (the fold's films that chose the epoch), measured now by the run's model;
- **a shape prior**: the predicted corners, centred and scaled by the spine's height, projected onto
  the first k principal components of the training films' own labelled spines (k in ``--components``),
  then read as usual.

Reports, for the reading as it is and each correction: SMAPE, largest-angle MAE, the share within 5
degrees of the reference, and the mean signed error on curves of 40 degrees or more. Writes
``benchmarks/results/angle_correction[_TAG].json``.
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

from _machine import header, write_result  # noqa: E402
from spinexr.data.imread import read_image  # noqa: E402
from spinexr.data.landmarks import load_landmark_source  # noqa: E402
from spinexr.data.splits import case_splits, fit_val_split  # noqa: E402
from spinexr.deploy.measure import SpineMeasurer  # noqa: E402
from spinexr.evaluation.landmark_cv import tolerance_scores  # noqa: E402
from spinexr.geometry.cobb import cobb_angles  # noqa: E402
from spinexr.geometry.plausibility import implausibility  # noqa: E402

AASCE = HERE.parent.parent / "shared" / "data" / "aasce-spine-ap"


def _normalise(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(68, 2) corners -> (136,) centred on their mean and scaled by the spine's height."""
    c = pts.mean(axis=0)
    s = float(np.ptp(pts[:, 1])) or 1.0
    return ((pts - c) / s).ravel(), c, s


class ShapePrior:
    """Principal components of labelled spines; a spine is replaced by its projection on the first k."""

    def __init__(self, spines: list[np.ndarray]) -> None:
        x = np.stack([_normalise(v.reshape(-1, 2))[0] for v in spines])
        self.mean = x.mean(axis=0)
        _, _, self.vt = np.linalg.svd(x - self.mean, full_matrices=False)

    def project(self, pts: np.ndarray, k: int) -> np.ndarray:
        z, c, s = _normalise(pts.reshape(-1, 2))
        basis = self.vt[:k]
        rec = self.mean + (z - self.mean) @ basis.T @ basis
        return (rec.reshape(-1, 2) * s + c).reshape(17, 4, 2)


def _fit_linear(pred: np.ndarray, true: np.ndarray) -> list[tuple[float, float]]:
    return [tuple(np.polyfit(pred[:, j], true[:, j], 1)) for j in range(3)]  # type: ignore[misc]


def _films(run: Path, cfg: dict, measurer: SpineMeasurer) -> tuple[list, list, list]:
    """(held-out (record, predicted corners), validation (record, corners measured now), training records)."""
    oof = np.load(run / "oof_landmarks.npz", allow_pickle=False)
    ds = load_landmark_source(AASCE)
    by_path = {str(Path(r.path).resolve()): r for r in ds.records}
    test = [(by_path[str(Path(p).resolve())], v) for p, v in zip(oof["paths"], oof["landmarks"])]
    recs = ds.records
    groups = np.array([r.group for r in recs])
    (tr, _te), = case_splits(groups, 1, cfg["seed"], cfg["test_fraction"])
    tr = tr[np.array([not implausibility(recs[i].landmarks) for i in tr], dtype=bool)]
    fit_idx, val_idx = fit_val_split(groups, tr, cfg["val_fraction"], cfg["seed"], 0)
    val = [(recs[i], measurer.measure(read_image(recs[i].path)[0]).landmarks) for i in val_idx]
    return test, val, [recs[i] for i in fit_idx]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--landmark-run", required=True, help="a landmark CV run folder (config.json, models/, oof_landmarks.npz)")
    ap.add_argument("--components", default="8,16,32", help="shape-prior components to try")
    ap.add_argument("--tag", default=None)
    a = ap.parse_args(argv)
    run = Path(a.landmark_run)
    for need in ("config.json", "oof_landmarks.npz", "models/landmarks.safetensors"):
        if not (run / need).is_file():
            print(f"--landmark-run {run}: no {need} there; give the folder of a finished landmark CV run", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    cfg = json.loads((run / "config.json").read_text())["landmarks"]
    measurer = SpineMeasurer(run / "models" / "landmarks.safetensors")
    w = measurer.centreline_weight
    test, val, train = _films(run, cfg, measurer)

    def angles(rows: list, reader=lambda r, v: v) -> tuple[np.ndarray, np.ndarray]:
        pred = np.array([cobb_angles(reader(r, v), r.height, w).angles for r, v in rows])
        return pred, np.array([r.angles for r, _ in rows])

    pred_t, true_t = angles(test)
    pred_v, true_v = angles(val)
    coef = _fit_linear(pred_v, true_v)
    recal = np.stack([np.clip(a_ * pred_t[:, j] + b_, 0, None) for j, (a_, b_) in enumerate(coef)], axis=1)
    prior = ShapePrior([r.landmarks for r in train])
    rows = {"as read": tolerance_scores(pred_t, true_t),
            "linear recalibration (validation films)": {**tolerance_scores(recal, true_t), "coefficients": coef}}
    for k in (int(x) for x in a.components.split(",")):
        rows[f"shape prior, {k} components"] = tolerance_scores(angles(test, lambda r, v, k=k: prior.project(v, k))[0], true_t)
    out = {**header("angle_correction", argv), "landmark_run": str(run), "centreline_weight": w,
           "n_validation": len(val), "n_training_shapes": len(train), "rows": rows,
           "wall_seconds": time.perf_counter() - t0}
    write_result(f"angle_correction_{a.tag}.json" if a.tag else "angle_correction.json", out)
    for name, r in rows.items():
        bias = "n/a" if r["mean_error_ge40"] is None else f"{r['mean_error_ge40']:+.1f}"
        print(f"{name:<42} SMAPE {r['smape']:5.2f}%  MAE {r['mae_largest']:4.2f}  within 5° {r['within_5deg']:.0%}  "
              f">=40° bias {bias} ({r['n_ge40']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
