"""Leakage-free splits: stratified, group-aware folds, validation carved from the training fold, and
oversampling that draws from the training indices only.

``leaky_split`` reproduces the protocol this project exists to correct (oversample the whole dataset,
then split), so its inflation can be shown side by side.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from spinexr.errors import DatasetError


def take_in_turns(groups: list[list[int]], n: int) -> list[int]:
    """Up to ``n`` items, one from each group in turn (in each group's order), so every group is shown."""
    queues = [list(g) for g in groups]
    out: list[int] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def _k_for(labels: np.ndarray, groups: np.ndarray, k: int) -> int:
    n_groups_min = min(len(np.unique(groups[labels == c])) for c in np.unique(labels))
    if n_groups_min < 2:
        raise DatasetError("every class needs images from at least two patients/groups to be split")
    return min(k, n_groups_min)


def group_kfold(labels: np.ndarray, groups: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified group k-fold: ``[(train_idx, test_idx), ...]``; a group never straddles a split.

    Args:
        labels: each film's class.
        groups: each film's group (its case or patient).
        k: the number of folds.
        seed: the shuffle's seed.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    k_eff = _k_for(labels, groups, k)
    if k_eff < k:
        raise DatasetError(
            f"{k} folds asked for, but the smallest class has only {k_eff} groups; use --folds {k_eff} or fewer"
        )
    sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.sort(tr), np.sort(te)) for tr, te in sgkf.split(np.zeros(len(labels)), labels, groups)]


def carve_validation(
    train_idx: np.ndarray, labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split a training fold into (fit, validation), stratified and group-aware.

    Args:
        train_idx: the training fold's film indices.
        labels: every film's class.
        groups: every film's group.
        fraction: about this share of the fold's groups validates.
        seed: the shuffle's seed.
    """
    train_idx = np.asarray(train_idx)
    n_splits = max(2, int(round(1.0 / fraction)))
    sub_labels, sub_groups = np.asarray(labels)[train_idx], np.asarray(groups)[train_idx]
    n_splits = min(n_splits, _k_for(sub_labels, sub_groups, n_splits))
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fit, val = next(sgkf.split(np.zeros(len(train_idx)), sub_labels, sub_groups))
    return np.sort(train_idx[fit]), np.sort(train_idx[val])


def holdout(labels: np.ndarray, groups: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One stratified group split into (train, test).

    Args:
        labels: every film's class.
        groups: every film's group.
        test_fraction: about this share of the groups is held out.
        seed: the shuffle's seed.
    """
    idx = np.arange(len(labels))
    return carve_validation(idx, labels, groups, test_fraction, seed)


def oversample(train_idx: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices drawn **from ``train_idx`` only** so each class appears as often as the largest one.

    Args:
        train_idx: the training fold's indices.
        labels: every film's class.
        rng: the random generator.
    """
    train_idx = np.asarray(train_idx)
    y = np.asarray(labels)[train_idx]
    classes, counts = np.unique(y, return_counts=True)
    target = counts.max()
    parts = []
    for c in classes:
        members = train_idx[y == c]
        extra = rng.choice(members, size=target - len(members), replace=True) if target > len(members) else []
        parts.append(np.concatenate([members, np.asarray(extra, dtype=members.dtype)]))
    out = np.concatenate(parts)
    rng.shuffle(out)
    return out


def leaky_split(labels: np.ndarray, seed: int,
                fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> dict[str, np.ndarray | float]:
    """The notebook's protocol: oversample every class to the largest, *then* split 80/10/10.

    Returns source indices (with repeats) for train/val/test and ``test_leak``, the fraction of test
    rows whose source image also appears in train.

    Args:
        labels: every film's class.
        seed: the shuffle's seed.
        fractions: train, validation and test shares.
    """
    rng = np.random.default_rng(seed)
    pool = oversample(np.arange(len(labels)), labels, rng)
    rng.shuffle(pool)
    n = len(pool)
    a, b = int(fractions[0] * n), int((fractions[0] + fractions[1]) * n)
    train, val, test = pool[:a], pool[a:b], pool[b:]
    leak = float(np.isin(test, train).mean()) if len(test) else 0.0
    return {"train": train, "val": val, "test": test, "test_leak": leak}


def case_splits(groups: np.ndarray, folds: int, seed: int, test_fraction: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Case-grouped folds, or with ``folds`` < 2 one split holding out ``test_fraction`` of the cases
    (0: no test part, every film trains: the final model).

    Args:
        groups: every film's case.
        folds: the number of folds (below 2: one split).
        seed: the shuffle's seed.
        test_fraction: the share of cases held out when ``folds`` < 2.
    """
    cases = np.unique(groups)
    rng = np.random.default_rng(seed)
    order = rng.permutation(cases)
    if folds < 2 and test_fraction == 0:
        return [(np.arange(len(groups)), np.array([], dtype=int))]
    if folds < 2:
        n_test = max(1, int(round(test_fraction * len(cases))))
        parts = [order[:n_test]]
    else:
        parts = np.array_split(order, folds)
    idx = np.arange(len(groups))
    return [(idx[~np.isin(groups, p)], idx[np.isin(groups, p)]) for p in parts]


def fit_val_split(groups: np.ndarray, tr: np.ndarray, val_fraction: float, seed: int, fold: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A fold's training side ``tr`` split by case into the films that fit and the validation films
    that choose the epoch (``val_fraction`` of its cases), as every landmark CV run draws them.

    Args:
        groups: every film's case.
        tr: the fold's training indices.
        val_fraction: the share of its cases that validates.
        seed: the run's seed.
        fold: the fold's number (each fold draws its own split).
    """
    n_val = max(1, int(round(val_fraction * len(np.unique(groups[tr])))))
    val_cases = np.random.default_rng(seed + 1 + fold).permutation(np.unique(groups[tr]))[:n_val]
    return tr[~np.isin(groups[tr], val_cases)], tr[np.isin(groups[tr], val_cases)]
