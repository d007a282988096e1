"""Archive throughput: films per second and peak memory of ``predict`` over a folder, side by side in one run.

    python benchmarks/archive_predict.py --films 500 --modes today,stream,onnx,ray
    python benchmarks/archive_predict.py --films 500,5000 --tag two_sizes
    python benchmarks/archive_predict.py --films 500 --modes today,onnx-j2 --repeat 3 --tag repeat

Modes (the bundled models each time, a fresh process each, taking turns per size):

* ``today``: the film-at-a-time path every result kept in memory and written at the end
  (``spinexr.pipeline.driver.predict_paths`` + ``write_documents``, as ``predict`` ran before the stream);
* ``stream``: ``spinexr predict DIR --out OUT.csv`` (PyTorch, batches of 16, one decoding worker);
* ``onnx``: the same with ``--backend onnx`` (both models on ONNX Runtime);
* ``ray``: ``--ray`` (a local Ray cluster with this machine's CPUs, one CPU per actor, ONNX Runtime);
* ``MODE-wN``: a stream mode with ``--workers N`` decoding processes (``-w0``: decoding in the main process);
* ``MODE-jN``: a stream mode with ``--jobs N``: N processes each running the whole pipeline on its own
  batches with the machine's CPUs shared among them (``onnx-j2``: two one-thread ONNX Runtime pipelines).

With ``--repeat N`` the modes take turns N times (rounds), each ratio taken against today's path of the
same round, so a slow minute of a shared machine weighs on both sides of one ratio.

The archive is made of the shared KAUH and AASCE films, linked under new names until it holds N
films. Wall time includes each process's start-up (the ONNX exports are made before timing). Peak
memory is the largest resident set of the process tree (Ray's own processes included), sampled
every 0.2 s from /proc. Writes ``benchmarks/results/archive_predict[_TAG].json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import header, write_result  # noqa: E402

SHARED = HERE.parent.parent / "shared" / "data"
SOURCES = (SHARED / "kauh-spine-xray", SHARED / "aasce-spine-ap" / "images")
TODAY = """
import sys
from pathlib import Path
from spinexr.deploy.document import write_documents
from spinexr.pipeline import Pipeline
from spinexr.pipeline.driver import predict_paths
from spinexr.pipeline.source import expand_paths
preds = predict_paths(Pipeline.load(), expand_paths([sys.argv[1]], recursive=True).paths, progress=False)
write_documents((p.to_document() for p in preds), Path(sys.argv[2]))
"""


def make_archive(root: Path, n: int) -> Path:
    """``n`` films linked from the shared sets under new names (``film_000123.jpg``)."""
    films = sorted(p for s in SOURCES if s.is_dir() for p in s.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    if not films:
        raise SystemExit(f"no films under {', '.join(map(str, SOURCES))}")
    d = root / f"archive_{n}"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        src = films[i % len(films)]
        (d / f"film_{i:06d}{src.suffix.lower()}").symlink_to(src)
    return d


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
        todo += children.get(p, [])
    return total


def run_mode(mode: str, archive: Path, out: Path, env: dict[str, str]) -> dict:
    py = sys.executable
    base, _, jobs = mode.partition("-j")  # e.g. onnx-j2: the ONNX stream in two pipeline processes
    base, _, workers = base.partition("-w")  # e.g. onnx-w0: the ONNX stream decoding in its own process
    cli = [py, "-m", "spinexr", "predict", str(archive), "--out", str(out), "--quiet"]
    cmd = {"today": [py, "-c", TODAY, str(archive), str(out)], "stream": cli,
           "onnx": [*cli, "--backend", "onnx"], "ray": [*cli, "--ray"]}[base]
    if workers:
        cmd += ["--workers", workers]
    if jobs:
        cmd += ["--jobs", jobs]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed ({proc.returncode}):\n{err[-2000:]}")
    n_out = sum(1 for _ in open(out)) - 1 if out.suffix == ".csv" else None
    n_in = sum(1 for _ in archive.iterdir())
    if n_out is not None and n_out != n_in:  # every film its row, or the rate means nothing
        raise SystemExit(f"{mode} wrote {n_out} rows for {n_in} films")
    return {"mode": mode, "seconds": wall, "peak_rss_mb": peak / 2**20, "rows": n_out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--films", default="500", help="archive sizes, comma-separated")
    ap.add_argument("--modes", default="today,stream,onnx,ray")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of the modes, taking turns")
    ap.add_argument("--tag", default=None)
    args = ap.parse_args(argv)
    sizes = [int(v) for v in args.films.split(",")]
    modes = args.modes.split(",")
    head = header("archive_predict", argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**os.environ, "SPINEXR_CACHE": str(root / "cache")}
        from spinexr.deploy.bundle import load_bundle
        from spinexr.deploy.bundled import bundled_bundle_dir
        from spinexr.deploy.export import cached_onnx

        os.environ["SPINEXR_CACHE"] = env["SPINEXR_CACHE"]
        b = load_bundle(bundled_bundle_dir())
        for model in (b.classifier, b.landmarks, b.refiner):
            if model is not None:
                cached_onnx(model)  # exported before timing: a deployment does it once
        rows = []
        for n in sizes:
            archive = make_archive(root, n)
            for rnd, mode in ((k, m) for k in range(args.repeat) for m in modes):
                out = root / f"{mode}_{n}.csv"
                out.unlink(missing_ok=True)
                r = {"films": n, "round": rnd, **run_mode(mode, archive, out, env)}
                r["films_per_second"] = n / r["seconds"]
                print(f"{n:>6} films  {mode:<7} {r['films_per_second']:6.2f} films/s  "
                      f"peak {r['peak_rss_mb']:7.0f} MB  ({r['seconds']:.0f} s)", flush=True)
                rows.append(r)
                # What is done so far, so that a run killed in its last mode keeps the others.
                write_result(f"archive_predict{'_' + args.tag if args.tag else ''}.json",
                             {**head, "sizes": sizes, "modes": modes, "results": rows, "complete": False})
    base = {(r["films"], r["round"]): r["films_per_second"] for r in rows if r["mode"] == "today"}
    for r in rows:
        b = base.get((r["films"], r["round"]))
        r["speedup_vs_today"] = r["films_per_second"] / b if b else None
    medians = {f"{n} {m}": statistics.median(r["speedup_vs_today"] for r in rows if r["films"] == n and r["mode"] == m)
               for n in sizes for m in modes if (n, 0) in base}
    write_result(f"archive_predict{'_' + args.tag if args.tag else ''}.json",
                 {**head, "sizes": sizes, "modes": modes, "repeat": args.repeat, "results": rows,
                  "median_speedup_vs_today": medians, "complete": True})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
