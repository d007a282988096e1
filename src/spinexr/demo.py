"""``spinexr demo``: the whole path on synthetic radiographs, offline, in minutes on a CPU.

Synthesise a dataset, check it, cross-validate the small backbone with its attention head, and
write the report.
"""

from __future__ import annotations

import logging
from pathlib import Path

from spinexr.config import CVConfig, TrainConfig
from spinexr.data.check import check_dataset, format_result
from spinexr.data.synth import synthesize
from spinexr.evaluation.cv import run_cv

log = logging.getLogger(__name__)


def run_demo(out: Path, seed: int = 0, epochs: int = 12, n: int = 150, image_size: int = 128) -> Path:
    """Run the demo into ``out``; returns the report path. Existing demo data is reused."""
    data = out / "data"
    if not (data / "labels.csv").exists():
        synthesize(data, n=n, seed=seed, scale=0.5, progress=True)
    res = check_dataset(data, out / "check")
    print(format_result(res))
    run = out / "cv"
    cv = CVConfig(models=["small"], folds=3, image_size=image_size, attention="mhsa", bootstrap=500)
    tr = TrainConfig(epochs=epochs, batch_size=16, lr=2e-3, seed=seed, patience=max(3, epochs // 2),
                     warmup_epochs=1.0)
    results = run_cv(data, cv, tr, run)
    assert results is not None  # one process: always rank 0
    m = results.models["small"]
    acc, ci = m.summary["accuracy"], m.ci95["accuracy"]
    print(f"demo: small backbone, 3-fold CV on {results.data.n_images} synthetic radiographs: "
          f"accuracy {acc['mean'] * 100:.1f} ± {acc['std'] * 100:.1f}% (95% CI {ci[0] * 100:.1f}-{ci[1] * 100:.1f})")
    report = run / "report.html"
    print(f"report: {report.resolve()}")
    print(f"model file: {(run / 'models' / 'small.safetensors').resolve()}")
    return report
