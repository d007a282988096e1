"""``spinexr cv``: cross-validation of one or more models, their soft-voting ensemble, and the leaky protocol.

Protocol (``grouped``): stratified group k-fold x repeats. In each fold a validation split is carved
from the training side (stratified, group-aware) for early stopping and temperature scaling, and
oversampling draws from the training side only. Every image gets an out-of-fold prediction from the
fold's predictor: the same graph (flip, temperature) that its model file deploys.

``seed-leaky`` reproduces the notebook this project grew from: oversample the whole dataset, then
split 80/10/10, and reports how many test rows are copies of training rows.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spinexr import CLASSES
from spinexr.config import BUNDLED, CVConfig, TrainConfig
from spinexr.data.contract import DataConfig
from spinexr.data.dataset import PreparedData, prepare_dataset
from spinexr.data.framing import bounded, framing_stress
from spinexr.data.imread import read_image
from spinexr.data.splits import carve_validation, group_kfold, leaky_split
from spinexr.engine.distributed import barrier, is_main, resolve_device, world_size
from spinexr.engine.inference import run_inference
from spinexr.engine.train import FitOptions
from spinexr.errors import SpinexrError
from spinexr.evaluation._common import (
    TrainJob,
    explain_fold,
    model_contract,
    oof_rows,
    save_predictor,
    train_predictor,
    write_csv,
    write_history,
)
from spinexr.evaluation.decision_cv import CurveEvidence, summarize
from spinexr.evaluation.metrics import compute_metrics
from spinexr.evaluation.report import write_report
from spinexr.evaluation.results import (
    FoldInfo,
    FoldResult,
    LeakyResult,
    RunResult,
    model_result,
    sum_framing,
)

log = logging.getLogger(__name__)


@dataclass
class _GroupedCV:
    """What the grouped protocol's folds add up to: out-of-fold probabilities and each fold's figures."""

    oof: dict[str, np.ndarray]
    fold_of: np.ndarray
    fold_metrics: dict[str, list[dict]]
    fold_info: dict[str, list[FoldInfo]] = field(default_factory=dict)
    histories: dict[str, list[list[dict[str, float]]]] = field(default_factory=dict)
    explanations: dict[str, dict] = field(default_factory=dict)
    framing: dict[str, list] = field(default_factory=dict)
    framing_decision: dict[str, list] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)

    @classmethod
    def start(cls, cfg: CVConfig, n: int) -> _GroupedCV:
        return cls(oof={m: np.full((cfg.repeats, n, len(CLASSES)), np.nan) for m in cfg.models},
                   fold_of=np.full((cfg.repeats, n), -1),
                   fold_metrics={m: [] for m in [*cfg.models, "ensemble"]},
                   fold_info={m: [] for m in cfg.models})


@dataclass
class _CVRun:
    """What every fold of one run shares: the data, the settings, each model's contract, where it writes."""

    data: PreparedData
    cfg: CVConfig
    tcfg: TrainConfig
    contracts: dict[str, DataConfig]
    out: Path
    source: str | Path
    progress: bool
    resume: bool
    evidence: CurveEvidence | None = None


@dataclass(frozen=True)
class _Fold:
    """One fold of one repeat: its training side ``tr`` (split into ``fit_idx`` and ``val_idx``) and test films ``te``."""

    r: int
    k: int
    tr: np.ndarray
    te: np.ndarray
    fit_idx: np.ndarray
    val_idx: np.ndarray

    @property
    def seed_offset(self) -> int:
        return 1000 * self.r + 17 * self.k

    def name(self, m: str) -> str:
        return f"{m}_r{self.r}_f{self.k}"


def _job(run: _CVRun, m: str, fold: _Fold, ood_idx: np.ndarray | None, resume: bool, progress: bool) -> TrainJob:
    return TrainJob(m, run.cfg, run.tcfg, run.contracts[m], run.data, fold.fit_idx, fold.val_idx, ood_idx,
                    seed=run.tcfg.seed + fold.seed_offset,
                    options=FitOptions(run.out / "checkpoints" / f"{fold.name(m)}.pt", progress,
                                       f"{m} r{fold.r} f{fold.k}", resume))


def _grouped_fold(run: _CVRun, acc: _GroupedCV, r: int, k: int, tr: np.ndarray, te: np.ndarray) -> None:
    """Every model on one fold (repeat ``r``, fold ``k``), and their ensemble."""
    data, tcfg = run.data, run.tcfg
    y = data.labels
    assert not set(data.groups[tr]) & set(data.groups[te])
    fit_idx, val_idx = carve_validation(tr, y, data.groups, tcfg.val_fraction, seed=tcfg.seed + 1000 * r + k)
    fold = _Fold(r, k, tr, te, fit_idx, val_idx)
    acc.fold_of[r, te] = k
    ens = np.zeros((len(te), len(CLASSES)))
    held_out = FramingFilms(data, te)  # read once per fold, shared by the models
    for m in run.cfg.models:
        fr = _run_fold(run, m, fold, held_out)
        if fr is None:  # not rank 0 under torchrun: training only
            continue
        probs = np.asarray(fr.probs)
        acc.oof[m][r, te] = probs
        ens += probs / len(run.cfg.models)
        acc.fold_metrics[m].append(fr.metrics)
        acc.fold_info[m].append(fr.info)
        acc.histories.setdefault(m, []).append(fr.history)
        if fr.explain:
            acc.explanations[m] = fr.explain
        acc.framing.setdefault(m, []).append(fr.framing)
        acc.framing_decision.setdefault(m, []).append(fr.framing_decision)
        acc.rows += oof_rows(data, te, probs, r, k, m)
    if is_main():
        acc.fold_metrics["ensemble"].append(compute_metrics(y[te], ens))
        acc.rows += oof_rows(data, te, ens, r, k, "ensemble")


def _grouped_results(acc: _GroupedCV, run: RunResult, y: np.ndarray, cfg: CVConfig, tcfg: TrainConfig,
                     evidence: CurveEvidence | None) -> dict[str, np.ndarray]:
    """Each model's (and the ensemble's) pooled figures into ``run``; returns the pooled probabilities."""
    pooled = {m: np.nanmean(acc.oof[m], axis=0) for m in cfg.models}
    if len(cfg.models) > 1:
        pooled["ensemble"] = np.mean([pooled[m] for m in cfg.models], axis=0)
    for m, pp in pooled.items():
        run.models[m] = model_result(y, pp, acc.fold_metrics[m], acc.fold_info.get(m), cfg.bootstrap, tcfg.seed)
        run.models[m].explanations = acc.explanations.get(m)
        run.models[m].framing = sum_framing(acc.framing.get(m, []))
        if evidence is not None and m in acc.oof:  # a single model: a model file predict can run
            scores = [evidence.score(acc.oof[m][r], acc.fold_of[r]) for r in range(cfg.repeats)]
            run.models[m].decision = summarize(scores, sum_framing(acc.framing_decision.get(m, [])))
    return pooled


def run_cv(source: str | Path, cfg: CVConfig, tcfg: TrainConfig, out_dir: str | Path,
           progress: bool = True, data: PreparedData | None = None, resume: bool = False) -> RunResult | None:
    """Run the cross-validation and write the run folder; returns what ``metrics.json`` holds.

    Each finished fold is stored in ``folds/``; with ``resume`` those are reused and the first
    unfinished fold continues from its last epoch checkpoint. Under torchrun every rank trains and
    rank 0 alone evaluates and writes (the other ranks return None).

    Args:
        source: a class-folder tree or CSV manifest.
        cfg: what to train and how it is split (models, folds, input, landmarks for the decision).
        tcfg: the optimisation settings.
        out_dir: the run folder.
        progress: show progress bars.
        data: the dataset already prepared at the models' input sizes (None: prepared here).
        resume: reuse finished folds and continue the first unfinished one from its checkpoint.

    Returns:
        what ``metrics.json`` holds (None on ranks other than 0).
    """
    out = Path(out_dir)
    t_start = time.perf_counter()
    contracts = {m: model_contract(m, cfg) for m in cfg.models}
    if data is None:
        data = prepare_dataset(source, {c.input_size for c in contracts.values()}, cfg.resize,
                               cache_dir=cfg.cache_dir, progress=progress)
    y = data.labels
    device = resolve_device(tcfg.device)
    evidence = None
    if cfg.landmarks and resume and world_size() > 1:  # rebuilding finished folds is rank 0's work alone
        raise SpinexrError("--landmarks on a resumed run: run `spinexr cv --resume RUN_DIR --landmarks ...` without "
                           "torchrun (finished folds are rebuilt from their checkpoints, not retrained)")
    if cfg.landmarks and cfg.protocol in ("grouped", "both") and is_main():
        lm, refiner = landmark_stages(cfg.landmarks)
        evidence = CurveEvidence(lm, data, device=str(device), progress=progress, refiner=refiner)
    out.mkdir(parents=True, exist_ok=True)  # only once the data and the landmark model are known to be usable
    config = {"cv": asdict(cfg), "train": tcfg.to_dict()}
    if is_main() and not resume:
        (out / "config.json").write_text(json.dumps({"verb": "cv", **config, "source": str(source),
                                                     "device": str(device)}, indent=2))
    run = RunResult(verb="cv", data=data.summary(), device=str(device), config=config)
    histories: dict[str, list[list[dict[str, float]]]] = {}
    rows: list[dict] = []
    pooled: dict[str, np.ndarray] = {}

    cv_run = _CVRun(data, cfg, tcfg, contracts, out, source, progress, resume, evidence)
    if cfg.protocol in ("grouped", "both"):
        acc = _GroupedCV.start(cfg, len(y))
        for r in range(cfg.repeats):
            for k, (tr, te) in enumerate(group_kfold(y, data.groups, cfg.folds, seed=tcfg.seed + 1000 * r)):
                _grouped_fold(cv_run, acc, r, k, tr, te)
        rows += acc.rows
        for m, hs in acc.histories.items():
            histories.setdefault(m, []).extend(hs)
        if is_main():
            pooled = _grouped_results(acc, run, y, cfg, tcfg, evidence)

    if cfg.protocol in ("seed-leaky", "both"):
        run.leaky = _run_leaky(cv_run, device, histories)

    barrier()
    if not is_main():
        return None
    run.wall_seconds = time.perf_counter() - t_start
    write_csv(out / "oof_predictions.csv", rows)
    (out / "metrics.json").write_text(json.dumps(run.to_dict(), indent=2, default=float))
    write_report(out, run, data, histories, pooled)
    return run


def _run_fold(run: _CVRun, m: str, fold: _Fold, held_out: FramingFilms | None = None) -> FoldResult | None:
    """Train and evaluate one model on one fold, or load the stored result of a finished fold (and,
    with the run's curve evidence, add the decision's framing test to a finished fold that lacks it)."""
    cfg, data, evidence, out = run.cfg, run.data, run.evidence, run.out
    r, k, te = fold.r, fold.k, fold.te
    done_file = out / "folds" / f"{fold.name(m)}.json"
    if run.resume and done_file.is_file():
        log.info("%s repeat %d fold %d: finished earlier, reusing %s", m, r, k, done_file)
        fr = FoldResult.from_dict(json.loads(done_file.read_text()))
        if evidence is not None and cfg.framing_test and fr.decision_landmarks != evidence.digest:
            _add_decision_framing(run, fr, m, fold, held_out, done_file)
        return fr
    y = data.labels
    first = r == 0 and k == 0
    res = train_predictor(_job(run, m, fold, fold.tr if first and cfg.save_models else None, run.resume, run.progress))
    if not is_main():
        return None
    device = resolve_device(run.tcfg.device)
    contract = run.contracts[m]
    probs = run_inference(res.predictor, data.tensors[contract.input_size], te, device).probs.astype(np.float64)
    met = compute_metrics(y[te], probs)
    info = FoldInfo(repeat=r, fold=k, best_epoch=res.best_epoch, epochs_run=len(res.history),
                    temperature=res.temperature, n_train=len(fold.fit_idx), n_val=len(fold.val_idx), n_test=len(te),
                    accuracy=met["accuracy"], batch_size=res.batch_size, tta_flip=run.tcfg.tta_flip)
    write_history(out / "history" / f"{fold.name(m)}.csv", res.history)
    log.info("%s repeat %d fold %d: acc %.3f (best epoch %d, T=%.2f)", m, r, k, met["accuracy"], res.best_epoch,
             res.temperature)
    fr = FoldResult(info=info, metrics=met, probs=probs.tolist(), history=res.history)
    if cfg.explain and first:
        fr.explain = explain_fold(res.predictor, data, te, probs, out / "plots", m)
    if cfg.framing_test:
        fr.framing = framing_fold(res.predictor, held_out or FramingFilms(data, te), device)
        if evidence is not None:
            fr.framing_decision = framing_fold(res.predictor, held_out or FramingFilms(data, te), device,
                                               evidence.fold(te))
            fr.decision_landmarks = evidence.digest
    if cfg.save_models and first:
        save_predictor(res.predictor, cfg, out / "models" / f"{m}.safetensors",
                       {"source": str(run.source), "counts": data.counts(), "n_train": len(fold.fit_idx),
                        "split": "cv repeat 0 fold 0"})
    _store_fold(fr, done_file)
    return fr


def _store_fold(fr: FoldResult, done_file: Path) -> None:
    done_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = done_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(fr.to_dict(), default=float))
    tmp.replace(done_file)


def _add_decision_framing(run: _CVRun, fr: FoldResult, m: str, fold: _Fold, held_out: FramingFilms | None,
                          done_file: Path) -> None:
    """A fold finished before ``--landmarks`` was given (or with another landmark model): its predictor
    is rebuilt from the fold's final checkpoint (the best weights and the same temperature fit, no
    training), checked against the stored out-of-fold probabilities, and run through the decision's
    framing test."""
    r, k, te, evidence = fold.r, fold.k, fold.te, run.evidence
    ck = run.out / "checkpoints" / f"{fold.name(m)}.pt"
    fr.framing_decision = fr.decision_landmarks = None  # never another landmark model's figures
    if not ck.is_file() or evidence is None:
        log.warning("%s repeat %d fold %d: no checkpoint %s to rebuild its model from; the decision's framing "
                    "test leaves this fold out", m, r, k, ck)
        return
    res = train_predictor(_job(run, m, fold, None, resume=True, progress=False))
    device = resolve_device(run.tcfg.device)
    probs = run_inference(res.predictor, run.data.tensors[run.contracts[m].input_size], te, device).probs
    gap = float(np.max(np.abs(probs - np.asarray(fr.probs))))
    if gap > 1e-3:
        log.warning("%s repeat %d fold %d: the model rebuilt from %s differs from the stored predictions (by %.3g); "
                    "the decision's framing test leaves this fold out", m, r, k, ck, gap)
        return
    fr.framing_decision = framing_fold(res.predictor, held_out or FramingFilms(run.data, te), device,
                                       evidence.fold(te))
    fr.decision_landmarks = evidence.digest
    _store_fold(fr, done_file)


def _run_leaky(run: _CVRun, device: object, histories: dict[str, list[list[dict[str, float]]]]) -> LeakyResult:
    data, tcfg = run.data, run.tcfg
    y = data.labels
    sp = leaky_split(y, seed=tcfg.seed)
    out = LeakyResult(test_leak_fraction=sp["test_leak"], n_train=len(sp["train"]), n_val=len(sp["val"]),
                      n_test=len(sp["test"]))
    # Oversampled rows are copies, so training here must not oversample again.
    lcfg = TrainConfig.from_dict({**tcfg.to_dict(), "balance": "none"})
    for m in run.cfg.models:
        done_file = run.out / "folds" / f"{m}_leaky.json"
        if run.resume and done_file.is_file():
            stored = json.loads(done_file.read_text())
            out.models[m] = stored["metrics"]
            histories.setdefault(f"{m} (leaky)", []).append(stored["history"])
            continue
        res = train_predictor(TrainJob(m, run.cfg, lcfg, run.contracts[m], data, sp["train"], sp["val"], seed=tcfg.seed,
                                       options=FitOptions(run.out / "checkpoints" / f"{m}_leaky.pt", run.progress,
                                                          f"{m} leaky", run.resume)))
        if not is_main():
            continue
        probs = run_inference(res.predictor, data.tensors[run.contracts[m].input_size], sp["test"], device).probs
        out.models[m] = compute_metrics(y[sp["test"]], probs.astype(np.float64))
        histories.setdefault(f"{m} (leaky)", []).append(res.history)
        done_file.parent.mkdir(parents=True, exist_ok=True)
        done_file.write_text(json.dumps({"metrics": out.models[m], "history": res.history}, default=float))
    return out


class FramingFilms:
    """A fold's held-out Scoliosis and Normal films for the framing stress test, read again from disk
    on first use (the dataset keeps only model-sized inputs), capped at ``max_side`` pixels (every
    model input is far smaller), and kept for the fold's other models.

    Args:
        data: the prepared dataset.
        te: the fold's held-out indices.
        max_side: the largest side a film is kept at.
    """

    def __init__(self, data: PreparedData, te: np.ndarray, max_side: int = 1024) -> None:
        self.data, self.te, self.max_side = data, te, max_side
        self._films: dict[str, list[np.ndarray]] | None = None

    def get(self) -> dict[str, list[np.ndarray]]:
        if self._films is None:
            self._films = {"Scoliosis": [], "Normal": []}
            for i in self.te:
                c = CLASSES[int(self.data.labels[i])]
                if c in self._films:
                    self._films[c].append(bounded(read_image(self.data.paths[i])[0], self.max_side))
        return self._films


def framing_fold(predictor: Any, held_out: FramingFilms, device: Any, decision: Any = None) -> dict[str, Any]:
    """The framing stress test on a fold's held-out Scoliosis and Normal films, run through the fold's
    predictor exactly as ``predict`` would; with ``decision`` (a
    :class:`~spinexr.evaluation.decision_cv.FoldDecision`), through the decision that answers to the
    measured curve, each film measured as it is shown.

    Args:
        predictor: the fold's classifier predictor.
        held_out: the fold's held-out films, shown as they are and reframed.
        device: the torch device.
        decision: the fold's decision (None: the classifier alone).
    """
    contract = predictor.contract

    def predict(films: list[np.ndarray]) -> np.ndarray:
        x = torch.from_numpy(np.stack([contract.to_input(f)[0] for f in films])[:, None])
        return run_inference(predictor, x, None, device).probs

    films = held_out.get()
    return framing_stress(predict if decision is None else decision.predict_fn(predict), films["Scoliosis"],
                          films["Normal"], CLASSES)


def landmark_stages(value: str) -> tuple[Path, Path | None]:
    """``cv.landmarks``: a landmark model file; a bundle (its folder or ``bundle.json``), whose landmark
    model and vertebra refiner then measure; or ``bundled`` for the bundle shipped with the package.
    Returns (landmark model, refiner or None)."""
    from spinexr.deploy.bundle import is_bundle, load_bundle
    from spinexr.deploy.bundled import bundled_bundle_dir

    if value == BUNDLED or is_bundle(value):
        b = load_bundle(bundled_bundle_dir() if value == BUNDLED else value)
        if b.landmarks is None:
            raise SpinexrError(f"--landmarks {value}: the bundle {b.name} has no landmark model; give a bundle or "
                               "landmark model file that measures the spine")
        return b.landmarks, b.refiner
    p = Path(value)
    if not p.is_file():
        raise SpinexrError(f"--landmarks {value}: no such file; give a landmark model file (from `spinexr landmarks "
                           "train`), a bundle folder, or 'bundled' for the one shipped with spinexr")
    return p, None
