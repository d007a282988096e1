"""The vertebra refiner (a second landmark stage, :mod:`spinexr.models.refine`) measured on a finished
landmark run's held-out films: the refiner trains on the run's own training cases (labelled corners,
jittered frames) and reads each held-out film again from the first stage's corners.

    python benchmarks/aasce_refine.py --landmark-run runs/bench_aasce_cpu_reduced_seed1 --minutes 30

The landmark run (``benchmarks/aasce_cobb_cv.py``) supplies the split (its ``config.json``: seed,
test and validation shares) and the first stage's corners on its held-out films
(``oof_landmarks.npz``), so no film the refiner or the first stage trained on is measured. Reports,
for the first stage alone and with the refiner (one and two passes): SMAPE, the largest angle's
MAE, the share within 5 degrees, the mean signed error on curves of 40 degrees or more, and the
corner error; the angles read by the corners alone and with the run's centreline weight. Writes
``benchmarks/results/aasce_refine_<tag>.json``; the refiner's weights and checkpoint go to
``--run-dir`` (``--resume`` continues a killed run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _machine import header, write_result  # noqa: E402
from spinexr.data.landmarks import load_landmark_source  # noqa: E402
from spinexr.data.splits import case_splits, fit_val_split  # noqa: E402
from spinexr.engine.refine import RefineConfig, fit_refiner, prepare_refine_data  # noqa: E402
from spinexr.engine.state import FitOptions  # noqa: E402
from spinexr.evaluation.landmark_cv import tolerance_scores  # noqa: E402
from spinexr.evaluation.refiner_train import train_refiner  # noqa: E402
from spinexr.geometry.cobb import cobb_angles  # noqa: E402
from spinexr.geometry.plausibility import implausibility  # noqa: E402
from spinexr.models.files import save_refiner_model  # noqa: E402
from spinexr.models.landmark import LandmarkNet  # noqa: E402
from spinexr.models.refine import VertebraRefiner  # noqa: E402

AASCE = HERE.parent.parent / "shared" / "data" / "aasce-spine-ap"


def _split(recs: list, run_cfg: dict, test_paths: set[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fit, validation, test) indices: the landmark run's own split, its implausible labels left out of training."""
    groups = np.array([r.group for r in recs])
    (tr, te), = case_splits(groups, 1, run_cfg["seed"], run_cfg["test_fraction"])
    if {str(Path(recs[i].path).resolve()) for i in te} != test_paths:
        raise SystemExit("the landmark run's held-out films are not this split's; give the run's own data")
    tr = tr[np.array([not implausibility(recs[i].landmarks) for i in tr], dtype=bool)]
    fit_idx, val_idx = fit_val_split(groups, tr, run_cfg["val_fraction"], run_cfg["seed"], 0)
    return fit_idx, val_idx, te


@torch.no_grad()
def _refined(refiner: VertebraRefiner, data, idx: np.ndarray, first: dict[str, np.ndarray],
             passes: int) -> dict[str, np.ndarray]:
    """Each held-out film's corners (film pixels) after ``passes`` refiner passes from the first stage's."""
    refiner.iterations = passes
    out = {}
    for i in idx:
        path = str(Path(data.records[i].path).resolve())
        pl = data.placements[i]
        start = torch.as_tensor(pl.points_to_input(first[path].reshape(-1, 2)).reshape(17, 4, 2), dtype=torch.float32)
        pts = refiner(data.films[i], start).numpy()
        out[path] = pl.points_to_original(pts.reshape(-1, 2)).reshape(17, 4, 2)
    return out


def _score(recs: list, idx: np.ndarray, corners: dict[str, np.ndarray], weight: float) -> dict:
    true = np.array([recs[i].angles for i in idx])
    pred, err = [], []
    for i in idx:
        r = recs[i]
        v = corners[str(Path(r.path).resolve())]
        pred.append(cobb_angles(v, r.height, weight).angles)
        err.append(100 * float(np.linalg.norm(v - r.landmarks, axis=-1).mean()) / r.height)
    return {**tolerance_scores(np.array(pred), true), "corner_error_pct_height": float(np.mean(err)),
            "implausible": int(sum(bool(implausibility(corners[str(Path(recs[i].path).resolve())])) for i in idx))}


def _budget(args: argparse.Namespace) -> float | None:
    """``--minutes`` as the trainer takes it: 0 or less is no time budget (the schedule runs ``--epochs``)."""
    return args.minutes if args.minutes > 0 else None


def _final(args: argparse.Namespace, head: dict, t0: float) -> int:
    """The refiner to ship, as ``spinexr landmarks train --stage refiner`` trains it (every film with plausible
    labels; a tenth of the cases choose the epoch), with this script's recipe flags."""
    cfg = replace(RefineConfig(), epochs=args.epochs, crop=args.crop, encoder=args.encoder,
                  jitter_deg=args.jitter_deg, jitter_centre=args.jitter_centre)
    run_dir = args.run_dir or Path("runs") / "refine_final"
    rec = train_refiner(args.data, cfg, run_dir, FitOptions(resume=args.resume, max_minutes=_budget(args)),
                        passes=args.passes)
    rec.pop("verb")
    write_result(f"aasce_refine_{args.tag or 'final'}.json",
                 {**head, "final": True, **rec, "command": head["command"], "trained_on": head["machine"]["cpu"],
                  "wall_seconds": time.perf_counter() - t0})
    return 0


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--landmark-run", type=Path, help="a finished aasce_cobb_cv.py run folder")
    ap.add_argument("--final", action="store_true", help="train the refiner to ship: every film with plausible labels "
                    "(10%% of the cases choose the epoch), nothing held out")
    ap.add_argument("--data", type=Path, default=AASCE)
    ap.add_argument("--minutes", type=float, default=30.0,
                    help="the refiner's training budget (0: none, --epochs alone sets the schedule)")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--jitter-deg", type=float, default=RefineConfig.jitter_deg,
                    help="standard deviation of the training crops' turn about the labelled vertebra (degrees)")
    ap.add_argument("--jitter-centre", type=float, default=RefineConfig.jitter_centre,
                    help="standard deviation of the training crops' shift, as a share of the vertebra's half side")
    ap.add_argument("--passes", type=int, default=1, choices=(1, 2, 3),
                    help="with --final: how many times the shipped refiner reads its crops (the held-out runs "
                         "measure one and two passes; their validation films choose)")
    ap.add_argument("--run-dir", type=Path, default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--limit", type=int, default=0, help="use only this many training films (a smoke run)")
    ap.add_argument("--tag", default=None)
    args = ap.parse_args(argv)
    if not args.final and args.landmark_run is None:
        ap.error("give --landmark-run (a finished aasce_cobb_cv.py run) or --final")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    t0 = time.perf_counter()
    head = header("aasce_refine", argv)
    if args.final:
        return _final(args, head, t0)
    run_cfg = json.loads((args.landmark_run / "config.json").read_text())["landmarks"]
    oof = np.load(args.landmark_run / "oof_landmarks.npz", allow_pickle=False)
    first = {str(Path(p).resolve()): v for p, v in zip(oof["paths"], oof["landmarks"])}
    ds = load_landmark_source(args.data)
    recs = ds.records
    fit_idx, val_idx, te = _split(recs, run_cfg, set(first))
    if args.limit:
        fit_idx, val_idx, te = fit_idx[:args.limit], val_idx[:max(2, args.limit // 8)], te[:max(4, args.limit // 4)]
    cfg = replace(RefineConfig(), seed=int(run_cfg["seed"]), epochs=args.epochs, crop=args.crop, encoder=args.encoder,
                  jitter_deg=args.jitter_deg, jitter_centre=args.jitter_centre)
    used = np.concatenate([fit_idx, val_idx, te])
    data = prepare_refine_data([recs[i] for i in used], cfg.film_height)
    if len(data.records) != len(used):
        raise SystemExit(f"{len(used) - len(data.records)} films could not be read: {data.skipped}")
    recs = data.records  # positions in ``used`` from here on
    fit_idx, val_idx, te = np.split(np.arange(len(used)), [len(fit_idx), len(fit_idx) + len(val_idx)])
    run_dir = args.run_dir or Path("runs") / f"refine_{args.landmark_run.name}"
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    refiner = VertebraRefiner(LandmarkNet(cfg.encoder, out_channels=4), crop=cfg.crop, span=cfg.span,
                              film_height=cfg.film_height)
    fit = fit_refiner(refiner, data, fit_idx, val_idx, cfg,
                      FitOptions(run_dir / "checkpoint.pt", resume=args.resume, max_minutes=_budget(args)))
    save_refiner_model(refiner, run_dir / "refiner.safetensors", cfg.to_dict(),
                       {"source": str(args.data), "n_train": int(len(fit_idx)), "split": "fold 0",
                        "landmark_run": str(args.landmark_run)})
    weight = float(run_cfg.get("centreline_weight", 0.0))
    first_te = {str(Path(recs[i].path).resolve()): first[str(Path(recs[i].path).resolve())] for i in te}
    results = {"first stage": {"corners alone": _score(recs, te, first_te, 0.0),
                               f"centreline {weight}": _score(recs, te, first_te, weight)}}
    for passes in (1, 2):
        got = _refined(refiner, data, te, first_te, passes)
        results[f"refined, {passes} pass{'es' if passes > 1 else ''}"] = {
            "corners alone": _score(recs, te, got, 0.0), f"centreline {weight}": _score(recs, te, got, weight)}
    payload = {**head, "landmark_run": str(args.landmark_run), "first_stage_settings": run_cfg,
               "refiner_settings": cfg.to_dict(), "n_fit": int(len(fit_idx)), "n_val": int(len(val_idx)),
               "n_test": int(len(te)), "training": {k: v for k, v in fit.items() if k != "history"},
               "history": fit["history"], "results": results, "wall_seconds": time.perf_counter() - t0}
    tag = args.tag or args.landmark_run.name.replace("bench_aasce_", "")
    write_result(f"aasce_refine_{tag}.json", payload)
    for name, r in results.items():
        for reading, s in r.items():
            bias = "n/a" if s["mean_error_ge40"] is None else f"{s['mean_error_ge40']:+.1f}"
            print(f"{name:<20} {reading:<16} SMAPE {s['smape']:5.2f}%  MAE {s['mae_largest']:4.2f}  "
                  f"within 5° {s['within_5deg']:.0%}  >=40° bias {bias} ({s['n_ge40']})  "
                  f"corners {s['corner_error_pct_height']:.2f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
