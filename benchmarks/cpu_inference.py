"""CPU inference: PyTorch eager against onnxruntime (FP32 and INT8), per backbone, same images, one run.

Per backbone (attention head included, each at its own input size, random weights as in the
plain probe) this measures batch-1 latency p50/p95 on real KAUH images for

* PyTorch eager (``torch.set_num_threads(threads)``),
* onnxruntime FP32 (``intra_op_num_threads = threads``),
* onnxruntime INT8 (static QDQ quantization calibrated on KAUH images).

With ``--kauh-run`` (a ``spinexr cv`` run folder on KAUH, e.g. the reduced CPU benchmark) it also
measures the accuracy of each fold-0 model on its own held-out fold, FP32 against INT8.

It also places each backend against this CPU's FP32 arithmetic peak: the model's forward FLOPs
(``torch.utils.flop_counter``) over its p50 latency, against a 2048^3 SGEMM in PyTorch and in
onnxruntime with the same threads. FP32 onnxruntime cannot beat eager by more than the ratio of that
peak to eager's achieved rate. The backends and the SGEMMs take turns image by image, so background
load on a shared machine hits them all alike.

With ``--service`` it starts ``spinexr serve`` in a subprocess on loopback and measures
``POST /v1/predict`` at concurrency 1 and 8, with micro-batching (``--max-batch 8``) and without
(``--max-batch 1``), against the bare model twice: batch-1 latency on an idle machine, and the same
model behind the same micro-batcher driven in-process by the same number of concurrent callers
(what the service would cost with no HTTP, upload or decoding).

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
from typing import Any

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


def _pct_row(lat: list[float]) -> dict[str, float]:
    return {"p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95)}


def time_interleaved(fns: dict, xs: list, warmup: int = 3) -> tuple[dict[str, dict], dict[str, list[float]]]:
    """Time several callables on the same inputs, taking turns image by image.

    The machine is shared and noisy: interleaving puts every backend under the same background load,
    so their ratios hold even when the absolute figures move.
    """
    for x in xs[:warmup]:
        for f in fns.values():
            f(x)
    ts: dict[str, list[float]] = {k: [] for k in fns}
    for x in xs:
        for k, f in fns.items():
            t0 = time.perf_counter()
            f(x)
            ts[k].append(time.perf_counter() - t0)
    return {k: {**_pct_row(v), "min_ms": pct(v, 0), "n": len(v)} for k, v in ts.items()}, ts


def sgemm_fns(threads: int, n: int = 2048) -> tuple[dict, float]:
    """An n^3 FP32 matrix product in PyTorch and in onnxruntime (same threads), and its FLOPs."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    a, b = torch.rand(n, n), torch.rand(n, n)
    g = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"])], "sgemm",
                          [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "AB"],
                          [helper.make_tensor_value_info("C", TensorProto.FLOAT, [n, n])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    an, bn = a.numpy(), b.numpy()
    return {"sgemm_torch": lambda _: a @ b,
            "sgemm_onnxruntime": lambda _: sess.run(None, {"A": an, "B": bn})}, 2.0 * n ** 3


def forward_gflop(deploy, size: int) -> float:
    """FP32 forward GFLOP of one image through the deployed graph (convolutions, matmuls)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        deploy(torch.rand(1, 1, size, size))
    return fc.get_total_flops() / 1e9


def build(name: str, work: Path, data, calib_paths, parity_paths) -> tuple[Path, Path, Path]:
    """A random-weight model file (with a fitted OOD detector), its ONNX export and INT8 model."""
    import torch

    from spinexr.deploy.export import export_onnx, quantize_int8
    from spinexr.engine.inference import extract_features
    from spinexr.models import create_model, get_model_entry
    from spinexr.models.files import build_metadata, save_model
    from spinexr.models.ood import fit_ood

    torch.manual_seed(0)
    model = create_model(name, attention="mhsa").eval()
    contract = get_model_entry(name).data_config
    s = contract.input_size
    idx = list(range(0, len(data.labels), max(1, len(data.labels) // 48)))[:48]
    ood = fit_ood(extract_features(model, contract, data.tensors[s], idx, torch.device("cpu")), data.labels[idx])
    meta = build_metadata(model, contract=contract, tta_flip=False, temperature=1.0,
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

    from spinexr.data.dataset import prepare_dataset
    from spinexr.data.splits import group_kfold
    from spinexr.deploy.export import export_onnx, quantize_int8
    from spinexr.deploy.predictor import Predictor
    cfg = json.loads((run / "config.json").read_text())
    out = {}
    for mf in sorted((run / "models").glob("*.safetensors")):
        name = mf.stem
        p_t = Predictor(mf)
        data = prepare_dataset(data_dir, [p_t.size], p_t.contract.resize, progress=False)
        tr, te = group_kfold(data.labels, data.groups, cfg["cv"]["folds"], seed=cfg["train"]["seed"])[0]
        onnx, int8 = work / f"kauh_{name}.onnx", work / f"kauh_{name}.int8.onnx"
        export_onnx(mf, onnx, parity_images=[data.paths[i] for i in te[:8]])
        quantize_int8(onnx, int8, [data.paths[i] for i in tr[:: max(1, len(tr) // 64)][:64]])
        x = data.tensors[p_t.size][te].numpy().astype(np.float32) / 255.0
        res: dict = {}
        runs = {}
        for tag, path in (("fp32", onnx), ("int8", int8)):
            p = Predictor(path, threads=threads)
            probs = np.concatenate([p.run(x[i:i + 1])[1] for i in range(len(x))])
            res[f"{tag}_accuracy"] = float((probs.argmax(1) == data.labels[te]).mean())
            runs[tag] = p.run
        t, _ = time_interleaved(runs, [x[i:i + 1] for i in range(len(x))])
        res["fp32_latency"], res["int8_latency"] = t["fp32"], t["int8"]
        res["n_test"] = int(len(te))
        res["accuracy_drop_points"] = 100 * (res["fp32_accuracy"] - res["int8_accuracy"])
        res["int8_speedup_p50"] = res["fp32_latency"]["p50_ms"] / res["int8_latency"]["p50_ms"]
        res["image_size"] = p_t.size
        out[name] = res
        print(f"KAUH {name}@{p_t.size}: fp32 {res['fp32_accuracy']:.3f} int8 {res['int8_accuracy']:.3f} "
              f"({res['int8_speedup_p50']:.2f}x)", flush=True)
    return out


def bare_under_load(onnx: Path, images: list, threads: int, conc: int, n: int, max_batch: int) -> dict:
    """The model alone behind the service's micro-batcher, driven in-process by ``conc`` callers."""
    from spinexr.deploy.batching import MicroBatcher
    from spinexr.deploy.predictor import Predictor
    b = MicroBatcher(Predictor(onnx, threads=threads), max_batch=max_batch, max_queue=conc + 1)

    def call(i: int) -> float:
        t0 = time.perf_counter()
        b.predict(images[i % len(images)])
        return time.perf_counter() - t0

    with ThreadPoolExecutor(conc) as ex:
        list(ex.map(call, range(2 * conc)))
        t0 = time.perf_counter()
        lat = list(ex.map(call, range(n)))
        wall = time.perf_counter() - t0
    return {**_pct_row(lat), "requests": n, "images_per_s": n / wall,
            "model_calls_by_batch_size": {str(k): v for k, v in sorted(b.batch_sizes.items())}}


def service(model: Path, onnx: Path, image: Path, threads: int, max_batch: int) -> dict:
    """``spinexr serve`` in a subprocess on loopback: /v1/predict at concurrency 1 and 8."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([sys.executable, "-m", "spinexr", "serve", str(model), "--onnx", str(onnx), "--port",
                             str(port), "--threads", str(threads), "--max-batch", str(max_batch)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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

        def call(_: int) -> tuple[int, float]:
            with httpx.Client(timeout=120) as c:
                t0 = time.perf_counter()
                r = c.post(url + "/v1/predict", files={"file": (image.name, data, "image/jpeg")})
                return r.status_code, time.perf_counter() - t0

        for i in range(5):
            call(i)
        res: dict = {"max_batch": max_batch}
        for conc, n in ((1, 60), (8, 300)):
            with ThreadPoolExecutor(conc) as ex:
                t0 = time.perf_counter()
                rows = list(ex.map(call, range(n)))
                wall = time.perf_counter() - t0
            res[f"concurrency_{conc}"] = {"requests": n, "errors": sum(r[0] != 200 for r in rows),
                                          **_pct_row([r[1] for r in rows]), "requests_per_s": n / wall}
        res["model_calls_by_batch_size"] = httpx.get(url + "/v1/model").json()["serving"]["model_calls_by_batch_size"]
        return res
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def measure(eager, fp32, q8, xs: list, sg: dict, sg_flop: float) -> dict:
    """One interleaved timing round of one backbone: latencies, speed-ups and the roofline."""
    import numpy as np

    t, raw = time_interleaved({"eager": eager.run, "onnxruntime_fp32": fp32.run, "onnxruntime_int8": q8.run,
                               **sg}, xs)
    peak = {"torch_gflops": sg_flop / t["sgemm_torch"]["p50_ms"] / 1e6,
            "onnxruntime_gflops": sg_flop / t["sgemm_onnxruntime"]["p50_ms"] / 1e6}
    # the best SGEMM of the run: background load only ever adds time, so the minimum is the machine's own rate
    best = {"torch_gflops": sg_flop / t["sgemm_torch"]["min_ms"] / 1e6,
            "onnxruntime_gflops": sg_flop / t["sgemm_onnxruntime"]["min_ms"] / 1e6}
    r = {"image_size": eager.size, "eager": t["eager"], "onnxruntime_fp32": t["onnxruntime_fp32"],
         "onnxruntime_int8": t["onnxruntime_int8"], "sgemm_peak_same_run": peak, "sgemm_best_same_run": best,
         "sgemm_timing": {k: t[k] for k in sg}}
    r["ort_speedup_p50"] = r["eager"]["p50_ms"] / r["onnxruntime_fp32"]["p50_ms"]
    r["ort_speedup_best"] = r["eager"]["min_ms"] / r["onnxruntime_fp32"]["min_ms"]
    r["ort_speedup_paired_median"] = float(np.median(np.asarray(raw["eager"]) / np.asarray(raw["onnxruntime_fp32"])))
    r["int8_speedup_over_fp32_p50"] = r["onnxruntime_fp32"]["p50_ms"] / r["onnxruntime_int8"]["p50_ms"]
    r["int8_speedup_over_eager_p50"] = r["eager"]["p50_ms"] / r["onnxruntime_int8"]["p50_ms"]
    gf = forward_gflop(eager.module, eager.size)
    r["roofline"] = {"forward_gflop": gf,
                     "eager_gflops": gf / r["eager"]["p50_ms"] * 1e3,
                     "onnxruntime_fp32_gflops": gf / r["onnxruntime_fp32"]["p50_ms"] * 1e3,
                     "eager_fraction_of_peak": gf / r["eager"]["p50_ms"] * 1e3 / peak["torch_gflops"],
                     "onnxruntime_fraction_of_peak": gf / r["onnxruntime_fp32"]["p50_ms"] * 1e3
                     / peak["onnxruntime_gflops"],
                     "onnxruntime_rate_needed_for_2x_fraction_of_peak": 2 * gf / r["eager"]["p50_ms"] * 1e3
                     / peak["onnxruntime_gflops"],
                     # the same at the run's best times (the machine with the least background load)
                     "best_eager_fraction_of_best_peak": gf / r["eager"]["min_ms"] * 1e3 / best["torch_gflops"],
                     "best_onnxruntime_fraction_of_best_peak": gf / r["onnxruntime_fp32"]["min_ms"] * 1e3
                     / best["onnxruntime_gflops"]}
    agree = [int(np.argmax(fp32.run(x)[1]) == np.argmax(q8.run(x)[1])) for x in xs]
    r["int8_fp32_label_agreement"] = float(np.mean(agree))
    return r


def landmark_timing(model: Path, films: list[Path], threads: int, work: Path) -> dict:
    """Per-film latency of the landmark model and the Cobb angles: PyTorch eager and onnxruntime FP32,
    timed in turn film by film; 'total' adds the decoding of the file."""
    import numpy as np
    import torch

    from spinexr.data.imread import read_image
    from spinexr.deploy.export import export_landmark_onnx
    from spinexr.geometry.cobb import cobb_angles
    from spinexr.geometry.plausibility import implausibility
    from spinexr.models.files import load_landmark_model, onnx_session

    pred, meta = load_landmark_model(model)
    weight = float(meta.get("centreline_weight", 0.0))  # read as the model file says
    onnx = work / "landmarks.onnx"
    rep = export_landmark_onnx(model, onnx, parity_images=films[:4])
    sess, _ = onnx_session(onnx, threads)
    c = pred.contract

    def eager(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return pred(torch.from_numpy(x))[0].numpy()

    def ort(x: np.ndarray) -> np.ndarray:
        return sess.run(["landmarks"], {"image": x})[0]

    ms: dict[str, list[float]] = {"decode": [], "eager": [], "onnxruntime": []}
    for f in films:
        t0 = time.perf_counter()
        img, _ = read_image(f)
        ms["decode"].append((time.perf_counter() - t0) * 1e3)
        for name, run in (("eager", eager), ("onnxruntime", ort)):
            t0 = time.perf_counter()
            x8, pl = c.to_input(img)
            pts = run(x8.astype(np.float32)[None, None] / 255.0)
            v = pl.points_to_original(pts[0]).reshape(17, 4, 2)
            if not implausibility(v):
                cobb_angles(v, img.shape[0], weight)
            ms[name].append((time.perf_counter() - t0) * 1e3)
    out = {"model": str(model), "input": f"{c.height}x{c.width}", "encoder": meta["encoder"], "films": len(films),
           "threads": threads, "onnx_parity_px": rep.get("max_abs_px_diff")}
    for k, v in ms.items():
        out[k] = {"p50_ms": float(np.percentile(v, 50)), "p95_ms": float(np.percentile(v, 95))}
    out["total_onnxruntime_p50_ms"] = out["decode"]["p50_ms"] + out["onnxruntime"]["p50_ms"]
    out["target_ms"] = 300
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--models", default="xception,inception_v3,densenet121")
    ap.add_argument("--images", type=int, default=40, help="timed images per backend")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds per backbone; the median round is reported")
    ap.add_argument("--out", default="cpu_inference.json", help="file name under benchmarks/results/")
    ap.add_argument("--kauh-run", help="a spinexr cv run on KAUH, for INT8 accuracy")
    ap.add_argument("--service", action="store_true", help="also load-test spinexr serve (densenet121, onnxruntime)")
    ap.add_argument("--landmarks", help="a landmark model file: time landmarks + Cobb angles per film instead")
    ap.add_argument("--landmark-data", default=str(DEFAULT_DATA.parent / "aasce-spine-ap" / "images"),
                    help="films for the landmark timing")
    return ap


def _landmarks_main(a: argparse.Namespace, argv: list[str] | None) -> int:
    from spinexr.data.imread import list_images

    films = list_images(Path(a.landmark_data))
    films = films[:: max(1, len(films) // a.images)][: a.images]
    with tempfile.TemporaryDirectory() as d:
        res = {**header("cpu_inference_landmarks", argv), "landmarks": landmark_timing(Path(a.landmarks), films,
                                                                                         a.threads, Path(d))}
    write_result("cpu_inference_landmarks.json" if a.out == "cpu_inference.json" else a.out, res)
    lm = res["landmarks"]
    print(f"landmarks + angles per film ({lm['input']}): eager p50 {lm['eager']['p50_ms']:.0f} ms, onnxruntime p50 "
          f"{lm['onnxruntime']['p50_ms']:.0f} ms; with decoding {lm['total_onnxruntime_p50_ms']:.0f} ms")
    return 0


def _timed_rounds(models: list[str], built: dict, n_rounds: int, sg: Any, sg_flop: Any) -> dict:
    """Each backbone timed in ``n_rounds`` rounds spread over time (one noisy spell does not decide); the
    median round by ONNX Runtime's speed-up is reported, with every round beside it."""
    rounds: dict[str, list[dict]] = {m: [] for m in models}
    for k in range(n_rounds):
        for m in models:
            eager, fp32, q8, xs = built[m]
            r = measure(eager, fp32, q8, xs, sg, sg_flop)
            rounds[m].append(r)
            rf, peak = r["roofline"], r["sgemm_peak_same_run"]
            print(f"round {k + 1} {m}@{eager.size}: eager {r['eager']['p50_ms']:.1f} ms, ort "
                  f"{r['onnxruntime_fp32']['p50_ms']:.1f} ms ({r['ort_speedup_p50']:.2f}x, paired "
                  f"{r['ort_speedup_paired_median']:.2f}x, best {r['ort_speedup_best']:.2f}x), int8 "
                  f"{r['onnxruntime_int8']['p50_ms']:.1f} ms ({r['int8_speedup_over_fp32_p50']:.2f}x over fp32); "
                  f"{rf['forward_gflop']:.1f} GFLOP: eager at {rf['eager_fraction_of_peak']:.0%} of SGEMM peak "
                  f"({peak['torch_gflops']:.0f} GFLOP/s), ort at {rf['onnxruntime_fraction_of_peak']:.0%} "
                  f"({peak['onnxruntime_gflops']:.0f})", flush=True)
    results = {}
    for m in models:
        rs = sorted(rounds[m], key=lambda r: r["ort_speedup_p50"])
        results[m] = {**rs[len(rs) // 2], "rounds": [
            {"eager_p50_ms": r["eager"]["p50_ms"], "onnxruntime_fp32_p50_ms": r["onnxruntime_fp32"]["p50_ms"],
             "onnxruntime_int8_p50_ms": r["onnxruntime_int8"]["p50_ms"], "ort_speedup_p50": r["ort_speedup_p50"],
             "int8_speedup_over_fp32_p50": r["int8_speedup_over_fp32_p50"],
             "sgemm_torch_gflops": r["sgemm_peak_same_run"]["torch_gflops"]} for r in rounds[m]]}
    return results


def _service_section(files: dict, built: dict, film: Path, threads: int) -> dict:
    """``spinexr serve`` under load against the bare model, each measured right before the other."""
    from spinexr.data.imread import read_image

    mf, onnx = files["densenet121"]
    img = read_image(film)[0]
    sv: dict = {"model": "densenet121 (onnxruntime fp32)", "image": str(film)}
    p_bare = built["densenet121"][1]  # the FP32 onnxruntime predictor timed above
    x_bare = p_bare.prepare(img)[0]
    for mb in (1, 8):
        # the bare batch-1 latency is measured right before each service run, under the same background load
        b, _ = time_interleaved({"bare": p_bare.run}, [x_bare] * 40)
        b = b["bare"]
        srv = service(mf, onnx, film, threads, mb)
        bare = bare_under_load(onnx, [img], threads, 8, 300, mb)
        c8 = srv["concurrency_8"]
        srv["bare_model_batch1"] = b
        srv["bare_model_same_load"] = bare
        srv["concurrency_1"]["p95_over_bare_batch1_p95"] = srv["concurrency_1"]["p95_ms"] / b["p95_ms"]
        c8["p95_over_bare_batch1_p95"] = c8["p95_ms"] / b["p95_ms"]
        c8["p95_over_bare_same_load_p95"] = c8["p95_ms"] / bare["p95_ms"]
        sv[f"max_batch_{mb}"] = srv
        print(f"service max_batch {mb}: c1 p95 {srv['concurrency_1']['p95_ms']:.0f} ms "
              f"({srv['concurrency_1']['p95_over_bare_batch1_p95']:.2f}x bare), c8 p95 {c8['p95_ms']:.0f} ms "
              f"({c8['p95_over_bare_batch1_p95']:.1f}x bare batch-1, {c8['p95_over_bare_same_load_p95']:.2f}x "
              f"bare under the same load, {c8['requests_per_s']:.1f} req/s vs bare {bare['images_per_s']:.1f}/s)",
              flush=True)
    return sv


def main(argv: list[str] | None = None) -> int:
    import torch

    from spinexr.data.dataset import prepare_dataset
    from spinexr.data.imread import read_image
    from spinexr.deploy.predictor import Predictor
    from spinexr.models import get_model_entry

    a = _parser().parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.landmarks:
        return _landmarks_main(a, argv)
    models = a.models.split(",")
    sizes = sorted({get_model_entry(m).input_size for m in models})
    data = prepare_dataset(a.data, sizes, progress=False)
    step = max(1, len(data.paths) // a.images)
    timed = list(range(0, len(data.paths), step))[: a.images]
    calib = [data.paths[i] for i in range(1, len(data.paths), max(1, len(data.paths) // 32))][:32]
    parity = [data.paths[i] for i in timed[:8]]
    files = {}
    sg, sg_flop = sgemm_fns(a.threads)
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        built = {}
        for m in models:
            mf, onnx, int8 = build(m, work, data, calib, parity)
            files[m] = (mf, onnx)
            eager, fp32, q8 = Predictor(mf), Predictor(onnx, threads=a.threads), Predictor(int8, threads=a.threads)
            built[m] = (eager, fp32, q8, [eager.prepare(read_image(data.paths[i])[0])[0] for i in timed])
        out = {**header("cpu_inference", argv), "cpu_flags": cpu_flags(), "threads": a.threads, "batch": 1,
               "sgemm_n": 2048, "results": _timed_rounds(models, built, a.rounds, sg, sg_flop),
               "targets": {"ort_speedup": 2.0, "int8_speedup_over_fp32": 1.5, "int8_accuracy_drop_points": 1.0,
                           "service_p95_over_bare": 2.0}}
        if a.kauh_run:
            out["kauh_int8"] = int8_accuracy(Path(a.kauh_run), a.data, a.threads, work)
        if a.service and "densenet121" in files:
            out["service"] = _service_section(files, built, data.paths[timed[0]], a.threads)
    write_result(a.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
