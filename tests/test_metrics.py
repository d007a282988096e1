"""Metrics, calibration and confidence intervals."""

from __future__ import annotations

import numpy as np

from spinexr.evaluation.metrics import (
    bootstrap_ci,
    compute_metrics,
    ece,
    fit_temperature,
    nll,
    softmax,
)


def test_perfect_and_chance() -> None:
    y = np.array([0, 1, 2] * 20)
    perfect = np.eye(3)[y]
    m = compute_metrics(y, perfect)
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0 and m["auc_macro"] == 1.0
    assert m["confusion"] == [[20, 0, 0], [0, 20, 0], [0, 0, 20]]
    wrong = np.eye(3)[(y + 1) % 3]
    assert compute_metrics(y, wrong)["accuracy"] == 0.0


def test_temperature_fixes_overconfidence() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 2000)
    logits = rng.normal(0, 1, (2000, 3))
    logits[np.arange(2000), y] += 1.0  # informative...
    over = logits * 6.0  # ...but far too confident
    t = fit_temperature(over, y)
    assert t > 3.0
    assert nll(softmax(over, t), y) < nll(softmax(over), y)
    assert ece(softmax(over, t), y) < ece(softmax(over), y)


def test_temperature_on_a_small_all_correct_set_stays_off_the_bound() -> None:
    """39 validation films, every one right with a clear margin (a KAUH fold's validation part): NLL alone
    would drive T to the search's lower bound; the fit stays a moderate sharpening."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 39)
    logits = rng.normal(0, 0.3, (39, 3))
    logits[np.arange(39), y] += 2.5
    t = fit_temperature(logits, y)
    assert 0.2 < t < 1.0
    assert nll(softmax(logits, t), y) < nll(softmax(logits), y)  # still sharper than none: they are all right


def test_bootstrap_ci_brackets_estimate() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    p = softmax(np.eye(3)[y] * 2 + rng.normal(0, 1, (300, 3)))
    ci = bootstrap_ci(y, p, n_boot=200)
    acc = compute_metrics(y, p)["accuracy"]
    assert ci["accuracy"][0] < acc < ci["accuracy"][1]
    assert ci["accuracy"][1] - ci["accuracy"][0] < 0.2
