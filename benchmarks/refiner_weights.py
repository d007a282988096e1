"""How the vertebra refiner's stored weights change the angles: float32 (as trained), float16 (as the
other bundled models ship) and weight-only int8 (one scale per output channel), on a landmark run's
held-out films through the deployed measurer.

    python benchmarks/refiner_weights.py --landmark-run runs/bench_aasce_cpu_reduced_seed1 \\
        --refiner runs/refine_seed1/refiner.safetensors --tag seed1

The gate for shipping a smaller file (the one the INT8 landmark graph was held to): SMAPE moves by less
than 0.3 points and the largest angle by less than 0.5 degrees on at least 95% of films, against float32.
Writes ``benchmarks/results/refiner_weights_<tag>.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from _machine import header, write_result  # noqa: E402
from refine_variants import add_reading_args, apply_reading, reading_text, refiner_file  # noqa: E402
from spinexr.data.imread import read_image  # noqa: E402
from spinexr.data.landmarks import load_landmark_source  # noqa: E402
from spinexr.deploy.measure import SpineMeasurer  # noqa: E402
from spinexr.evaluation.landmark_cv import tolerance_scores  # noqa: E402
from spinexr.geometry.cobb import cobb_angles  # noqa: E402
from spinexr.models.files import int8_weights, raw_metadata, write_model_file  # noqa: E402

AASCE = HERE.parent.parent / "shared" / "data" / "aasce-spine-ap"
GATE = {"smape_points": 0.3, "largest_deg": 0.5, "share": 0.95}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--landmark-run", type=Path, required=True)
    ap.add_argument("--refiner", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=AASCE)
    ap.add_argument("--tag", default=None)
    add_reading_args(ap)
    args = ap.parse_args(argv)
    head = header("refiner_weights", argv)
    oof = np.load(args.landmark_run / "oof_landmarks.npz", allow_pickle=False)
    test = {str(Path(p).resolve()) for p in oof["paths"]}
    recs = [r for r in load_landmark_source(args.data).records if str(Path(r.path).resolve()) in test]
    films = [read_image(r.path)[0] for r in recs]
    true = np.array([r.angles for r in recs])
    src = refiner_file(args.refiner)
    state, meta = load_file(str(src)), raw_metadata(src)
    results, largest, corners = {}, {}, {}
    with tempfile.TemporaryDirectory() as d:
        files = {"float32": src,
                 "float16": write_model_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()},
                                             meta, Path(d) / "fp16.safetensors", sidecar=False),
                 "int8 weights": write_model_file(int8_weights(state), meta, Path(d) / "int8.safetensors", sidecar=False)}
        for name, f in files.items():
            m = apply_reading(SpineMeasurer(args.landmark_run / "models" / "landmarks.safetensors", refiner=f), args)
            spines = [m.measure(img) for img in films]
            # Every film's corners read as angles, refused or not (as aasce_refine.py and refine_variants.py score them).
            pred = np.array([cobb_angles(s.landmarks, img.shape[0], m.centreline_weight).angles
                             for s, img in zip(spines, films)])
            corners[name] = np.stack([s.landmarks for s in spines])
            largest[name] = pred.max(axis=1)
            results[name] = {**tolerance_scores(pred, true), "file_mb": f.stat().st_size / 2**20}
    for name, r in results.items():
        dl = np.abs(largest[name] - largest["float32"])
        r["largest_within_0_5deg_of_float32"] = float(np.mean(dl < GATE["largest_deg"]))
        r["max_corner_diff_px"] = float(np.abs(corners[name] - corners["float32"]).max())
        r["smape_change"] = r["smape"] - results["float32"]["smape"]
        r["passes_gate"] = bool(abs(r["smape_change"]) < GATE["smape_points"]
                                and r["largest_within_0_5deg_of_float32"] >= GATE["share"])
        print(f"{name:<13} {r['file_mb']:5.1f} MB  SMAPE {r['smape']:5.2f}% ({r['smape_change']:+.2f})  largest within "
              f"0.5° of float32 {r['largest_within_0_5deg_of_float32']:.0%}  corners up to {r['max_corner_diff_px']:.2f} px"
              f"  gate {'passed' if r['passes_gate'] else 'failed'}", flush=True)
    tag = args.tag or args.landmark_run.name.replace("bench_aasce_", "")
    write_result(f"refiner_weights_{tag}.json", {**head, "landmark_run": str(args.landmark_run),
                                                 "refiner": str(args.refiner), "reading": reading_text(args),
                                                 "n_test": len(recs), "gate": GATE,
                                                 "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
