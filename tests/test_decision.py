"""The decision that answers to the measured curve, and the models bundled with the package."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from spinexr.cli import main
from spinexr.deploy.bundle import write_bundle
from spinexr.deploy.decision import DecisionRule
from spinexr.deploy.measure import Measurement
from spinexr.geometry.cobb import cobb_angles
from spinexr.geometry.plausibility import implausibility
from spinexr.geometry.view import FULL_SPINE, LUMBAR, ViewCheck, fit_view_check

PROBS = {"Normal": 0.7, "Scoliosis": 0.2, "Spondylolisthesis": 0.1}


def _spine(tilts_deg: list[float]) -> np.ndarray:
    out = []
    for j, t in enumerate(tilts_deg):
        th = math.radians(t)
        r = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        c = np.array([200 + 15 * math.sin(j / 3), 40 + j * 30.0])
        out.append([c + r @ np.array(p) for p in ((-30, -12), (30, -12), (-30, 12), (30, 12))])
    return np.array(out)


def _measure(tilts: list[float]) -> Measurement:
    v = _spine(tilts)
    refused = implausibility(v)
    return Measurement(v, None if refused else cobb_angles(v, 600), refused, 0.5)


STRAIGHT = [0.0] * 17
CURVE_40 = [20.0 - 40.0 * j / 16 for j in range(17)]  # end vertebrae tilted +20 and -20: a 40 degree curve
CURVE_30 = [15.0 - 30.0 * j / 16 for j in range(17)]
CURVE_60 = [30.0 - 60.0 * j / 16 for j in range(17)]


def test_measured_curve_changes_the_decision() -> None:
    rule = DecisionRule(curve_deg=25.0)
    straight, curve = _measure(STRAIGHT), _measure(CURVE_40)
    assert curve.result is not None and curve.result.largest == pytest.approx(40.0, abs=0.5)
    d0 = rule.decide("Normal", PROBS, straight)
    d1 = rule.decide("Normal", PROBS, curve)
    assert d0.label == "Normal" and d0.agreement == "agree" and d0.cobb_largest == pytest.approx(0.0, abs=1e-6)
    assert d1.label == "Scoliosis" and d1.classifier_label == "Normal" and d1.agreement == "overruled"
    assert "40.0°" in d1.note and "Normal" in d1.note
    # A Scoliosis call on a straight spine stands, flagged; a curve agrees with it.
    d2 = rule.decide("Scoliosis", PROBS, straight)
    assert d2.label == "Scoliosis" and d2.agreement == "disagree" and "check the film" in d2.note
    assert rule.decide("Scoliosis", PROBS, curve).agreement == "agree"
    # A Spondylolisthesis call is a lumbar/lateral view: the full-spine angle of a moderate curve is not used.
    d3 = rule.decide("Spondylolisthesis", PROBS, _measure(CURVE_30))
    assert d3.label == "Spondylolisthesis" and d3.agreement == "no angle" and d3.cobb_largest is None
    # The threshold is the rule's: at 45 degrees the same curve no longer overrides.
    assert DecisionRule(curve_deg=45.0).decide("Normal", PROBS, curve).label == "Normal"


def _with_view(m: Measurement, full: bool) -> Measurement:
    return replace(m, view=FULL_SPINE if full else LUMBAR, view_probability=0.9 if full else 0.1)


def test_the_view_check_decides_where_the_angle_counts() -> None:
    rule = DecisionRule(curve_deg=25.0)
    curve, straight = _measure(CURVE_40), _measure(STRAIGHT)
    # A Spondylolisthesis call on a full-spine AP view with a 40 degree curve: overruled.
    d = rule.decide("Spondylolisthesis", PROBS, _with_view(curve, True))
    assert d.label == "Scoliosis" and d.agreement == "overruled" and "full-spine AP view" in d.note
    # ... on a straight full-spine film it stands, the angle reported beside it.
    d = rule.decide("Spondylolisthesis", PROBS, _with_view(straight, True))
    assert d.label == "Spondylolisthesis" and d.agreement == "consistent" and d.cobb_largest == pytest.approx(0, abs=1e-6)
    # A lumbar or lateral view: Scoliosis and Spondylolisthesis calls keep their label, the angle unused.
    for label in ("Scoliosis", "Spondylolisthesis"):
        d = rule.decide(label, PROBS, _with_view(curve, False))
        assert d.label == label and d.agreement == "no angle" and "lumbar or lateral view" in d.note
    # ... but a Normal call still answers to a curve of clinical size (the view check can be wrong about a
    # full AP film from another hospital), saying on which view it was measured; a straight one stands.
    d = rule.decide("Normal", PROBS, _with_view(curve, False))
    assert d.label == "Scoliosis" and d.agreement == "overruled" and d.cobb_largest == pytest.approx(40.0, abs=0.5)
    assert "lumbar or" in d.note and "0.10" in d.note and "check the film" in d.note
    d = rule.decide("Normal", PROBS, _with_view(straight, False))
    assert d.label == "Normal" and d.agreement == "no angle" and d.cobb_largest is None
    # The bar on a doubted view is the higher of the two lines: a 40 degree curve is over a 16 degree curve
    # line and a 25 degree bar, not over a 45 degree bar, nor over a 45 degree curve line.
    assert DecisionRule(curve_deg=45.0).decide("Normal", PROBS, _with_view(curve, False)).label == "Normal"
    assert DecisionRule(16.0, doubted_view_deg=45.0).decide("Normal", PROBS, _with_view(curve, False)).label == "Normal"
    mild = _measure([10.0 - 20.0 * j / 16 for j in range(17)])  # a 20 degree curve
    assert mild.result is not None and mild.result.largest == pytest.approx(20.0, abs=0.5)
    low = DecisionRule(curve_deg=16.0)
    assert low.decide("Normal", PROBS, _with_view(mild, True)).label == "Scoliosis"  # full spine: the curve line
    assert low.decide("Normal", PROBS, _with_view(mild, False)).label == "Normal"  # doubted: under the 25 degree bar
    # The landmark model file carries the bar; a file without it gets the default.
    assert DecisionRule.from_meta({"decision": {"curve_deg": 16, "doubted_view_deg": 30}}).doubted_view_deg == 30.0
    assert DecisionRule.from_meta({"decision": {"curve_deg": 16}}).doubted_view_deg == 25.0
    # Without a view check the classifier's Spondylolisthesis call stands for the view (older model files).
    assert rule.decide("Spondylolisthesis", PROBS, curve).label == "Spondylolisthesis"


def test_view_features_and_the_fitted_check() -> None:
    from spinexr.geometry.view import view_features

    f = view_features(_spine(STRAIGHT), 600, 0.02)
    # Equal boxes 60 wide and 24 tall from y = 28 to 532: no growth, aspect 2.5, span 504 / 600.
    assert f == pytest.approx([math.log(2.5), 0.0, 0.0, 504 / 600, math.log(0.02)], abs=1e-6)
    rng = np.random.default_rng(0)
    full = rng.normal([0.5, 0.6, 0.4, 0.9, -4.0], 0.1, (80, 5))
    lumbar = rng.normal([0.8, 0.3, 0.1, 0.85, -4.8], 0.1, (40, 5))
    check = fit_view_check(np.r_[full, lumbar], np.r_[np.ones(80), np.zeros(40)].astype(bool), 0.9, "test")
    p_l = np.array([check.probability(x) for x in lumbar])
    p_f = np.array([check.probability(x) for x in full])
    assert np.mean(p_l >= check.line) <= 0.125 and np.mean(p_f >= check.line) > 0.9
    assert check.view(1.0) == FULL_SPINE and check.view(0.0) == LUMBAR
    again = ViewCheck.from_meta({"view_check": json.loads(json.dumps(check.to_meta()))})
    assert again == check and ViewCheck.from_meta({}) is None
    with pytest.raises(ValueError, match="both views"):
        fit_view_check(full, np.ones(80, bool))


def test_a_two_stage_check_reads_the_first_stage_and_the_refined_shapes() -> None:
    """With a refiner the check reads the whole-spine model's five features and the refined vertebrae's three
    proportions (:data:`TWO_STAGE_FEATURES`); a check says which it reads, reads a film accordingly, and a
    two-stage check does not judge a film measured by the first stage alone."""
    from spinexr.deploy.measure import Measurement
    from spinexr.geometry.view import FEATURES, TWO_STAGE_FEATURES, spine_view_features, view_features

    first = _spine(STRAIGHT)
    refined = first.copy().reshape(17, 4, 2)
    refined[:, 2:, 1] += 12.0  # each vertebra 36 px tall instead of 24: aspect 60 / 36
    f = spine_view_features(refined, 600, 0.02, first)
    assert len(TWO_STAGE_FEATURES) == 8 and f.shape == (8,)
    assert f[:5] == pytest.approx(view_features(first, 600, 0.02))  # the first stage's five, as before
    assert f[5:] == pytest.approx([math.log(60 / 36), 0.0, 0.0], abs=1e-6)  # the refined corners' proportions
    assert spine_view_features(refined, 600, 0.02) == pytest.approx(view_features(refined, 600, 0.02))
    rng = np.random.default_rng(2)
    full = rng.normal([0.5, 0.6, 0.4, 0.9, -4.0, 0.5, 0.3, 0.2], 0.1, (80, 8))
    lumbar = rng.normal([0.8, 0.3, 0.1, 0.85, -4.8, 0.5, 0.1, 0.0], 0.1, (40, 8))
    check = fit_view_check(np.r_[full, lumbar], np.r_[np.ones(80), np.zeros(40)].astype(bool), 0.9, "test")
    assert check.features == TWO_STAGE_FEATURES
    again = ViewCheck.from_meta({"view_check": json.loads(json.dumps(check.to_meta()))})
    assert again == check and again.features == TWO_STAGE_FEATURES
    assert check.read(refined, 600, 0.02, first) == pytest.approx(f)
    assert check.read(refined, 600, 0.02) is None  # one stage only: not judged
    m = Measurement(refined, None)
    assert check.applied(m, None) is m
    # A single-stage check (earlier files, measurers without a refiner) reads the corners the angles come from.
    five = fit_view_check(np.r_[full[:, :5], lumbar[:, :5]], np.r_[np.ones(80), np.zeros(40)].astype(bool))
    assert five.features == FEATURES
    assert five.read(refined, 600, 0.02, first) == pytest.approx(view_features(refined, 600, 0.02))
    meta = check.to_meta()
    with pytest.raises(ValueError, match="coefficients"):
        ViewCheck.from_meta({"view_check": {**meta, "coef": meta["coef"][:5]}})
    with pytest.raises(ValueError, match="neither"):
        ViewCheck.from_meta({"view_check": {**meta, "features": ["aspect"] * 8}})
    with pytest.raises(ValueError, match="films, 5"):
        fit_view_check(np.zeros((10, 6)), np.r_[np.ones(5), np.zeros(5)].astype(bool))


def test_rule_cv_fits_the_view_check_out_of_fold() -> None:
    from spinexr.evaluation.rule_cv import OutOfFoldCalls, rule_cv

    curve, straight = _measure(CURVE_40), _measure(STRAIGHT)
    rng = np.random.default_rng(1)
    truth, called, meas, feats, folds = [], [], [], [], []
    for i in range(60):
        t = ("Normal", "Scoliosis", "Spondylolisthesis")[i % 3]
        truth.append(t)
        # The classifier calls every Scoliosis film Spondylolisthesis; the curve and the view say otherwise.
        called.append("Spondylolisthesis" if t != "Normal" else "Normal")
        meas.append(curve if t == "Scoliosis" else straight)
        feats.append(rng.normal([0.5, 0.6] if t != "Spondylolisthesis" else [0.9, 0.1], 0.05).tolist() + [0.9, 0.0, -4.0])
        folds.append(i % 5)
    calls = OutOfFoldCalls(truth, called, [PROBS] * 60, folds)
    plain = rule_cv(calls, meas)
    viewed = rule_cv(calls, meas, view_features=np.array(feats))
    assert len(viewed["decided"]) == 60 and viewed["recall_with_rule"]["Scoliosis"] == 1.0
    assert viewed["recall"]["Scoliosis"] == 0.0  # before the rule: every Scoliosis film called Spondylolisthesis
    assert plain["changed"] == 0  # a Spondylolisthesis call is a lumbar view without the check
    assert viewed["changed"] == 20 and viewed["changed_to_right"] == 20
    assert viewed["accuracy_with_rule_mean"] == pytest.approx(1.0)
    assert viewed["view_full_spine_rate"]["Spondylolisthesis"] <= 0.2 and viewed["view_full_spine_rate"]["Normal"] == 1.0


def test_refused_spine_keeps_the_classifier_label() -> None:
    bad = _spine(STRAIGHT)
    bad[5], bad[6] = bad[6].copy(), bad[5].copy()  # order broken
    m = Measurement(bad, None, implausibility(bad), 0.1)
    assert m.refused
    d = DecisionRule().decide("Normal", PROBS, m)
    assert d.label == "Normal" and d.agreement == "no angle" and d.cobb_largest is None and "AP spine" in d.note
    assert DecisionRule().decide("Normal", PROBS, None).agreement == "no angle"


def test_rule_travels_in_the_landmark_model_metadata() -> None:
    assert DecisionRule.from_meta({"decision": {"curve_deg": 21.5}}).curve_deg == 21.5
    assert DecisionRule.from_meta({}) == DecisionRule()


@pytest.mark.slow
def test_pack_halves_the_file_and_keeps_the_predictions(tiny_models: dict[str, Path], tmp_path: Path,
                                                        synth_dir: Path) -> None:
    import torch

    from spinexr.deploy.bundled import bundled_models, bundled_path, pack
    from spinexr.deploy.predictor import Predictor
    from spinexr.errors import WeightsError

    root = tmp_path / "bundled"
    with pytest.raises(WeightsError, match="no bundled classifier"):
        bundled_path("classifier", root)
    for kind, p in tiny_models.items():
        pack(p, kind, f"# {kind} card\n", headline="tiny", root=root)
    listed = {m.name: m for m in bundled_models(root)}
    assert set(listed) == {"classifier", "landmarks"} and listed["landmarks"].kind == "landmarks"
    assert listed["classifier"].card.read_text().startswith("# classifier card")
    for kind, p in tiny_models.items():
        assert listed[kind].size_bytes < 0.6 * p.stat().st_size  # float16 weights
    film = next(iter(sorted((synth_dir / "Scoliosis").glob("*.jpg"))))
    full = Predictor(tiny_models["classifier"]).predict_file(film)[0]
    half = Predictor(bundled_path("classifier", root)).predict_file(film)[0]
    assert max(abs(full.probabilities[c] - half.probabilities[c]) for c in full.probabilities) < 5e-3
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.slow
def test_predict_with_no_model_uses_the_bundled_ones(tiny_models: dict[str, Path], tmp_path: Path, synth_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import spinexr.deploy.bundled as bundled

    root = tmp_path / "bundled"
    for kind, p in tiny_models.items():
        bundled.pack(p, kind, f"# {kind}\nresearch use only\n", root=root)
    write_bundle(root, root / "classifier.safetensors", root / "landmarks.safetensors", None, name="tiny")
    monkeypatch.setattr(bundled, "BUNDLE_DIR", root)
    film = next(iter(sorted((synth_dir / "Scoliosis").glob("*.jpg"))))
    out = tmp_path / "p.json"
    assert main(["predict", str(film), "--out", str(out), "--quiet"]) == 0
    rec = json.loads(out.read_text())[0]
    assert rec["status"] == "ok" and "spine" in rec and "decision" in rec
    assert rec["label"] == rec["decision"]["label"]
    assert main(["predict", str(film), "--no-landmarks", "--out", str(tmp_path / "q.json"), "--quiet"]) == 0
    assert json.loads((tmp_path / "q.json").read_text())[0]["decision"] is None
    # explain [MODEL] IMAGE: the bundled classifier without a model; --landmarks alone: the bundled landmark model.
    assert main(["explain", str(film), "--out", str(tmp_path / "e.png"), "--landmarks"]) == 0
    assert (tmp_path / "e.png").is_file() and (tmp_path / "e_cobb.png").is_file()
    assert main(["explain", str(tiny_models["classifier"]), str(film), "--out", str(tmp_path / "f.png")]) == 0
    assert main(["explain", str(tiny_models["classifier"]), str(film), str(film), "--out", str(tmp_path / "g.png")]) == 2
    capsys.readouterr()
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    assert "classifier" in listed and "landmarks" in listed and "research use only" in listed
    assert main(["models", "--card", "landmarks"]) == 0 and "research use only" in capsys.readouterr().out
    assert main(["models", "--card", "nope"]) == 2
    # `spinexr serve` with no model serves the bundled pair.
    import spinexr.serve as serve_mod

    seen: dict = {}
    from spinexr.data.imread import UPLOAD_MAX_PIXELS

    monkeypatch.setattr(serve_mod, "serve", lambda source, **kw: seen.update(source=source, **kw))
    assert main(["serve"]) == 0
    spec = seen["source"]  # source None: the bundled pipeline, landmarks and all; uploads under the upload limit
    assert spec.source is None and not spec.no_landmarks and spec.max_pixels == UPLOAD_MAX_PIXELS
    assert main(["serve", "--no-landmarks"]) == 0 and seen["source"].no_landmarks


def test_curve_line_is_fitted_on_non_scoliosis_films() -> None:
    from spinexr.deploy.decision import fit_curve_deg

    angles = np.array([5.0] * 90 + [20.2, 22.0, 31.7] + [np.nan] * 7)  # 100 films, 7 refused
    assert fit_curve_deg(angles, max_rate=0.01) == 22.5  # only the 31.7 film reaches it
    assert fit_curve_deg(angles, max_rate=0.03) == 10.0  # three may reach it: the floor
    assert fit_curve_deg(angles, max_rate=0.0) == 32.0
    assert fit_curve_deg([np.nan] * 5) == 10.0


def test_rule_cv_fits_each_fold_on_the_other_folds() -> None:
    from spinexr.evaluation.rule_cv import OutOfFoldCalls, RuleFit, rule_cv

    curve = [20.0 - 40.0 * j / 16 for j in range(17)]
    straight, curved = _measure(STRAIGHT), _measure(curve)
    mild = _measure([8.0 - 16.0 * j / 16 for j in range(17)])  # a 16 degree curve
    # fold 0: a Scoliosis film called Normal (40 degrees: the rule should fix it); fold 1: a Normal film
    # measured at 16 degrees, and fold 0's Normals are all straight.
    truth = ["Scoliosis", "Normal", "Normal", "Normal", "Scoliosis"]
    called = ["Normal", "Normal", "Normal", "Normal", "Scoliosis"]
    probs = [PROBS] * 5
    folds = [0, 0, 1, 1, 1]
    meas = [curved, straight, mild, straight, curved]
    r = rule_cv(OutOfFoldCalls(truth, called, probs, folds), meas, fit=RuleFit(max_rate=0.0))
    f0, f1 = r["folds"]
    # fold 0's line is fitted on fold 1's Normals (straight and mild): just above the mild one
    m = mild.result.largest
    assert 12.0 < m < 20.0 and m < f0["curve_deg"] <= m + 1.0
    assert f0["accuracy"] == 0.5 and f0["accuracy_with_rule"] == 1.0
    assert f1["curve_deg"] == 10.0  # fold 0's Normals are straight: the 10 degree floor
    # fold 1's mild Normal (about 16 degrees) is now over the line, and gets overruled: the cost shows
    assert f1["accuracy"] == 1.0 and f1["accuracy_with_rule"] == pytest.approx(2 / 3)
    assert r["changed"] == 2 and r["changed_to_right"] == 1 and r["changed_to_wrong"] == 1
    assert r["accuracy_with_rule_mean"] == pytest.approx((1.0 + 2 / 3) / 2)


def test_fold_rule_is_fitted_on_the_training_side_only() -> None:
    from spinexr.evaluation.rule_cv import RuleFit, fit_fold_rule

    truth = ["Normal"] * 10 + ["Scoliosis"] * 5 + ["Spondylolisthesis"] * 5
    angle = np.array([5.0] * 9 + [80.0] + [40.0] * 5 + [20.0] * 5)
    train = np.arange(9).tolist() + list(range(10, 20))  # film 9 (a Normal film at 80 deg) held out
    rule, check = fit_fold_rule(truth, angle, None, train, RuleFit(max_rate=0.0))
    assert check is None and rule.curve_deg == 10.0  # the floor: the training Normal films reach 5 deg
    rule_all, _ = fit_fold_rule(truth, angle, None, list(range(20)), RuleFit(max_rate=0.0))
    assert rule_all.curve_deg == 80.5  # had the held-out film taken part, it would have set the line
    rng = np.random.default_rng(0)
    feats = np.vstack([rng.normal(1.0, 0.3, (15, 5)), rng.normal(-1.0, 0.3, (5, 5))])
    _, check = fit_fold_rule(truth, angle, feats, train, RuleFit(max_rate=0.0))
    assert check is not None and check.judge(feats[0])[0] == FULL_SPINE and check.judge(feats[-1])[0] != FULL_SPINE


@pytest.mark.slow
def test_cv_scores_the_decision_and_adds_it_to_a_finished_run(tiny_models: dict[str, Path], synth_dir: Path,
                                                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """cv --landmarks: the decision's accuracy beside the classifier's on the same out-of-fold calls, and
    the framing test through the decision; a finished run gains both by --resume, without retraining."""
    out = tmp_path / "cv"
    lm = str(tiny_models["landmarks"])
    base = ["cv", "--data", str(synth_dir), "--model", "small", "--folds", "2", "--epochs", "1", "--image-size", "40",
            "--device", "cpu", "--bootstrap", "20", "--quiet"]
    capsys.readouterr()
    assert main([*base, "--out", str(out), "--landmarks", lm]) == 0
    assert "with the measured curve: accuracy" in capsys.readouterr().out  # the console summary says it too
    m = json.loads((out / "metrics.json").read_text())["models"]["small"]
    d = m["decision"]
    fold_acc = [f["accuracy"] for f in m["fold_metrics"]]
    assert d["accuracy_mean"] == pytest.approx(float(np.mean(fold_acc)))  # the classifier's own out-of-fold calls
    assert len(d["curve_deg"]) == 2 and all(c >= 10.0 for c in d["curve_deg"])
    assert d["changed"] == d["changed_to_right"] + d["changed_to_wrong"]
    for key in ("scoliosis_ap_to_strip", "normal_strip_to_full"):
        assert d["framing"][key]["n"] == m["framing"][key]["n"] > 0
        assert 0 <= d["framing"][key]["changed"] <= d["framing"][key]["n"]
    html = (out / "report.html").read_text()
    assert "The decision that answers to the curve" in html and "small + measured curve" in html
    assert "## The decision that answers to the curve" in (out / "summary.md").read_text()

    # The same run without the decision, then given it afterwards: the folds are rebuilt, not retrained.
    plain = tmp_path / "plain"
    assert main([*base, "--out", str(plain)]) == 0
    assert "decision" not in json.loads((plain / "metrics.json").read_text())["models"]["small"]
    before = {f.name: f.stat().st_mtime_ns for f in (plain / "history").glob("*.csv")}
    assert main(["cv", "--resume", str(plain), "--landmarks", lm, "--quiet"]) == 0
    again = json.loads((plain / "metrics.json").read_text())["models"]["small"]
    for key in ("scoliosis_ap_to_strip", "normal_strip_to_full"):  # every fold rebuilt and tested
        assert again["decision"]["framing"][key]["n"] == again["framing"][key]["n"] == d["framing"][key]["n"]
    assert again["decision"]["accuracy_mean"] == pytest.approx(float(np.mean([f["accuracy"]
                                                                               for f in again["fold_metrics"]])))
    assert {f.name: f.stat().st_mtime_ns for f in (plain / "history").glob("*.csv")} == before
    assert json.loads((plain / "config.json").read_text())["cv"]["landmarks"] == lm
    # Each fold records which landmark model its decision figures came from: resumed again with the
    # same model, nothing is redone (another model's figures would be recomputed, never reused).
    folds = {f.name: f.stat().st_mtime_ns for f in (plain / "folds").glob("*.json")}
    assert all(json.loads(f.read_text())["decision_landmarks"] for f in (plain / "folds").glob("*.json"))
    assert main(["cv", "--resume", str(plain), "--landmarks", lm, "--quiet"]) == 0
    assert {f.name: f.stat().st_mtime_ns for f in (plain / "folds").glob("*.json")} == folds

    # A wrong landmark model path: a specific message, and neither run folder nor config is touched.
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "bad"), "--landmarks", str(tmp_path / "nope.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "nope.safetensors: no such file" in err and not (tmp_path / "bad").exists()
    assert main(["cv", "--resume", str(plain), "--landmarks", str(tmp_path / "nope.safetensors"), "--quiet"]) == 2
    assert json.loads((plain / "config.json").read_text())["cv"]["landmarks"] == lm


def test_cv_landmarks_on_a_resumed_torchrun_is_refused(synth_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Rebuilding finished folds is rank 0's work alone: a resumed multi-process run with --landmarks
    is refused with what to do instead, before anything is written."""
    import spinexr.evaluation.cv as cv_mod
    from spinexr.config import CVConfig, TrainConfig
    from spinexr.errors import SpinexrError

    monkeypatch.setattr(cv_mod, "world_size", lambda: 2)
    cfg = CVConfig(models=["small"], folds=2, image_size=32, landmarks="bundled")
    with pytest.raises(SpinexrError, match="without torchrun"):
        cv_mod.run_cv(synth_dir, cfg, TrainConfig(epochs=1, device="cpu"), tmp_path / "run", progress=False,
                      resume=True)
    assert not (tmp_path / "run").exists()


def test_stored_decision_figures_name_the_landmark_model_and_the_rule(tmp_path: Path, monkeypatch) -> None:
    """A fold's stored decision figures are reused only under the same landmark model file and the same
    version of the rule: changing either makes ``cv --resume`` run the decision again."""
    import spinexr.deploy.decision as decision
    from spinexr.evaluation.decision_cv import evidence_digest

    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    a.write_bytes(b"weights one")
    b.write_bytes(b"weights two")
    da = evidence_digest(a)
    assert da == evidence_digest(a) and da != evidence_digest(b)
    monkeypatch.setattr(decision, "RULE_VERSION", decision.RULE_VERSION + 1)
    assert evidence_digest(a) != da


@pytest.mark.parametrize("label", ["Normal", "Scoliosis", "Spondylolisthesis"])
@pytest.mark.parametrize("view", [None, LUMBAR, "full, below the Spondylolisthesis line"])
def test_a_large_curve_is_never_buried(label: str, view: str | None) -> None:
    """Wherever the rule does not use the angle (a view the check doubts; a Spondylolisthesis call without a
    view check, or on a film below the check's line for such calls), a curve of 40 degrees or more is still
    shown beside the label that stands, flagged."""
    rule = DecisionRule(curve_deg=18.0)
    big, moderate = _measure(CURVE_60), _measure(CURVE_30)
    if view == LUMBAR:
        big, moderate = (replace(m, view=view, view_probability=0.6) for m in (big, moderate))
    elif view is not None:  # a full-spine AP view, but below the line a Spondylolisthesis call must reach
        big, moderate = (replace(m, view=FULL_SPINE, view_probability=0.6, spondylolisthesis_view_line=0.8)
                         for m in (big, moderate))
    d = rule.decide(label, PROBS, big)
    if view != LUMBAR and label != "Spondylolisthesis":  # no check, or a full-spine AP view: the angle is used
        assert d.label == "Scoliosis" and d.agreement in ("agree", "overruled")
        return
    if label == "Normal":  # a Normal call on a doubted view answers to a curve of clinical size
        assert d.label == "Scoliosis" and d.agreement == "overruled" and "check the film" in d.note
        return
    assert d.label == label and d.agreement == "check the film" and "check the film" in d.note
    assert d.cobb_largest == pytest.approx(big.result.largest) and big.result.largest >= 40
    assert f"{big.result.largest:.1f}°" in d.note and "not used" not in d.note
    small = rule.decide(label, PROBS, moderate)  # under 40 degrees on such a view: not used, as before
    assert small.agreement == "no angle" and small.cobb_largest is None and "not used" in small.note
    assert DecisionRule(large_curve_deg=70.0).decide(label, PROBS, big).agreement == "no angle"


def test_a_spondylolisthesis_call_is_overruled_only_above_its_own_line() -> None:
    """The check's second line: a film the classifier calls Spondylolisthesis (its own evidence of a lumbar
    view) must be surer to be full-spine AP than a Normal call's film before its curve overrules it."""
    rng = np.random.default_rng(3)
    full = rng.normal([0.5, 0.6, 0.4, 0.9, -4.0], 0.15, (120, 5))
    lumbar = rng.normal([0.8, 0.3, 0.1, 0.85, -4.8], 0.15, (80, 5))
    x, y = np.r_[full, lumbar], np.r_[np.ones(120), np.zeros(80)].astype(bool)
    check = fit_view_check(x, y, 0.9, "test", keep_lumbar_calls_out=0.99)
    p_lumbar = np.array([check.probability(f) for f in lumbar])
    assert check.line == pytest.approx(np.quantile(p_lumbar, 0.9))
    assert check.spondylolisthesis_line == pytest.approx(np.quantile(p_lumbar, 0.99))
    assert check.spondylolisthesis_line > check.line  # lumbar films lie between the two lines
    assert fit_view_check(x, y, 0.9, keep_lumbar_calls_out=0.5).spondylolisthesis_line == pytest.approx(check.line)
    assert ViewCheck.from_meta({"view_check": json.loads(json.dumps(check.to_meta()))}) == check
    # A lumbar film between the lines: full-spine AP for the view, but a Spondylolisthesis call on it stands.
    between = next(f for f, p in zip(lumbar, p_lumbar) if check.line <= p < check.spondylolisthesis_line)
    m = check.applied(_measure(CURVE_30), between)
    assert m.view == FULL_SPINE and m.spondylolisthesis_view_line == check.spondylolisthesis_line
    rule = DecisionRule(curve_deg=20.0)
    d = rule.decide("Spondylolisthesis", PROBS, m)
    assert d.label == "Spondylolisthesis" and d.agreement == "no angle" and "below the line" in d.note
    assert rule.decide("Normal", PROBS, m).label == "Scoliosis"  # a Normal call answers to the curve as before
    # Above the second line the curve overrules the call; a check without the line (earlier files) as before.
    sure = replace(m, view_probability=check.spondylolisthesis_line)
    assert rule.decide("Spondylolisthesis", PROBS, sure).label == "Scoliosis"
    assert rule.decide("Spondylolisthesis", PROBS, replace(m, spondylolisthesis_view_line=None)).label == "Scoliosis"
    earlier = {k: v for k, v in check.to_meta().items() if k != "spondylolisthesis_line"}
    assert ViewCheck.from_meta({"view_check": earlier}).spondylolisthesis_line is None
    with pytest.raises(ValueError, match="not a probability"):
        ViewCheck.from_meta({"view_check": {**check.to_meta(), "spondylolisthesis_line": 1.5}})
