"""``spinexr train``: one model on one stratified group split (train / validation / test)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from spinexr.config import CVConfig, TrainConfig
from spinexr.data.dataset import prepare_dataset
from spinexr.data.splits import carve_validation, holdout
from spinexr.engine.distributed import barrier, is_main, resolve_device
from spinexr.engine.inference import run_inference
from spinexr.engine.train import FitOptions
from spinexr.evaluation._common import TrainJob, model_contract, save_predictor, train_predictor, write_history
from spinexr.evaluation.metrics import compute_metrics
from spinexr.evaluation.report import write_report
from spinexr.evaluation.results import FoldInfo, RunResult, model_result


def run_train(source: str | Path, model_name: str, cfg: CVConfig, tcfg: TrainConfig, out_dir: str | Path,
              progress: bool = True, resume: bool = False) -> RunResult | None:
    """One model, one stratified group split (``cfg.test_fraction`` held out; 0: none); saves
    ``model.safetensors`` and scores the held-out films with the predictor that file deploys.

    With ``resume`` training continues from ``checkpoint.pt`` after its last completed epoch. Under
    torchrun the ranks other than 0 return None.

    Args:
        source: a class-folder tree or CSV manifest.
        model_name: the registered model to train.
        cfg: the split (``test_fraction``) and the model's input settings.
        tcfg: the optimisation settings.
        out_dir: the run folder.
        progress: show progress bars.
        resume: continue from the run folder's checkpoint.

    Returns:
        what ``metrics.json`` holds, with the model file's path (None on ranks other than 0).
    """

    out = Path(out_dir)
    contract = model_contract(model_name, cfg)
    data = prepare_dataset(source, [contract.input_size], cfg.resize, cache_dir=cfg.cache_dir, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    y = data.labels
    device = resolve_device(tcfg.device)
    config = {"cv": asdict(cfg), "train": tcfg.to_dict()}
    if is_main() and not resume:
        (out / "config.json").write_text(json.dumps({"verb": "train", "model": model_name, **config,
                                                     "source": str(source)}, indent=2))
    if cfg.test_fraction > 0:
        tr, te = holdout(y, data.groups, cfg.test_fraction, seed=tcfg.seed)
    else:
        tr, te = np.arange(len(y)), np.array([], dtype=int)
    fit_idx, val_idx = carve_validation(tr, y, data.groups, tcfg.val_fraction, seed=tcfg.seed)
    t0 = time.perf_counter()
    res = train_predictor(TrainJob(model_name, cfg, tcfg, contract, data, fit_idx, val_idx,
                                   np.concatenate([fit_idx, val_idx]), seed=tcfg.seed,
                                   options=FitOptions(out / "checkpoint.pt", progress, model_name, resume)))
    if not is_main():
        barrier()
        return None
    write_history(out / "history.csv", res.history)
    model_file = save_predictor(res.predictor, cfg, out / "model.safetensors",
                                {"source": str(source), "counts": data.counts(), "n_train": len(fit_idx),
                                 "n_val": len(val_idx), "n_test": len(te)})
    run = RunResult(verb="train", data=data.summary(), device=str(device), config=config, model_file=str(model_file),
                    best_epoch=res.best_epoch, temperature=res.temperature)
    pooled: dict[str, np.ndarray] = {}
    if len(te):
        probs = run_inference(res.predictor, data.tensors[contract.input_size], te, device).probs.astype(np.float64)
        met = compute_metrics(y[te], probs)
        info = FoldInfo(repeat=0, fold=0, best_epoch=res.best_epoch, epochs_run=len(res.history),
                        temperature=res.temperature, n_train=len(fit_idx), n_val=len(val_idx), n_test=len(te),
                        accuracy=met["accuracy"], batch_size=res.batch_size, tta_flip=tcfg.tta_flip)
        run.models[model_name] = model_result(y[te], probs, [met], [info], cfg.bootstrap, tcfg.seed)
        pooled[model_name] = probs
    run.wall_seconds = time.perf_counter() - t0
    (out / "metrics.json").write_text(json.dumps(run.to_dict(), indent=2, default=float))
    write_report(out, run, data, {model_name: [res.history]}, pooled, title=f"spinexr train: {model_name}",
                 y_eval=y[te])
    barrier()
    return run
