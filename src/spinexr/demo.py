"""``spinexr demo``: the whole path on synthetic radiographs, offline, in minutes on a CPU."""

from __future__ import annotations

import logging
from pathlib import Path

from spinexr.data.check import check_dataset, format_result
from spinexr.data.synth import synthesize

log = logging.getLogger(__name__)


def run_demo(out: Path, seed: int = 0, epochs: int = 8, n: int = 90) -> Path:
    """Synthesise data, check it, and return the demo folder."""
    data = out / "data"
    if not (data / "labels.csv").exists():
        synthesize(data, n=n, seed=seed, scale=0.5, progress=True)
    res = check_dataset(data, out / "check")
    print(format_result(res))
    return out
