"""Run configuration: dataclass defaults, then a YAML file, then command-line flags (highest).

A YAML file may hold top-level ``data``, ``out``, ``model`` and sections ``cv`` (see
:class:`spinexr.cv.CVConfig`) and ``train`` (see :class:`spinexr.train.TrainConfig`, with ``aug``).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from spinexr.cv import CVConfig
from spinexr.errors import SpinexrError
from spinexr.train import TrainConfig

# flag dest -> (section, key)
FLAG_MAP: dict[str, tuple[str, str]] = {
    "epochs": ("train", "epochs"), "batch_size": ("train", "batch_size"), "lr": ("train", "lr"),
    "weight_decay": ("train", "weight_decay"), "seed": ("train", "seed"), "device": ("train", "device"),
    "balance": ("train", "balance"), "patience": ("train", "patience"), "val_fraction": ("train", "val_fraction"),
    "label_smoothing": ("train", "label_smoothing"), "schedule": ("train", "schedule"),
    "tta_flip": ("train", "tta_flip"), "compile": ("train", "compile"),
    "folds": ("cv", "folds"), "repeats": ("cv", "repeats"), "attention": ("cv", "attention"),
    "weights": ("cv", "weights"), "image_size": ("cv", "image_size"), "resize": ("cv", "resize"),
    "protocol": ("cv", "protocol"), "bootstrap": ("cv", "bootstrap"), "cache_dir": ("cv", "cache_dir"),
}


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SpinexrError(f"{p}: config file not found")
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise SpinexrError(f"{p}: not valid YAML ({e})") from e
    if not isinstance(d, dict):
        raise SpinexrError(f"{p}: the config must be a mapping (key: value)")
    unknown = set(d) - {"data", "out", "model", "models", "cv", "train"}
    if unknown:
        raise SpinexrError(f"{p}: unknown top-level key(s) {sorted(unknown)}; use data, out, model(s), cv, train")
    return d


def resolve(args: argparse.Namespace) -> tuple[dict[str, Any], CVConfig, TrainConfig]:
    """Merge defaults, ``--config`` and flags; returns (top-level, CVConfig, TrainConfig)."""
    y = load_yaml(args.config) if getattr(args, "config", None) else {}
    cv_d: dict[str, Any] = dict(y.get("cv") or {})
    tr_d: dict[str, Any] = dict(y.get("train") or {})
    top = {"data": y.get("data"), "out": y.get("out"), "models": y.get("models") or y.get("model")}
    for dest, (sec, key) in FLAG_MAP.items():
        v = getattr(args, dest, None)
        if v is not None:
            (cv_d if sec == "cv" else tr_d)[key] = v
    for k in ("data", "out"):
        if getattr(args, k, None):
            top[k] = getattr(args, k)
    if getattr(args, "models", None):
        top["models"] = args.models
    if isinstance(top["models"], str):
        top["models"] = [m.strip() for m in top["models"].split(",") if m.strip()]
    if top["models"]:
        cv_d["models"] = top["models"]
    known_cv = {f.name for f in fields(CVConfig)}
    bad = set(cv_d) - known_cv
    if bad:
        raise SpinexrError(f"unknown cv setting(s) {sorted(bad)}; known: {sorted(known_cv)}")
    cv = CVConfig(**cv_d)
    tr = TrainConfig.from_dict({**asdict(TrainConfig()), **tr_d})
    if not top.get("data"):
        raise SpinexrError("no dataset given: pass --data DIR|CSV (or data: in the --config file)")
    return top, cv, tr
