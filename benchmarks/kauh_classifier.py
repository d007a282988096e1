"""The classifier recipe on KAUH: 5-fold CV of the recipe in a settings file, alone and through the
decision with the bundled landmark stages, in pieces that survive a session.

    python benchmarks/kauh_classifier.py --recipe benchmarks/recipes/kauh_classifier_cpu.yaml \
        --run-dir ../runs/kauh_classifier_cpu --tag cpu

Training takes hours on 2 cores, so the run is made of pieces: every finished fold is a small JSON
(out-of-fold probabilities, history, framing test) in ``--run-dir/folds``. ``--save-folds`` copies
those into ``benchmarks/results/kauh_classifier_<tag>/`` (committed, a few kB each) and exits; a later
run, even in a fresh checkout with an empty run folder, starts from the committed folds and trains only
the missing ones (an unfinished fold continues from its last epoch checkpoint when the run folder
still holds it). When every fold is there it writes ``benchmarks/results/kauh_classifier_<tag>.json``:
the classifier's and the decision's accuracy (mean over folds, pooled 95% CIs), each class's recall
through the decision, macro-F1, ECE after temperature scaling, the framing stress test, the leaky
protocol beside it, the recipe, the machine and the training time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import header, write_result  # noqa: E402

KAUH = HERE.parent.parent / "shared" / "data" / "kauh-spine-xray"
TARGETS = {"classifier_accuracy_mean": 0.95, "decision_accuracy_mean": 0.97, "decision_recall_each_class": 0.93,
           "macro_f1": 0.95, "ece_after_temperature": 0.03, "framing_changed_each_direction_max": 0.03}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", required=True, help="a settings file (cv:, train:, models:) as `spinexr cv --config`")
    ap.add_argument("--data", default=str(KAUH))
    ap.add_argument("--run-dir", required=True, help="the CV run folder (checkpoints; keep it outside the checkout)")
    ap.add_argument("--tag", default="cpu")
    ap.add_argument("--save-folds", action="store_true",
                    help="copy the run folder's finished folds into benchmarks/results/kauh_classifier_<tag>/ and exit")
    return ap


def _settings(recipe: str, data: str):
    from spinexr.config import resolve

    return resolve(argparse.Namespace(config=recipe, data=data, out=None, models=None))


def _copy_new(src: Path, dest: Path) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for f in sorted(src.glob("*.json")):
        if not (dest / f.name).is_file() or (dest / f.name).read_bytes() != f.read_bytes():
            shutil.copy2(f, dest / f.name)
            copied.append(f.name)
    return copied


def decision_pooled(folds: list[dict]) -> dict:
    """The decision's accuracy pooled over every held-out film of the folds (each fold's ``n`` and
    ``accuracy_with_rule``), with its Wilson 95% interval."""
    from spinexr.evaluation.external import wilson

    n = sum(int(f["n"]) for f in folds)
    k = sum(round(f["accuracy_with_rule"] * f["n"]) for f in folds)
    return {"n": n, "correct": k, "accuracy": k / n if n else None, "ci95": wilson(k, n)}


def _train_seconds(folds: Path) -> float:
    return float(sum(h.get("seconds", 0.0) for f in folds.glob("*.json")
                     for h in json.loads(f.read_text()).get("history", [])))


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    committed = HERE / "results" / f"kauh_classifier_{a.tag}"
    run = Path(a.run_dir)
    if a.save_folds:
        print(f"copied {_copy_new(run / 'folds', committed) or 'nothing new'} to {committed}")
        return 0
    if not Path(a.data).is_dir():
        print(f"KAUH data not found at {a.data}; pass --data", file=sys.stderr)
        return 2
    from spinexr.evaluation.cv import run_cv

    top, cv, tr = _settings(a.recipe, a.data)
    restored = _copy_new(committed, run / "folds") if committed.is_dir() else []
    if restored:
        print(f"starting from the committed folds {restored}")
    if not (run / "config.json").is_file():
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(json.dumps({"verb": "cv", "cv": cv.to_dict(), "train": tr.to_dict(),
                                                     "source": str(a.data), "device": tr.device}, indent=2))
    t0 = time.perf_counter()
    res = run_cv(a.data, cv, tr, run, progress=True, resume=True)
    _copy_new(run / "folds", committed)
    m = cv.models[0]
    r = res.models[m]
    d = r.decision or {}
    rep = (d.get("repeats") or [{}])[0]
    out = {
        **header("kauh_classifier", argv),
        "recipe": {"file": a.recipe, "models": cv.models, "cv": cv.to_dict(), "train": tr.to_dict(),
                   "weights": cv.weights},
        "n_images": res.data.n_images, "counts": res.data.counts,
        "wall_seconds_last_piece": time.perf_counter() - t0,
        # Wall seconds of every epoch of every fold (all pieces), on the machine's cores (see "machine").
        "train_seconds": _train_seconds(run / "folds"),
        "classifier": {"accuracy_mean": r.summary["accuracy"]["mean"], "accuracy_std": r.summary["accuracy"]["std"],
                       "accuracy_folds": [f.accuracy for f in r.folds],
                       "macro_f1_mean": r.summary["macro_f1"]["mean"], "pooled": r.pooled, "ci95": r.ci95,
                       "recall": rep.get("recall"), "framing_stress": r.framing},
        "decision": {"accuracy_mean": d.get("accuracy_with_rule_mean"), "recall": rep.get("recall_with_rule"),
                     "changed": d.get("changed"), "changed_to_right": d.get("changed_to_right"),
                     "changed_to_wrong": d.get("changed_to_wrong"), "curve_deg": d.get("curve_deg"),
                     "folds": rep.get("folds"), "pooled": decision_pooled(rep.get("folds") or []),
                     "framing_stress": d.get("framing"),
                     "view_full_spine_rate": d.get("view_full_spine_rate"), "landmarks": cv.landmarks},
        "leaky": None if res.leaky is None else {"test_leak_fraction": res.leaky.test_leak_fraction,
                                                 "accuracy": {k: v["accuracy"] for k, v in res.leaky.models.items()}},
        "targets": TARGETS,
    }
    write_result(f"kauh_classifier_{a.tag}.json", out)
    print(f"{m}: accuracy {out['classifier']['accuracy_mean']:.1%}, through the decision "
          f"{out['decision']['accuracy_mean'] or float('nan'):.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
