"""The knob table of docs/knobs.md, generated from the registry (tuner/knobs/__init__.py).

usage: python scripts/knobs_table.py           print the markdown table
       python scripts/knobs_table.py --write   rewrite the table in docs/knobs.md
       python scripts/knobs_table.py --check   exit 1 when docs/knobs.md is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tuner import knobs  # noqa: E402

DOC = ROOT / "docs" / "knobs.md"
BEGIN, END = "<!-- knobs:begin -->", "<!-- knobs:end -->"


def _cell(value: str) -> str:
    return value.replace("|", "\\|")


def table() -> str:
    """The registry as a markdown table, one row per knob."""
    rows = ["| knob | label | how it is applied | default | allowed values | modes "
            "| what it does |", "|---|---|---|---|---|---|---|"]
    for knob in knobs.KNOBS.values():
        modes = "all" if knob.modes == knobs.MODES else ", ".join(knob.modes)
        if knob.needs_openmp:
            modes += " (OpenMP builds)"
        rows.append("| " + " | ".join(_cell(c) for c in (
            f"`{knob.name}`", f"`{knob.label}`", knob.applied_by(), f"`{knobs.text(knob.default)}`",
            knob.allowed, modes, knob.help)) + " |")
    return "\n".join(rows) + "\n"


def rewrite(text: str) -> str:
    """``text`` with the region between the markers replaced by the generated table."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n" + table() + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="rewrite the table in docs/knobs.md")
    group.add_argument("--check", action="store_true", help="fail when docs/knobs.md is stale")
    args = parser.parse_args(argv)
    if not args.write and not args.check:
        sys.stdout.write(table())
        return 0
    current = DOC.read_text()
    wanted = rewrite(current)
    if args.check:
        if wanted != current:
            print(f"{DOC.relative_to(ROOT)} is out of date: run python scripts/knobs_table.py "
                  f"--write", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
