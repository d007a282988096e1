"""Does the landmark model measure the same spine when only the framing changes?

    python benchmarks/landmark_framing.py --model A.safetensors --model B.safetensors \\
        --test-films runs/bench_aasce_cpu_reduced/oof_landmarks.npz

The decision that answers to the curve trusts the measured angle on any full-spine AP film, and
KAUH frames its classes differently (Normal films are narrow strips). A landmark model trained on
full AP films alone may measure a strip, or a strip widened by mirroring its edges, differently.
For each model, side by side on the same films:

- the AASCE films it did not train on (``--test-films``: the paths in a landmark CV run's
  ``oof_landmarks.npz``), as they are, cut to a strip a quarter as wide as tall around the spine
  (every true corner kept inside), and that strip widened again to full-film proportions by
  mirroring its edges: SMAPE and the largest-angle MAE against the true angles in each framing;
- KAUH Normal strips as they are and widened (mirrored edges), and KAUH full-AP Scoliosis films as
  they are and cut to strips (the framing stress test's transforms, spine found by the brightest
  band): the median change of the measured largest angle, and the share of Normal films at or over
  15°, 20° and 24° in each framing (where a curve line would overrule a Normal call).

Writes benchmarks/results/landmark_framing.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from _machine import header, write_result  # noqa: E402
from spinexr.data.framing import FULL_AP_MAX_ASPECT, FULL_ASPECT, bounded, pad_to_aspect, strip_box, strip_crop  # noqa: E402
from spinexr.data.imread import read_image  # noqa: E402
from spinexr.data.landmarks import read_aasce  # noqa: E402
from spinexr.data.manifest import load_manifest  # noqa: E402
from spinexr.deploy.measure import SpineMeasurer  # noqa: E402
from spinexr.evaluation.landmark_cv import smape  # noqa: E402
from spinexr.geometry.cobb import cobb_angles  # noqa: E402

AASCE = HERE.parent.parent / "shared" / "data" / "aasce-spine-ap"
KAUH = HERE.parent.parent / "shared" / "data" / "kauh-spine-xray"
LINES = (15.0, 20.0, 24.0)


def _largest(m) -> float:
    return float(m.result.largest) if m.result is not None else float("nan")


def _aasce_frames(measurer: SpineMeasurer, records: list) -> dict:
    """SMAPE and largest-angle MAE on held-out AASCE films as they are, cut to a strip, and the strip widened."""
    frames: dict[str, dict[str, list]] = {k: {"pred": [], "true": []} for k in ("as is", "strip", "strip widened")}
    for r in records:
        img, _ = read_image(r.path)
        x0, width = strip_box(img, landmarks=r.landmarks)  # every true corner inside the strip
        strip = img[:, x0:x0 + width]
        wide = pad_to_aspect(strip)
        shift = {"as is": 0, "strip": x0, "strip widened": x0 - (wide.shape[1] - width) // 2}
        for name, film in (("as is", img), ("strip", strip), ("strip widened", wide)):
            m = measurer.measure(film)
            t = cobb_angles(r.landmarks - np.array([shift[name], 0.0]), film.shape[0])
            p = measurer.angles(m.landmarks, film.shape[0])  # as the model file reads its corners
            frames[name]["pred"].append([p.pt.angle, p.mt.angle, p.tl.angle])
            frames[name]["true"].append([t.pt.angle, t.mt.angle, t.tl.angle])
    out = {}
    for name, f in frames.items():
        pr, tr = np.array(f["pred"]), np.array(f["true"])
        out[name] = {"n": len(pr), "smape": smape(pr, tr), "mae_largest": float(np.mean(np.abs(pr.max(axis=1) - tr.max(axis=1))))}
    return out


def _kauh_framing(measurer: SpineMeasurer, k_norm: list, k_sco: list) -> dict:
    """KAUH Normal strips as they are and widened, and Scoliosis AP films as they are and cut to a strip."""
    n_before = np.array([_largest(measurer.measure(im)) for im in k_norm])
    n_after = np.array([_largest(measurer.measure(pad_to_aspect(im))) for im in k_norm])
    s_before = np.array([_largest(measurer.measure(im)) for im in k_sco])
    s_after = np.array([_largest(measurer.measure(strip_crop(im))) for im in k_sco])
    return {
        "kauh_normal_strips": {
            "n": len(k_norm), "median_angle": {"as is": float(np.nanmedian(n_before)),
                                               "widened": float(np.nanmedian(n_after))},
            "median_abs_change": float(np.nanmedian(np.abs(n_after - n_before))),
            "at_or_over": {f"{line:g}": {"as is": float(np.mean(np.nan_to_num(n_before, nan=-1) >= line)),
                                         "widened": float(np.mean(np.nan_to_num(n_after, nan=-1) >= line))}
                           for line in LINES}},
        "kauh_scoliosis_ap": {
            "n": len(k_sco), "median_angle": {"as is": float(np.nanmedian(s_before)),
                                              "strip": float(np.nanmedian(s_after))},
            "median_abs_change": float(np.nanmedian(np.abs(s_after - s_before)))},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="a landmark model file (repeatable)")
    ap.add_argument("--test-films", required=True, help="oof_landmarks.npz of the landmark CV run the models "
                                                        "held these films out of")
    ap.add_argument("--aasce", default=str(AASCE))
    ap.add_argument("--kauh", default=str(KAUH))
    a = ap.parse_args(argv)
    for p in [*a.model, a.test_films]:
        if not Path(p).is_file():
            print(f"{p}: no such file", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    held = {str(Path(p).resolve()) for p in np.load(a.test_films, allow_pickle=False)["paths"]}
    records = [r for r in read_aasce(Path(a.aasce)).records if str(Path(r.path).resolve()) in held]
    kauh = load_manifest(a.kauh).records  # paths and labels; each film is read once, below
    k_norm = [bounded(read_image(r.path)[0]) for r in kauh if r.label == "Normal"]
    k_norm = [im for im in k_norm if im.shape[0] / im.shape[1] > FULL_ASPECT]
    k_sco = [bounded(read_image(r.path)[0]) for r in kauh if r.label == "Scoliosis"]
    k_sco = [im for im in k_sco if im.shape[0] / im.shape[1] <= FULL_AP_MAX_ASPECT]
    results = {}
    for path in a.model:
        measurer = SpineMeasurer(path)
        aasce = _aasce_frames(measurer, records)
        results[str(path)] = r0 = {"aasce_held_out": aasce, **_kauh_framing(measurer, k_norm, k_sco)}
        print(f"{path}: AASCE SMAPE as is {aasce['as is']['smape']:.2f}, strip {aasce['strip']['smape']:.2f}, "
              f"widened {aasce['strip widened']['smape']:.2f}; KAUH Normal median {r0['kauh_normal_strips']['median_angle']}"
              f" change {r0['kauh_normal_strips']['median_abs_change']:.1f}; Scoliosis "
              f"{r0['kauh_scoliosis_ap']['median_angle']}", flush=True)
    write_result("landmark_framing.json", {**header("landmark_framing", argv), "models": results,
                                           "wall_seconds": time.perf_counter() - t0})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
