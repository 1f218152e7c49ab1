"""docs/architecture.md stays true: every module of tuner/ has an entry there, imports only the
tuner modules its entry lists, and the package has no import cycle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tuner"
DOC = ROOT / "docs" / "architecture.md"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))


def declared() -> dict[str, set[str]]:
    """module -> the modules its entry says it may import."""
    text = DOC.read_text()
    entries: dict[str, set[str]] = {}
    for match in re.finditer(r"^- `(\w+)\.py` — (.*?)(?=^- |^#|\Z)", text, re.S | re.M):
        body = " ".join(match.group(2).split())
        imports = re.search(r"Imports (nothing|[\w, ]+)\.\s*$", body)
        assert imports, f"docs/architecture.md: the entry of {match.group(1)}.py has no Imports"
        names = imports.group(1)
        entries[match.group(1)] = set() if names == "nothing" else {
            n.strip() for n in names.split(",")}
    return entries


def imported(module: str) -> set[str]:
    """The tuner modules ``module`` imports, at the top or inside a function."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 1:
            found.update([node.module.split(".")[0]] if node.module
                         else [a.name for a in node.names])
        elif node.level == 0 and node.module and node.module.split(".")[0] == "tuner":
            parts = node.module.split(".")
            found.update(parts[1:2] or [a.name for a in node.names])
    return found & set(MODULES)


def test_every_module_has_an_entry():
    assert sorted(declared()) == MODULES


@pytest.mark.parametrize("module", MODULES)
def test_a_module_imports_only_what_its_entry_lists(module):
    extra = imported(module) - declared()[module]
    assert not extra, (f"tuner/{module}.py imports {sorted(extra)}, which its entry in "
                       f"docs/architecture.md does not list")


def test_no_import_cycle():
    graph = {m: imported(m) - {m} for m in MODULES}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in MODULES:
        if module not in state:
            visit(module, [module])
