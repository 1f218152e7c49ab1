"""Plain tables for the terminal and for Markdown, shared by ``show``, ``compare`` and ``report``.

A table is a header row and body rows of strings; a row may be marked (``compare`` marks the rows
whose values differ). Nothing here knows about tuned files or studies.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("text", "json", "markdown")

# C0 and C1 control characters, DEL, and the Unicode line/paragraph separators and bidirectional
# overrides that can rewrite what a terminal shows
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def plain(value: Any) -> str:
    """Untrusted text (from a file, a study, the command line) for a terminal: one line, control
    characters shown escaped (``\\x1b``) instead of acting on the terminal."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value))


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    marked: list[bool] = field(default_factory=list)
    title: str = ""

    def add(self, *cells: Any, mark: bool = False) -> None:
        self.rows.append([str(c) for c in cells])
        self.marked.append(mark)

    def text(self, mark: str = "*") -> str:
        """Aligned columns; marked rows start with ``mark``, others with a space."""
        widths = [max(len(r[i]) for r in [self.header, *self.rows])
                  for i in range(len(self.header))]
        any_marked = any(self.marked)

        def line(cells: Sequence[str], marked: bool) -> str:
            prefix = (mark + " " if marked else "  ") if any_marked else ""
            return (prefix + "  ".join(c.ljust(w) for c, w in zip(cells, widths))).rstrip()

        out = [self.title] if self.title else []
        if any(self.header):
            out.append(line(self.header, False))
        out += [line(r, m) for r, m in zip(self.rows, self.marked)]
        return "\n".join(out)

    def markdown(self) -> str:
        """A GitHub pipe table; marked rows are bold."""
        def esc(cell: str) -> str:
            return cell.replace("|", "\\|")

        out = [f"**{self.title}**", ""] if self.title else []
        out.append("| " + " | ".join(esc(h) for h in self.header) + " |")
        out.append("|" + "|".join("---" for _ in self.header) + "|")
        for row, marked in zip(self.rows, self.marked):
            cells = [esc(c) for c in row]
            if marked:
                cells = [f"**{c}**" if c else c for c in cells]
            out.append("| " + " | ".join(cells) + " |")
        return "\n".join(out)


def num(value: Any, digits: int = 1) -> str:
    """A number with fixed decimals; ``-`` for a missing or NaN value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def interval(ci: Sequence[float] | None, digits: int = 1, suffix: str = "") -> str:
    if not ci:
        return ""
    return f"{ci[0]:.{digits}f}{suffix}-{ci[1]:.{digits}f}{suffix}"


def value(v: Any) -> str:
    """A setting's value as a user would write it in YAML."""
    if v is None:
        return "null"
    return str(v)


# -- machine-readable output (docs/results.md, "JSON output") ----------------------------------

def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_document(schema: str, version: int, body: dict[str, Any]) -> str:
    """One JSON document for stdout: ``schema`` and ``schema_version`` first, then ``body``.
    Strict JSON: a NaN or an infinity (not JSON) becomes null; anything else not JSON-native
    (a date PyYAML read) becomes its text."""
    import json

    return json.dumps({"schema": schema, "schema_version": version, **_finite(body)}, indent=2,
                      default=str, allow_nan=False) + "\n"
