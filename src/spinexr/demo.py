"""``spinexr demo``: the whole path on synthetic radiographs, offline, in minutes on a CPU.

Synthesise a dataset, check it, cross-validate the small backbone with its attention head, and
write the report; then run the models bundled with the package (see ``spinexr models``) on a few of
the synthetic films: label, Cobb angles, the decision against the measured curve, and the overlays.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from spinexr import CLASSES
from spinexr.config import CVConfig, TrainConfig
from spinexr.data.check import check_dataset, format_result
from spinexr.data.synth import synthesize
from spinexr.deploy.document import write_documents
from spinexr.errors import WeightsError
from spinexr.evaluation.cv import run_cv
from spinexr.outputs.images import OverlaySink
from spinexr.pipeline import Pipeline
from spinexr.pipeline.driver import predict_paths

log = logging.getLogger(__name__)


def run_demo(out: Path, seed: int = 0, epochs: int = 12, n: int = 150, image_size: int = 128) -> Path:
    """Run the demo into ``out``; returns the report path. Existing demo data is reused.

    Args:
        out: the demo folder.
        seed: the seed of the synthetic films and the training.
        epochs: training epochs of the small model.
        n: synthetic films.
        image_size: the model's input size.
    """
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
    bundled_tour(data, out / "bundled")
    return report


def bundled_tour(data: Path, out: Path, per_class: int = 2) -> list:
    """The bundled pipeline (classifier, landmark model and rule) on ``per_class`` synthetic AP films of each class."""
    try:
        pipeline = Pipeline.load()
    except WeightsError as e:
        print(f"bundled models: skipped ({e})")
        return []
    with open(data / "labels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("view", "AP") == "AP"]
    films = [data / r["path"] for c in CLASSES for r in [r for r in rows if r["label"] == c][:per_class]]
    out.mkdir(parents=True, exist_ok=True)
    preds = predict_paths(pipeline, films, [OverlaySink(out / "overlays")], progress=False)
    write_documents((p.to_document() for p in preds), out / "predictions.json")
    print(f"bundled models ({pipeline.model_info['bundle']}: {pipeline.predictor.name} and {pipeline.model_info['landmarks']}; "
          "trained on real radiographs, shown here on synthetic films, so expect them to be unsure):")
    for p, r in zip(preds, films):
        if p.status != "ok":
            print(f"  {r.parent.name}/{r.name}: {'ERROR' if p.status == 'error' else 'NOT ANALYSED'} {p.reason}")
            continue
        said = p.decision.classifier_label if p.decision is not None else p.label
        note = p.decision.note if p.decision is not None else ""
        print(f"  {r.parent.name}/{r.name}: {p.label} (classifier: {said}, P={p.probabilities[said]:.2f}); {note}")
    print(f"predictions: {(out / 'predictions.json').resolve()} (spinexr-prediction/2 documents)")
    print(f"overlays: {(out / 'overlays').resolve()}")
    return preds
