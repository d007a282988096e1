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
import csv
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from _machine import header, write_result  # noqa: E402
from refine_variants import add_reading_args, apply_reading, reading_text  # noqa: E402
from spinexr.data.dataset import prepare_dataset  # noqa: E402
from spinexr.data.framing import framing_stress  # noqa: E402
from spinexr.data.imread import read_image  # noqa: E402
from spinexr.data.landmarks import read_aasce  # noqa: E402
from spinexr.data.splits import holdout  # noqa: E402
from spinexr.deploy.bundled import bundled_path  # noqa: E402
from spinexr.deploy.decision import RULE_VERSION, DecisionRule, fit_curve_deg  # noqa: E402
from spinexr.deploy.measure import Measurement, SpineMeasurer  # noqa: E402
from spinexr.evaluation.external import external_metrics, wilson  # noqa: E402
from spinexr.evaluation.rule_cv import OutOfFoldCalls, RuleFit, rule_cv  # noqa: E402
from spinexr.geometry.view import FULL_SPINE, ViewCheck, fit_view_check, spine_view_features  # noqa: E402
from spinexr.pipeline import Pipeline  # noqa: E402

AASCE = HERE.parent.parent / "shared" / "data" / "aasce-spine-ap"
KAUH = HERE.parent.parent / "shared" / "data" / "kauh-spine-xray"


def _acc(called: list[str], truth: list[str]) -> dict:
    k = sum(a == b for a, b in zip(called, truth))
    return {"n": len(truth), "accuracy": k / max(len(truth), 1), "ci95": wilson(k, len(truth))}


def _cv_rule(run: Path, paths: list, truth: list[str], meas: list, max_rate: float, view_features=None) -> dict:
    """The decision rule on a KAUH CV run's out-of-fold calls (repeat 0, its first model), side by side
    with the classifier alone: see :func:`spinexr.deploy.decision.rule_cv`."""
    rows = [r for r in csv.DictReader((run / "oof_predictions.csv").open()) if r["repeat"] == "0"]
    model = rows[0]["model"]
    by_path = {str(Path(r["path"]).resolve()): r for r in rows if r["model"] == model}
    idx = [i for i, p in enumerate(paths) if str(Path(p).resolve()) in by_path]
    got = [by_path[str(Path(paths[i]).resolve())] for i in idx]
    probs = [{k[2:]: float(v) for k, v in r.items() if k.startswith("p_")} for r in got]
    calls = OutOfFoldCalls([truth[i] for i in idx], [r["pred"] for r in got], probs, [int(r["fold"]) for r in got])
    out = rule_cv(calls, [meas[i] for i in idx], None if view_features is None else view_features[idx],
                  RuleFit(max_rate=max_rate))
    return {"model": model, "n": len(idx), **out}


NOTE = ("The curve line is fitted on KAUH Normal films. The rule's 25° bar for Normal calls on views the check "
        "doubts (decision rule v3) was adopted after three AASCE films of 31-70° were missed under rule v1, so the "
        "AASCE figure is a development figure, not a held-out one.")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classifier", default=None, help="a classifier model file or a bundle (default: the bundled "
                    "classifier); its landmark model and rule are not used: the landmark run's are")
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
    ap.add_argument("--refiner", default=None,
                    help="a vertebra refiner trained on the landmark run's own training cases (aasce_refine.py): "
                         "every film's corners (KAUH's and the out-of-fold AASCE corners) are read again by it, "
                         "and the angles as its file says")
    ap.add_argument("--tag", default=None, help="write external_aasce_TAG.json (default: external_aasce.json)")
    add_reading_args(ap)  # with --tta-scales the fold model measures each film again with those views
    return ap


@dataclass
class KauhSide:
    """Every KAUH film classified and measured, the rule fitted on them, and the view checks."""

    truth: list[str]
    label: list[tuple[str, dict]]
    meas: list
    view: np.ndarray
    angle: np.ndarray
    rule: DecisionRule
    check: ViewCheck  # fitted on every KAUH film: the one the AASCE films are judged by
    held_out: np.ndarray
    paths: list


def _kauh_side(pipeline: Pipeline, a: argparse.Namespace) -> KauhSide:
    pred, measurer = pipeline.predictor, pipeline.measurer
    kauh = prepare_dataset(KAUH, [a.kauh_size or pred.meta["data_config"]["input_size"]], progress=False)
    classes = list(pred.labels)
    truth = [classes[i] for i in kauh.labels]
    label, meas, views = [], [], []
    for p in tqdm(kauh.paths, desc="KAUH", unit="film"):
        img, _ = read_image(p)
        pr = pred.predict_image(img)
        label.append((pr.label, pr.probabilities))
        m = measurer.measure(img)
        meas.append(m)
        views.append(spine_view_features(m.landmarks, img.shape[0], m.confidence, m.first_stage))
    angle = np.array([m.result.largest if m.result is not None else np.nan for m in meas])
    view = np.array(views)
    full = np.array([t != "Spondylolisthesis" for t in truth])
    rule = DecisionRule(curve_deg=fit_curve_deg(angle[np.array([t == "Normal" for t in truth])], max_rate=a.max_override))
    tr, te = holdout(kauh.labels, kauh.groups, a.kauh_test_fraction, seed=a.kauh_seed)
    # The view check: for KAUH's held-out films fitted on the classifier's training films only; for the
    # AASCE films on every KAUH film (as the bundled landmark model's check is).
    check_tr = fit_view_check(view[tr], full[tr], a.keep_lumbar_out, f"{len(tr)} KAUH training films")
    check = fit_view_check(view, full, a.keep_lumbar_out, f"all {len(full)} KAUH films")
    in_te = set(te.tolist())
    for i in range(len(meas)):  # films outside the held-out split only count changes over all films
        meas[i] = (check_tr if i in in_te else check).applied(meas[i], view[i])
    return KauhSide(truth, label, meas, view, angle, rule, check, te, kauh.paths)


def _kauh_figures(k: KauhSide, pipeline: Pipeline, a: argparse.Namespace) -> dict:
    classes, te, rule = list(pipeline.labels), k.held_out, k.rule
    dec = [rule.decide(lab, probs, m) for (lab, probs), m in zip(k.label, k.meas)]
    fused = [d.label for d in dec]

    def predict_films(films: list) -> np.ndarray:
        return np.array([[p.probabilities[c] for c in classes] for p in pipeline.predictor.predict_images(films)])

    held = {c: [read_image(k.paths[i])[0] for i in te if k.truth[i] == c] for c in ("Scoliosis", "Normal")}
    non_sco = np.array([t == "Normal" for t in k.truth])
    out = {
        "n": len(k.truth), "curve_deg": rule.curve_deg, "max_override": a.max_override,
        "held_out": {"protocol": f"the classifier's own held-out split ({a.kauh_test_fraction:.0%} of groups, "
                                 f"seed {a.kauh_seed})",
                     "classifier": _acc([k.label[i][0] for i in te], [k.truth[i] for i in te]),
                     "with_rule": _acc([fused[i] for i in te], [k.truth[i] for i in te])},
        "framing_stress_held_out": framing_stress(predict_films, held["Scoliosis"], held["Normal"], classes),
        "all_films_with_rule_changed": int(sum(f != lab for f, (lab, _) in zip(fused, k.label))),
        "plausible_spine": {c: float(np.mean([m.result is not None for m, t in zip(k.meas, k.truth) if t == c]))
                            for c in classes},
        "angle_used_held_out": {c: float(np.mean([dec[i].cobb_largest is not None for i in te if k.truth[i] == c]))
                                for c in classes},
        "median_measured_angle": {c: float(np.nanmedian(k.angle[[t == c for t in k.truth]])) for c in classes},
        "normal_at_or_over_line": float(np.mean(np.nan_to_num(k.angle[non_sco], nan=-1) >= rule.curve_deg)),
        "view_check": {"features": list(k.check.features), "keep_lumbar_out": a.keep_lumbar_out,
                       "held_out_full_spine_rate": {c: float(np.mean([k.meas[i].view == FULL_SPINE for i in te
                                                                      if k.truth[i] == c])) for c in classes},
                       "held_out_protocol": "fitted on the classifier's training films, applied to its held-out films"},
    }
    if a.kauh_cv_run:
        out["cv_rule"] = {d: _cv_rule(Path(d), k.paths, k.truth, k.meas, a.max_override, k.view) for d in a.kauh_cv_run}
    return out


@dataclass
class AasceFilms:
    """Every AASCE film classified; the out-of-fold measurement and the decision where there is one."""

    names: list = field(default_factory=list)
    probs: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    true: list = field(default_factory=list)
    angle: list = field(default_factory=list)
    fused: list = field(default_factory=list)
    has_oof: list = field(default_factory=list)
    conf: list = field(default_factory=list)
    view_p: list = field(default_factory=list)
    views: list = field(default_factory=list)
    agreement: list = field(default_factory=list)  # the decision's flag ("" where no angle was measured)


def _aasce_films(pipeline: Pipeline, run: Path, rule: DecisionRule, check: ViewCheck,
                 rerun_first: bool = False) -> AasceFilms:
    pred, measurer, classes = pipeline.predictor, pipeline.measurer, list(pipeline.labels)
    oof = np.load(run / "oof_landmarks.npz", allow_pickle=False)
    oof_pts = {str(Path(p).resolve()): v for p, v in zip(oof["paths"], oof["landmarks"])}
    f = AasceFilms()
    for r in tqdm(read_aasce(AASCE).records, desc="AASCE", unit="film"):
        img, _ = read_image(r.path)
        pr = pred.predict_image(img)
        f.probs.append([pr.probabilities[c] for c in classes])
        f.labels.append(pr.label)
        f.true.append(float(np.max(r.angles)))
        f.names.append(Path(r.path).name)
        v = oof_pts.get(str(Path(r.path).resolve()))
        f.has_oof.append(v is not None)
        if v is None:
            f.angle.append(np.nan)
            f.fused.append(pr.label)
            f.view_p.append(np.nan)
            f.views.append(None)
            f.agreement.append("")
            continue
        first, conf = measurer.first_stage([img])[0]  # the fold model's heatmap confidence, for the view check
        if rerun_first:  # the same out-of-fold model, read with other test-time views than its CV run's
            v = first
        f.conf.append(conf)
        u = v
        v, refused = measurer.second_stage(img, u)  # the out-of-fold corners, refined and judged as deployed
        first_c = None if v is u else u  # kept where the refiner read them again, as SpineMeasurer keeps them
        m = Measurement(v, None if refused else measurer.angles(v, r.height), refused, conf, first_stage=first_c)
        m = check.applied(m, check.read(v, r.height, conf, first_c))
        f.views.append(m.view)
        f.view_p.append(np.nan if m.view_probability is None else float(m.view_probability))
        f.angle.append(m.result.largest if m.result is not None else np.nan)
        dec = rule.decide(pr.label, pr.probabilities, m)
        f.fused.append(dec.label)
        f.agreement.append(dec.agreement)
    return f


def _missed_ge25(f: AasceFilms, o: np.ndarray, curve_deg: float) -> dict:
    true, meas_angle = np.array(f.true), np.array(f.angle)
    fa, lab_a, mv = np.array(f.fused), np.array(f.labels), np.nan_to_num(meas_angle, nan=-1.0)
    miss = o & (true >= 25) & (fa != "Scoliosis")
    # Normal calls that stood: measured under the curve line, or over it on a view the check doubted
    # (where a Normal call answers only to the rule's higher bar, DecisionRule.doubted_view_deg).
    under = miss & (lab_a == "Normal") & (mv < curve_deg)
    doubted = miss & (lab_a == "Normal") & ~under & np.array([v is not None and v != FULL_SPINE for v in f.views])
    return {"n": int(miss.sum()),
            "normal_call_under_line": int(under.sum()),
            "normal_call_doubted_view_under_bar": int(doubted.sum()),
            "spondylolisthesis_call": int((miss & (lab_a == "Spondylolisthesis")).sum()),
            "other": int((miss & ~under & ~doubted & (lab_a != "Spondylolisthesis")).sum()),
            # Misses whose measured curve is still shown beside the label, flagged (decision rule v4 on), and the
            # version of the rule that decided them.
            "flagged_check_the_film": int(sum(miss[i] and f.agreement[i] == "check the film" for i in range(len(miss)))),
            "rule_version": RULE_VERSION,
            "films": [{"film": f.names[i], "true_largest": round(float(true[i]), 2),
                       "measured_largest": None if not np.isfinite(meas_angle[i]) else round(float(meas_angle[i]), 2),
                       "classifier": f.labels[i], "decision": f.fused[i], "agreement": f.agreement[i],
                       "full_spine_probability": None if not np.isfinite(f.view_p[i]) else round(f.view_p[i], 3)}
                      for i in np.flatnonzero(miss)]}


def _aasce_figures(f: AasceFilms, classes: list[str], curve_deg: float) -> dict:
    probs, true, meas_angle, o = np.array(f.probs), np.array(f.true), np.array(f.angle), np.array(f.has_oof)
    y = np.full(len(true), classes.index("Scoliosis"))
    fused_probs = np.eye(len(classes))[[classes.index(x) for x in f.fused]]
    evidence = np.where(np.isfinite(meas_angle), meas_angle, np.nan)
    ge25 = o & (true >= 25)
    return {
        "n": len(true), "n_out_of_fold_measured": int(o.sum()),
        "classifier_all_films": external_metrics(y, probs, true),
        "oof_films": {
            "classifier": external_metrics(y[o], probs[o], true[o], meas_angle[o]),
            "with_rule": external_metrics(y[o], fused_probs[o], true[o]),
            "evidence": "the measured largest Cobb angle (NaN where the spine was refused)",
            "refused": int((~np.isfinite(evidence[o])).sum()),
            "view_full_spine_rate": float(np.mean([v == FULL_SPINE for v in f.views if v is not None])),
            "called_scoliosis_ge25": {"n": int(ge25.sum()),
                                      "classifier": float(np.mean(np.array(f.labels)[ge25] == "Scoliosis")),
                                      "with_rule": float(np.mean(np.array(f.fused)[ge25] == "Scoliosis"))},
            "missed_ge25": _missed_ge25(f, o, curve_deg),
        },
    }


def _view_by_confidence(k: KauhSide, a_conf: list, classes: list[str]) -> dict:
    """Could the landmark model tell a lumbar view from a full-spine AP film by its heatmap confidence
    alone? KAUH's lumbar (Spondylolisthesis) films against full-spine AP films, KAUH's and the AASCE films
    it did not train on: the line that keeps 90% of the lumbar films out, and what it costs."""
    k_conf, a_c = np.array([m.confidence for m in k.meas]), np.array(a_conf)
    line = float(np.quantile(k_conf[np.array([t == "Spondylolisthesis" for t in k.truth])], 0.9))
    return {
        "confidence_median": {c: float(np.median(k_conf[np.array([t == c for t in k.truth])])) for c in classes}
        | {"AASCE (out of fold)": float(np.median(a_c))},
        "line_keeping_90pct_of_lumbar_out": line,
        "kauh_full_ap_over_line": float(np.mean(k_conf[np.array([t != "Spondylolisthesis" for t in k.truth])] > line)),
        "aasce_over_line": float(np.mean(a_c > line)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    a = ap.parse_args(argv)
    if a.centreline_weight is not None and not 0 <= a.centreline_weight <= 1:
        ap.error("--centreline-weight must be between 0 and 1")
    for d in a.kauh_cv_run:  # checked before minutes of measuring, not after
        if not (Path(d) / "oof_predictions.csv").is_file():
            print(f"--kauh-cv-run {d}: no oof_predictions.csv there; give the folder of a finished `spinexr cv` "
                  "(or benchmarks/kauh_augment.py arm) run", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    run = Path(a.landmark_run)
    pipeline = Pipeline.load(a.classifier, landmarks=run / "models" / "landmarks.safetensors")
    if a.refiner:
        from refine_variants import refiner_file

        pipeline.measurer = SpineMeasurer(run / "models" / "landmarks.safetensors", refiner=refiner_file(Path(a.refiner)))
    apply_reading(pipeline.measurer, a)
    if a.centreline_weight is not None:
        pipeline.measurer.centreline_weight = a.centreline_weight
    classes = list(pipeline.labels)
    k = _kauh_side(pipeline, a)
    kauh_out = _kauh_figures(k, pipeline, a)
    films = _aasce_films(pipeline, run, k.rule, k.check, rerun_first=a.tta_scales is not None)
    aasce_out = _aasce_figures(films, classes, k.rule.curve_deg)
    kauh_out["view_by_confidence"] = _view_by_confidence(k, films.conf, classes)
    clf_path = pipeline.bundle.classifier if pipeline.bundle is not None else Path(a.classifier or bundled_path("classifier"))
    shown = clf_path.resolve()
    shown = shown.relative_to(HERE.parent) if shown.is_relative_to(HERE.parent) else shown
    out = {**header("external_aasce", argv), "classifier": str(shown), "classifier_meta": {
        key: pipeline.predictor.meta.get(key) for key in ("architecture", "attention", "data_config", "training_data",
                                                          "created")},
        "landmark_run": str(run), "refiner": a.refiner, "reading": reading_text(a),
        "centreline_weight": pipeline.measurer.centreline_weight,
        "kauh": kauh_out, "aasce": aasce_out, "wall_seconds": time.perf_counter() - t0,
        "targets": {"called_scoliosis_ge25": 0.97, "spearman_evidence": 0.6, "kauh_accuracy_drop_max": 0.01},
        "note": NOTE}
    write_result(f"external_aasce_{a.tag}.json" if a.tag else "external_aasce.json", out)
    c = aasce_out["oof_films"]["called_scoliosis_ge25"]
    sp = aasce_out["oof_films"]["classifier"]["angles"]
    print(f"curve line {k.rule.curve_deg:.1f} deg; AASCE >=25 deg called Scoliosis: classifier {c['classifier']:.1%}, "
          f"with the rule {c['with_rule']:.1%} of {c['n']}; Spearman P(Scoliosis) {sp['spearman_p_scoliosis']}, "
          f"measured angle {sp.get('spearman_measured_angle')}; KAUH held-out "
          f"{kauh_out['held_out']['classifier']['accuracy']:.1%} -> {kauh_out['held_out']['with_rule']['accuracy']:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
