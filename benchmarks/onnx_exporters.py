"""Which ONNX exporter spinexr uses: torch.export ("dynamo") against TorchScript, on the bundled models.

    python benchmarks/onnx_exporters.py --films 8 --repeat 20

For each bundled model file (classifier, landmark model, vertebra refiner) and each exporter, in turn in
one process: the export's wall time (the export functions' own graph check and parity check included),
the graph's node count and file size, the largest difference from PyTorch (the classifier's calibrated
probabilities and the landmark model's corners on KAUH films; the refiner's corners on random crops) and
onnxruntime's latency a film (one thread, median of ``--repeat`` runs after a warm-up). Writes
``benchmarks/results/onnx_exporters.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import header, write_result  # noqa: E402
from spinexr.data.imread import list_images, read_image  # noqa: E402
from spinexr.deploy import export  # noqa: E402
from spinexr.deploy.bundled import bundled_path  # noqa: E402
from spinexr.models.files import load_landmark_model, onnx_session  # noqa: E402

KAUH = HERE.parents[1] / "shared" / "data" / "kauh-spine-xray"


def _latency(sess, feed: dict, repeat: int) -> float:
    out_names = [o.name for o in sess.get_outputs()]
    sess.run(out_names, feed)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        sess.run(out_names, feed)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _one(kind: str, films: list[Path], repeat: int, work: Path) -> dict:
    import onnx

    model = bundled_path(kind)
    out = work / f"{kind}-{export.exporter_name()}.onnx"
    t0 = time.perf_counter()
    if kind == "classifier":
        rep = export.export_onnx(model, out, parity_images=films)
        diff = rep["max_abs_prob_diff"]
    elif kind == "landmarks":
        rep = export.export_landmark_onnx(model, out, parity_images=films)
        diff = rep["max_abs_px_diff"]
    else:
        rep = export.export_refiner_onnx(model, out)
        diff = rep["max_abs_px_diff"]
    seconds = time.perf_counter() - t0
    graph = onnx.load(str(out))
    sess, _ = onnx_session(out, threads=1)
    inp = sess.get_inputs()[0]
    if kind == "refiner":
        crop = int(inp.shape[-1]) if isinstance(inp.shape[-1], int) else 64
        feed = {inp.name: np.random.default_rng(0).random((17, 1, crop, crop), dtype=np.float32)}
    elif kind == "landmarks":
        pred, _ = load_landmark_model(model)
        x8, _ = pred.contract.to_input(read_image(films[0])[0])
        feed = {inp.name: x8.astype(np.float32)[None, None] / 255.0}
    else:
        from spinexr.deploy.predictor import Predictor

        feed = {inp.name: Predictor(model).prepare(read_image(films[0])[0])[0]}
    return {"export_s": seconds, "nodes": len(graph.graph.node), "bytes": out.stat().st_size,
            "opset": int(graph.opset_import[0].version), "max_diff": diff,
            "diff_unit": "probability" if kind == "classifier" else "input px" if kind == "landmarks" else "crop px",
            "ort_ms_per_call": _latency(sess, feed, repeat), "call": "17 crops" if kind == "refiner" else "1 film"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--films", type=int, default=8, help="KAUH films for the parity checks and the latency")
    ap.add_argument("--repeat", type=int, default=20, help="onnxruntime runs timed per model")
    a = ap.parse_args(argv)
    if not KAUH.is_dir():
        print(f"{KAUH}: the KAUH films are not here", file=sys.stderr)
        return 2
    films = sorted(list_images(KAUH))[:: max(1, 338 // a.films)][: a.films]
    results: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("classifier", "landmarks", "refiner"):
            results[kind] = {}
            for name in export.EXPORTER_NAMES:
                export.EXPORTER = name
                results[kind][name] = _one(kind, films, a.repeat, Path(tmp))
                r = results[kind][name]
                print(f"{kind:<10} {name:<11} export {r['export_s']:6.1f} s  {r['nodes']:5d} nodes  "
                      f"diff {r['max_diff']:.1e} {r['diff_unit']}  ort {r['ort_ms_per_call']:7.1f} ms/{r['call']}")
    ratios = {k: {"export_time_dynamo_over_torchscript": v["dynamo"]["export_s"] / v["torchscript"]["export_s"],
                  "ort_latency_dynamo_over_torchscript": v["dynamo"]["ort_ms_per_call"] / v["torchscript"]["ort_ms_per_call"]}
              for k, v in results.items()}
    write_result("onnx_exporters.json", {**header("onnx_exporters", argv), "films": len(films),
                                          "repeat": a.repeat, "models": results, "ratios": ratios})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
