"""Which KAUH films the decision calls differently when another landmark model (or refiner) measures them,
on the same out-of-fold classifier calls.

    python benchmarks/decision_diff.py --cv-run runs/refactor_kauh/window-contract \\
        --measurer seed1-fold=runs/bench_aasce_cpu_reduced_seed1/models/landmarks.safetensors \\
        --measurer bundled-first-stage=src/spinexr/deploy/bundled/landmarks.safetensors \\
        --measurer bundled=src/spinexr/deploy/bundled/landmarks.safetensors+src/spinexr/deploy/bundled/refiner.safetensors

``kauh_augment.py`` scores the decision through a KAUH CV (the window arm, its folds and seeds) once per
landmark model; when its figure moves between two models, this says why. Each measurer (a landmark model
file, ``+`` its refiner) measures every film once; per fold the rule is fitted on the other folds
(:func:`spinexr.evaluation.rule_cv.fit_fold_rule`, as ``kauh_augment.py`` does) and decides the fold's films
from the CV run's out-of-fold classifier calls (repeat 0). Reports per measurer the lines, the accuracy with
the rule, the decisions it changed (to right, to wrong), and every film on which the measurers' decisions
differ, with each one's angle and view. Writes ``benchmarks/results/decision_diff_<tag>.json``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from _machine import header, write_result  # noqa: E402
from spinexr import CLASSES  # noqa: E402
from spinexr.evaluation.decision_cv import CurveEvidence  # noqa: E402
from spinexr.evaluation.rule_cv import OutOfFoldCalls, RuleFit, fold_decisions  # noqa: E402


def oof_calls(cv_run: Path, repeat: int = 0) -> list[dict]:
    """The CV run's out-of-fold rows of one repeat, one per film (its single model's, not the ensemble's)."""
    rows = [r for r in csv.DictReader((cv_run / "oof_predictions.csv").open()) if int(r["repeat"]) == repeat]
    models = sorted({r["model"] for r in rows} - {"ensemble"}) or ["ensemble"]
    rows = [r for r in rows if r["model"] == models[0]]
    if len({r["path"] for r in rows}) != len(rows):
        raise SystemExit(f"{cv_run}: more than one row per film in repeat {repeat} of model {models[0]}")
    return rows


def _probability(m) -> float | None:
    """The full-spine probability the fold's view check gave a film (None where no check judged it)."""
    p = getattr(m, "view_probability", None)
    return None if p is None else round(float(p), 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cv-run", type=Path, required=True, help="a KAUH CV arm's run folder (oof_predictions.csv)")
    ap.add_argument("--measurer", action="append", required=True, metavar="NAME=LANDMARKS[+REFINER]")
    ap.add_argument("--tag", default=None)
    args = ap.parse_args(argv)
    head = header("decision_diff", argv)
    rows = oof_calls(args.cv_run)
    truth = [r["label"] for r in rows]
    data = SimpleNamespace(paths=[r["path"] for r in rows], labels=[CLASSES.index(t) for t in truth])
    called = [r["pred"] for r in rows]
    folds = [int(r["fold"]) for r in rows]
    probs = [{c: float(r[f"p_{c}"]) for c in CLASSES} for r in rows]
    results, decisions = {}, {}
    for spec in args.measurer:
        name, _, files = spec.partition("=")
        landmarks, _, refiner = files.partition("+")
        ev = CurveEvidence(landmarks, data, refiner=refiner or None, progress=False)
        scored = ev.score(np.array([[p[c] for c in CLASSES] for p in probs]), np.array(folds))  # as the KAUH CV scores it
        labels, judged, _ = fold_decisions(OutOfFoldCalls(ev.truth, called, probs, folds), ev.measurements,
                                           ev.view_features, RuleFit(ev.max_rate, ev.keep_lumbar_out))
        decisions[name] = [(lab, float(ev.angle[i]), judged[i].view, _probability(judged[i])) for i, lab in enumerate(labels)]
        results[name] = {"landmarks": landmarks, "refiner": refiner or None,
                         "curve_deg": {f["fold"]: f["curve_deg"] for f in scored["folds"]},
                         "accuracy_with_rule": float(np.mean([lab == t for lab, t in zip(labels, truth)])),
                         # kauh_augment.py's figure: the mean of the folds' accuracies
                         "accuracy_with_rule_fold_mean": scored["accuracy_with_rule_mean"],
                         "changed_to_right": scored["changed_to_right"], "changed_to_wrong": scored["changed_to_wrong"]}
        r = results[name]
        print(f"{name}: lines {r['curve_deg']}, accuracy with the rule {r['accuracy_with_rule']:.1%} (mean of folds "
              f"{r['accuracy_with_rule_fold_mean']:.1%}), changed {r['changed_to_right']} to right, "
              f"{r['changed_to_wrong']} to wrong", flush=True)
    films = []
    for i, r in enumerate(rows):
        each = {n: decisions[n][i] for n in decisions}
        if len({d[0] for d in each.values()}) > 1:
            films.append({"film": str(Path(r["path"]).relative_to(Path(r["path"]).parents[1])), "truth": truth[i],
                          "classifier": called[i],
                          **{n: {"decision": d[0], "largest_deg": None if np.isnan(d[1]) else round(d[1], 1),
                                 "view": d[2], "full_spine_probability": d[3]} for n, d in each.items()}})
    print(f"{len(films)} films decided differently")
    write_result(f"decision_diff_{args.tag or 'kauh'}.json",
                 {**head, "cv_run": str(args.cv_run), "n_films": len(rows), "accuracy_classifier":
                  float(np.mean([c == t for c, t in zip(called, truth)])), "measurers": results, "films": films})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
