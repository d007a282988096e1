"""Splits never leak: groups stay on one side, validation comes from training, oversampling too."""

from __future__ import annotations

import numpy as np
import pytest

from spinexr.data.splits import (
    carve_validation,
    group_kfold,
    holdout,
    leaky_split,
    oversample,
)
from spinexr.errors import DatasetError


def _data(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=n, p=[0.2, 0.55, 0.25])
    groups = np.array([f"p{i // 2}" for i in range(n)])  # pairs of images per patient
    labels[1::2] = labels[0::2]  # a patient has one diagnosis
    return labels, groups


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_kfold_disjoint_and_complete(seed: int) -> None:
    y, g = _data(seed=seed)
    folds = group_kfold(y, g, 5, seed)
    seen = np.concatenate([te for _, te in folds])
    assert sorted(seen.tolist()) == list(range(len(y)))  # every image tested exactly once
    for tr, te in folds:
        assert not set(tr) & set(te)
        assert not set(g[tr]) & set(g[te])  # no patient on both sides
        assert set(np.unique(y[te])) == {0, 1, 2}  # stratified: every class in every test fold


def test_validation_carved_from_training_only() -> None:
    y, g = _data()
    tr, te = group_kfold(y, g, 5, 0)[0]
    fit, val = carve_validation(tr, y, g, 0.2, 0)
    assert set(fit) | set(val) == set(tr)
    assert not set(fit) & set(val)
    assert not set(val) & set(te)
    assert not set(g[fit]) & set(g[val])


def test_oversampling_draws_training_indices_only() -> None:
    y, g = _data()
    tr, te = holdout(y, g, 0.25, 0)
    drawn = oversample(tr, y, np.random.default_rng(0))
    assert set(drawn) <= set(tr)
    assert not set(drawn) & set(te)
    counts = np.bincount(y[drawn], minlength=3)
    assert counts.min() == counts.max() == np.bincount(y[tr]).max()  # balanced to the largest class
    assert set(tr) <= set(drawn)  # nothing from the fold is dropped


def test_leaky_split_leaks() -> None:
    y, _ = _data(338)
    sp = leaky_split(y, seed=0)
    assert sp["test_leak"] > 0.2  # oversample-then-split puts copies of training images into test
    assert np.isin(sp["test"], sp["train"]).mean() == pytest.approx(sp["test_leak"])


def test_too_many_folds_is_a_clear_error() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    g = np.array(["a", "b", "c", "d", "e", "f"])
    with pytest.raises(DatasetError, match="--folds 2"):
        group_kfold(y, g, 5, 0)
