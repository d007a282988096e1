"""The report people read: per-class tables equal to metrics.json, full class names, honest single splits."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from spinexr import CLASSES
from spinexr.evaluation.metrics import PER_CLASS, bootstrap_ci, compute_metrics, softmax


class _Tables(HTMLParser):
    """Collects the per-class tables of report.html: {model: [[(metric, value, text), ...], ...]}."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str | None, str]]]] = {}
        self._model: str | None = None
        self._cell: tuple[str, str | None] | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "table" and "per-class" in (a.get("class") or ""):
            self._model = a["data-model"]
            self.tables[self._model] = []
        elif self._model and tag == "tr":
            self.tables[self._model].append([])
        elif self._model and tag == "td":
            self._cell, self._text = (a.get("data-metric", ""), a.get("data-value")), ""

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.tables[self._model][-1].append((self._cell[0], self._cell[1], self._text))  # type: ignore[index]
            self._cell = None
        elif tag == "table":
            self._model = None


def _check_tables(out: Path) -> None:
    metrics = json.loads((out / "metrics.json").read_text())
    parser = _Tables()
    parser.feed((out / "report.html").read_text())
    assert set(parser.tables) == set(metrics["models"])
    for model, rows in parser.tables.items():
        rows = [r for r in rows if r]
        m = metrics["models"][model]
        assert [r[0][2] for r in rows] == list(CLASSES)  # one row per class, in order
        for cells in rows:
            c = cells[0][2]
            by_metric = {metric: (v, text) for metric, v, text in cells}
            assert int(by_metric["support"][1]) == m["pooled"]["per_class"][c]["support"]
            for metric in PER_CLASS:
                want = m["pooled"]["per_class"][c][metric]
                v, text = by_metric[metric]
                if want is None:
                    assert v is None and text.startswith("n/a")
                    continue
                assert float(v) == pytest.approx(want, abs=1e-12)
                assert text.startswith(f"{want:.3f}")
                ci = m["ci95"]["per_class"][c][metric]
                if ci:
                    assert f"[{ci[0]:.3f}, {ci[1]:.3f}]" in text


def test_cv_report_per_class_tables_equal_metrics(cv_run) -> None:
    out, _ = cv_run
    _check_tables(out)
    html = (out / "report.html").read_text()
    assert "folds " in html  # the per-fold spread of a CV
    for word in ("precision (PPV)", "recall (sensitivity)", "specificity", "NPV"):
        assert word in html


def test_summary_md_per_class_tables(cv_run) -> None:
    out, _ = cv_run
    metrics = json.loads((out / "metrics.json").read_text())
    md = (out / "summary.md").read_text()
    for model, m in metrics["models"].items():
        sec = md.split(f"### {model} (")[1].split("\n#")[0]  # up to the next heading of any level
        rows = [[c.strip() for c in line.strip("|").split("|")] for line in sec.splitlines() if line.startswith("| ")]
        header, body = rows[0], rows[1:]
        assert [r[0] for r in body] == list(CLASSES)
        for r in body:
            pc = m["pooled"]["per_class"][r[0]]
            assert int(r[1]) == pc["support"]
            for metric, cell in zip(PER_CLASS, r[2:]):
                want = pc[metric]
                assert cell.startswith("n/a" if want is None else f"{want:.3f}"), (model, r[0], metric, cell)
        assert "recall (sensitivity)" in header


def test_first_screen_answers_the_three_questions(cv_run) -> None:
    out, _ = cv_run
    metrics = json.loads((out / "metrics.json").read_text())
    html = (out / "report.html").read_text()
    glance = html.index("At a glance")
    assert glance < html.index("Model comparison")
    pc = metrics["models"]["small"]["pooled"]["per_class"]
    worst = min((c for c in pc if pc[c]["support"]), key=lambda c: pc[c]["recall"])
    first = html[glance:html.index("Model comparison")]
    assert f"Missed most: {worst}" in first
    assert "How accurate" in first and "shortcut" in first


def test_single_split_says_one_split(trained_model: Path) -> None:
    out = trained_model.parent
    metrics = json.loads((out / "metrics.json").read_text())
    n = metrics["models"]["small"]["pooled"]["n"]
    for name in ("report.html", "summary.md"):
        text = (out / name).read_text()
        assert "± 0.0" not in text, name
        assert not re.search(r"over 1 folds?", text)
    assert f"one split of {n} films" in (out / "report.html").read_text()
    _check_tables(out)


def test_cli_summary_single_split_has_no_sd(trained_model: Path, capsys: pytest.CaptureFixture) -> None:
    from spinexr.cli.train import summary_lines
    from spinexr.evaluation.results import RunResult

    out = trained_model.parent
    text = "\n".join(summary_lines(out, RunResult.from_dict(json.loads((out / "metrics.json").read_text()))))
    assert "one split of" in text and "±" not in text and "missed most" in text


def test_confusion_axes_carry_full_class_names() -> None:
    from spinexr.evaluation.report import confusion_figure
    fig = confusion_figure([[5, 1, 0], [0, 7, 1], [2, 0, 4]], "m")
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == list(CLASSES)
        assert [t.get_text() for t in ax.get_yticklabels()] == list(CLASSES)
        assert "20 films" in ax.get_title()


def test_reliability_shows_bin_counts_and_confidence_histogram(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from spinexr.evaluation import report

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    p = softmax(rng.normal(0, 1, (40, 3)) + 2 * np.eye(3)[y])
    captured = {}
    save = report._save
    report._save = lambda fig, path: captured.setdefault("fig", fig) and path  # keep the figure open
    try:
        report.plot_reliability(y, {"m": p}, tmp_path / "r.png")
    finally:
        report._save = save
    fig = captured["fig"]
    curve, counts, hist = fig.axes
    heights = [b.get_height() for b in counts.patches]
    assert sum(heights) == 40  # every film is in one bin
    assert "40 films" in curve.get_title()
    assert any("< 5 films" in t.get_text() for t in curve.get_legend().get_texts())
    assert sum(h.get_path().vertices.shape[0] for h in hist.patches) > 0
    plt.close(fig)


def test_specificity_npv_and_per_class_ci() -> None:
    # 3 classes, hand-made: class 0 has tp 8, fn 2; predicted 0 twice wrongly.
    y = np.array([0] * 10 + [1] * 10 + [2] * 10)
    pred = np.array([0] * 8 + [1, 2] + [1] * 9 + [0] + [2] * 9 + [0])
    m = compute_metrics(y, np.eye(3)[pred])
    pc = m["per_class"]["Normal"]
    assert pc["recall"] == pytest.approx(0.8)
    assert pc["precision"] == pytest.approx(0.8)
    assert pc["specificity"] == pytest.approx(18 / 20)
    assert pc["npv"] == pytest.approx(18 / 20)
    ci = bootstrap_ci(y, np.eye(3)[pred] * 0.8 + 0.2 / 3, n_boot=300)
    lo, hi = ci["per_class"]["Normal"]["recall"]
    assert lo < 0.8 < hi
    # A class that never occurs has no recall, and no interval: never a made-up 0.
    m2 = compute_metrics(np.array([1, 1, 2]), np.eye(3)[[1, 2, 2]])
    assert m2["per_class"]["Normal"]["recall"] is None and m2["per_class"]["Normal"]["specificity"] == 1.0
    ci2 = bootstrap_ci(np.array([1, 1, 2]), np.eye(3)[[1, 2, 2]], n_boot=50)
    assert ci2["per_class"]["Normal"]["recall"] is None
