"""``spinexr cv``, ``train``, ``evaluate`` and ``landmarks``: runs that write a run folder and print its summary."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from spinexr.cli._common import run_dir, say
from spinexr.config import CVConfig, LandmarkConfig, TrainConfig, resolve, resolve_landmarks
from spinexr.engine.refine import RefineConfig
from spinexr.engine.state import FitOptions
from spinexr.errors import SpinexrError
from spinexr.evaluation.cv import landmark_stages, run_cv
from spinexr.evaluation.external import evaluate_model
from spinexr.evaluation.holdout import run_train
from spinexr.evaluation.landmark_cv import LandmarkCVResult, film_count, init_settings, run_landmark_cv
from spinexr.evaluation.landmark_eval import evaluate_landmarks, evaluation_lines, measurer_for, write_evaluation
from spinexr.evaluation.refiner_train import train_refiner
from spinexr.evaluation.report import external_lines, headline
from spinexr.evaluation.results import RunResult
from spinexr.pipeline import PipelineSpec


def _load_resume(folder: str, verb: str) -> tuple[dict, CVConfig, TrainConfig]:
    """The saved configuration of an interrupted run, to continue it exactly as it was started."""
    cfg_file = Path(folder) / "config.json"
    if not cfg_file.is_file():
        raise SpinexrError(f"{folder}: no config.json there; --resume takes the folder of an interrupted run")
    saved = json.loads(cfg_file.read_text())
    if saved.get("verb", verb) != verb:
        raise SpinexrError(f"{folder} is a `spinexr {saved.get('verb')}` run; resume it with that command")
    return saved, CVConfig.from_dict(saved["cv"]), TrainConfig.from_dict(saved["train"])


def cv(args: argparse.Namespace) -> int:
    if args.resume:
        saved, cvc, tr = _load_resume(args.resume, "cv")
        out = Path(args.resume)
        if args.landmarks:  # the decision added to a run: finished folds are rebuilt from their checkpoints
            landmark_stages(args.landmarks)  # a wrong path is refused before the run's config changes
            cvc = replace(cvc, landmarks=args.landmarks)
            saved["cv"]["landmarks"] = args.landmarks
            (out / "config.json").write_text(json.dumps(saved, indent=2))
        res = run_cv(saved["source"], cvc, tr, out, progress=not args.quiet, resume=True)
    else:
        top, cvc, tr = resolve(args)
        out = run_dir(top.get("out"), "cv", args.force)
        res = run_cv(top["data"], cvc, tr, out, progress=not args.quiet)
    if res is not None:  # rank 0
        say(*summary_lines(out, res))
    return 0


def train(args: argparse.Namespace) -> int:
    if args.resume:
        saved, cvc, tr = _load_resume(args.resume, "train")
        out = Path(args.resume)
        res = run_train(saved["source"], saved["model"], cvc, tr, out, progress=not args.quiet, resume=True)
    else:
        top, cvc, tr = resolve(args)
        models = top.get("models") or ["xception"]
        if len(models) != 1:
            raise SpinexrError("train takes one --model; use `spinexr cv` for several")
        out = run_dir(top.get("out"), "train", args.force)
        res = run_train(top["data"], models[0], cvc, tr, out, progress=not args.quiet)
    if res is not None:  # rank 0
        say(*summary_lines(out, res), f"model file: {res.model_file}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    n_boot = CVConfig(bootstrap=args.bootstrap).bootstrap if args.bootstrap is not None else CVConfig().bootstrap
    out = run_dir(args.out, "evaluate", args.force)
    spec = PipelineSpec(source=args.model, landmarks=args.landmarks, device=args.device)
    res = evaluate_model(spec, args.data, out, bootstrap=n_boot, cache_dir=args.cache_dir, progress=not args.quiet,
                         angles=args.angles)
    say(*summary_lines(out, res))
    return 0


def _model_lines(m: str, r: Any, ext: dict | None) -> list[str]:
    if ext and not ext["complete"]:
        return [f"{m:<14} {c}: {v['sensitivity']:.1%} of {v['n']} films called {c} (95% CI "
                f"{v['sensitivity_ci95'][0]:.1%}-{v['sensitivity_ci95'][1]:.1%}); "
                + ", ".join(f"{k} {n}" for k, n in v["called"].items()) for c, v in ext["per_class"].items()]
    ci, pooled = r.ci95, r.pooled
    if r.n_folds > 1:
        acc = r.summary["accuracy"]
        point = f"{acc['mean'] * 100:5.1f} ± {acc['std'] * 100:4.1f} over {r.n_folds} folds"
    else:
        point = f"{pooled['accuracy'] * 100:5.1f} on one split of {pooled['n']} films"
    auc = pooled["auc_macro"]
    lines = [f"{m:<14} accuracy {point}  95% CI [{ci['accuracy'][0] * 100:.1f}, {ci['accuracy'][1] * 100:.1f}]  "
             f"macro-F1 {pooled['macro_f1']:.3f}  AUC {'n/a' if auc is None else f'{auc:.3f}'}  ECE {pooled['ece']:.3f}"]
    d = r.decision
    if d:
        fd = d.get("framing") or {}
        framing = "".join(f", {what} {fd[k]['changed']} of {fd[k]['n']} changed" for k, what in
                          (("scoliosis_ap_to_strip", "strip-cut Scoliosis"), ("normal_strip_to_full", "widened Normal"))
                          if fd.get(k, {}).get("n"))
        lines.append(f"{'':<14} with the measured curve: accuracy {d['accuracy_with_rule_mean'] * 100:5.1f} (classifier "
                     f"{d['accuracy_mean'] * 100:.1f}; {d['changed']} decisions changed, {d['changed_to_right']} to the "
                     f"right class){framing}")
    return lines


def summary_lines(out: Path, res: RunResult) -> list[str]:
    """What a finished cv, train or evaluate run says: each model's figures, the worst class, the leaky
    protocol's figures when it ran, and where the report is."""
    lines = [line for m, r in res.models.items() for line in _model_lines(m, r, res.external)]
    lines += external_lines(res.external) if res.external else []
    h = headline(res)
    if h and h["worst_class"] and h["accuracy"] is not None:
        rc = h["worst_recall_ci"]
        lines.append(f"missed most ({h['model']}): {h['worst_class']}, recall {h['worst_recall']:.1%}"
                     + (f" (95% CI {rc[0]:.1%}-{rc[1]:.1%})" if rc else ""))
    if res.leaky is not None:
        lk = res.leaky
        lines.append(f"leaky protocol: {lk.test_leak_fraction:.0%} of test rows are training copies; "
                     + ", ".join(f"{m} {v['accuracy'] * 100:.1f}%" for m, v in lk.models.items()))
    return lines + [f"report: {out / 'report.html'}"]


def landmark_lines(res: LandmarkCVResult, out: Path, folds: int) -> list[str]:
    model = f"model file: {out / 'models' / 'landmarks.safetensors'}"
    if res.pooled is None:
        f0 = res.folds[0]
        count = film_count({"films": res.films, "left_out": res.left_out})
        return [f"{count} ({f0['epochs_run']} epochs, {f0['train_seconds'] / 60:.1f} min); nothing held out to measure",
                model]
    p = res.pooled
    how = f"{len(res.folds)}-fold case-grouped CV" if folds > 1 else "one case-grouped held-out split"
    return [f"{how} on {p['n']} films: SMAPE {p['smape']:.2f}% (95% CI {p['smape_ci95'][0]:.2f}-{p['smape_ci95'][1]:.2f}), "
            f"largest-angle MAE {p['mae_largest']:.2f}° (95% CI {p['mae_largest_ci95'][0]:.2f}-"
            f"{p['mae_largest_ci95'][1]:.2f}), landmark error {p['landmark_error_pct_height']['mean']:.2f}% of film "
            f"height; {res.implausible_predictions} predicted spine(s) refused as implausible", model]


def _refiner(args: argparse.Namespace, top: dict[str, Any]) -> int:
    """``landmarks train --stage refiner``: the recipe from the flags that apply to a refiner."""
    given = {k: v for k, v in vars(args).items() if k in LandmarkConfig.__dataclass_fields__ and v is not None}
    known = set(RefineConfig.__dataclass_fields__)
    wrong = sorted(k for k in given if k not in known)
    if wrong or getattr(args, "init", None):
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in wrong) or "--init"
        raise SpinexrError(f"{flags}: not a setting of the vertebra refiner; --stage refiner takes --encoder, --epochs, "
                           "--seed, --batch-size, --lr, --weight-decay, --warmup-epochs and --patience")
    if args.passes < 1:
        raise SpinexrError(f"--passes {args.passes}: give 1 or more")
    cfg = replace(RefineConfig(), **given)
    out = run_dir(top["out"], "landmarks-refiner", args.force)
    rec = train_refiner(top["data"], cfg, out, FitOptions(progress=not args.quiet, desc="refiner",
                                                           max_minutes=args.max_minutes), passes=args.passes)
    say(f"trained on {rec['n_train']} films, {rec['n_val']} choosing the epoch ({rec['epochs_run']} epochs, best "
        f"{rec['best_epoch']}, {rec['train_seconds'] / 60:.1f} min); {rec['labels_implausible_left_out']} films left out "
        "for implausible labelled corners",
        f"model file: {out / 'models' / 'refiner.safetensors'} (add it to a bundle with `spinexr bundle create ... "
        "--refiner`)")
    return 0


def landmarks(args: argparse.Namespace) -> int:
    if getattr(args, "stage", "landmarks") == "refiner":
        return _refiner(args, resolve_landmarks(args)[0])
    top, cfg = resolve_landmarks(args)
    init = getattr(args, "init", None)
    if init:  # fine-tuning: the parent's settings and contract, a short schedule, then what was set here
        given = {k: v for k, v in vars(args).items() if k in cfg.to_dict() and v is not None}
        cfg = init_settings(init, given)
    out = run_dir(top["out"], f"landmarks-{args.landmarks_cmd}", args.force)
    folds = cfg.folds if args.landmarks_cmd == "cv" else 1
    res = run_landmark_cv(top["data"], cfg, out, folds=folds, max_minutes_per_fold=args.max_minutes,
                          progress=not args.quiet, init=init)
    say(*landmark_lines(res, out, folds))
    return 0


def landmarks_evaluate(args: argparse.Namespace) -> int:
    from spinexr.data.landmarks import load_landmark_source

    films = load_landmark_source(args.data)  # a wrong folder is said before the models load
    measurer, what = measurer_for(args.model, args.device)
    metrics, rows = evaluate_landmarks(measurer, films, progress=not args.quiet)
    say(*evaluation_lines(metrics, what))
    if args.out:
        out = run_dir(args.out, "landmarks-evaluate", args.force)
        write_evaluation(out, metrics, rows, what)
        say(f"wrote {out / 'metrics.json'} and {out / 'per_film.csv'}")
    return 0
