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


def terminal(text: str) -> str:
    """A whole printout for a terminal: its own line breaks kept, every other control character
    shown escaped. The last guard of every text printer; the values in it went through
    :func:`plain` already, so no value can start a line of its own."""
    return "\n".join(plain(line) for line in str(text).split("\n"))


# What can start markup in CommonMark / GitHub Markdown: emphasis, code spans, links and images,
# raw HTML, entities, table cells, strikethrough; an underscore only at a word's edge (GitHub
# ignores one inside a word, so knob names stay readable)
_MARKDOWN = re.compile(r"[\\`*\[\]<>|~&]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# what GitHub turns into a link without any markup
_AUTOLINK = re.compile(r"(?<=http)s?://|(?<=ftp)://|(?<![A-Za-z0-9])www\.", re.IGNORECASE)


def markdown(value: Any) -> str:
    """Untrusted text for a Markdown page: one line, control characters escaped, and every
    character that could start markup (``<img src=...>``, ``[a](b)``, ``|``, backticks)
    backslash-escaped, so it shows as the text it is; bare URLs are kept from being linked."""
    text = _MARKDOWN.sub(lambda m: "\\" + m.group(), plain(value))
    return _AUTOLINK.sub(lambda m: m.group().replace("/", "\\/").replace(".", "\\."), text)


def html_text(value: Any) -> str:
    """Untrusted text for an HTML page (and plotly's labels, which read HTML tags): control
    characters escaped, ``& < > " '`` as entities."""
    import html

    return html.escape(plain(value), quote=True)


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    marked: list[bool] = field(default_factory=list)
    title: str = ""

    def add(self, *cells: Any, mark: bool = False) -> None:
        # a cell is one line whatever it holds: a value from a file or a study cannot move the
        # cursor, clear the screen or start a fake line
        self.rows.append([plain(c) for c in cells])
        self.marked.append(mark)

    def text(self, mark: str = "*") -> str:
        """Aligned columns; marked rows start with ``mark``, others with a space."""
        widths = [max(len(r[i]) for r in [self.header, *self.rows])
                  for i in range(len(self.header))]
        any_marked = any(self.marked)

        def line(cells: Sequence[str], marked: bool) -> str:
            prefix = (mark + " " if marked else "  ") if any_marked else ""
            return (prefix + "  ".join(c.ljust(w) for c, w in zip(cells, widths))).rstrip()

        out = [plain(self.title)] if self.title else []
        if any(self.header):
            out.append(line(self.header, False))
        out += [line(r, m) for r, m in zip(self.rows, self.marked)]
        return "\n".join(out)

    def markdown(self) -> str:
        """A GitHub pipe table; marked rows are bold."""
        esc = markdown
        out = [f"**{esc(self.title)}**", ""] if self.title else []
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
    """A recorded value (a machine's, a workload's); ``-`` when it was not recorded."""
    if v is None:
        return "-"
    return str(v)


def quoted(name: Any) -> str:
    """A name from untrusted input, echoed back in an error: quoted as Python does, and
    escaped like any other untrusted text."""
    return plain(repr(name))


def did_you_mean(name: Any, choices: Sequence[Any]) -> str:
    """``" (did you mean 'x'?)"`` for the choice closest to ``name`` (difflib), or ``""`` when
    none is close; ready to append to an error that names ``name``."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {quoted(close[0])}?)" if close else ""


# -- one number style everywhere (show, compare, report, the search's summary; text, markdown,
# HTML): a rate without false precision, a range labelled as a range, an interval labelled as
# the 95% interval it is, TensorFlow's own choice named, and one definition of spread.

TF_DEFAULT = "TensorFlow's default"
SPREAD = "spread: (max - min) / median of a trial's measuring windows"
LEGEND_DEFAULT = f"- = {TF_DEFAULT}"


def rate(value: float | None) -> str:
    """A throughput: whole numbers from 100 up, three significant digits below."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def throughput(median: float, per_process: Sequence[float] | None,
               unit: str = "samples/s") -> str:
    """``3496 samples/s (range 3308-3538 over 5 processes)``: the median of the fresh processes
    and their whole range, named as such (with 5 processes, a bootstrap interval of the median is
    the range: calling it a 95% interval would claim more than it is)."""
    values = list(per_process or [])
    if len(values) < 2:
        return f"{rate(median)} {unit} (1 process)"
    return (f"{rate(median)} {unit} (range {rate(min(values))}-{rate(max(values))} over "
            f"{len(values)} processes)")


def ratio(value: float | None, ci: Sequence[float] | None = None, p: float | None = None,
          *, untested: bool = False) -> str:
    """``1.415x (95% CI 1.339-1.495, p=0.00397)``: a speedup with its bootstrap interval
    (``untested``: say so where no p-value was computed, e.g. a candidate that failed)."""
    if value is None:
        return "not measured"
    inside = []
    if ci:
        inside.append(f"95% CI {ci[0]:.3f}-{ci[1]:.3f}")
    if p is not None:
        inside.append(f"p={p:.3g}")
    elif untested:
        inside.append("not tested")
    return f"{value:.3f}x" + (f" ({', '.join(inside)})" if inside else "")


def setting(v: Any) -> str:
    """A setting's value; None (nothing set: TensorFlow chooses) reads as TensorFlow's default."""
    return TF_DEFAULT if v is None else str(v)


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
