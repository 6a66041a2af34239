"""The CLI package has no import cycle: main.py imports the command modules and
registers them; the command modules import only the shared modules below them."""

from __future__ import annotations

import ast
from pathlib import Path

import csfs

PACKAGE = Path(csfs.__file__).parent


def imports_of(path: Path, module: str) -> set[str]:
    """Every csfs module that `path` imports, at any depth of the file (function-level
    imports count too: they close a cycle as surely as top-level ones)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("csfs"))
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                base = ".".join([*module.split(".")[: -node.level], node.module])
            if base.startswith("csfs"):
                found.add(base)
                # `from csfs.cli import keys_cmd` imports the submodule keys_cmd.
                found.update(f"{base}.{a.name}" for a in node.names)
    return found


def graph(subpackage: str) -> dict[str, set[str]]:
    modules = {
        f"csfs.{subpackage}.{p.stem}": p
        for p in (PACKAGE / subpackage).glob("*.py")
        if p.stem != "__init__"
    }
    return {m: imports_of(p, m) & modules.keys() for m, p in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_cli() -> None:
    edges = graph("cli")
    assert "csfs.cli.keys_cmd" in edges["csfs.cli.main"]  # the graph sees the imports
    assert cycles(edges) == []
