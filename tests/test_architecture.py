"""docs/architecture.md stays true: every folder of tuner/ (and every module at its top level) has
a line in "The layers" naming what it may import, every module has an entry, every import (at the
top of a module or inside a function) stays within what its folder may import, and neither the
folders nor the modules form an import cycle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tuner"
DOC = ROOT / "docs" / "architecture.md"
FILES = sorted(PACKAGE.rglob("*.py"))


def _dotted(path: Path) -> str:
    """tuner/knobs/__init__.py -> tuner.knobs; tuner/knobs/base.py -> tuner.knobs.base."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_dotted(p): p for p in FILES}
FOLDERS = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
TOP = sorted(p.stem for p in PACKAGE.glob("*.py"))
UNITS = FOLDERS + TOP


def unit_of(module: str) -> str:
    """The layer unit a module belongs to: its folder, or itself at the top level."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def rel(path: Path) -> str:
    """How docs/architecture.md names a module: knobs/base.py, or errors.py at the top level."""
    return str(path.relative_to(PACKAGE))


def declared() -> dict[str, set[str]]:
    """unit -> the units its line in "The layers" says it may import."""
    text = DOC.read_text()
    section = re.search(r"^## The layers\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "docs/architecture.md has no '## The layers' section"
    allowed: dict[str, set[str]] = {}
    for match in re.finditer(r"^- `(\w+)(/|\.py)` may import: (.*)$", section.group(1), re.M):
        names = match.group(3).strip()
        allowed[match.group(1)] = set() if names == "nothing" else {
            n.strip() for n in names.split(",")}
    return allowed


def imported(path: Path) -> set[str]:
    """The tuner modules ``path`` imports, at the top or inside a function, each resolved to the
    module (a submodule where ``from package import submodule`` names one)."""
    me = _dotted(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "tuner")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "tuner":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return {m for m in found if m in MODULES} - {me}


GRAPH = {module: imported(path) for module, path in MODULES.items()}


def _no_cycle(graph: dict[str, set[str]], what: str) -> None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail(f"{what} import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_every_folder_and_top_level_module_has_a_layer_line():
    assert sorted(declared()) == sorted(UNITS)


def test_a_layer_line_names_only_folders_and_modules_that_exist():
    for unit, allowed in declared().items():
        assert allowed <= set(UNITS), f"{unit}: may import {sorted(allowed - set(UNITS))}?"


def test_every_module_has_an_entry():
    text = DOC.read_text()
    missing = [rel(p) for p in FILES if not re.search(rf"^- `{re.escape(rel(p))}` — ", text,
                                                      re.M)]
    assert not missing, f"docs/architecture.md has no entry for {missing}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_what_its_folder_may(module):
    path = MODULES[module]
    unit = unit_of(module) if path.parent != PACKAGE else path.stem
    allowed = declared()[unit] | {unit}
    extra = sorted({f"{m} ({unit_of(m) if MODULES[m].parent != PACKAGE else MODULES[m].stem})"
                    for m in GRAPH[module]
                    if (unit_of(m) if MODULES[m].parent != PACKAGE else MODULES[m].stem)
                    not in allowed})
    assert not extra, (f"tuner/{rel(path)} imports {extra}, which the line of {unit} in "
                       f"docs/architecture.md's layers does not allow")


def test_no_import_cycle_between_folders():
    def unit(m: str) -> str:
        return unit_of(m) if MODULES[m].parent != PACKAGE else MODULES[m].stem

    graph: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        graph.setdefault(unit(module), set()).update(unit(t) for t in targets)
    for node in graph:
        graph[node].discard(node)
    _no_cycle(graph, "folder")


def test_no_import_cycle_between_modules():
    _no_cycle(GRAPH, "module")
