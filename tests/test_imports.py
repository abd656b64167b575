"""Modules import each other one way only: no two modules of src/ or benchmarks/ import each
other, at module level or inside functions (an import inside a function is still a dependency,
only a later one); and at module level there is no longer cycle either."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "fakespotter"
BENCHMARKS = ROOT / "benchmarks"


def modules() -> dict[str, Path]:
    """Dotted name -> file, for the package and the benchmarks."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in BENCHMARKS.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path], top_level_only: bool) -> set[str]:
    """Our modules that ``path`` imports: ``from a import b`` names the module a.b when b is
    one, else a. Imports under ``if TYPE_CHECKING`` never run and do not count; with
    ``top_level_only``, neither do those inside functions and classes."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def resolve(module: str | None, level: int) -> str:
        if not level:
            # a benchmark run as a script imports its siblings by their bare names
            if name.startswith("benchmarks.") and f"benchmarks.{module}" in known:
                return f"benchmarks.{module}"
            return module or ""
        base = package
        for _ in range(level - 1):
            base = base.rpartition(".")[0]
        return f"{base}.{module}" if module else base

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(resolve(alias.name, 0) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                module = resolve(node.module, node.level)
                for alias in node.names:
                    child = f"{module}.{alias.name}"
                    found.add(child if child in known else module)
            if top_level_only and isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
            ):
                continue
            visit(ast.iter_child_nodes(node))

    visit(ast.parse(path.read_text()).body)
    return {m for m in found if m in known and m != name}


def graph(top_level_only: bool) -> dict[str, set[str]]:
    known = modules()
    return {n: imports_of(n, p, known, top_level_only) for n, p in known.items()}


def test_no_two_modules_import_each_other():
    edges = graph(top_level_only=False)
    pairs = sorted({tuple(sorted((a, b))) for a in edges for b in edges[a] if a in edges[b]})
    assert pairs == []


def test_the_import_graph_sees_function_level_and_relative_imports(tmp_path):
    """The checker itself: it must see an import inside a function, resolve a relative one and
    a benchmark's bare sibling import, and skip TYPE_CHECKING."""
    known = {
        "p": tmp_path / "p/__init__.py",
        "p.a": tmp_path / "p/a.py",
        "p.b": tmp_path / "p/b.py",
    }
    known["benchmarks.x"] = tmp_path / "x.py"
    known["benchmarks.y"] = tmp_path / "y.py"
    for path in known.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    known["p.a"].write_text("def f():\n    from p import b\n")
    known["p.b"].write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"
    )
    known["benchmarks.x"].write_text("import y\n")
    assert imports_of("p.a", known["p.a"], known, top_level_only=False) == {"p.b"}
    assert imports_of("p.a", known["p.a"], known, top_level_only=True) == set()
    assert imports_of("p.b", known["p.b"], known, top_level_only=False) == set()
    assert imports_of("benchmarks.x", known["benchmarks.x"], known, False) == {"benchmarks.y"}


def test_no_import_cycle_at_module_level():
    edges = graph(top_level_only=True)
    for name in edges:  # importing a.b runs a/__init__.py first
        parent = name.rpartition(".")[0]
        if parent in edges and parent != name:
            edges[name].add(parent)
    cycles, state = [], {}

    def walk(node, stack):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            # a.b's edge to its package a, and a/__init__.py importing a.b, are how Python
            # imports a package: no cycle (which of the two the walk meets first depends on
            # the order it starts from)
            package_edge = nxt == node.rpartition(".")[0] or nxt.rpartition(".")[0] == node
            if state.get(nxt) == "open" and not package_edge:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                walk(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(edges):
        if name not in state:
            walk(name, [name])
    assert cycles == []


@pytest.mark.parametrize(
    "module",
    [
        "fakespotter.cli.serve",
        "fakespotter.cli",
        "fakespotter.photos",
        "fakespotter.criteria",
        "fakespotter.training",
        "fakespotter.faces.registry",
        "fakespotter.taps",
    ],
)
def test_modules_import_alone(module):
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_importing_the_library_leaves_the_environment_alone():
    """Issue #30: a library must not change its host's environment; the command line sets
    OMP_WAIT_POLICY=PASSIVE for its own process (cli.app._passive_openmp), before torch loads."""
    code = (
        "import os, torch, sklearn.svm; before = dict(os.environ); "  # what they set is theirs
        "import fakespotter, fakespotter.detector, fakespotter.persistence; "
        "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items()); "
        "from fakespotter.cli import main; "
        "main(['weights', 'list'], standalone_mode=False); "
        "assert os.environ['OMP_WAIT_POLICY'] == 'PASSIVE'"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
