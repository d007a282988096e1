"""Does the INT8 landmark graph measure the same angles? FP32 and INT8 ONNX exports of a landmark run's
fold model on its held-out AASCE films, side by side.

    python benchmarks/landmark_int8.py --landmark-run runs/bench_aasce_cpu_reduced_seed1
    python benchmarks/landmark_int8.py --landmark-run runs/bench_aasce_cpu_reduced_seed1 \
        --refiner runs/refine_seed1/refiner_model.safetensors --tag seed1_two_stage
    python benchmarks/landmark_int8.py --landmark-run runs/bench_aasce_cpu_reduced_seed1 \
        --refiner runs/refine_seed1/refiner_model.safetensors --stage refiner --tag seed1_refiner

``--stage refiner`` quantizes the vertebra refiner's crop reading instead (the first stage FP32 in
both arms), calibrated on the crops it is given on the same training films (cut around the FP32 first
stage's corners, as deployed).

The INT8 graph (static QDQ quantization, per-channel weights; the decoder kept in FP32 unless
``--quantize-decoder``) is calibrated on 64 of the run's *training* films. Adopted only if, on the
held-out films, SMAPE moves by less than 0.3 points and
the largest angle by less than 0.5 degrees on 95% of films. Also reports the milliseconds per film
of each graph (batch 1, the machine's cores). Writes ``benchmarks/results/landmark_int8[_TAG].json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from _machine import header, write_result  # noqa: E402
from spinexr.data.imread import read_image  # noqa: E402
from spinexr.data.landmarks import load_landmark_source  # noqa: E402
from spinexr.deploy.export import (  # noqa: E402
    LANDMARK_DECODER_NODES,
    export_landmark_onnx,
    export_refiner_onnx,
    quantize_landmark_int8,
    quantize_refiner_int8,
)
from spinexr.deploy.measure import SpineMeasurer  # noqa: E402
from spinexr.evaluation.landmark_cv import smape  # noqa: E402
from spinexr.geometry.cobb import cobb_angles  # noqa: E402

AASCE = HERE.parent.parent / "shared" / "data" / "aasce-spine-ap"
SMAPE_POINTS, LARGEST_DEG, SHARE = 0.3, 0.5, 0.95


def _angles(m: SpineMeasurer, films: list[np.ndarray]) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    spines = [m.measure(img) for img in films]
    ms = (time.perf_counter() - t0) * 1e3 / len(films)
    return np.array([cobb_angles(s.landmarks, img.shape[0], m.centreline_weight).angles
                     for s, img in zip(spines, films)]), ms


def _refiner_crops(m: SpineMeasurer, paths: list) -> np.ndarray:
    """The crops ``m``'s refiner is given on the films at ``paths``, as deployed (the calibration set)."""
    seen: list[np.ndarray] = []
    read = m._read_crops_onnx

    def keep(crops):  # noqa: ANN001, ANN202
        seen.append(crops.cpu().numpy())
        return read(crops)

    m._read_crops_onnx = keep  # type: ignore[method-assign]
    try:
        for p in paths:
            m.measure(read_image(p)[0])
    finally:
        m._read_crops_onnx = read  # type: ignore[method-assign]
    return np.concatenate(seen)


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--landmark-run", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=AASCE)
    ap.add_argument("--calibration", type=int, default=64)
    ap.add_argument("--quantize-decoder", action="store_true",
                    help="quantize the decoder too (by default it stays FP32: LANDMARK_DECODER_NODES)")
    ap.add_argument("--refiner", type=Path, default=None,
                    help="the split's vertebra refiner file: measure through both stages, as deployed (its crop "
                         "reading on ONNX Runtime in FP32 in both arms), so only the first stage's graph differs")
    ap.add_argument("--stage", choices=["first", "refiner"], default="first",
                    help="which graph is quantized: the whole-spine first stage, or the refiner's crop reading")
    ap.add_argument("--tag", default=None)
    args = ap.parse_args(argv)
    if args.stage == "refiner" and args.refiner is None:
        ap.error("--stage refiner needs --refiner")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    head = header("landmark_int8", argv)
    model = args.landmark_run / "models" / "landmarks.safetensors"
    oof = np.load(args.landmark_run / "oof_landmarks.npz", allow_pickle=False)
    test = {str(Path(p).resolve()) for p in oof["paths"]}
    recs = load_landmark_source(args.data).records
    held = [r for r in recs if str(Path(r.path).resolve()) in test]
    # Calibration films from the training side: other cases than any held-out film's.
    held_groups = {r.group for r in held}
    calib = [r.path for r in recs if r.group not in held_groups][:: max(1, (len(recs) - len(held)) // args.calibration)]
    calib = calib[:args.calibration]
    films = [read_image(r.path)[0] for r in held]
    true = np.array([r.angles for r in held])
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "lm.onnx", Path(tmp) / "lm.int8.onnx"
        export_landmark_onnx(model, fp32)
        keep = () if args.quantize_decoder else LANDMARK_DECODER_NODES
        ref = {}
        if args.refiner is not None:
            ref_onnx = Path(tmp) / "refiner.onnx"
            export_refiner_onnx(args.refiner, ref_onnx)
            ref = {"refiner": args.refiner, "refiner_onnx_path": ref_onnx}
        m32 = SpineMeasurer(model, backend="onnx", onnx_path=fp32, **ref)
        if args.stage == "first":
            quantize_landmark_int8(fp32, int8, calib, keep_fp32=keep)
            m8 = SpineMeasurer(model, backend="onnx", onnx_path=int8, **ref)
        else:
            ref8 = Path(tmp) / "refiner.int8.onnx"
            quantize_refiner_int8(ref_onnx, ref8, _refiner_crops(m32, calib), keep_fp32=keep)
            m8 = SpineMeasurer(model, backend="onnx", onnx_path=fp32, refiner=args.refiner, refiner_onnx_path=ref8)
        a32, ms32 = _angles(m32, films)
        a8, ms8 = _angles(m8, films)
    s32, s8 = smape(a32, true), smape(a8, true)
    d_largest = np.abs(a8.max(axis=1) - a32.max(axis=1))
    share = float(np.mean(d_largest < LARGEST_DEG))
    adopt = abs(s8 - s32) < SMAPE_POINTS and share >= SHARE
    res = {"stage": args.stage, "decoder": "int8" if args.quantize_decoder else "fp32", "n_films": len(held),
           "second_stage": str(args.refiner) if args.refiner is not None else None,
           "calibration_films": len(calib), "smape_fp32": s32, "smape_int8": s8,
           "smape_change_points": s8 - s32, "largest_abs_change_deg": {"median": float(np.median(d_largest)),
                                                                     "p95": float(np.percentile(d_largest, 95)),
                                                                     "max": float(d_largest.max())},
           "share_largest_within_0_5deg": share, "ms_per_film_fp32": ms32, "ms_per_film_int8": ms8,
           "rule": f"adopt if |SMAPE change| < {SMAPE_POINTS} points and the largest angle moves < {LARGEST_DEG} deg "
                   f"on >= {SHARE:.0%} of films", "adopted": bool(adopt)}
    print(f"SMAPE fp32 {s32:.2f}% int8 {s8:.2f}%; largest angle within {LARGEST_DEG}° on {share:.0%} of films "
          f"(p95 change {res['largest_abs_change_deg']['p95']:.2f}°); {ms32:.0f} vs {ms8:.0f} ms/film; "
          f"{'adopted' if adopt else 'not adopted'}")
    write_result(f"landmark_int8{'_' + args.tag if args.tag else ''}.json",
                 {**head, "landmark_run": str(args.landmark_run), "model": str(model), "results": res})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
