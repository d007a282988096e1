"""CPU inference: PyTorch eager against onnxruntime (FP32 and INT8), per backbone, same images, one run.

Per backbone (attention head included, each at its own input size, random weights as in the
plain probe) this measures batch-1 latency p50/p95 on real KAUH images for

* PyTorch eager (``torch.set_num_threads(threads)``),
* onnxruntime FP32 (``intra_op_num_threads = threads``),
* onnxruntime INT8 (static QDQ quantization calibrated on KAUH images).

With ``--kauh-run`` (a ``spinexr cv`` run folder on KAUH, e.g. the reduced CPU benchmark) it also
measures the accuracy of each fold-0 model on its own held-out fold, FP32 against INT8.

With ``--service`` it starts ``spinexr serve`` in a subprocess on loopback and measures
``POST /v1/predict`` at concurrency 1 and 8 against the bare model latency.

    python benchmarks/cpu_inference.py --kauh-run runs/bench_kauh_cv_cpu_reduced --service

Writes benchmarks/results/cpu_inference.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import header, write_result  # noqa: E402

DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "kauh-spine-xray"


def cpu_flags() -> dict[str, bool]:
    flags: set[str] = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {f: f in flags for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")}


def pct(v: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(v) * 1e3, q))


def time_backend(pred, xs, warmup: int = 3) -> dict[str, float]:
    for x in xs[:warmup]:
        pred.run(x)
    ts = []
    for x in xs:
        t0 = time.perf_counter()
        pred.run(x)
        ts.append(time.perf_counter() - t0)
    return {"p50_ms": pct(ts, 50), "p95_ms": pct(ts, 95), "n": len(ts)}


def build(name: str, work: Path, data, calib_paths, parity_paths) -> tuple[Path, Path, Path]:
    """A random-weight model file (with a fitted OOD detector), its ONNX export and INT8 model."""
    import torch

    from spinexr.cv import model_input_size
    from spinexr.export import export_onnx, quantize_int8
    from spinexr.modelfile import build_metadata, save_model
    from spinexr.models import GRAY_MEAN, GRAY_STD, create_model
    from spinexr.ood import extract_features, fit_ood

    torch.manual_seed(0)
    model = create_model(name, attention="mhsa").eval()
    s = model_input_size(name, None)
    idx = list(range(0, len(data.labels), max(1, len(data.labels) // 48)))[:48]
    ood = fit_ood(extract_features(model, data.tensors[s], idx, torch.device("cpu"), GRAY_MEAN, GRAY_STD),
                  data.labels[idx])
    meta = build_metadata(model, input_size=s, mean=GRAY_MEAN, std=GRAY_STD, resize="letterbox", temperature=1.0,
                          weights="none (random, for timing)")
    mf = save_model(model, meta, work / f"{name}.safetensors", ood=ood)
    onnx = work / f"{name}.onnx"
    export_onnx(mf, onnx, parity_images=parity_paths)
    int8 = work / f"{name}.int8.onnx"
    quantize_int8(onnx, int8, calib_paths)
    return mf, onnx, int8


def int8_accuracy(run: Path, data_dir: str, threads: int, work: Path) -> dict[str, dict]:
    """FP32 vs INT8 accuracy of each fold-0 model of a KAUH CV run on its held-out fold."""
    import numpy as np

    from spinexr.deploy import Predictor
    from spinexr.export import export_onnx, quantize_int8
    from spinexr.preprocess import prepare_dataset
    from spinexr.splits import group_kfold

    cfg = json.loads((run / "config.json").read_text())
    out = {}
    for mf in sorted((run / "models").glob("*.safetensors")):
        name = mf.stem
        p_t = Predictor(mf)
        data = prepare_dataset(data_dir, [p_t.size], p_t.meta["resize"], progress=False)
        tr, te = group_kfold(data.labels, data.groups, cfg["cv"]["folds"], seed=cfg["train"]["seed"])[0]
        onnx, int8 = work / f"kauh_{name}.onnx", work / f"kauh_{name}.int8.onnx"
        export_onnx(mf, onnx, parity_images=[data.paths[i] for i in te[:8]])
        quantize_int8(onnx, int8, [data.paths[i] for i in tr[:: max(1, len(tr) // 64)][:64]])
        x = data.tensors[p_t.size][te].numpy().astype(np.float32) / 255.0
        res = {}
        for tag, path in (("fp32", onnx), ("int8", int8)):
            p = Predictor(path, threads=threads)
            probs = np.concatenate([p.run(x[i:i + 1])[1] for i in range(len(x))])
            res[f"{tag}_accuracy"] = float((probs.argmax(1) == data.labels[te]).mean())
            res[f"{tag}_latency"] = time_backend(p, [x[i:i + 1] for i in range(len(x))])
        res["n_test"] = int(len(te))
        res["accuracy_drop_points"] = 100 * (res["fp32_accuracy"] - res["int8_accuracy"])
        res["int8_speedup_p50"] = res["fp32_latency"]["p50_ms"] / res["int8_latency"]["p50_ms"]
        res["image_size"] = p_t.size
        out[name] = res
        print(f"KAUH {name}@{p_t.size}: fp32 {res['fp32_accuracy']:.3f} int8 {res['int8_accuracy']:.3f} "
              f"({res['int8_speedup_p50']:.2f}x)", flush=True)
    return out


def service(model: Path, onnx: Path, image: Path, threads: int, bare_p50: float, bare_p95: float) -> dict:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([sys.executable, "-m", "spinexr", "serve", str(model), "--onnx", str(onnx), "--port",
                             str(port), "--threads", str(threads)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("server did not start")
            time.sleep(0.2)
        data = image.read_bytes()

        def call(_: int) -> tuple[int, float, float]:
            with httpx.Client(timeout=120) as c:
                t0 = time.perf_counter()
                r = c.post(url + "/v1/predict", files={"file": (image.name, data, "image/jpeg")})
                dt = time.perf_counter() - t0
            return r.status_code, dt, r.json()["timing_ms"]["inference"] if r.status_code == 200 else float("nan")

        for i in range(5):
            call(i)
        res = {}
        for conc, n in ((1, 60), (8, 300)):
            with ThreadPoolExecutor(conc) as ex:
                rows = list(ex.map(call, range(n)))
            lat = [r[1] for r in rows]
            res[f"concurrency_{conc}"] = {"requests": n, "errors": sum(r[0] != 200 for r in rows),
                                          "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95),
                                          "p95_over_bare_p95": pct(lat, 95) / bare_p95,
                                          "server_inference_p50_ms": float(sorted(r[2] for r in rows)[len(rows) // 2])}
        res["bare_model_p50_ms"], res["bare_model_p95_ms"] = bare_p50, bare_p95
        return res
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from spinexr.cv import model_input_size
    from spinexr.deploy import Predictor
    from spinexr.imread import read_image
    from spinexr.preprocess import prepare_dataset

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--models", default="xception,inception_v3,densenet121")
    ap.add_argument("--images", type=int, default=40, help="timed images per backend")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kauh-run", help="a spinexr cv run on KAUH, for INT8 accuracy")
    ap.add_argument("--service", action="store_true", help="also load-test spinexr serve (densenet121, onnxruntime)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    models = a.models.split(",")
    sizes = sorted({model_input_size(m, None) for m in models})
    data = prepare_dataset(a.data, sizes, progress=False)
    step = max(1, len(data.paths) // a.images)
    timed = list(range(0, len(data.paths), step))[: a.images]
    calib = [data.paths[i] for i in range(1, len(data.paths), max(1, len(data.paths) // 32))][:32]
    parity = [data.paths[i] for i in timed[:8]]
    results, files = {}, {}
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        for m in models:
            mf, onnx, int8 = build(m, work, data, calib, parity)
            files[m] = (mf, onnx)
            eager, fp32, q8 = Predictor(mf), Predictor(onnx, threads=a.threads), Predictor(int8, threads=a.threads)
            xs = [eager.prepare(read_image(data.paths[i])[0])[0] for i in timed]
            r = {"image_size": eager.size, "eager": time_backend(eager, xs), "onnxruntime_fp32": time_backend(fp32, xs),
                 "onnxruntime_int8": time_backend(q8, xs)}
            r["ort_speedup_p50"] = r["eager"]["p50_ms"] / r["onnxruntime_fp32"]["p50_ms"]
            r["int8_speedup_over_fp32_p50"] = r["onnxruntime_fp32"]["p50_ms"] / r["onnxruntime_int8"]["p50_ms"]
            agree = [int(np.argmax(fp32.run(x)[1]) == np.argmax(q8.run(x)[1])) for x in xs]
            r["int8_fp32_label_agreement"] = float(np.mean(agree))
            results[m] = r
            print(f"{m}@{eager.size}: eager {r['eager']['p50_ms']:.1f} ms, ort {r['onnxruntime_fp32']['p50_ms']:.1f} ms "
                  f"({r['ort_speedup_p50']:.2f}x), int8 {r['onnxruntime_int8']['p50_ms']:.1f} ms "
                  f"({r['int8_speedup_over_fp32_p50']:.2f}x over fp32)", flush=True)
        out = {**header("cpu_inference", argv), "cpu_flags": cpu_flags(), "threads": a.threads, "batch": 1, "results": results,
               "targets": {"ort_speedup": 2.0, "int8_speedup_over_fp32": 1.5, "int8_accuracy_drop_points": 1.0,
                           "service_p95_over_bare": 2.0}}
        if a.kauh_run:
            out["kauh_int8"] = int8_accuracy(Path(a.kauh_run), a.data, a.threads, work)
        if a.service and "densenet121" in files:
            mf, onnx = files["densenet121"]
            b = results["densenet121"]["onnxruntime_fp32"]
            out["service"] = {"model": "densenet121 (onnxruntime fp32)",
                              **service(mf, onnx, data.paths[timed[0]], a.threads, b["p50_ms"], b["p95_ms"])}
            print("service:", json.dumps(out["service"]), flush=True)
    write_result("cpu_inference.json", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
