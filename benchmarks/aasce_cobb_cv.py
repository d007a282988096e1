"""Cobb angles on the AASCE / SpineWeb 16 films: case-grouped CV of the landmark model.

Reduced CPU recipe (2 cores, training capped at 55 minutes unless --minutes-per-fold says less): one
80/20 case-grouped split, a resnet18 encoder at 320 x 160, the learning rate annealed to the budget:

    python benchmarks/aasce_cobb_cv.py --cpu-reduced --minutes-per-fold 58

A fold model trained by an earlier run can be measured again with another test-time augmentation,
its training record carried over from that run's JSON (nothing is retrained):

    python benchmarks/aasce_cobb_cv.py --cpu-reduced --reuse-fold0 src/spinexr/deploy/bundled/landmarks.safetensors \\
        --reuse-json benchmarks/results/probes/aasce_cobb_cv_cpu_reduced_58min_flip_only.json

Full recipe (a GPU): 5 folds at 1024 x 512:

    python benchmarks/aasce_cobb_cv.py --folds 5 --input 1024x512 --epochs 150 --device cuda

Writes benchmarks/results/aasce_cobb_cv_<tag>.json (command, machine, settings, SMAPE, MAE of the
largest and of each angle with 95% bootstrap CIs, landmark error as % of film height, wall time)
and, with KAUH beside the repository, how well the predicted largest angle separates KAUH's
Scoliosis films from its Normal ones (ROC-AUC).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import header, write_result  # noqa: E402

AASCE = HERE.parent.parent / "shared" / "data" / "aasce-spine-ap"
KAUH = HERE.parent.parent / "shared" / "data" / "kauh-spine-xray"


def kauh_auc(model: Path, device: str) -> dict:
    """ROC-AUC of the predicted largest Cobb angle, KAUH Scoliosis against Normal films."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from spinexr.data.imread import list_images, read_image
    from spinexr.deploy.measure import SpineMeasurer

    measurer = SpineMeasurer(model, device)
    ys, angles, refused = [], [], 0
    for cls, y in (("Normal", 0), ("Scoliosis", 1)):
        for p in list_images(KAUH / cls):
            img, _ = read_image(p)
            m = measurer.measure(img)
            refused += m.result is None
            ys.append(y)
            # A refused spine still has corners: the cross-check ranks every film by what was measured.
            angles.append((m.result or measurer.angles(m.landmarks, img.shape[0])).largest)
    ys, angles = np.array(ys), np.array(angles)
    return {"n_normal": int((ys == 0).sum()), "n_scoliosis": int((ys == 1).sum()),
            "auc_largest_angle": float(roc_auc_score(ys, angles)),
            "median_angle_normal": float(np.median(angles[ys == 0])),
            "median_angle_scoliosis": float(np.median(angles[ys == 1])), "implausible_predictions": int(refused)}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(AASCE))
    ap.add_argument("--folds", type=int, default=5, help="case-grouped folds (1: one 80/20 split)")
    ap.add_argument("--input", default=None, help="HxW of the model input (default 512x256; 320x160 with --cpu-reduced)")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--encoding", default="corners", choices=("corners", "offsets"),
                    help="offsets: vertebra heatmaps + corner offsets; corners: one heatmap per corner")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--patience", type=int, default=30)
    ap.add_argument("--minutes-per-fold", type=float, default=None, help="cap on each fold's training time")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cpu-reduced", action="store_true",
                    help="one 80/20 split, 320x160 unless --input says otherwise, 55 minutes of training "
                         "(or --minutes-per-fold)")
    ap.add_argument("--tta-scales", default=None, help="test-time zooms of the deployed predictor (default: the "
                    "landmark settings' default); 1 alone: the flip only")
    ap.add_argument("--reuse-fold0", default=None, metavar="MODEL",
                    help="measure this fold-0 model file of an earlier run of the same recipe instead of training "
                         "fold 0 again (its training record is taken from the earlier JSON, --reuse-json)")
    ap.add_argument("--reuse-json", default=None, help="the earlier run's result JSON (default: the one this run replaces)")
    ap.add_argument("--strip-p", type=float, default=None,
                    help="share of training films reframed as strips (landmarks.strip_p; default: the setting's)")
    ap.add_argument("--angle-weight", type=float, default=None,
                    help="weight of the vertebra midline error in the loss (landmarks.angle_weight; default: the setting's)")
    ap.add_argument("--resume", action="store_true", help="continue each fold from its checkpoint in --run-dir")
    ap.add_argument("--fix-labels", action="store_true", help="train on labels with slips fixed (landmarks.fix_labels)")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--run-dir", default=None)
    return ap


def _earlier_run(a: argparse.Namespace, tag: str, h: int, w: int) -> dict | None:
    """The result JSON of the run that trained ``--reuse-fold0`` (its training record), or None with the reason printed."""
    src = Path(a.reuse_json) if a.reuse_json else HERE / "results" / f"aasce_cobb_cv_{tag}.json"
    if not src.is_file():
        print(f"--reuse-fold0 needs the earlier run's JSON ({src}) for its training record; pass --reuse-json",
              file=sys.stderr)
        return None
    earlier = json.loads(src.read_text())
    if earlier.get("settings", {}).get("input_height") != h or earlier["folds"][0].get("reused_model"):
        print(f"{src}: not a trained run of this recipe ({h}x{w}); pass the JSON of the run that trained "
              f"{a.reuse_fold0}", file=sys.stderr)
        return None
    return earlier


def main(argv: list[str] | None = None) -> int:
    from spinexr.config import LandmarkConfig
    from spinexr.evaluation.landmark_cv import run_landmark_cv

    ap = _parser()
    a = ap.parse_args(argv)
    if not Path(a.data).is_dir():
        print(f"AASCE data not found at {a.data}; pass --data", file=sys.stderr)
        return 2
    if a.cpu_reduced:
        a.folds, a.device = 1, "cpu"
        a.minutes_per_fold = a.minutes_per_fold or 55.0
    h, w = (int(v) for v in (a.input or ("320x160" if a.cpu_reduced else "512x256")).lower().split("x"))
    tag = a.tag or ("cpu_reduced" if a.cpu_reduced else "full")
    run_dir = Path(a.run_dir or f"runs/bench_aasce_{tag}")
    cfg = LandmarkConfig(encoder=a.encoder, encoding=a.encoding, input_height=h, input_width=w, epochs=a.epochs,
                         batch_size=a.batch_size,
                         lr=a.lr, patience=a.patience, device=a.device, seed=a.seed, folds=max(a.folds, 2),
                         test_fraction=0.2,
                         fix_labels=a.fix_labels,
                         **{k: v for k, v in (("tta_scales", a.tta_scales), ("strip_p", a.strip_p),
                                              ("angle_weight", a.angle_weight)) if v is not None})
    earlier = None
    if a.reuse_fold0:
        earlier = _earlier_run(a, tag, h, w)
        if earlier is None:
            return 2
        a.minutes_per_fold = earlier.get("minutes_per_fold_cap")  # the cap the reused training ran under
    t0 = time.perf_counter()
    res = run_landmark_cv(a.data, cfg, run_dir, folds=a.folds, max_minutes_per_fold=a.minutes_per_fold,
                          trained={0: Path(a.reuse_fold0)} if a.reuse_fold0 else None, resume=a.resume).to_dict()
    if earlier is not None:  # the training this measurement rests on, as the earlier run recorded it
        res["folds"][0].update({k: earlier["folds"][0][k] for k in ("best_epoch", "epochs_run", "stopped_by",
                                                                    "train_seconds")},
                               trained_by={"command": earlier["command"], "date": earlier["date"],
                                           "machine": earlier["machine"].get("cpu"),
                                           "smape_before": earlier["pooled"]["smape"],
                                           "tta_scales_before": earlier["settings"].get("tta_scales", "1")})
    out = {**header("aasce_cobb_cv", argv), "protocol": ("one case-grouped 80/20 split" if a.folds < 2
                                                         else f"{a.folds}-fold case-grouped CV"),
           "minutes_per_fold_cap": a.minutes_per_fold, **res, "wall_seconds": time.perf_counter() - t0,
           "targets": {"cpu_reduced": {"smape": 18.0, "mae_largest": 8.0}, "gpu_full": {"smape": 8.0, "mae_largest": 3.0}},
           "published": {"naive_cpu_probe": {"smape": 30.0, "mae_largest": 15.8, "landmark_error_pct_height": 3.35}}}
    if KAUH.is_dir():
        out["kauh_cross_check"] = kauh_auc(run_dir / "models" / "landmarks.safetensors", res["settings"]["device"]
                                           if res["settings"]["device"] != "auto" else "cpu")
    write_result(f"aasce_cobb_cv_{tag}.json", out)
    p = res["pooled"]
    print(f"SMAPE {p['smape']:.2f}% (95% CI {p['smape_ci95'][0]:.2f}-{p['smape_ci95'][1]:.2f}); largest-angle MAE "
          f"{p['mae_largest']:.2f} deg; landmark error {p['landmark_error_pct_height']['mean']:.2f}% of film height")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
