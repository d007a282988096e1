"""``spinexr demo``: the whole path on synthetic films, offline."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from spinexr.cli._common import guard_output
from spinexr.demo import run_demo


def demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    guard_output(out / "cv", force=args.force, folder=True, what="demo run")
    if args.force and (out / "cv").exists():
        shutil.rmtree(out / "cv")
    run_demo(out, seed=args.seed, epochs=args.epochs, n=args.n)
    return 0
