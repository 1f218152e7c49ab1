"""The commands that read a tuned or sizes file, or a study: ``show``, ``compare``, ``report``,
``run`` and ``export``."""

from __future__ import annotations

import argparse
import sys

from tuner.base.render import plain
from tuner.cli.flags import STORAGE_ENV, storage_from
from tuner.cli.measure_commands import is_sizes, not_a_sizes_file, not_a_tuned_file
from tuner.cli.output import _out, quiet_optuna
from tuner.errors import ConfigError


def cmd_run(args: argparse.Namespace) -> int:
    from tuner.production import launch

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    # one instance: run() replaces this process with the command and does not return;
    # several: it waits for them and returns the first non-zero exit code
    return launch.run(args.tuned, command, strict=args.strict, override=args.override,
                      quiet=args.quiet, instance=args.instance, allow_env=args.allow_env,
                      allow_unvalidated=args.allow_unvalidated, size=args.size)


def cmd_export(args: argparse.Namespace) -> int:
    from tuner.production import launch

    accept = {"allow_env": args.allow_env, "allow_unvalidated": args.allow_unvalidated,
              "size": args.size}
    text = launch.export(args.tuned, args.format, **accept)
    _out(text)
    if args.format == "docker":
        for note in launch.notes_for_stderr(args.tuned, **accept):  # same row as the flags
            print(f"note: {note}", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from tuner.results import compare, model, studies

    compare.check_format(args.format)
    if args.tuned and (args.storage or args.study_name):
        raise ConfigError("show: give a tuned file or --storage/--study-name, not both")
    if args.tuned and is_sizes(args.tuned):
        return show_sizes(args.tuned, args.format)
    storage = storage_from(args.storage)
    if args.tuned:
        result = model.from_tuned_file(args.tuned)
    elif storage:
        quiet_optuna()
        result = studies.from_study(storage, args.study_name)
    else:
        raise ConfigError("show: give a tuned file (python -m tuner show tuned.yaml) or "
                          f"--storage URL [--study-name NAME] (or set ${STORAGE_ENV})")
    _out(compare.format_show(result, args.format))
    return 0


def sources(order: list[tuple[str, str]]) -> list[tuple[str, str | None, str | None]]:
    """(kind, path or storage, study name) per result, in command-line order."""
    storages = [value for kind, value in order if kind == "storage"]
    out: list[tuple[str, str | None, str | None]] = []
    storage = None
    for kind, value in order:
        if kind == "storage":
            storage = value
        elif kind == "file":
            out.append(("file", value, None))
        else:
            use = storage or (storages[0] if len(storages) == 1 else None) \
                or (storage_from(None) if not storages else None)
            if use is None:
                raise ConfigError(f"--study-name {plain(repr(value))}: no --storage given "
                                  f"before it" + ("" if storages else f" (nor ${STORAGE_ENV})"))
            out.append(("study", use, value))
    if storages and not any(kind == "study" for kind, _, _ in out):
        # --storage without --study-name: the storage's only study
        out += [("study", storage_url, None) for storage_url in storages]
    return out


def cmd_compare(args: argparse.Namespace) -> int:
    from tuner.results import compare, model, studies

    compare.check_format(args.format)
    read = []
    if args.storage or args.study_name or storage_from(None):
        quiet_optuna()
    for kind, where, name in sources(getattr(args, "order", None) or []):
        if kind == "file":
            not_a_sizes_file(where, "compare", "compare reads tuned files and studies")
        read.append(model.from_tuned_file(where) if kind == "file"
                    else studies.from_study(where, name))  # type: ignore[arg-type]
    comparison = compare.compare_results(read, alpha=args.alpha, min_ratio=args.min_ratio,
                                         strict=args.strict)
    _out(compare.format_compare(comparison, args.format))
    if args.format != "text":
        for warning in comparison.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tuner.results import report, report_html

    if args.sizes is not None:
        if args.storage or args.study_name:
            raise ConfigError("report: give a sizes file or --storage/--study-name, not both")
        not_a_tuned_file(args.sizes, "report",
                          "report reads a study (--storage URL) or a sizes file")
        return report_sizes(args.sizes, args.html, args.format)
    storage = storage_from(args.storage)
    if not storage:
        raise ConfigError("report: give --storage URL [--study-name NAME] (a study; or set "
                          f"${STORAGE_ENV}), or a sizes file (python -m tuner report "
                          "results/NAME/sizes.yaml)")
    if args.html:  # before the study is read: a bad path is found in a moment
        report_html.check_html_path(args.html)
    quiet_optuna()
    built = report.build(storage, args.study_name)
    _out(report.format_json(built) if args.format == "json" else report.format_text(built))
    if args.html:
        report_html.write_html(built, args.html)
        print(f"wrote {args.html}", file=sys.stderr if args.format == "json" else sys.stdout)
    return 0


def show_sizes(path: str, fmt: str) -> int:
    from tuner.results import sizes_report
    from tuner.tuned import sizes

    _out(sizes_report.format_sizes(sizes.read(path), fmt))
    return 0


def report_sizes(path: str, html_path: str | None, fmt: str = "text") -> int:
    from tuner.results import report_html, sizes_report
    from tuner.tuned import sizes

    if html_path:
        report_html.check_html_path(html_path)
    read = sizes.read(path)
    _out(sizes_report.format_sizes_json(read) if fmt == "json"
         else sizes_report.format_sizes(read, "text"))
    if html_path:
        sizes_report.write_sizes_html(read, html_path)
        print(f"wrote {html_path}", file=sys.stderr if fmt == "json" else sys.stdout)
    return 0
