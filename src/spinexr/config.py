"""Settings: one dataclass per group, validated on construction, with the CLI flags generated from them.

Defaults live in the dataclasses; a YAML file (``--config``) may set any field, in sections ``cv``
(:class:`CVConfig`), ``train`` (:class:`TrainConfig`, with ``aug``: :class:`AugConfig`) and ``landmarks``
(:class:`LandmarkConfig`, for ``spinexr landmarks``), plus top-level ``data``, ``out`` and ``model(s)``;
command-line flags override both. Each field declares its type (a ``Literal`` lists the accepted
values), its bounds and its help text in one place, so flags, YAML and defaults cannot drift, and a
bad value from any of them gets the same message: the setting, the value, and what is accepted.
This module imports no torch, so ``data check`` runs without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import types
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from spinexr.errors import SpinexrError

T = TypeVar("T", bound="Settings")

# The vocabulary a user types, owned here and imported everywhere else.
# How a film is fitted to the model's square (spinexr.data.contract).
RESIZE_MODES = ("letterbox", "stretch", "crop", "strip", "window")
# The contracts that hand the model a strip around the spine, whatever the film's framing.
SPINE_CENTRED_MODES = ("strip", "window")
# What `explain` draws (spinexr.explain).
EXPLAIN_METHODS = ("gradcam", "gradcam++", "attention")
# A landmark model given as this word (--landmarks with no file, cv.landmarks): the one in spinexr's own bundle.
BUNDLED = "bundled"
# Processes decoding films for `predict` while the models run: decoding is a tenth of a film's time on
# 2 cores, so one keeps the models fed; more only help where decoding is slow (large DICOM files).
DECODE_WORKERS = 1
_UNIONS = (Union, types.UnionType)


_META = {"help": "", "flag": True, "verbs": ("train", "cv"), "ge": None, "gt": None, "le": None, "lt": None,
         "pattern": None}


def setting(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A dataclass field with its help text, CLI exposure and bounds (checked by :meth:`Settings.validate`).

    Args:
        default: the value when nothing sets it.
        default_factory: makes the default instead (a nested settings group).
        **meta: ``help`` (the flag's help text), ``flag`` (exposed on the command line), ``verbs`` (the
            verbs that take the flag), bounds ``ge``/``gt``/``le``/``lt``, and a regular-expression ``pattern``.
    """
    unknown = sorted(set(meta) - set(_META))
    if unknown:
        raise TypeError(f"setting() got unknown keyword(s) {unknown}; known: {sorted(_META)}")
    meta = {**_META, **meta}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


class SettingError(SpinexrError):
    """A setting has a value it cannot take."""


def _accepted(typ: Any, meta: dict[str, Any]) -> str:
    if get_origin(typ) is Literal:
        return ", ".join(str(a) for a in get_args(typ))
    bounds = [f"{op} {meta[k]:g}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
              if meta.get(k) is not None]
    name = getattr(typ, "__name__", str(typ))
    return f"{'a' if name != 'int' else 'an'} {name}" + (f" {' and '.join(bounds)}" if bounds else "")


def _check_value(section: str, name: str, typ: Any, value: Any, meta: dict[str, Any]) -> None:
    """Raise SettingError unless ``value`` fits ``typ`` and the bounds in ``meta``."""
    where = f"{section}.{name}" if section else name
    flag = f" (--{name.replace('_', '-')})" if meta.get("flag", True) else ""
    origin = get_origin(typ)
    if origin in _UNIONS:
        args = [a for a in get_args(typ) if a is not type(None)]
        if value is None:
            return
        typ = args[0] if len(args) == 1 else typ
        origin = get_origin(typ)

    def bad(why: str) -> SettingError:
        return SettingError(f"setting {where}{flag} = {value!r}: {why}; accepted: {_accepted(typ, meta)}")

    if origin is Literal:
        if value not in get_args(typ):
            raise bad("not one of the accepted values")
        return
    if origin is list:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value) or not value:
            raise SettingError(f"setting {where}{flag} = {value!r}: must be a non-empty list of names")
        return
    if typ is bool:
        if not isinstance(value, bool):
            raise bad("not true or false")
        return
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("not a whole number")
    elif typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("not a number")
    elif typ is str:
        if not isinstance(value, str):
            raise bad("not a string")
        if meta.get("pattern") and not re.fullmatch(meta["pattern"], value):
            raise SettingError(f"setting {where}{flag} = {value!r}: not in the accepted form; accepted: "
                               f"{meta.get('help') or 'the pattern ' + meta['pattern']}")
        return
    else:
        return  # nested settings are validated by their own class
    for k, ok in (("ge", lambda b: value >= b), ("gt", lambda b: value > b), ("le", lambda b: value <= b),
                  ("lt", lambda b: value < b)):
        if meta.get(k) is not None and not ok(meta[k]):
            raise bad("out of range")


class Settings:
    """Validation on construction, and strict ``from_dict``: an unknown key is an error, not ignored."""

    SECTION = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        hints = get_type_hints(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            _check_value(self.SECTION, f.name, hints[f.name], getattr(self, f.name), dict(f.metadata))

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any] | None) -> T:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - known
        if unknown:
            raise SettingError(f"unknown {cls.SECTION} setting(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass
class AugConfig(Settings):
    """Radiograph-safe augmentation: small geometry changes and exposure changes.

    Each field is a setting: its flag (where the command line offers one), its YAML key under
    ``train.aug``, its bounds checked by :meth:`Settings.validate`.

    Args:
        rotate_deg: largest rotation, degrees.
        scale: largest zoom change (fraction).
        translate: largest shift (fraction of the side).
        flip: random horizontal flips.
        brightness: largest brightness change (fraction).
        contrast: largest contrast change (fraction).
        gamma: largest gamma change.
        blur: largest Gaussian blur sigma, input pixels (0: off).
        noise: largest Gaussian noise std, on [0, 1] pixels (0: off).
        strip_p: probability of cutting a wide film down to a strip 1/4 as wide as tall.
        widen_p: probability of widening a narrow strip to full-film proportions (mirrored edges).
    """

    SECTION = "train.aug"
    rotate_deg: float = setting(7.0, flag=False, ge=0, le=180, help="largest rotation, degrees")
    scale: float = setting(0.10, flag=False, ge=0, lt=1, help="largest zoom change (fraction)")
    translate: float = setting(0.06, flag=False, ge=0, lt=1, help="largest shift (fraction of the side)")
    flip: bool = setting(True, flag=False, help="random horizontal flips")
    brightness: float = setting(0.10, flag=False, ge=0, le=1)
    contrast: float = setting(0.15, flag=False, ge=0, le=1)
    gamma: float = setting(0.20, flag=False, ge=0, le=2)
    # Another hospital's look: softer detectors and grainier exposures than KAUH's.
    blur: float = setting(0.0, flag=False, ge=0, le=5, help="largest Gaussian blur sigma, input pixels (0: off)")
    noise: float = setting(0.0, flag=False, ge=0, le=0.5, help="largest Gaussian noise std, on [0, 1] pixels (0: off)")
    # Framing augmentation against KAUH's framing shortcut (see spinexr.data.framing), on by default:
    # in a side-by-side 5-fold KAUH CV (benchmarks/results/kauh_augment_cpu_reduced.json) 0.5/0.5
    # kept the accuracy (91.1% both) and cut the framing stress test's changes from 23% / 70% to
    # 5% / 11%; 0.8/0.8 and wider exposure ranges did worse on all three counts.
    strip_p: float = setting(0.5, flag=False, ge=0, le=1,
                             help="probability of cutting a wide film down to a strip 1/4 as wide as tall")
    widen_p: float = setting(0.5, flag=False, ge=0, le=1,
                             help="probability of widening a narrow strip to full-film proportions (mirrored edges)")


DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"


@dataclass
class TrainConfig(Settings):
    """Optimisation settings for one model (saved with every run).

    Each field is a setting: its flag (where the command line offers one), its YAML key under
    ``train``, its bounds checked by :meth:`Settings.validate`.

    Args:
        epochs: training epochs.
        batch_size: images per step (summed over ranks under torchrun).
        lr: peak learning rate, given for lr_ref_batch images per step.
        weight_decay: AdamW weight decay.
        schedule: learning-rate decay after warm-up.
        warmup_epochs: linear warm-up length in epochs.
        label_smoothing: label smoothing of the cross-entropy.
        ema_decay: exponential moving average of the weights, per step (0: off); validation, early stopping and
            the saved model then use the average.
        mixup_alpha: mixup: each batch blended with a shuffled copy of itself by a Beta(alpha, alpha) weight (0:
            off).
        balance: how classes are balanced.
        patience: early-stopping patience in epochs.
        val_fraction: validation share carved from the training side.
        tta_flip: average each prediction with its mirror image (recorded in the model file).
        amp: bf16 autocast on CUDA.
        channels_last: channels_last memory format on CUDA.
        seed: the seed every random choice derives from.
        device: auto, cpu, cuda or cuda:N.
        lr_scaling: how lr follows the batch size.
        lr_ref_batch: the batch size lr is given for.
        compile: torch.compile the model (first epoch slower, later ones faster on GPU).
        auto_batch: on CUDA out-of-memory, halve the batch and carry on.
        aug: the augmentation (:class:`AugConfig`).
    """

    SECTION = "train"
    epochs: int = setting(60, ge=1, help="training epochs")
    batch_size: int = setting(32, ge=1, help="images per step (summed over ranks under torchrun)")
    lr: float = setting(1e-3, gt=0, help="peak learning rate, given for lr_ref_batch images per step")
    weight_decay: float = setting(0.05, ge=0, help="AdamW weight decay")
    schedule: Literal["onecycle", "cosine"] = setting("onecycle", help="learning-rate decay after warm-up")
    warmup_epochs: float = setting(3.0, ge=0, help="linear warm-up length in epochs")
    label_smoothing: float = setting(0.1, ge=0, lt=1, help="label smoothing of the cross-entropy")
    # Regularisation for a few hundred films from scratch (issue: a label as good as the published
    # classifiers); both off by default so earlier recipes reproduce.
    ema_decay: float = setting(0.0, ge=0, lt=1, help="exponential moving average of the weights, per step (0: off); "
                               "validation, early stopping and the saved model then use the average")
    mixup_alpha: float = setting(0.0, ge=0, le=10, help="mixup: each batch blended with a shuffled copy of itself by "
                                 "a Beta(alpha, alpha) weight (0: off)")
    balance: Literal["oversample", "weights", "none"] = setting("oversample", help="how classes are balanced")
    patience: int = setting(15, ge=1, help="early-stopping patience in epochs")
    val_fraction: float = setting(0.15, gt=0, lt=1, help="validation share carved from the training side")
    tta_flip: bool = setting(True, help="average each prediction with its mirror image (recorded in the model file)")
    amp: bool = setting(True, help="bf16 autocast on CUDA")
    channels_last: bool = setting(True, help="channels_last memory format on CUDA")
    seed: int = setting(0, ge=0, help="the seed every random choice derives from")
    device: str = setting("auto", pattern=DEVICE_PATTERN, help="auto, cpu, cuda or cuda:N")
    lr_scaling: Literal["sqrt", "linear", "none"] = setting("sqrt", help="how lr follows the batch size")
    lr_ref_batch: int = setting(32, ge=1, help="the batch size lr is given for")
    compile: bool = setting(False, help="torch.compile the model (first epoch slower, later ones faster on GPU)")
    auto_batch: bool = setting(True, help="on CUDA out-of-memory, halve the batch and carry on")
    aug: AugConfig = setting(flag=False, default_factory=AugConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> TrainConfig:
        d = dict(d or {})
        aug = d.pop("aug", None)
        if aug is not None and not isinstance(aug, AugConfig):
            if not isinstance(aug, dict):
                raise SettingError(f"setting train.aug = {aug!r}: must be a mapping of augmentation settings")
            aug = AugConfig.from_dict(aug)
        obj = super().from_dict(d)
        if aug is not None:
            obj.aug = aug
        return obj


@dataclass
class CVConfig(Settings):
    """What to train and evaluate and how it is split (saved with every run).

    Each field is a setting: its flag (where the command line offers one), its YAML key under
    ``cv``, its bounds checked by :meth:`Settings.validate`.

    Args:
        models: registered model names.
        folds: folds of the grouped k-fold.
        repeats: repeats of the k-fold with new splits.
        attention: the attention head.
        weights: none (from scratch), imagenet (through timm, needs the network) or a file.
        image_size: input size (default: each model's own).
        resize: how a film is fitted to the square (strip: cut to a strip around the spine, then letterboxed;
            window: every film made a strip around the spine, narrower ones widened by mirroring their edges).
        protocol: grouped (honest), seed-leaky (oversample, then split), or both side by side.
        bootstrap: bootstrap resamples for the confidence intervals.
        save_models: keep each fold's model file.
        cache_dir: keep decoded images here between runs.
        drop_rate: dropout before the classifier head.
        explain: Grad-CAM gallery and faithfulness of fold 0 in the report.
        framing_test: framing stress test on each fold's held-out films.
        landmarks: a landmark model file, or 'bundled': also score the decision that answers to the measured
            curve, each fold's rule fitted on its training side.
        test_fraction: held-out test share (0: none).
    """

    SECTION = "cv"
    models: list[str] = setting(flag=False, default_factory=lambda: ["xception", "inception_v3", "densenet121"],
                                help="registered model names")
    folds: int = setting(5, ge=2, verbs=("cv",), help="folds of the grouped k-fold")
    repeats: int = setting(1, ge=1, verbs=("cv",), help="repeats of the k-fold with new splits")
    attention: Literal["mhsa", "cbam", "none"] = setting("mhsa", help="the attention head")
    weights: str = setting("none", help="none (from scratch), imagenet (through timm, needs the network) or a file")
    image_size: int | None = setting(None, ge=32, le=2048, help="input size (default: each model's own)")
    resize: Literal[RESIZE_MODES] = setting(  # type: ignore[valid-type]
        "letterbox", help="how a film is fitted to the square (strip: cut to a strip around the spine, then letterboxed; "
        "window: every film made a strip around the spine, narrower ones widened by mirroring their edges)")
    protocol: Literal["grouped", "seed-leaky", "both"] = setting(
        "grouped", verbs=("cv",), help="grouped (honest), seed-leaky (oversample, then split), or both side by side")
    bootstrap: int = setting(1000, ge=20, help="bootstrap resamples for the confidence intervals")
    save_models: bool = setting(True, flag=False)
    cache_dir: str | None = setting(None, help="keep decoded images here between runs")
    drop_rate: float = setting(0.2, flag=False, ge=0, lt=1)
    explain: bool = setting(True, flag=False, help="Grad-CAM gallery and faithfulness of fold 0 in the report")
    framing_test: bool = setting(True, flag=False, help="framing stress test on each fold's held-out films")
    landmarks: str | None = setting(
        None, verbs=("cv",), help="a landmark model file, or 'bundled': also score the decision that answers to the "
                                  "measured curve, each fold's rule fitted on its training side")
    test_fraction: float = setting(0.2, ge=0, lt=1, verbs=("train",), help="held-out test share (0: none)")


SECTIONS: dict[str, type[Settings]] = {"cv": CVConfig, "train": TrainConfig}


def add_setting_flags(p: argparse.ArgumentParser, verb: str, classes: Any = None) -> None:
    """One flag per exposed field of ``classes`` (default :class:`CVConfig` and :class:`TrainConfig`)
    for ``verb``. Flags default to None, so only the flags a user gives override the defaults.

    Args:
        p: the verb's parser.
        verb: the verb (a field names the verbs it is a flag of).
        classes: the settings dataclasses (default: CVConfig and TrainConfig).
    """
    for cls in classes or SECTIONS.values():
        hints = get_type_hints(cls)
        for f in fields(cls):  # type: ignore[arg-type]
            meta = f.metadata
            if not meta.get("flag", True) or verb not in meta.get("verbs", ()):
                continue
            typ = hints[f.name]
            opt = "--" + f.name.replace("_", "-")
            kw: dict[str, Any] = {"dest": f.name, "default": None, "help": meta.get("help") or None}
            if typ is bool:
                p.add_argument(opt, action=argparse.BooleanOptionalAction, **kw)
                continue
            args = [a for a in get_args(typ) if a is not type(None)] if get_origin(typ) in _UNIONS else [typ]
            base = args[0] if args else typ
            if get_origin(base) is Literal:
                kw["choices"] = list(get_args(base))
            elif base in (int, float):
                kw["type"] = _number(base, f.name)
            p.add_argument(opt, **kw)


def _number(typ: type, name: str) -> Any:
    def parse(s: str) -> Any:
        try:
            return typ(s)
        except ValueError:
            kind = "a whole number" if typ is int else "a number"
            raise argparse.ArgumentTypeError(f"--{name.replace('_', '-')} takes {kind}, not {s!r}") from None

    return parse


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise SpinexrError(f"{p}: config file not found")
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise SpinexrError(f"{p}: not valid YAML ({e})") from e
    if not isinstance(d, dict):
        raise SpinexrError(f"{p}: the config must be a mapping (key: value)")
    unknown = set(d) - {"data", "out", "model", "models", "cv", "train", "landmarks"}
    if unknown:
        raise SpinexrError(f"{p}: unknown top-level key(s) {sorted(unknown)}; use data, out, model(s), cv, train, landmarks")
    for sec in ("cv", "train", "landmarks"):
        if d.get(sec) is not None and not isinstance(d[sec], dict):
            raise SpinexrError(f"{p}: '{sec}' must be a mapping of settings")
    return d


def _framing_for_contract(cv: CVConfig, tr: TrainConfig, given_aug: dict[str, Any]) -> TrainConfig:
    """Under the strip and window input contracts every film reaches the model as a strip around the
    spine, so the framing augmentation (strips cut from wide films, strips widened) would train on
    inputs the model never gets: it is off there. Asked for explicitly, it is a mistake to say so."""
    if cv.resize not in SPINE_CENTRED_MODES or (tr.aug.strip_p == 0 and tr.aug.widen_p == 0):
        return tr
    asked = {k: given_aug[k] for k in ("strip_p", "widen_p") if given_aug.get(k)}
    if asked:
        raise SpinexrError(f"train.aug {', '.join(f'{k}: {v}' for k, v in asked.items())} with --resize {cv.resize}: "
                           f"under the {cv.resize} contract every film reaches the model as a strip around the spine, "
                           "so reframing it in training shows the model films it never gets; set them to 0, or use "
                           "--resize letterbox to train with framing augmentation")

    logging.getLogger(__name__).info("--resize %s: framing augmentation off (every film is a strip already)", cv.resize)
    return dataclasses.replace(tr, aug=dataclasses.replace(tr.aug, strip_p=0.0, widen_p=0.0))


def resolve(args: argparse.Namespace) -> tuple[dict[str, Any], CVConfig, TrainConfig]:
    """Merge defaults, ``--config`` and flags; returns (top-level, CVConfig, TrainConfig)."""
    y = load_yaml(args.config) if getattr(args, "config", None) else {}
    sections: dict[str, dict[str, Any]] = {"cv": dict(y.get("cv") or {}), "train": dict(y.get("train") or {})}
    top = {"data": y.get("data"), "out": y.get("out"), "models": y.get("models") or y.get("model")}
    for sec, cls in SECTIONS.items():
        for f in fields(cls):  # type: ignore[arg-type]
            v = getattr(args, f.name, None) if f.metadata.get("flag", True) else None
            if v is not None:
                sections[sec][f.name] = v
    for k in ("data", "out"):
        if getattr(args, k, None):
            top[k] = getattr(args, k)
    if getattr(args, "models", None):
        top["models"] = args.models
    if isinstance(top["models"], str):
        top["models"] = [m.strip() for m in top["models"].split(",") if m.strip()]
    if top["models"]:
        sections["cv"]["models"] = top["models"]
    cv = CVConfig.from_dict(sections["cv"])
    tr = TrainConfig.from_dict(sections["train"])
    tr = _framing_for_contract(cv, tr, (sections["train"].get("aug") or {}))
    if not top.get("data"):
        raise SpinexrError("no dataset given: pass --data DIR|CSV (or data: in the --config file)")
    return top, cv, tr


@dataclass
class LandmarkConfig(Settings):
    """Training and augmentation of a landmark model (saved with every run).

    Each field is a setting: its flag (where the command line offers one), its YAML key under
    ``landmarks``, its bounds checked by :meth:`Settings.validate`.

    Args:
        encoder: timm encoder (features_only).
        weights: none (from scratch) or imagenet (timm, needs the network).
        input_height: input height (a tall box: films keep their aspect).
        input_width: input width.
        epochs: training epochs.
        batch_size: films per step.
        lr: peak learning rate (AdamW, cosine after warm-up).
        weight_decay: AdamW weight decay.
        warmup_epochs: linear warm-up length in epochs.
        patience: early-stopping patience in epochs (on the validation landmark error).
        val_fraction: validation share carved from the training side (by case).
        seed: random seed of the splits and the training.
        device: auto, cpu, cuda or cuda:N.
        encoding: corners: 68 corner heatmaps; offsets: 17 vertebra heatmaps + shared corner offsets.
        tta_flip: average each prediction with its mirror image's (in the deployed graph).
        tta_scales: test-time zooms averaged in the deployed graph, e.g. 1,0.85,1.1 (1: none).
        centreline_weight: share of each vertebra's tilt read from the spine's centreline instead of its own
            corners when measuring Cobb angles (0: the corners alone, the dataset's definition).
        angle_weight: weight of the vertebra midline error in the loss.
        js_weight: weight of the heatmap shape (Jensen-Shannon) term in the loss.
        rotate_deg: largest augmentation rotation, degrees.
        scale_min: smallest zoom (below 1: zoom out, padding around the film).
        scale_max: largest zoom.
        translate: largest shift (fraction of the side).
        flip: random horizontal flips (left and right corners swap).
        intensity: brightness, contrast and gamma jitter.
        strip_p: share of training films cut to a strip around the spine (a KAUH-like Normal framing), half of
            them widened again by mirroring the strip's edges.
        fix_labels: train on labels with slips fixed (corners swapped, neighbours in each other's place) instead
            of leaving every implausible label out.
        folds: case-grouped folds.
        test_fraction: held-out share of cases (0: none).
    """

    SECTION = "landmarks"
    encoder: str = setting("resnet18", help="timm encoder (features_only)")
    weights: Literal["none", "imagenet"] = setting("none", help="none (from scratch) or imagenet (timm, needs the network)")
    input_height: int = setting(512, ge=64, le=4096, help="input height (a tall box: films keep their aspect)")
    input_width: int = setting(256, ge=32, le=4096, help="input width")
    epochs: int = setting(60, ge=1, help="training epochs")
    batch_size: int = setting(8, ge=1, help="films per step")
    lr: float = setting(2e-3, gt=0, help="peak learning rate (AdamW, cosine after warm-up)")
    weight_decay: float = setting(1e-4, ge=0)
    warmup_epochs: float = setting(2.0, ge=0)
    patience: int = setting(20, ge=1, help="early-stopping patience in epochs (on the validation landmark error)")
    val_fraction: float = setting(0.1, gt=0, lt=1, help="validation share carved from the training side (by case)")
    seed: int = setting(0, ge=0)
    device: str = setting("auto", pattern=DEVICE_PATTERN, help="auto, cpu, cuda or cuda:N")
    # At equal compute (AASCE 80/20 split, 320 x 160, 14 minutes on one thread each) both reached a
    # landmark error of 4.4% of the film height, but the offsets' SMAPE was 87% against 36%: the
    # corners' relative placement, what an angle is made of, came out worse. Corners are the default.
    encoding: Literal["corners", "offsets"] = setting(
        "corners", help="corners: 68 corner heatmaps; offsets: 17 vertebra heatmaps + shared corner offsets")
    tta_flip: bool = setting(True, help="average each prediction with its mirror image's (in the deployed graph)")
    # Chosen on the AASCE landmark CV's fit and validation films (not its test films): see
    # spinexr.models.landmark.LandmarkPredictor. Validation during training uses the zoom 1 alone.
    tta_scales: str = setting("1,0.85,1.1", pattern=r"^\s*\d*\.?\d+(\s*,\s*\d*\.?\d+)*\s*$",
                              help="test-time zooms averaged in the deployed graph, e.g. 1,0.85,1.1 (1: none)")
    # Chosen on the AASCE landmark CV's validation films (32, of the bundled recipe's fold 0) and on KAUH:
    # with 0.5, the largest angle's error there fell from 5.6 to 4.9 degrees (SMAPE 12.9% -> 13.0%) and
    # KAUH Scoliosis vs Normal by the largest angle went from ROC-AUC 0.987 to 0.989; checked on a second
    # seed's split (benchmarks/angle_reading.py). A measuring setting: the model file carries it, and
    # angle_reading.py measures other weights on a finished run without retraining.
    centreline_weight: float = setting(0.5, ge=0, le=1, help="share of each vertebra's tilt read from the spine's "
                                       "centreline instead of its own corners when measuring Cobb angles (0: "
                                       "the corners alone, the dataset's definition)")
    # Both extra terms slowed learning on a 60-film AASCE probe (128 x 64, 14 epochs: landmark error
    # 6.5% vs 6.0% of the film height, SMAPE 51% vs 33% with position L1 alone), so they start off.
    angle_weight: float = setting(0.0, ge=0, help="weight of the vertebra midline error in the loss")
    js_weight: float = setting(0.0, ge=0, help="weight of the heatmap shape (Jensen-Shannon) term in the loss")
    rotate_deg: float = setting(10.0, ge=0, le=45, help="largest augmentation rotation, degrees")
    scale_min: float = setting(0.7, gt=0, le=1, help="smallest zoom (below 1: zoom out, padding around the film)")
    scale_max: float = setting(1.15, ge=1, le=2, help="largest zoom")
    translate: float = setting(0.06, ge=0, lt=0.5, help="largest shift (fraction of the side)")
    flip: bool = setting(True, help="random horizontal flips (left and right corners swap)")
    intensity: float = setting(0.2, ge=0, le=1, help="brightness, contrast and gamma jitter")
    strip_p: float = setting(0.0, ge=0, le=1, help="share of training films cut to a strip around the spine (a "
                                                     "KAUH-like Normal framing), half of them widened again by "
                                                     "mirroring the strip's edges")
    # Off by default so earlier runs reproduce (and their fold models can be measured again); the check's
    # counts are reported either way (spinexr.data.label_check).
    fix_labels: bool = setting(False, help="train on labels with slips fixed (corners swapped, neighbours in each "
                                           "other's place) instead of leaving every implausible label out")
    folds: int = setting(5, ge=2, verbs=("cv",), help="case-grouped folds")
    test_fraction: float = setting(0.2, ge=0, lt=1, verbs=("train",), help="held-out share of cases (0: none)")


def resolve_landmarks(args: argparse.Namespace) -> tuple[dict[str, Any], LandmarkConfig]:
    """Merge defaults, the ``landmarks`` section of ``--config`` and flags; returns (top-level, LandmarkConfig)."""
    y = load_yaml(args.config) if getattr(args, "config", None) else {}
    section = dict(y.get("landmarks") or {})
    for f in fields(LandmarkConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            section[f.name] = v
    top = {k: getattr(args, k, None) or y.get(k) for k in ("data", "out")}
    if not top["data"]:
        raise SpinexrError("no landmark data given: pass --data (an AASCE folder or a landmark CSV), or data: in --config")
    return top, LandmarkConfig.from_dict(section)
