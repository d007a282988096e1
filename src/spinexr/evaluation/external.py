"""``spinexr evaluate``: a trained model file measured on another dataset (an external test).

The model file's own predictor runs (its contract, flip and temperature), so the figures describe
exactly what ``predict`` and ``serve`` return for those films.
"""

from __future__ import annotations

import json
from pathlib import Path

from spinexr import CLASSES
from spinexr.evaluation._common import write_csv
from spinexr.evaluation.metrics import compute_metrics
from spinexr.evaluation.results import RunResult, model_result


def evaluate_model(model_path: str | Path, source: str | Path, out_dir: str | Path, device: str = "auto",
                   bootstrap: int = 1000, cache_dir: str | None = None, progress: bool = True) -> RunResult:
    """Predict every readable image of ``source`` and write metrics, predictions and a report."""
    import numpy as np

    from spinexr.data.dataset import prepare_dataset
    from spinexr.deploy.modelfile import load_inference
    from spinexr.engine.distributed import resolve_device
    from spinexr.engine.inference import run_inference
    from spinexr.evaluation.report import write_report

    dev = resolve_device(device)
    module, meta = load_inference(model_path, dev)
    contract = module.contract
    out = Path(out_dir)
    data = prepare_dataset(source, [contract.input_size], contract.resize, cache_dir=cache_dir, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    res = run_inference(module, data.tensors[contract.input_size], None, dev)
    probs = res.probs.astype(np.float64)
    y = data.labels
    name = meta["architecture"]
    run = RunResult(verb="evaluate", data=data.summary(), device=str(dev), model_file=str(model_path), model_meta=meta,
                    models={name: model_result(y, probs, [compute_metrics(y, probs)], n_boot=bootstrap)})
    thr = (meta.get("ood") or {}).get("threshold")
    write_csv(out / "predictions.csv", [
        {"path": str(p), "label": CLASSES[yy], **{f"p_{c}": f"{v:.6f}" for c, v in zip(CLASSES, pr)},
         "pred": CLASSES[int(pr.argmax())], "ood_score": f"{sc:.3f}" if thr is not None else "",
         "ood": str(bool(sc > thr)).lower() if thr is not None else ""}
        for p, yy, pr, sc in zip(data.paths, y, probs, res.ood_scores)])
    (out / "metrics.json").write_text(json.dumps(run.to_dict(), indent=2, default=float))
    write_report(out, run, data, {}, {name: probs}, title=f"spinexr evaluate: {name}")
    return run
