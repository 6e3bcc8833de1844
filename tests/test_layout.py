"""The code's shape (issue 16): one home per concept, no import circle, no oversized units.

- inside ``espnet_early_exit`` the module import graph has no cycle (lazy imports inside functions
  count: a lazy import is still a dependency);
- nothing outside ``espnet_early_exit/bin`` imports ``espnet_early_exit.bin``;
- no tracked Python file is over 700 lines and no function or method is over 120 lines.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path
from typing import Dict, List, Set

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "espnet_early_exit"
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 120


def tracked_python_files() -> List[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "*.py"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
        files = [REPO / line for line in out.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        files = [p for p in REPO.rglob("*.py") if ".git" not in p.parts]
    return sorted(p for p in files if p.is_file())


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, known: Set[str]) -> Set[str]:
    """The package modules ``path`` imports (``from a.b import c`` counts a.b.c when it is one)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != me:
                found.add(name)
    return found


def package_graph() -> Dict[str, Set[str]]:
    files = [p for p in tracked_python_files() if p.relative_to(REPO).parts[0] == PACKAGE]
    known = {module_name(p) for p in files}
    return {module_name(p): imported_modules(p, known) for p in files}


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import cycle as a list of modules (empty when there is none). Importing a submodule
    imports its parent packages first, but a package's own ``__init__`` importing its submodules
    is not a cycle with them, so edges to a module's own ancestors are ignored."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if node.startswith(dep + "."):
                continue
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "a.x": {"a"}}) == []


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(package_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_only_bin_imports_bin():
    bin_pkg = f"{PACKAGE}.bin"
    offenders = []
    for path in tracked_python_files():
        rel = path.relative_to(REPO)
        if rel.parts[:2] == (PACKAGE, "bin"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == bin_pkg or n.startswith(bin_pkg + ".") for n in names):
                offenders.append(f"{rel}:{node.lineno}")
    # tests exercise the CLIs: they may import them
    offenders = [o for o in offenders if not o.startswith("tests/")]
    assert not offenders, f"imports of {bin_pkg} outside it: {offenders}"


def test_module_and_function_sizes():
    too_long = []
    for path in tracked_python_files():
        rel = path.relative_to(REPO)
        if rel.parts[0] == "tests":
            continue
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        if n > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {n} lines (max {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{rel}:{node.lineno} {node.name}: {length} lines "
                                    f"(max {MAX_FUNCTION_LINES})")
    assert not too_long, "too long:\n" + "\n".join(too_long)


@pytest.mark.parametrize("module", ["espnet_early_exit.inference", "espnet_early_exit.zoo"])
def test_graph_sees_the_package(module):
    graph = package_graph()
    assert module in graph, sorted(graph)
