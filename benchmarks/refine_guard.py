"""A limit on how far a second refiner pass may turn a vertebra, chosen on validation films and checked
on another hospital's films known not to be scoliosis.

    python benchmarks/refine_guard.py \\
        --split runs/bench_aasce_cpu_reduced_seed0 runs/refine_seed0/refiner.safetensors \\
        --split runs/bench_aasce_cpu_reduced_seed1 runs/refine_seed1/refiner.safetensors --tag first

A second pass measures AASCE films better (``refine_passes.py``, ``refine_budget.py``) but runs away on a
few KAUH Normal films: where the first stage misplaced a level, the first pass sets a vertebra over a disc
or the pelvis, and the second, cut around it, tilts it further. The decision's curve line is fitted on
those films (``refine_curve_line.py``), so it rises and curves of 25 degrees or more stand as Normal.
:attr:`~spinexr.models.refine.VertebraRefiner.max_turn` keeps a vertebra where the first pass put it when
the second would turn it by more than the limit.

Per split (its landmark run's fold model and the refiner trained on the same training cases) and per
two-pass reading (the first stage's views; mirror images read on both passes or on the last alone), each
film is measured once through the deployed :class:`~spinexr.deploy.measure.SpineMeasurer` with both
passes kept; a limit then keeps, vertebra by vertebra, the first pass's corners where the second turned
it further (exactly what the refiner does with that limit: checked on films, ``checked_films``). For each
limit: SMAPE, largest-angle MAE, share within 5 degrees and bias on curves of 40 degrees or more, on the
refiner's validation films and, for the record, the landmark run's held-out films; and the curve line
fitted on the 71 KAUH Normal films, with the films refused and the largest angles.

The rule, fixed before looking: per reading, among the limits whose mean validation SMAPE over the splits
is within 0.1 points of the lowest (no limit among them), the smallest: the tightest limit that the
validation films say costs nothing. Writes ``benchmarks/results/refine_guard_<tag>.json``.
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
from refine_curve_line import _summary  # noqa: E402
from refine_variants import refiner_file  # noqa: E402
from spinexr.data.imread import list_images, read_image  # noqa: E402
from spinexr.data.landmarks import load_landmark_source  # noqa: E402
from spinexr.deploy.measure import SpineMeasurer  # noqa: E402
from spinexr.evaluation.landmark_cv import tolerance_scores  # noqa: E402
from spinexr.geometry.plausibility import implausibility  # noqa: E402
from spinexr.models.refine import vertebra_turns  # noqa: E402

AASCE = HERE.parent.parent / "shared" / "data" / "aasce-spine-ap"
KAUH = HERE.parent.parent / "shared" / "data" / "kauh-spine-xray"
READINGS = {"zooms+mirror | 2 passes, mirrors": ((1.0, 0.85, 1.1), True),
            "mirror | 2 passes, mirror on the last": ((1.0,), False)}
ONE_PASS = "zooms+mirror | 1 pass, mirrors (today's)"
LIMITS: list[float | None] = [None, 15.0, 10.0, 8.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
TOLERANCE = 0.1  # SMAPE points


def limit_name(limit: float | None) -> str:
    return "none" if limit is None else f"{limit:g}"


def guarded(first: np.ndarray, second: np.ndarray, turns: np.ndarray, limit: float | None) -> np.ndarray:
    """The second pass's corners with each vertebra it turned by more than ``limit`` degrees kept at the
    first pass's (``turns`` measured where the refiner measures them)."""
    if limit is None:
        return second
    return np.where((turns > limit)[:, None, None], first, second)


def measure_split(landmark_run: Path, refiner: Path, data: Path, kauh: list, n_check: int,
                  n_films: int | None = None) -> dict:
    run_cfg = json.loads((landmark_run / "config.json").read_text())["landmarks"]
    oof = np.load(landmark_run / "oof_landmarks.npz", allow_pickle=False)
    recs = load_landmark_source(data).records
    _, val_idx, te = _split(recs, run_cfg, {str(Path(p).resolve()) for p in oof["paths"]})
    m = SpineMeasurer(landmark_run / "models" / "landmarks.safetensors", refiner=refiner_file(refiner))
    m.refiner.iterations, m.refiner.max_turn = 2, None
    out: dict = {"landmark_run": str(landmark_run), "refiner": str(refiner), "n_validation": int(len(val_idx)),
                 "n_held_out": int(len(te)), "n_kauh_normal": len(kauh), "readings": {}}
    parts = {"validation": [recs[i] for i in val_idx][:n_films], "held_out": [recs[i] for i in te][:n_films]}
    films = {k: [read_image(r.path)[0] for r in v] for k, v in parts.items()}
    films["kauh_normal"] = kauh
    true = {k: np.array([r.angles for r in v]) for k, v in parts.items()}
    for reading, (scales, every) in READINGS.items():
        m.predictor.tta_scales, m.predictor.tta_flip = scales, True
        m.refiner.flip_every_pass = every
        res: dict = {"limits": {}, "turns": {}}
        for part, imgs in films.items():
            rows = []
            for img, (first, _) in zip(imgs, m.first_stage(imgs)):
                (p1, p2), pl = m.refine_passes(img, first)
                f1, f2 = (pl.points_to_original(p.reshape(-1, 2)).reshape(17, 4, 2) for p in (p1, p2))
                rows.append((img, first, f1, f2, vertebra_turns(torch.from_numpy(p1), torch.from_numpy(p2)).numpy()))
            turns = np.concatenate([r[4] for r in rows])
            res["turns"][part] = {"median": float(np.median(turns)), "p95": float(np.percentile(turns, 95)),
                                  "p99": float(np.percentile(turns, 99)), "max": float(turns.max()),
                                  "largest_per_film_median": float(np.median([r[4].max() for r in rows]))}
            if every and part != "kauh_normal":
                # The first pass with mirrors is today's one-pass reading.
                one = np.array([m.angles(r[2], r[0].shape[0]).angles for r in rows])
                res.setdefault("one_pass", {})[part] = tolerance_scores(one, true[part])
            if every and part == "kauh_normal":
                res["one_pass_kauh"] = _summary([_largest(m, r[0], r[1], r[2]) for r in rows])
            for limit in LIMITS:
                lim = res["limits"].setdefault(limit_name(limit), {})
                corners = [guarded(r[2], r[3], r[4], limit) for r in rows]
                lim.setdefault("vertebrae_held", {})[part] = int(sum((r[4] > limit).sum() for r in rows)) \
                    if limit is not None else 0
                if part == "kauh_normal":
                    r = lim[part] = _summary([_largest(m, row[0], row[1], c) for row, c in zip(rows, corners)])
                    text = f"line {r['curve_deg']:4.1f}  refused {r['refused']}  largest {r['largest_five']}"
                else:
                    pred = np.array([m.angles(c, row[0].shape[0]).angles for row, c in zip(rows, corners)])
                    r = lim[part] = tolerance_scores(pred, true[part])
                    bias = "n/a" if r["mean_error_ge40"] is None else f"{r['mean_error_ge40']:+.1f}"
                    text = (f"SMAPE {r['smape']:5.2f}%  MAE {r['mae_largest']:4.2f}  within 5° {r['within_5deg']:.0%}"
                            f"  >=40° {bias}")
                print(f"{landmark_run.name} {reading:<40} limit {limit_name(limit):>4} {part:<11} {text}", flush=True)
            if part == "kauh_normal" and n_check:
                res["checked_films"] = _check(m, rows[:n_check])
        out["readings"][reading] = res
    return out


def _largest(m: SpineMeasurer, img: np.ndarray, first: np.ndarray, corners: np.ndarray) -> float:
    """The largest angle the deployed measurer reports from these refined corners (NaN: refused)."""
    refused = m.judge_refined(implausibility(first), corners)
    return np.nan if refused else m.angles(corners, img.shape[0]).largest


def _check(m: SpineMeasurer, rows: list) -> int:
    """The refiner run with each limit gives the corners :func:`guarded` composed (films checked)."""
    for limit in LIMITS[1:]:
        m.refiner.max_turn = limit
        for img, first, f1, f2, turns in rows:
            got = m.refine(img, first)
            want = guarded(f1, f2, turns, limit)
            if not np.allclose(got, want, atol=1e-3):
                raise AssertionError(f"limit {limit}: the refiner's corners differ from the composed ones")
    m.refiner.max_turn = None
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", nargs=2, action="append", type=Path, required=True, metavar=("LANDMARK_RUN", "REFINER"),
                    help="a finished aasce_cobb_cv.py run and the refiner trained on its training cases")
    ap.add_argument("--data", type=Path, default=AASCE)
    ap.add_argument("--kauh", type=Path, default=KAUH)
    ap.add_argument("--check", type=int, default=8, help="KAUH films on which each limit is run for real")
    ap.add_argument("--films", type=int, default=None, help="at most this many films of each part (a quick try)")
    ap.add_argument("--tag", default=None)
    args = ap.parse_args(argv)
    head = header("refine_guard", argv)
    kauh = [read_image(p)[0] for p in list_images(args.kauh / "Normal")][:args.films]
    splits = [measure_split(run, ref, args.data, kauh, args.check, args.films) for run, ref in args.split]
    chosen, mean_val = {}, {}
    for reading in READINGS:
        val = {k: float(np.mean([s["readings"][reading]["limits"][k]["validation"]["smape"] for s in splits]))
               for k in map(limit_name, LIMITS)}
        best = min(val.values())
        ok = [k for k in val if val[k] <= best + TOLERANCE and k != "none"]
        chosen[reading] = min(ok, key=float) if ok else "none"
        mean_val[reading] = val
        print(f"{reading}: mean validation SMAPE by limit {json.dumps({k: round(v, 2) for k, v in val.items()})}"
              f" -> limit {chosen[reading]}")
    write_result(f"refine_guard_{args.tag or 'splits'}.json",
                 {**head, "rule": f"per reading, the smallest limit whose mean validation SMAPE is within "
                                  f"{TOLERANCE} points of the lowest", "limits": [limit_name(x) for x in LIMITS],
                  "mean_validation_smape": mean_val, "chosen": chosen, "splits": splits})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
