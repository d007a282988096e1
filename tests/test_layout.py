"""The codebase keeps the shape DESIGN.md draws: layers without cycles, short functions (a light CLI:
tests/test_settings.py checks that data check needs no torch)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import code_structure  # noqa: E402


def test_no_import_cycles_and_no_upward_imports() -> None:
    graph, _, _ = code_structure.import_graph(ROOT / "src")
    assert code_structure.cycles(graph) == []
    assert code_structure.upward_imports(graph, code_structure.layers(ROOT / "pyproject.toml")) == []


def test_a_planted_cycle_and_upward_import_are_found() -> None:
    graph = {"spinexr.data.a": {"spinexr.evaluation.b"}, "spinexr.evaluation.b": {"spinexr.data.a"}}
    assert code_structure.cycles(graph) == [["spinexr.data.a", "spinexr.evaluation.b"]]
    up = code_structure.upward_imports(graph, code_structure.layers(ROOT / "pyproject.toml"))
    assert up == ["spinexr.data.a -> spinexr.evaluation.b"]


def test_no_function_of_80_lines_or_more() -> None:
    assert code_structure.long_functions(ROOT) == []


def test_import_linter_contract_holds() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install import-linter)")
    r = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_scripts_import_only_spinexr_and_installed_packages() -> None:
    """``scripts/`` are thin over the library: no path hacks, no imports from ``benchmarks/``."""
    import ast

    local = {p.stem for p in (ROOT / "benchmarks").glob("*.py")}
    for script in sorted((ROOT / "scripts").glob("*.py")):
        tree = ast.parse(script.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & local, f"{script.name} imports {sorted(names & local)} from benchmarks/"
        assert "sys.path" not in script.read_text(), f"{script.name} changes sys.path"
