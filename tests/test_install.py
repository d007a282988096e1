"""`pip install .` ships the bundled models: the installed package finds them, lists them, and predicts
with no model argument."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_installed_package_finds_and_uses_its_bundled_models(tmp_path: Path, synth_dir: Path) -> None:
    import importlib.util

    site = tmp_path / "site"
    # Build with this environment's setuptools when it has one (no download); otherwise pip fetches it.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    # Build from a copy of what the package is made of, so the checkout gets no build/ or egg-info.
    import shutil

    src = tmp_path / "checkout"
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *isolation,
                            "--target", str(site), str(src)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    shipped = site / "spinexr" / "deploy" / "bundled"
    bundle = json.loads((ROOT / "src" / "spinexr" / "deploy" / "bundled" / "bundle.json").read_text())
    parts = [bundle[k]["file"] for k in ("classifier", "landmarks", "refiner") if bundle.get(k)]
    for name in (*parts, *(Path(n).with_suffix(".md").name for n in parts), "bundle.json"):
        assert (shipped / name).is_file(), f"{name} is not in the installed package"
    # One wheel must stay under PyPI's 100 MB file limit (safetensors weights hardly compress).
    total = sum((shipped / n).stat().st_size for n in parts)
    assert total <= 95 * 2**20, f"bundled models take {total / 2**20:.1f} MB (budget 95 MB)"
    env = {**os.environ, "PYTHONPATH": str(site)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "spinexr", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=600)

    where = subprocess.run([sys.executable, "-c", "import spinexr; print(spinexr.__file__)"], capture_output=True,
                           text=True, env=env, cwd=tmp_path)
    assert where.stdout.strip().startswith(str(site)), where.stdout  # the installed copy, not the checkout
    listed = run("models")
    assert listed.returncode == 0, listed.stderr
    assert "classifier" in listed.stdout and "landmarks" in listed.stdout and str(shipped) in listed.stdout
    card = run("models", "--card", "classifier")
    assert "Research use only" in card.stdout and "Known failure modes" in card.stdout
    film = sorted((synth_dir / "Scoliosis").glob("*.jpg"))[0]
    out = tmp_path / "preds.json"
    pred = run("predict", str(film), "--out", str(out), "--quiet")
    assert pred.returncode == 0, pred.stderr
    rec = json.loads(out.read_text())[0]
    assert rec["status"] == "ok" and set(rec["probabilities"]) == {"Normal", "Scoliosis", "Spondylolisthesis"}
    assert "spine" in rec and "decision" in rec  # the bundled landmark model measured the film too
