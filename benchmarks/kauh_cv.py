"""KAUH cross-validation benchmark: three backbones from scratch plus their ensemble.

Full protocol (one GPU): 5-fold, 60 epochs, each model at its own input size (299/299/224):

    python benchmarks/kauh_cv.py

Reduced CPU protocol (what a 2-core machine can do in well under an hour):

    python benchmarks/kauh_cv.py --cpu-reduced

Writes benchmarks/results/kauh_cv_<tag>.json with the command, machine, per-model and ensemble
mean ± std, 95% bootstrap CIs and wall time; the run folder (report.html) goes to --run-dir.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import header, write_result  # noqa: E402

DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "kauh-spine-xray"


def main(argv: list[str] | None = None) -> int:
    from spinexr.config import CVConfig, TrainConfig
    from spinexr.evaluation.cv import run_cv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--models", default="xception,inception_v3,densenet121")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--attention", default="mhsa")
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--protocol", default="grouped", choices=["grouped", "both"])
    ap.add_argument("--cpu-reduced", action="store_true",
                    help="CPU preset: 96 px, 12 epochs (the GPU targets need the full protocol)")
    ap.add_argument("--no-explain", action="store_true", help="skip the Grad-CAM gallery (needs grad-cam)")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--run-dir", default=None)
    a = ap.parse_args(argv)
    if not Path(a.data).is_dir():
        print(f"KAUH data not found at {a.data}; pass --data", file=sys.stderr)
        return 2
    if a.cpu_reduced:
        a.image_size, a.epochs, a.device = a.image_size or 96, min(a.epochs, 12), "cpu"
    tag = a.tag or ("cpu_reduced" if a.cpu_reduced else "full")
    run_dir = Path(a.run_dir or f"runs/bench_kauh_cv_{tag}")
    cv = CVConfig(models=a.models.split(","), folds=a.folds, repeats=a.repeats, attention=a.attention,
                  image_size=a.image_size, protocol=a.protocol, bootstrap=1000, explain=not a.no_explain)
    tr = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, patience=a.patience, device=a.device,
                     seed=a.seed)
    t0 = time.perf_counter()
    res = run_cv(a.data, cv, tr, run_dir, progress=True)
    wall = time.perf_counter() - t0
    out = {
        **header("kauh_cv", argv),
        "settings": {"models": cv.models, "folds": a.folds, "repeats": a.repeats, "epochs": a.epochs,
                     "image_size": a.image_size or "model default", "attention": a.attention,
                     "batch_size": a.batch_size, "lr": a.lr, "patience": a.patience, "seed": a.seed,
                     "weights": "none (from scratch)", "protocol": a.protocol},
        "wall_seconds": wall, "n_images": res.data.n_images, "counts": res.data.counts,
        "results": {m: {"accuracy_mean": r.summary["accuracy"]["mean"], "accuracy_std": r.summary["accuracy"]["std"],
                        "macro_f1_mean": r.summary["macro_f1"]["mean"], "macro_f1_std": r.summary["macro_f1"]["std"],
                        "auc_macro_mean": r.summary.get("auc_macro", {}).get("mean"),
                        "ece_pooled": r.pooled["ece"], "ci95": r.ci95,
                        "pooled_accuracy": r.pooled["accuracy"], "pooled_macro_f1": r.pooled["macro_f1"]}
                    for m, r in res.models.items()},
        "targets_gpu": {"ensemble_accuracy": 0.97, "ensemble_macro_f1": 0.96, "each_backbone_accuracy": 0.94},
        "shortcut_baseline": res.data.shortcut,
    }
    if res.leaky is not None:
        out["leaky"] = {"test_leak_fraction": res.leaky.test_leak_fraction,
                        "accuracy": {m: v["accuracy"] for m, v in res.leaky.models.items()}}
    for m, r in out["results"].items():
        print(f"{m:<14} {r['accuracy_mean'] * 100:5.1f} ± {r['accuracy_std'] * 100:4.1f}  macro-F1 {r['macro_f1_mean']:.3f}")
    write_result(f"kauh_cv_{tag}.json", out)
    print(f"wall {wall:.0f} s; report: {run_dir / 'report.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
