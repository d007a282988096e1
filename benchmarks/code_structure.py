"""The shape of the codebase, counted: what a new maintainer meets before reading a line.

    python benchmarks/code_structure.py [--root CHECKOUT] [--tag TAG]

Counts, over ``src/spinexr`` (imports) and ``src``, ``benchmarks`` and ``scripts`` (function length):

- import cycles between spinexr's modules (strongly connected components of the module graph,
  imports inside functions included, ``TYPE_CHECKING`` blocks excluded);
- upward imports: a module importing one of a higher layer, by the layers declared for
  import-linter in ``pyproject.toml`` (``[tool.importlinter]``, read from *this* checkout, so an
  older checkout is judged by today's layers);
- functions of 80 lines or more, and imports inside functions (all, and of spinexr's own modules);
- the README's lines;
- functions in ``src`` that take 8 or more arguments;
- with ``--trace-predict FILM``: the path of ``spinexr predict FILM`` through the code, traced in a
  fresh process of the checkout: each step is a call from one of spinexr's modules into another (each
  caller-callee pair of functions counted once, in the order first seen), with the modules it passes
  through, how often each is entered, and the climbs (a call into a module of a higher layer than the
  caller's, by the checkout's own declared layers).

Writes ``benchmarks/results/code_structure_<tag>.json``. No timing: the figures are counts.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import tomllib

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import write_result  # noqa: E402

LONG_LINES = 80


def layers(pyproject: Path) -> list[list[str]]:
    """The layers contract of ``pyproject``, top first, each a list of (independent) module names."""
    cfg = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]
    contract = next(c for c in cfg["contracts"] if c["type"] == "layers")
    return [[m.strip() for m in layer.replace(":", "|").split("|")] for layer in contract["layers"]]


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(mod: str, node: ast.Import | ast.ImportFrom, is_pkg: bool, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    if node.level:
        base = base[:len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]


def import_graph(src: Path) -> tuple[dict[str, set[str]], int, int]:
    """(module -> spinexr modules it imports, imports inside functions, of which spinexr's own)."""
    files = {_module_name(p, src): p for p in (src / "spinexr").rglob("*.py")}
    known = set(files)
    graph: dict[str, set[str]] = defaultdict(set)
    inside = inside_own = 0
    for mod, path in files.items():
        tree = ast.parse(path.read_text())
        parent = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            own = [t for t in _targets(mod, node, path.name == "__init__.py", known) if t.split(".")[0] == "spinexr"]
            in_function = type_checking = False
            a = parent.get(node)
            while a is not None:
                in_function |= isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef))
                type_checking |= isinstance(a, ast.If) and "TYPE_CHECKING" in ast.unparse(a.test)
                a = parent.get(a)
            inside += in_function
            inside_own += in_function and bool(own)
            for t in own:
                while t not in known and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t != mod and not type_checking:
                    graph[mod].add(t)
    for mod in known:
        graph.setdefault(mod, set())
    return dict(graph), inside, inside_own


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def upward_imports(graph: dict[str, set[str]], declared: list[list[str]]) -> list[str]:
    """``importer -> imported`` for every import of a higher layer (or of an independent sibling)."""
    def layer_of(mod: str) -> tuple[int, str] | None:
        for depth, names in enumerate(declared):
            for name in names:
                if mod == name or mod.startswith(name + "."):
                    return depth, name
        return None

    out = []
    for mod, targets in sorted(graph.items()):
        a = layer_of(mod)
        for t in sorted(targets):
            b = layer_of(t)
            if a and b and (b[0] < a[0] or (b[0] == a[0] and b[1] != a[1])):
                out.append(f"{mod} -> {t}")
    return out


def long_functions(root: Path, min_lines: int = LONG_LINES) -> list[dict[str, object]]:
    out = []
    for folder in ("src", "benchmarks", "scripts"):
        for p in sorted((root / folder).rglob("*.py")):
            for n in ast.walk(ast.parse(p.read_text())):
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 >= min_lines:
                    out.append({"function": f"{p.relative_to(root)}:{n.name}", "lines": n.end_lineno - n.lineno + 1})
    return sorted(out, key=lambda d: -int(d["lines"]))


def long_parameter_lists(root: Path, min_args: int = 8) -> list[dict[str, object]]:
    """Functions in ``src`` taking ``min_args`` or more arguments (``self``/``cls``, ``*args`` and ``**kwargs``
    not counted, as ruff's PLR0913 counts them)."""
    out = []
    for p in sorted((root / "src").rglob("*.py")):
        for n in ast.walk(ast.parse(p.read_text())):
            if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            a = n.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
            if len(names) >= min_args:
                out.append({"function": f"{p.relative_to(root)}:{n.name}", "arguments": len(names)})
    return sorted(out, key=lambda d: -int(d["arguments"]))


TRACER = r"""
import sys, json
from pathlib import Path
SRC = str(Path(sys.argv[1]).resolve()) + "/"
steps, seen = [], set()
def mod(f):
    fn = f.f_code.co_filename
    if not fn.startswith(SRC):
        return None
    return fn[len(SRC):-3].replace("/", ".").removesuffix(".__init__")
def prof(frame, event, arg):
    if event != "call":
        return
    callee, back = mod(frame), frame.f_back
    caller = mod(back) if back is not None else None
    if callee and caller and callee != caller:
        key = (caller, back.f_code.co_name, callee, frame.f_code.co_name)
        if key not in seen:
            seen.add(key)
            steps.append(key)
sys.setprofile(prof)
from spinexr.cli import main
try:
    main(["predict", sys.argv[2], "--workers", "0", "--quiet"])
finally:
    sys.setprofile(None)
    Path(sys.argv[3]).write_text(json.dumps(steps))
"""


def trace_predict(root: Path, film: Path, declared: list[list[str]]) -> dict[str, object]:
    """The path of ``spinexr predict FILM`` through ``root``'s code (see the module)."""
    import json
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "steps.json"
        env = {**os.environ, "PYTHONPATH": str(root / "src")}
        subprocess.run([sys.executable, "-c", TRACER, str(root / "src"), str(film), str(out)], env=env, check=True,
                       capture_output=True)
        steps = json.loads(out.read_text())

    def layer(mod: str) -> int | None:
        for depth, names in enumerate(declared):
            if any(mod == n or mod.startswith(n + ".") for n in names):
                return depth
        return None

    climbs = [s for s in steps if layer(s[0]) is not None and layer(s[2]) is not None and layer(s[2]) < layer(s[0])]
    entered: dict[str, int] = defaultdict(int)
    for s in steps:
        entered[s[2]] += 1
    files = sorted({m for s in steps for m in (s[0], s[2])})
    module_steps = list(dict.fromkeys((s[0], s[2]) for s in steps))
    return {"film": str(film), "steps": len(steps), "module_steps": len(module_steps), "files": len(files),
            "climbs": len(climbs),
            "entered": dict(sorted(entered.items(), key=lambda kv: -kv[1])), "modules": files,
            "path": [f"{a}.{fa} -> {b}.{fb}" for a, fa, b, fb in steps],
            "climbs_list": [f"{a}.{fa} -> {b}.{fb}" for a, fa, b, fb in climbs]}


def measure(root: Path, pyproject: Path) -> dict[str, object]:
    graph, inside, inside_own = import_graph(root / "src")
    cyc = cycles(graph)
    up = upward_imports(graph, layers(pyproject))
    longf = long_functions(root)
    readme = root / "README.md"
    return {"cycles": cyc, "n_cycles": len(cyc), "upward_imports": up, "n_upward_imports": len(up),
            "functions_80_lines_or_more": longf, "n_functions_80_lines_or_more": len(longf),
            "imports_inside_functions": inside, "own_imports_inside_functions": inside_own,
            "readme_lines": len(readme.read_text().splitlines()) if readme.is_file() else None,
            "modules": len(graph), "functions_8_arguments_or_more": long_parameter_lists(root),
            "n_functions_8_arguments_or_more": len(long_parameter_lists(root))}


def main(argv: list[str] | None = None) -> int:
    import shlex

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(HERE.parent), help="the checkout to count (default: this one)")
    ap.add_argument("--tag", default="now")
    ap.add_argument("--trace-predict", metavar="FILM", help="also trace `spinexr predict FILM` through the checkout")
    a = ap.parse_args(argv)
    root = Path(a.root).resolve()
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    res = {"benchmark": "code_structure",
           "command": shlex.join(["python", "benchmarks/code_structure.py", *(argv if argv is not None else sys.argv[1:])]),
           "commit": commit, "layers": layers(HERE.parent / "pyproject.toml"),
           **measure(root, HERE.parent / "pyproject.toml")}
    if a.trace_predict:
        own = root / "pyproject.toml"
        res["predict_path"] = trace_predict(root, Path(a.trace_predict).resolve(),
                                            layers(own if own.is_file() else HERE.parent / "pyproject.toml"))
        pp = res["predict_path"]
        print(f"spinexr predict {a.trace_predict}: {pp['steps']} steps in {pp['files']} modules, {pp['climbs']} climbs")
    write_result(f"code_structure_{a.tag}.json", res)
    print(f"cycles {res['n_cycles']}, upward imports {res['n_upward_imports']}, functions of {LONG_LINES}+ lines "
          f"{res['n_functions_80_lines_or_more']}, imports inside functions {res['imports_inside_functions']} "
          f"({res['own_imports_inside_functions']} of spinexr's own), README {res['readme_lines']} lines, functions of "
          f"8+ arguments {res['n_functions_8_arguments_or_more']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
