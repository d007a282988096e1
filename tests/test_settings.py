"""Settings are validated in one place: a bad value from a flag or YAML gets exit code 2 and a message
naming the setting, the value and what is accepted; flags are generated from the dataclasses."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Literal, get_args, get_origin, get_type_hints

import pytest

from spinexr.cli import build_parser, main
from spinexr.config import CVConfig, SettingError, TrainConfig


@pytest.mark.parametrize("argv,setting", [
    (["--val-fraction", "0"], "val_fraction"),
    (["--val-fraction", "1.5"], "val_fraction"),
    (["--folds", "1"], "folds"),
    (["--batch-size", "0"], "batch_size"),
    (["--epochs", "0"], "epochs"),
    (["--image-size", "8"], "image_size"),
    (["--device", "gpu"], "device"),
    (["--bootstrap", "3"], "bootstrap"),
])
def test_bad_flag_values_exit_2_naming_the_setting(argv: list[str], setting: str, synth_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["cv", "--data", str(synth_dir), "--models", "small", "--out", str(tmp_path / "r"), *argv, "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert setting in err and argv[1] in err and "accepted" in err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing was started


@pytest.mark.parametrize("yaml_text,setting", [
    ("train:\n  schedule: linear\n", "schedule"),
    ("train:\n  lr_scaling: cubic\n", "lr_scaling"),
    ("train:\n  batch_size: 0\n", "batch_size"),
    ("train:\n  aug:\n    rotate_deg: -5\n", "rotate_deg"),
    ("train:\n  bogus: 1\n", "bogus"),
    ("cv:\n  folds: 1\n", "folds"),
    ("cv:\n  resize: squash\n", "resize"),
    ("train:\n  tta_flip: maybe\n", "tta_flip"),
])
def test_bad_yaml_values_exit_2_naming_the_setting(yaml_text: str, setting: str, synth_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {synth_dir}\n{yaml_text}")
    rc = main(["cv", "--config", str(cfg), "--models", "small", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and setting in err and "Traceback" not in err


def test_unknown_choice_on_the_command_line_is_argparse_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["cv", "--data", "x", "--schedule", "linear"])
    assert e.value.code == 2 and "schedule" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["cv", "--data", "x", "--epochs", "many"])
    assert e.value.code == 2 and "--epochs takes a whole number" in capsys.readouterr().err


def test_settings_validate_on_construction() -> None:
    with pytest.raises(SettingError, match="val_fraction"):
        TrainConfig(val_fraction=0.0)
    with pytest.raises(SettingError, match="onecycle, cosine"):
        TrainConfig(schedule="step")  # type: ignore[arg-type]
    with pytest.raises(SettingError, match="unknown train setting"):
        TrainConfig.from_dict({"epochs": 2, "epoch": 3})
    assert CVConfig.from_dict({"test_fraction": 0.3}).test_fraction == 0.3


def test_flags_are_generated_from_the_dataclasses() -> None:
    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "cmd").choices
    for verb in ("train", "cv"):
        acts = {a.dest: a for a in subs[verb]._actions}
        for cls in (CVConfig, TrainConfig):
            hints = get_type_hints(cls)
            for f in fields(cls):
                if f.name == "models":  # --models (cv) / --model (train), comma-separated
                    assert "models" in acts
                    continue
                exposed = f.metadata.get("flag", True) and verb in f.metadata.get("verbs", ())
                assert (f.name in acts) == exposed, (verb, f.name)
                if exposed and get_origin(hints[f.name]) is Literal:
                    assert list(acts[f.name].choices) == list(get_args(hints[f.name])), f.name
                if exposed:
                    assert acts[f.name].default is None  # an absent flag never overrides the YAML


def test_test_fraction_from_yaml(synth_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {synth_dir}\ncv:\n  test_fraction: 0.3\n  image_size: 32\n  bootstrap: 20\n"
                   "train:\n  epochs: 1\n  batch_size: 8\n  device: cpu\n")
    out = tmp_path / "t"
    assert main(["train", "--config", str(cfg), "--model", "small", "--out", str(out), "--quiet"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["cv"]["test_fraction"] == 0.3
    n_test = json.loads((out / "metrics.json").read_text())["models"]["small"]["folds"][0]["n_test"]
    assert 6 <= n_test <= 12  # about 30% of 30 films, whole groups


_NO_TORCH = r"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "timm"):
            raise ImportError(f"{name} is not installed")
sys.meta_path.insert(0, Block())
from spinexr.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_data_check_needs_no_torch(synth_dir: Path, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-c", _NO_TORCH, "data", "check", str(synth_dir), "--out", str(tmp_path / "c")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "c" / "manifest.csv").is_file()


def test_strip_and_window_contracts_turn_framing_augmentation_off(synth_dir: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from spinexr.config import resolve

    def settings(argv: list[str]) -> tuple[CVConfig, TrainConfig]:
        args = build_parser().parse_args(["train", "--data", str(synth_dir), *argv])
        _, cv, tr = resolve(args)
        return cv, tr

    _, tr = settings([])
    assert tr.aug.strip_p == 0.5 and tr.aug.widen_p == 0.5  # the letterbox default keeps it
    for mode in ("strip", "window"):
        cv, tr = settings(["--resize", mode])
        assert cv.resize == mode and tr.aug.strip_p == 0.0 and tr.aug.widen_p == 0.0
    # Asked for in the YAML file together with the window contract: a mistake, said before anything starts.
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {synth_dir}\ncv:\n  resize: window\ntrain:\n  aug:\n    widen_p: 0.3\n")
    rc = main(["train", "--config", str(cfg), "--model", "small", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "widen_p" in err and "--resize letterbox" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_landmarks_take_a_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`spinexr landmarks` reads a landmarks: section from --config; flags override it; a bad value is refused
    with the setting named, before anything starts."""
    from spinexr.config import resolve_landmarks

    cfg = tmp_path / "lm.yaml"
    cfg.write_text(f"data: {tmp_path / 'films.csv'}\nlandmarks:\n  epochs: 7\n  input_height: 160\n  input_width: 80\n")
    args = build_parser().parse_args(["landmarks", "train", "--config", str(cfg), "--epochs", "3"])
    top, lm = resolve_landmarks(args)
    assert top["data"] == str(tmp_path / "films.csv") and lm.epochs == 3 and lm.input_height == 160
    cfg.write_text("landmarks:\n  centreline_weight: 2\n")
    rc = main(["landmarks", "train", "--config", str(cfg), "--data", str(tmp_path / "films.csv"),
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "landmarks.centreline_weight" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_the_classifier_recipe_file_is_a_settings_file_validated_like_the_others(tmp_path: Path) -> None:
    """benchmarks/recipes/kauh_classifier_cpu.yaml is read by `spinexr cv --config` as any settings file;
    its regularisation settings (the weight average, mixup) are checked like every other."""
    import argparse

    import yaml

    from spinexr.config import resolve

    recipe = Path(__file__).resolve().parents[1] / "benchmarks" / "recipes" / "kauh_classifier_cpu.yaml"
    _, cv, tr = resolve(argparse.Namespace(config=str(recipe), data="films", out=None, models=None))
    assert cv.models == ["xception"] and cv.resize == "window" and tr.ema_decay > 0 and tr.schedule == "cosine"
    assert tr.aug.strip_p == 0 and tr.aug.widen_p == 0  # the window contract turns the framing augmentation off
    for bad, message in (({"ema_decay": 1.0}, "train.ema_decay"), ({"mixup_alpha": -1}, "train.mixup_alpha")):
        text = yaml.safe_load(recipe.read_text())
        text["train"].update(bad)
        f = tmp_path / "bad.yaml"
        f.write_text(yaml.safe_dump(text))
        with pytest.raises(SettingError, match=message):
            resolve(argparse.Namespace(config=str(f), data="films", out=None, models=None))
