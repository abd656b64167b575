"""The package's modules import each other without cycles (imports at module level; those
inside functions or under ``TYPE_CHECKING`` run later or never, and do not count)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "fakespotter"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """Our modules that ``path`` imports when it is imported."""
    found = set()

    def visit(body):
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue  # for type checkers only
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)

    visit(ast.parse(path.read_text()).body)
    return {m for m in found if m in modules}


def test_no_import_cycle_in_the_package():
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: top_level_imports(path, set(paths)) for name, path in paths.items()}
    for name in graph:  # importing a.b runs a/__init__.py first
        parent = name.rpartition(".")[0]
        if parent in graph and parent != name:
            graph[name].add(parent)
    cycles, state = [], {}

    def walk(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            # a.b's edge to its package a, and a/__init__.py importing a.b, are how Python
            # imports a package: no cycle (which of the two the walk meets first depends on
            # the order it starts from)
            package_edge = nxt == node.rpartition(".")[0] or nxt.rpartition(".")[0] == node
            if state.get(nxt) == "open" and not package_edge:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                walk(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert cycles == []


@pytest.mark.parametrize(
    "module",
    [
        "fakespotter.serve.cli",
        "fakespotter.cli",
        "fakespotter.photos",
        "fakespotter.criteria",
        "fakespotter.training",
    ],
)
def test_modules_import_alone(module):
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_importing_the_library_leaves_the_environment_alone():
    """Issue #30: a library must not change its host's environment; the command line sets
    OMP_WAIT_POLICY=PASSIVE for its own process (cli._passive_openmp), before torch loads."""
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
