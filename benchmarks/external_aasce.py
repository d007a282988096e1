"""A KAUH-trained classifier on another hospital's films (AASCE / SpineWeb 16), alone and with the
decision that answers to the measured curve.

    python benchmarks/external_aasce.py --landmark-run runs/bench_aasce_cpu_reduced

- The classifier (default: the bundled one) never saw an AASCE film.
- Each AASCE film's Cobb evidence comes from the landmark model of the CV fold that did not train on
  it (``oof_landmarks.npz`` of the landmark CV run); films without such a measurement (with the reduced
  CPU recipe, the 80% the fold trained on) are scored by the classifier alone and reported apart.
- The rule's curve line is fitted on KAUH Normal films, measured by the same fold's landmark model,
  which never saw KAUH: the smallest angle at most ``--max-override`` of them reach. The AASCE films
  play no part in choosing it.
- The framing stress test (``spinexr.data.framing``) on the classifier's held-out KAUH films.
- KAUH accuracy before and after the rule, side by side on the films the classifier held out (its
  model file's split: ``--kauh-test-fraction`` with seed ``--kauh-seed``), and, per class, how often
  the angle is used as evidence (the full-spine AP check: Normal strips and Scoliosis films are
  full-spine AP views; Spondylolisthesis films are lumbar views, AP and lateral, where it should not be).
- The view check (``spinexr.geometry.view``): for KAUH's held-out films fitted on the classifier's
  training films, for the AASCE films on every KAUH film, and with ``--kauh-cv-run`` out of fold on
  the CV's folds; how many films of each kind it finds to be full-spine AP views.

Writes benchmarks/results/external_aasce.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import header, write_result  # noqa: E402

AASCE = HERE.parent.parent / "shared" / "data" / "aasce-spine-ap"
KAUH = HERE.parent.parent / "shared" / "data" / "kauh-spine-xray"


def _acc(called: list[str], truth: list[str]) -> dict:
    from spinexr.evaluation.external import wilson

    k = sum(a == b for a, b in zip(called, truth))
    return {"n": len(truth), "accuracy": k / max(len(truth), 1), "ci95": wilson(k, len(truth))}


def _cv_rule(run: Path, paths: list, truth: list[str], meas: list, max_rate: float, view_features=None) -> dict:
    """The decision rule on a KAUH CV run's out-of-fold calls (repeat 0, its first model), side by side
    with the classifier alone: see :func:`spinexr.deploy.decision.rule_cv`."""
    import csv

    from spinexr.deploy.decision import rule_cv

    rows = [r for r in csv.DictReader((run / "oof_predictions.csv").open()) if r["repeat"] == "0"]
    model = rows[0]["model"]
    by_path = {str(Path(r["path"]).resolve()): r for r in rows if r["model"] == model}
    idx = [i for i, p in enumerate(paths) if str(Path(p).resolve()) in by_path]
    got = [by_path[str(Path(paths[i]).resolve())] for i in idx]
    probs = [{k[2:]: float(v) for k, v in r.items() if k.startswith("p_")} for r in got]
    out = rule_cv([truth[i] for i in idx], [r["pred"] for r in got], probs, [int(r["fold"]) for r in got],
                  [meas[i] for i in idx], max_rate=max_rate,
                  view_features=None if view_features is None else view_features[idx])
    return {"model": model, "n": len(idx), **out}


NOTE = ("The curve line is fitted on KAUH Normal films. The rule's 25° bar for Normal calls on views the check "
        "doubts (decision rule v3) was adopted after three AASCE films of 31-70° were missed under rule v1, so the "
        "AASCE figure is a development figure, not a held-out one.")


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    from spinexr.data.dataset import prepare_dataset
    from spinexr.data.framing import framing_stress
    from spinexr.data.imread import read_image
    from spinexr.data.landmarks import read_aasce
    from spinexr.data.splits import holdout
    from spinexr.deploy.bundled import bundled_path
    from spinexr.deploy.decision import DecisionRule, fit_curve_deg
    from spinexr.deploy.measure import Measurement, SpineMeasurer
    from spinexr.deploy.predictor import Predictor
    from spinexr.evaluation.external import external_metrics
    from spinexr.geometry.plausibility import implausibility
    from spinexr.geometry.view import FEATURES as VIEW_FEATURES
    from spinexr.geometry.view import FULL_SPINE, fit_view_check, view_features

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classifier", default=None, help="classifier model file (default: the bundled one)")
    ap.add_argument("--landmark-run", required=True, help="a landmark CV run folder (models/, oof_landmarks.npz)")
    ap.add_argument("--max-override", type=float, default=0.02,
                    help="largest share of KAUH Normal films the curve line may override")
    ap.add_argument("--kauh-test-fraction", type=float, default=0.2)
    ap.add_argument("--kauh-seed", type=int, default=0)
    ap.add_argument("--keep-lumbar-out", type=float, default=0.9,
                    help="share of KAUH's lumbar (Spondylolisthesis) films the view check's line keeps out")
    ap.add_argument("--kauh-size", type=int, default=None, help="the classifier's input size (default: its contract)")
    ap.add_argument("--kauh-cv-run", action="append", default=[],
                    help="a KAUH CV run folder (oof_predictions.csv): score the rule on its 5-fold out-of-fold calls, "
                         "each fold's curve line fitted on the other folds' Normal films (repeatable)")
    ap.add_argument("--centreline-weight", type=float, default=None,
                    help="read the angles with this centreline weight instead of the landmark model file's (0: the "
                         "corners alone, the definition)")
    ap.add_argument("--tag", default=None, help="write external_aasce_TAG.json (default: external_aasce.json)")
    a = ap.parse_args(argv)
    if a.centreline_weight is not None and not 0 <= a.centreline_weight <= 1:
        ap.error("--centreline-weight must be between 0 and 1")
    for d in a.kauh_cv_run:  # checked before minutes of measuring, not after
        if not (Path(d) / "oof_predictions.csv").is_file():
            print(f"--kauh-cv-run {d}: no oof_predictions.csv there; give the folder of a finished `spinexr cv` "
                  "(or benchmarks/kauh_augment.py arm) run", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    clf_path = Path(a.classifier) if a.classifier else bundled_path("classifier")
    run = Path(a.landmark_run)
    pred = Predictor(clf_path)
    measurer = SpineMeasurer(run / "models" / "landmarks.safetensors")
    if a.centreline_weight is not None:
        measurer.centreline_weight = a.centreline_weight

    # KAUH: classify and measure every film.
    kauh = prepare_dataset(KAUH, [a.kauh_size or pred.meta["data_config"]["input_size"]], progress=False)
    classes = list(pred.labels)
    k_truth = [classes[i] for i in kauh.labels]
    k_label, k_meas, k_view = [], [], []
    for p in tqdm(kauh.paths, desc="KAUH", unit="film"):
        img, _ = read_image(p)
        pr = pred.predict_image(img, str(p))
        k_label.append((pr.label, pr.probabilities))
        m = measurer.measure(img)
        k_meas.append(m)
        k_view.append(view_features(m.landmarks, img.shape[0], m.confidence))
    k_angle = np.array([m.result.largest if m.result is not None else np.nan for m in k_meas])
    k_view = np.array(k_view)
    non_sco = np.array([t == "Normal" for t in k_truth])
    k_full = np.array([t != "Spondylolisthesis" for t in k_truth])
    curve_deg = fit_curve_deg(k_angle[non_sco], max_rate=a.max_override)
    rule = DecisionRule(curve_deg=curve_deg)
    tr, te = holdout(kauh.labels, kauh.groups, a.kauh_test_fraction, seed=a.kauh_seed)
    # The view check: for KAUH's held-out films fitted on the classifier's training films only; for the
    # AASCE films on every KAUH film (as the bundled landmark model's check is).
    check_tr = fit_view_check(k_view[tr], k_full[tr], a.keep_lumbar_out, f"{len(tr)} KAUH training films")
    check = fit_view_check(k_view, k_full, a.keep_lumbar_out, f"all {len(k_full)} KAUH films")
    in_te = set(te.tolist())
    for i in range(len(k_meas)):  # films outside the held-out split only count changes over all films
        k_meas[i] = (check_tr if i in in_te else check).applied(k_meas[i], k_view[i])
    k_dec = [rule.decide(lab, probs, m) for (lab, probs), m in zip(k_label, k_meas)]
    k_fused = [d.label for d in k_dec]

    def predict_films(films: list) -> np.ndarray:
        return np.array([[p.probabilities[c] for c in classes] for p in pred.predict_images(films)])

    held = {c: [read_image(kauh.paths[i])[0] for i in te if k_truth[i] == c] for c in ("Scoliosis", "Normal")}
    framing = framing_stress(predict_films, held["Scoliosis"], held["Normal"], classes)
    kauh_out = {
        "n": len(k_truth), "curve_deg": curve_deg, "max_override": a.max_override,
        "held_out": {"protocol": f"the classifier's own held-out split ({a.kauh_test_fraction:.0%} of groups, "
                                 f"seed {a.kauh_seed})",
                     "classifier": _acc([k_label[i][0] for i in te], [k_truth[i] for i in te]),
                     "with_rule": _acc([k_fused[i] for i in te], [k_truth[i] for i in te])},
        "framing_stress_held_out": framing,
        "all_films_with_rule_changed": int(sum(f != lab for f, (lab, _) in zip(k_fused, k_label))),
        "plausible_spine": {c: float(np.mean([m.result is not None for m, t in zip(k_meas, k_truth) if t == c]))
                            for c in classes},
        "angle_used_held_out": {c: float(np.mean([k_dec[i].cobb_largest is not None for i in te if k_truth[i] == c]))
                                for c in classes},
        "median_measured_angle": {c: float(np.nanmedian(k_angle[[t == c for t in k_truth]])) for c in classes},
        "normal_at_or_over_line": float(np.mean(np.nan_to_num(k_angle[non_sco], nan=-1) >= curve_deg)),
        "view_check": {"features": list(VIEW_FEATURES), "keep_lumbar_out": a.keep_lumbar_out,
                       "held_out_full_spine_rate": {c: float(np.mean([k_meas[i].view == FULL_SPINE for i in te
                                                                      if k_truth[i] == c])) for c in classes},
                       "held_out_protocol": "fitted on the classifier's training films, applied to its held-out films"},
    }

    if a.kauh_cv_run:
        kauh_out["cv_rule"] = {d: _cv_rule(Path(d), kauh.paths, k_truth, k_meas, a.max_override, k_view)
                               for d in a.kauh_cv_run}

    # AASCE: classify every film; the out-of-fold measurement where there is one.
    ds = read_aasce(AASCE)
    oof = np.load(run / "oof_landmarks.npz", allow_pickle=False)
    oof_pts = {str(Path(p).resolve()): v for p, v in zip(oof["paths"], oof["landmarks"])}
    probs, labels, true, meas_angle, fused, has_oof, a_conf = [], [], [], [], [], [], []
    names, view_p, views = [], [], []
    for r in tqdm(ds.records, desc="AASCE", unit="film"):
        img, _ = read_image(r.path)
        pr = pred.predict_image(img, str(r.path))
        probs.append([pr.probabilities[c] for c in classes])
        labels.append(pr.label)
        true.append(float(np.max(r.angles)))
        names.append(Path(r.path).name)
        v = oof_pts.get(str(Path(r.path).resolve()))
        has_oof.append(v is not None)
        if v is None:
            meas_angle.append(np.nan)
            fused.append(pr.label)
            view_p.append(np.nan)
            views.append(None)
            continue
        conf = measurer.measure(img).confidence  # the fold model's heatmap confidence, for the view check
        a_conf.append(conf)
        refused = implausibility(v)
        m = Measurement(v, None if refused else measurer.angles(v, r.height), refused, conf,
                        *check.judge(view_features(v, r.height, conf)))
        views.append(m.view)
        view_p.append(np.nan if m.view_probability is None else float(m.view_probability))
        meas_angle.append(m.result.largest if m.result is not None else np.nan)
        fused.append(rule.decide(pr.label, pr.probabilities, m).label)
    probs, true, meas_angle, has_oof = np.array(probs), np.array(true), np.array(meas_angle), np.array(has_oof)
    y = np.full(len(true), classes.index("Scoliosis"))
    fused_probs = np.eye(len(classes))[[classes.index(f) for f in fused]]
    o = has_oof
    evidence = np.where(np.isfinite(meas_angle), meas_angle, np.nan)
    aasce_out = {
        "n": len(true), "n_out_of_fold_measured": int(o.sum()),
        "classifier_all_films": external_metrics(y, probs, true),
        "oof_films": {
            "classifier": external_metrics(y[o], probs[o], true[o], meas_angle[o]),
            "with_rule": external_metrics(y[o], fused_probs[o], true[o]),
            "evidence": "the measured largest Cobb angle (NaN where the spine was refused)",
            "refused": int((~np.isfinite(evidence[o])).sum()),
            "view_full_spine_rate": float(np.mean([v == FULL_SPINE for v in views if v is not None])),
        },
    }
    ge25 = o & (true >= 25)
    aasce_out["oof_films"]["called_scoliosis_ge25"] = {
        "n": int(ge25.sum()), "classifier": float(np.mean(np.array(labels)[ge25] == "Scoliosis")),
        "with_rule": float(np.mean(np.array(fused)[ge25] == "Scoliosis"))}
    fa, lab_a, mv = np.array(fused), np.array(labels), np.nan_to_num(meas_angle, nan=-1.0)
    miss = ge25 & (fa != "Scoliosis")
    # Normal calls that stood: measured under the curve line, or over it on a view the check doubted
    # (where a Normal call answers only to the rule's higher bar, DecisionRule.doubted_view_deg).
    under = miss & (lab_a == "Normal") & (mv < curve_deg)
    doubted = miss & (lab_a == "Normal") & ~under & np.array([v is not None and v != FULL_SPINE for v in views])
    aasce_out["oof_films"]["missed_ge25"] = {
        "n": int(miss.sum()),
        "normal_call_under_line": int(under.sum()),
        "normal_call_doubted_view_under_bar": int(doubted.sum()),
        "spondylolisthesis_call": int((miss & (lab_a == "Spondylolisthesis")).sum()),
        "other": int((miss & ~under & ~doubted & (lab_a != "Spondylolisthesis")).sum()),
        "films": [{"film": names[i], "true_largest": round(float(true[i]), 2),
                   "measured_largest": None if not np.isfinite(meas_angle[i]) else round(float(meas_angle[i]), 2),
                   "classifier": labels[i], "decision": fused[i],
                   "full_spine_probability": None if not np.isfinite(view_p[i]) else round(view_p[i], 3)}
                  for i in np.flatnonzero(miss)]}

    # Could the landmark model tell a lumbar view from a full-spine AP film? Its heatmap confidence on
    # KAUH's lumbar (Spondylolisthesis) films against full-spine AP films, KAUH's and the AASCE films
    # it did not train on: the line that keeps 90% of the lumbar films out, and what it costs.
    k_conf = np.array([m.confidence for m in k_meas])
    a_conf = np.array(a_conf)
    lumbar = k_conf[np.array([t == "Spondylolisthesis" for t in k_truth])]
    line = float(np.quantile(lumbar, 0.9))
    kauh_out["view_by_confidence"] = {
        "confidence_median": {c: float(np.median(k_conf[np.array([t == c for t in k_truth])])) for c in classes}
        | {"AASCE (out of fold)": float(np.median(a_conf))},
        "line_keeping_90pct_of_lumbar_out": line,
        "kauh_full_ap_over_line": float(np.mean(k_conf[np.array([t != "Spondylolisthesis" for t in k_truth])] > line)),
        "aasce_over_line": float(np.mean(a_conf > line)),
    }
    shown = clf_path.resolve()
    shown = shown.relative_to(HERE.parent) if shown.is_relative_to(HERE.parent) else shown
    out = {**header("external_aasce", argv), "classifier": str(shown), "classifier_meta": {
        k: pred.meta.get(k) for k in ("architecture", "attention", "data_config", "training_data", "created")},
        "landmark_run": str(run), "centreline_weight": measurer.centreline_weight,
        "kauh": kauh_out, "aasce": aasce_out, "wall_seconds": time.perf_counter() - t0,
        "targets": {"called_scoliosis_ge25": 0.97, "spearman_evidence": 0.6, "kauh_accuracy_drop_max": 0.01},
        "note": NOTE}
    write_result(f"external_aasce_{a.tag}.json" if a.tag else "external_aasce.json", out)
    c = aasce_out["oof_films"]["called_scoliosis_ge25"]
    sp = aasce_out["oof_films"]["classifier"]["angles"]
    print(f"curve line {curve_deg:.1f} deg; AASCE >=25 deg called Scoliosis: classifier {c['classifier']:.1%}, with the "
          f"rule {c['with_rule']:.1%} of {c['n']}; Spearman P(Scoliosis) {sp['spearman_p_scoliosis']}, measured angle "
          f"{sp.get('spearman_measured_angle')}; KAUH held-out {kauh_out['held_out']['classifier']['accuracy']:.1%} -> "
          f"{kauh_out['held_out']['with_rule']['accuracy']:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
