"""The deployed measurer with the vertebra refiner, on a landmark run's held-out films: which test-time
augmentation each stage needs, measured, and what each costs.

    python benchmarks/refine_variants.py --landmark-run runs/bench_aasce_cpu_reduced_seed1 \\
        --refiner runs/refine_seed1/refiner.safetensors

Each variant is :class:`~spinexr.deploy.measure.SpineMeasurer` as ``predict`` runs it (the landmark
run's fold-0 model file, then the refiner), with the first stage's test-time zooms and the refiner's
mirror reading switched on or off. Reports, per variant, the clinical figures (SMAPE, the largest
angle's MAE, the share within 5 degrees, the bias on curves of 40 degrees or more) and the mean
milliseconds per film of the measurement (decoding excluded). Writes
``benchmarks/results/refine_variants_<tag>.json``.
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
import torch  # noqa: E402

from _machine import header, write_result  # noqa: E402
from spinexr.data.imread import read_image  # noqa: E402
from spinexr.data.landmarks import load_landmark_source  # noqa: E402
from spinexr.deploy.measure import SpineMeasurer  # noqa: E402
from spinexr.evaluation.landmark_cv import tolerance_scores  # noqa: E402
from spinexr.geometry.cobb import cobb_angles, tilt_gain  # noqa: E402
from spinexr.models.files import model_kind, save_refiner_model  # noqa: E402
from spinexr.models.landmark import LandmarkNet  # noqa: E402
from spinexr.models.refine import VertebraRefiner, turn_limit  # noqa: E402

AASCE = HERE.parent.parent / "shared" / "data" / "aasce-spine-ap"
VARIANTS = {"zooms+flip, refiner flip": ((1.0, 0.85, 1.1), True),
            "zooms+flip, refiner plain": ((1.0, 0.85, 1.1), False),
            "flip only, refiner flip": ((1.0,), True),
            "flip only, refiner plain": ((1.0,), False)}


def degrees_arg(text: str) -> float | None:
    """An argparse type for a limit on turning (``--max-turn``, ``bundle_models.py --refiner-max-turn``):
    :func:`~spinexr.models.refine.turn_limit`'s message on a bad value."""
    try:
        return turn_limit(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def gain_arg(text: str) -> float:
    """An argparse type for a gain on tilts (``--tilt-gain``): :func:`~spinexr.geometry.cobb.tilt_gain`'s message
    on a bad value."""
    try:
        return tilt_gain(float(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e) if "tilt_gain" in str(e) else f"tilt_gain {text!r} is not a number") from None


def add_reading_args(ap: argparse.ArgumentParser) -> None:
    """Options that read a measurer's models another way than their files say (refine_budget.py chooses)."""
    ap.add_argument("--tta-scales", default=None, help="the first stage's test-time zooms (e.g. 1: the mirror image alone)")
    ap.add_argument("--passes", type=int, default=None, choices=(1, 2, 3), help="the refiner's passes")
    ap.add_argument("--mirror-last", action="store_true", help="the refiner reads mirror images on its last pass only")
    ap.add_argument("--max-turn", type=degrees_arg, default=None,
                    help="degrees a pass after the first may turn a vertebra (refine_guard.py chooses)")
    ap.add_argument("--tilt-gain", type=gain_arg, default=None,
                    help="a gain on the refined tilts (angle_correction.py fits it on validation films)")


def apply_reading(m: SpineMeasurer, args: argparse.Namespace) -> SpineMeasurer:
    """``m`` read as :func:`add_reading_args`' options say (PyTorch backend)."""
    from spinexr.models.landmark import parse_scales

    if args.tta_scales is not None:
        m.predictor.tta_scales = parse_scales(args.tta_scales)
    if m.refiner is not None:
        if args.passes is not None:
            m.refiner.iterations = args.passes
        if args.mirror_last:
            m.refiner.flip_every_pass = False
        if args.max_turn is not None:
            m.refiner.max_turn = args.max_turn
        if args.tilt_gain is not None:
            m.tilt_gain = args.tilt_gain
    return m


def reading_text(args: argparse.Namespace) -> dict:
    return {"tta_scales": args.tta_scales, "passes": args.passes, "mirror_last": bool(args.mirror_last),
            "max_turn": args.max_turn, "tilt_gain": args.tilt_gain}


def refiner_file(path: Path) -> Path:
    """A refiner file as spinexr writes it: an earlier run's bare weights (their recipe in the metadata) are
    written again beside them as ``refiner_model.safetensors``."""
    if model_kind(path) == "refiner":
        return path
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        cfg = json.loads((f.metadata() or {})["spinexr"])["refine"]
    net = LandmarkNet(cfg["encoder"], out_channels=4)
    net.load_state_dict(load_file(str(path)))
    ref = VertebraRefiner(net, crop=cfg["crop"], span=cfg["span"], film_height=cfg["film_height"])
    return save_refiner_model(ref, path.with_name("refiner_model.safetensors"), cfg, {"converted_from": str(path)})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--landmark-run", type=Path, required=True)
    ap.add_argument("--refiner", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=AASCE)
    ap.add_argument("--tag", default=None)
    args = ap.parse_args(argv)
    head = header("refine_variants", argv)
    oof = np.load(args.landmark_run / "oof_landmarks.npz", allow_pickle=False)
    test = {str(Path(p).resolve()) for p in oof["paths"]}
    recs = [r for r in load_landmark_source(args.data).records if str(Path(r.path).resolve()) in test]
    films = [read_image(r.path)[0] for r in recs]
    true = np.array([r.angles for r in recs])
    m = SpineMeasurer(args.landmark_run / "models" / "landmarks.safetensors", refiner=refiner_file(args.refiner))
    results = {}
    for name, (zooms, flip) in VARIANTS.items():
        m.predictor.tta_scales, m.refiner.tta_flip = zooms, flip
        torch.manual_seed(0)
        t0 = time.perf_counter()
        spines = [m.measure(img) for img in films]
        ms = (time.perf_counter() - t0) * 1e3 / len(films)
        pred = np.array([cobb_angles(s.landmarks, img.shape[0], m.centreline_weight).angles
                         for s, img in zip(spines, films)])
        results[name] = {**tolerance_scores(pred, true), "ms_per_film": ms}
        r = results[name]
        print(f"{name:<28} SMAPE {r['smape']:5.2f}%  MAE {r['mae_largest']:4.2f}  within 5° {r['within_5deg']:.0%}  "
              f">=40° bias {r['mean_error_ge40']:+.1f}  {ms:5.0f} ms/film", flush=True)
    tag = args.tag or args.landmark_run.name.replace("bench_aasce_", "")
    write_result(f"refine_variants_{tag}.json", {**head, "landmark_run": str(args.landmark_run),
                                                 "refiner": str(args.refiner), "n_test": len(recs),
                                                 "centreline_weight": m.centreline_weight, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
