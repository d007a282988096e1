"""``spinexr evaluate``: a trained model file measured on another dataset (an external test)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


from spinexr import CLASSES
from spinexr.metrics import compute_metrics, result_block, softmax


def evaluate_model(model_path: str | Path, source: str | Path, out_dir: str | Path, device: str = "auto",
                   tta_flip: bool = True, bootstrap: int = 1000, cache_dir: str | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Predict every readable image of ``source`` and write metrics, predictions and a report."""
    from spinexr.modelfile import load_model
    from spinexr.preprocess import prepare_dataset
    from spinexr.report import write_report
    from spinexr.train import predict_logits, resolve_device

    dev = resolve_device(device)
    model, meta, _ = load_model(model_path, dev)
    out = Path(out_dir)
    size = int(meta["input_size"])
    data = prepare_dataset(source, [size], meta["resize"], cache_dir=cache_dir, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    logits = predict_logits(model, data.tensors[size], None, dev, meta["mean"], meta["std"], tta_flip=tta_flip)
    probs = softmax(logits, meta["temperature"])
    y = data.labels
    name = meta["architecture"]
    results: dict[str, Any] = {
        **data.summary(), "source": str(source), "model_file": str(model_path), "model": meta,
        "models": {name: result_block(y, probs, [compute_metrics(y, probs)], n_boot=bootstrap)},
    }
    with open(out / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", *[f"p_{c}" for c in CLASSES], "pred"])
        for p, yy, pr in zip(data.paths, y, probs):
            w.writerow([str(p), CLASSES[yy], *[f"{v:.6f}" for v in pr], CLASSES[int(pr.argmax())]])
    (out / "metrics.json").write_text(json.dumps(results, indent=2, default=float))
    write_report(out, results, data, {}, {name: probs.tolist()}, title=f"spinexr evaluate: {name}")
    return results
