"""The layout's rules, read from the source: dependencies point one way (console -> parts -> schemas),
no import circle between modules (counting imports inside functions and under TYPE_CHECKING, which
only hide a circle), and product functions short enough to read at once.

Run alone: `.venv/bin/python -m pytest tests/unit/test_layout.py`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PARTS = ("cdc", "streams", "plugins")
PACKAGES = ("schemas", *PARTS, "console")
MAX_FUNCTION_LINES = 60


def product_files() -> Iterator[Path]:
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if "examples" not in path.relative_to(REPO_ROOT).parts:
                yield path


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every project module `path` imports, wherever the import statement stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in product_files()}
    return {name: {m for m in imported_modules(path) if m in modules and m != name} for name, path in modules.items()}


def test_schemas_imports_no_part_and_no_part_imports_console() -> None:
    wrong = []
    for name, imports in import_graph().items():
        top = name.split(".")[0]
        for target in imports:
            target_top = target.split(".")[0]
            if (top == "schemas" and target_top != "schemas") or (top in PARTS and target_top == "console"):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "imports against console -> parts -> schemas:\n" + "\n".join(sorted(wrong))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circle_between_folders() -> None:
    folders: dict[str, set[str]] = {}
    for name, imports in import_graph().items():
        folders.setdefault(name.split(".")[0], set()).update(t.split(".")[0] for t in imports)
    for folder, targets in folders.items():
        targets.discard(folder)
    assert find_cycle(folders) is None, f"folders import each other in a circle: {find_cycle(folders)}"


def test_no_import_circle_between_modules() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_product_functions_are_short() -> None:
    long = []
    for path in product_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)
