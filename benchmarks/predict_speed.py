"""Milliseconds a film of ``spinexr predict`` over a folder, per bundle and backend, side by side in one run.

    python benchmarks/predict_speed.py --bundle before=runs/bundle_before_e56 \\
        --bundle now=src/spinexr/deploy/bundled --films 100 --rounds 2

Each (bundle, backend) runs ``spinexr predict BUNDLE DIR --out OUT.csv --quiet`` in a fresh process on the
same folder (films linked from the shared KAUH and AASCE sets, as ``archive_predict.py`` makes them); the
configurations take turns each round, so a slow minute of a shared machine weighs on all of them. The time
is the whole command's (start-up and decoding included) over the films: the classifier, both landmark
stages and the angles, the budget the landmark issue set (300 ms a film on 2 cores). The ONNX exports
are made before timing. Writes ``benchmarks/results/predict_speed[_TAG].json``.
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

from _machine import code_version, header, write_result  # noqa: E402
from archive_predict import make_archive  # noqa: E402

TARGET_MS = 300.0


def _run(bundle: Path, backend: str, films: Path, out: Path, env: dict[str, str], src: Path | None = None) -> float:
    if src is not None:  # another checkout's code (its src/ first on the path), for a before-and-after
        env = {**env, "PYTHONPATH": str(src / "src")}
    cmd = [sys.executable, "-m", "spinexr", "predict", str(bundle), str(films), "--out", str(out), "--quiet",
           "--force", "--backend", backend]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{bundle} on {backend} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    n_in, n_out = sum(1 for _ in films.iterdir()), sum(1 for _ in open(out)) - 1
    if n_out != n_in:
        raise SystemExit(f"{bundle} on {backend} wrote {n_out} rows for {n_in} films")
    return wall


def _commit(checkout: Path) -> str:
    """The checkout's commit (and whether its tree has changes), for the record."""
    v = code_version(checkout)
    return "an unknown commit" if v is None else v["commit"][:10] + (" with changes" if v["modified"] else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", action="append", required=True, metavar="NAME=PATH", help="a bundle to time")
    ap.add_argument("--backends", default="torch,onnx")
    ap.add_argument("--films", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--code", action="append", default=[], metavar="NAME=CHECKOUT",
                    help="also run each configuration on another checkout's code (e.g. a git worktree of the "
                         "commit before a change); this checkout's code is 'this'")
    ap.add_argument("--tag", default=None)
    args = ap.parse_args(argv)
    codes: dict[str, Path | None] = {"this": None}
    for item in args.code:
        name, sep, path = item.partition("=")
        if not sep or not (Path(path) / "src" / "spinexr").is_dir():
            ap.error(f"--code {item!r}: give NAME=PATH of a spinexr checkout")
        codes[name] = Path(path).resolve()
    bundles = {}
    for item in args.bundle:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_dir():
            ap.error(f"--bundle {item!r}: give NAME=PATH of a bundle folder")
        bundles[name] = Path(path)
    head = header("predict_speed", argv)
    backends = args.backends.split(",")
    env = {**os.environ}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        env["SPINEXR_CACHE"] = str(Path(d) / "cache")
        films = make_archive(Path(d), args.films)
        warm = make_archive(Path(d) / "warm", 1)
        for b in bundles.values():  # the ONNX exports, made once, outside the timing
            _run(b, "onnx", warm, Path(d) / "warm.csv", env)
        for r in range(args.rounds):
            for code, src in codes.items():
                for name, b in bundles.items():
                    for be in backends:
                        wall = _run(b, be, films, Path(d) / "out.csv", env, src)
                        rows.append({"round": r, "code": code, "bundle": name, "backend": be, "seconds": wall,
                                     "ms_per_film": 1e3 * wall / args.films})
                        print(f"round {r} {code:<8} {name:<10} {be:<6} {1e3 * wall / args.films:6.1f} ms a film",
                              flush=True)
    median = {f"{c} {n} {be}": statistics.median(x["ms_per_film"] for x in rows
                                                 if x.get("code", "this") == c and x["bundle"] == n and x["backend"] == be)
              for c in codes for n in bundles for be in backends}
    write_result(f"predict_speed_{args.tag}.json" if args.tag else "predict_speed.json",
                 {**head, "films": args.films, "rounds": args.rounds, "bundles": {k: str(v) for k, v in bundles.items()},
                  "code": {k: f"{v or 'this checkout'} at {_commit(v or HERE.parent)}" for k, v in codes.items()},
                  "target_ms": TARGET_MS, "results": rows, "median_ms_per_film": median})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
