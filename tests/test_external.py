"""External evaluation on sets that hold only some classes, with and without true Cobb angles."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spinexr.cli import main
from spinexr.errors import DatasetError
from spinexr.evaluation.external import angles_for, external_metrics, read_angles, wilson


def _numbers(d: Any) -> list[float]:
    if isinstance(d, dict):
        return [x for v in d.values() for x in _numbers(v)]
    if isinstance(d, list):
        return [x for v in d for x in _numbers(v)]
    return [float(d)] if isinstance(d, (int, float)) and not isinstance(d, bool) else []


def test_one_class_set_reports_sensitivity_and_nothing_undefined() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], 40)
    y = np.ones(40, dtype=int)
    true = rng.uniform(0, 60, 40)
    probs[:, 1] += true / 20  # P(Scoliosis) grows with the curve
    probs /= probs.sum(axis=1, keepdims=True)
    m = external_metrics(y, probs, true, true + rng.normal(0, 3, 40), n_boot=100)
    assert m["classes_present"] == ["Scoliosis"] and not m["complete"]
    assert set(m["per_class"]) == {"Scoliosis"} and m["auc"] == {}
    sco = m["per_class"]["Scoliosis"]
    assert sco["sensitivity"] == pytest.approx((probs.argmax(1) == 1).mean())
    assert sum(sco["called"].values()) == 40
    assert any("at least two classes" in t for t in m["not_measured"])
    assert all(math.isfinite(v) for v in _numbers(m))  # no NaN anywhere
    bands = {b["band"]: b for b in m["angles"]["by_band"]}
    assert sum(b["n"] for b in bands.values()) == 40
    assert bands["severe"]["n"] == int((true > 40).sum())
    assert m["angles"]["spearman_p_scoliosis"]["rho"] > 0.3
    assert m["angles"]["spearman_measured_angle"]["rho"] > 0.9


def test_two_class_set_has_auc_between_present_classes() -> None:
    y = np.array([0] * 10 + [1] * 10)
    probs = np.full((20, 3), 0.05)
    probs[:10, 0] = probs[10:, 1] = 0.9
    m = external_metrics(y, probs)
    assert set(m["auc"]) == {"Normal", "Scoliosis"} and m["auc"]["Scoliosis"] == pytest.approx(1.0)
    assert m["per_class"]["Normal"]["sensitivity"] == 1.0


def test_wilson_interval_is_sound_at_the_edges() -> None:
    lo, hi = wilson(10, 10)
    assert hi == 1.0 and 0.6 < lo < 0.8
    assert wilson(0, 0) is None


def test_angles_csv_errors_and_lookup(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("path,largest\nx/one.jpg,12.5\ntwo.jpg,40\n")
    t = read_angles(tmp_path / "a.csv")
    got = angles_for([tmp_path / "x" / "one.jpg", Path("/elsewhere/two.jpg"), tmp_path / "three.jpg"], t)
    assert got[0] == 12.5 and got[1] == 40 and math.isnan(got[2])
    (tmp_path / "b.csv").write_text("path,angle\na.jpg,3\n")
    with pytest.raises(DatasetError, match="columns path and largest"):
        read_angles(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("path,pt,mt,tl\na.jpg,3,4,5\nb.jpg,3,x,5\n")
    with pytest.raises(DatasetError, match="line 3"):
        read_angles(tmp_path / "c.csv")
    (tmp_path / "d.csv").write_text("path,cobb\na.jpg,-4\n")
    with pytest.raises(DatasetError, match="between 0 and 180"):
        read_angles(tmp_path / "d.csv")
    with pytest.raises(DatasetError, match="not found"):
        read_angles(tmp_path / "missing.csv")


@pytest.mark.slow
@pytest.mark.filterwarnings("error::UserWarning", "error::RuntimeWarning")
def test_cli_evaluate_on_scoliosis_only_films_with_angles(synth_dir: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    tr = tmp_path / "train"
    assert main(["train", "--data", str(synth_dir), "--model", "small", "--epochs", "1", "--image-size", "40",
                 "--device", "cpu", "--bootstrap", "20", "--out", str(tr), "--quiet"]) == 0
    films = sorted((synth_dir / "Scoliosis").glob("*.jpg"))
    man = tmp_path / "scoliosis_only.csv"
    with open(man, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows([[str(p), "Scoliosis"] for p in films])
    capsys.readouterr()
    ev = tmp_path / "eval"
    assert main(["evaluate", str(tr / "model.safetensors"), "--data", str(man), "--angles",
                 str(synth_dir / "landmarks.csv"), "--out", str(ev), "--bootstrap", "50", "--quiet",
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "films called Scoliosis" in printed and "nan" not in printed.lower()
    ext = json.loads((ev / "metrics.json").read_text())["external"]
    assert ext["classes_present"] == ["Scoliosis"] and ext["per_class"]["Scoliosis"]["n"] == len(films)
    assert ext["angles"]["n_with_angle"] == len(films)
    assert sum(b["n"] for b in ext["angles"]["by_band"]) == len(films)
    html = (ev / "report.html").read_text()
    assert "External evaluation" in html and "Called Scoliosis by true largest Cobb angle" in html
    md = (ev / "summary.md").read_text()
    assert "nan" not in md.lower() and "only Scoliosis" in md
    assert not (ev / "plots" / "roc_small.png").exists()
    rows = list(csv.DictReader(open(ev / "predictions.csv")))
    assert all(r["true_largest_cobb"] for r in rows)
    # With a landmark model: the measured angle, and the decision predict would return, are scored too.
    lm = tmp_path / "lm"
    assert main(["landmarks", "train", "--data", str(synth_dir / "landmarks.csv"), "--input-height", "128",
                 "--input-width", "64", "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--test-fraction", "0",
                 "--out", str(lm), "--quiet"]) == 0
    ev2 = tmp_path / "eval2"
    assert main(["evaluate", str(tr / "model.safetensors"), "--data", str(man), "--angles",
                 str(synth_dir / "landmarks.csv"), "--landmarks", str(lm / "models" / "landmarks.safetensors"),
                 "--out", str(ev2), "--bootstrap", "50", "--quiet", "--device", "cpu"]) == 0
    ext2 = json.loads((ev2 / "metrics.json").read_text())["external"]
    assert ext2["with_decision"]["per_class"]["Scoliosis"]["n"] == len(films)
    assert 0 <= ext2["with_decision"]["accuracy"] <= 1
    rows = list(csv.DictReader(open(ev2 / "predictions.csv")))
    assert all(r["decision"] in ("Normal", "Scoliosis", "Spondylolisthesis") for r in rows)
    assert "the decision" in (ev2 / "summary.md").read_text()
