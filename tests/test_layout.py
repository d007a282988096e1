"""The codebase keeps the shape DESIGN.md draws: layers without cycles, short functions (a light CLI:
tests/test_settings.py checks that data check needs no torch)."""

from __future__ import annotations

import ast
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


def _api_functions() -> list[tuple[str, ast.FunctionDef]]:
    """Every public function and method of the modules the API reference renders (docs/api/*.md)."""
    import re

    mods = [m for md in sorted((ROOT / "docs" / "api").glob("*.md"))
            for m in re.findall(r"^::: (spinexr[\w.]*)", md.read_text(), re.M)]
    out = []
    for mod in mods:
        path = ROOT / "src" / (mod.replace(".", "/") + ".py")
        path = path if path.is_file() else ROOT / "src" / mod.replace(".", "/") / "__init__.py"
        tree = ast.parse(path.read_text())
        exported = next(({e.value for e in n.value.elts} for n in tree.body if isinstance(n, ast.Assign)
                         and any(getattr(t, "id", None) == "__all__" for t in n.targets)), None)
        for n in tree.body:
            if not isinstance(n, (ast.FunctionDef, ast.ClassDef)):
                continue
            public = n.name in exported if exported is not None else not n.name.startswith("_")
            if isinstance(n, ast.FunctionDef) and public:
                out.append((f"{mod}.{n.name}", n))
            elif isinstance(n, ast.ClassDef) and public:
                out += [(f"{mod}.{n.name}.{f.name}", f) for f in n.body
                        if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")]
    return out


def test_public_functions_with_three_or_more_parameters_document_them() -> None:
    """The API reference's parameter tables: every public function or method of 3+ parameters has ``Args:``."""
    def n_params(f: ast.FunctionDef) -> int:
        a = f.args
        return len([x for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")])

    def documented(f: ast.FunctionDef) -> bool:  # in place, or where the method it implements is documented
        doc = ast.get_docstring(f) or ""
        return "Args:" in doc or "the arguments" in doc.lower() and ":meth:`" in doc

    bare = [name for name, f in _api_functions() if n_params(f) >= 3 and not documented(f)]
    assert bare == []


def test_public_classes_document_what_they_are_built_from() -> None:
    """Every public class of the API reference that takes parameters (an ``__init__`` or dataclass fields)
    names each of them under ``Args:`` (the settings classes too, field by field)."""
    import dataclasses
    import importlib
    import re

    bare = []
    for md in sorted((ROOT / "docs" / "api").glob("*.md")):
        for mod in re.findall(r"^::: (spinexr[\w.]*)", md.read_text(), re.M):
            m = importlib.import_module(mod)
            names = getattr(m, "__all__", [n for n in vars(m) if not n.startswith("_")])
            for n in names:
                cls = getattr(m, n, None)
                if not isinstance(cls, type) or cls.__module__ != mod or issubclass(cls, BaseException):
                    continue
                own = vars(cls).get("__annotations__", {})  # a base dataclass documents the fields it brings
                params = ([f.name for f in dataclasses.fields(cls) if f.init and f.name in own]
                          if dataclasses.is_dataclass(cls) else
                          [p for p in cls.__init__.__code__.co_varnames[1:cls.__init__.__code__.co_argcount]]
                          if "__init__" in vars(cls) else [])
                doc = cls.__doc__ or ""
                args = doc.split("Args:", 1)[1] if "Args:" in doc else ""
                missing = [p for p in params if f"{p}:" not in args]
                if missing:
                    bare.append(f"{mod}.{n}: {missing}")
    assert bare == []
