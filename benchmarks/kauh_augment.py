"""Which augmentation transfers: KAUH cross-validation arms side by side, with the framing stress test
and the AASCE films as a development check.

    python benchmarks/kauh_augment.py --cpu-reduced

Each arm trains the same backbone on the same case-grouped folds with the same seeds; only the
augmentation differs (``ARMS``). Per arm it records the KAUH CV accuracy and macro-F1 (mean ± std
over folds, pooled bootstrap CIs), the framing stress test on every fold's held-out films (how often
the prediction changes when a full AP Scoliosis film is cut to a strip, and when a Normal strip is
widened to full-film proportions), and, as a development check, the fold-0 model on the AASCE films
(another hospital; all scoliosis patients): the share of films with largest Cobb >= 25 degrees
called Scoliosis and the Spearman correlation of P(Scoliosis) with the largest angle. Those films
take part in choosing the arm, so their figures are development figures.

Writes benchmarks/results/kauh_augment_<tag>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import header, write_result  # noqa: E402

KAUH = HERE.parent.parent / "shared" / "data" / "kauh-spine-xray"
AASCE = HERE.parent.parent / "shared" / "data" / "aasce-spine-ap"

WIDER_EXPOSURE = {"brightness": 0.15, "contrast": 0.3, "gamma": 0.4, "blur": 1.0, "noise": 0.03}
ARMS: dict[str, dict[str, Any]] = {
    "baseline": {"strip_p": 0.0, "widen_p": 0.0},  # the augmentation before framing became the default
    "framing": {"strip_p": 0.5, "widen_p": 0.5},
    "framing+exposure": {"strip_p": 0.5, "widen_p": 0.5, **WIDER_EXPOSURE},
    "exposure": dict(WIDER_EXPOSURE),
    "framing-strong": {"strip_p": 0.8, "widen_p": 0.8},
    "framing-strong+exposure": {"strip_p": 0.8, "widen_p": 0.8, **WIDER_EXPOSURE},
    # Not an augmentation but the input contract: every film cut to a strip around the spine before
    # the letterbox (train.resize strip), in training and deployment alike; the framing augmentation
    # is off, since no film reaches the model wider than a strip.
    "strip-contract": {"strip_p": 0.0, "widen_p": 0.0, "resize": "strip"},
    # The same, with narrower films widened to the strip by mirroring their edges (train.resize window):
    # a Normal strip and that strip widened reach the model as the same pixels.
    "window-contract": {"strip_p": 0.0, "widen_p": 0.0, "resize": "window"},
}


def aasce_check(model_file: Path, aasce: Path) -> dict:
    """The model on every AASCE film: the external metrics the product reports (development figures)."""
    import numpy as np

    from spinexr.data.imread import read_image
    from spinexr.data.landmarks import read_aasce
    from spinexr.deploy.predictor import Predictor
    from spinexr.evaluation.external import external_metrics

    pred = Predictor(model_file)
    classes = list(pred.labels)
    ds = read_aasce(aasce)
    probs, true = [], []
    for r in ds.records:
        img, _ = read_image(r.path)
        p = pred.predict_image(img)
        probs.append([p.probabilities[c] for c in classes])
        true.append(float(np.max(r.angles)))
    y = np.full(len(true), classes.index("Scoliosis"))
    m = external_metrics(y, np.array(probs), np.array(true))
    return {"n": len(true), "called_scoliosis_ge25": m["angles"]["called_scoliosis_ge25"],
            "spearman_p_scoliosis": m["angles"]["spearman_p_scoliosis"],
            "called": m["per_class"]["Scoliosis"]["called"], "by_band": m["angles"]["by_band"]}


def _train_seconds(run: Path) -> float:
    """Training time of a CV run folder, summed over its folds' epochs (also right for a resumed run)."""
    import csv

    return float(sum(float(r["seconds"]) for f in sorted((run / "history").glob("*.csv"))
                     for r in csv.DictReader(f.open())))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(KAUH))
    ap.add_argument("--aasce", default=str(AASCE), help="AASCE folder for the development check ('' to skip)")
    ap.add_argument("--model", default="xception")
    ap.add_argument("--arms", default="baseline,framing,framing+exposure", help=f"comma list of {list(ARMS)}")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cpu-reduced", action="store_true", help="CPU preset: 96 px, 12 epochs (the bundled model's)")
    ap.add_argument("--resume", action="store_true",
                    help="reuse the finished folds in --run-dir (arms added to an earlier run train only their own folds)")
    ap.add_argument("--landmarks", default=None,
                    help="a landmark model file or 'bundled': also score the decision that answers to the measured "
                         "curve in each arm's CV (accuracy and framing stress test; with --resume, finished folds "
                         "are rebuilt from their checkpoints, not retrained)")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--run-dir", default=None)
    return ap


def _arm(arm: str, a: argparse.Namespace, root: Path, datasets: dict[str, Any], size: int) -> tuple[dict, Any]:
    """One arm's CV on the shared folds and seeds; returns its figures and the dataset it ran on."""
    from spinexr.config import AugConfig, CVConfig, TrainConfig
    from spinexr.data.dataset import prepare_dataset
    from spinexr.evaluation.cv import run_cv

    arm_aug = {k: v for k, v in ARMS[arm].items() if k != "resize"}
    resize = ARMS[arm].get("resize", "letterbox")
    cv = CVConfig(models=[a.model], folds=a.folds, image_size=a.image_size, bootstrap=1000, explain=False,
                  framing_test=True, save_models=True, cache_dir="runs/cache", resize=resize, landmarks=a.landmarks)
    if resize not in datasets:
        datasets[resize] = prepare_dataset(a.data, {size}, resize, cache_dir=cv.cache_dir, progress=False)
    data = datasets[resize]
    aug = AugConfig.from_dict({**AugConfig().to_dict(), **arm_aug})
    tr = TrainConfig(epochs=a.epochs, device=a.device, seed=a.seed, aug=aug)
    t = time.perf_counter()
    run = root / arm.replace("+", "_")
    r = run_cv(a.data, cv, tr, run, progress=True, data=data, resume=a.resume).models[a.model]
    out = {"augmentation": ARMS[arm], "wall_seconds": time.perf_counter() - t,
           "train_seconds": _train_seconds(run), "run_dir": str(run),
           "accuracy_mean": r.summary["accuracy"]["mean"], "accuracy_std": r.summary["accuracy"]["std"],
           "macro_f1_mean": r.summary["macro_f1"]["mean"], "macro_f1_std": r.summary["macro_f1"]["std"],
           "pooled_accuracy": r.pooled["accuracy"], "ci95": r.ci95, "framing_stress": r.framing}
    if r.decision:
        out["decision"] = r.decision
    if a.aasce and Path(a.aasce).is_dir():
        out["aasce_fold0_development"] = aasce_check(run / "models" / f"{a.model}.safetensors", Path(a.aasce))
    fs = r.framing or {}
    print(f"{arm:<18} acc {out['accuracy_mean'] * 100:5.1f} ± {out['accuracy_std'] * 100:4.1f}  "
          f"strip {fs.get('scoliosis_ap_to_strip', {}).get('rate', float('nan')):.3f}  "
          f"widen {fs.get('normal_strip_to_full', {}).get('rate', float('nan')):.3f}  "
          + (f"AASCE>=25 {out['aasce_fold0_development']['called_scoliosis_ge25']:.3f}"
             if "aasce_fold0_development" in out else ""), flush=True)
    if r.decision:
        fd = r.decision.get("framing") or {}
        print(f"{'  + measured curve':<18} acc {r.decision['accuracy_with_rule_mean'] * 100:5.1f}         "
              f"strip {fd.get('scoliosis_ap_to_strip', {}).get('rate', float('nan')):.3f}  "
              f"widen {fd.get('normal_strip_to_full', {}).get('rate', float('nan')):.3f}", flush=True)
    return out, data


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    if not Path(a.data).is_dir():
        print(f"KAUH data not found at {a.data}; pass --data", file=sys.stderr)
        return 2
    arms = a.arms.split(",")
    unknown = [x for x in arms if x not in ARMS]
    if unknown:
        print(f"unknown arm(s) {unknown}; choose from {list(ARMS)}", file=sys.stderr)
        return 2
    if a.cpu_reduced:
        a.image_size, a.epochs, a.device = a.image_size or 96, min(a.epochs, 12), "cpu"
    tag = a.tag or ("cpu_reduced" if a.cpu_reduced else "full")
    root = Path(a.run_dir or f"runs/bench_kauh_augment_{tag}")
    size = a.image_size or 299
    datasets: dict[str, Any] = {}
    t0 = time.perf_counter()
    results = {}
    for arm in arms:
        results[arm], data = _arm(arm, a, root, datasets, size)
    res_json = {
        **header("kauh_augment", argv),
        "settings": {"model": a.model, "folds": a.folds, "epochs": a.epochs, "image_size": size,
                     "seed": a.seed, "weights": "none (from scratch)", "arms": arms, "landmarks": a.landmarks},
        "wall_seconds": time.perf_counter() - t0, "n_images": int(len(data.labels)), "counts": data.counts(),
        "targets": {"framing_changed_each_direction_max": 0.03, "accuracy_drop_max_points": 1.0},
        "arms": results,
    }
    write_result(f"kauh_augment_{tag}.json", res_json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
