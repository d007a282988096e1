"""The benchmarks' result files say what they measured: the commit of the code (and so of the bundled models)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _machine  # noqa: E402


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_result_records_the_commit_and_whether_the_checkout_was_changed(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "commit", "-q", "-m", "one")
    clean = _machine.code_version(tmp_path)
    assert clean == {"commit": _git(tmp_path, "rev-parse", "HEAD"), "modified": False}
    (tmp_path / "a.py").write_text("x = 2\n")
    assert _machine.code_version(tmp_path) == {"commit": clean["commit"], "modified": True}
    (tmp_path / "b.py").write_text("untracked\n")  # a stray untracked file is not a change to the measured code
    (tmp_path / "a.py").write_text("x = 1\n")
    assert _machine.code_version(tmp_path)["modified"] is False


def test_outside_a_checkout_there_is_no_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # git must not find a repository above
    assert _machine.code_version(tmp_path) is None
    assert _machine.code_version(tmp_path / "missing") is None
