"""The parser: one function per command that adds that command's flags, in a table
(:data:`COMMANDS`)."""

from __future__ import annotations

import argparse
from typing import Any

from tuner.base.render import FORMATS
from tuner.cli.flags import (
    STORAGE_PRECEDENCE,
    Ordered,
    Parser,
    _ratio,
    _seconds,
    acceptance_flags,
    accuracy_flags,
    cpu_list,
    duration,
    fraction,
    int_at_least,
    keep_backups_flag,
    model_flags,
    nonneg_int,
    positive_int,
    positive_number,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m tuner",
                     description="Measure the TensorFlow CPU settings that make a model fastest.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="subcommand", parser_class=Parser)
    added = {name: add(commands) for name, add in COMMANDS}
    run, export = added["run"], added["export"]
    for command in (run, export):
        command.add_argument("--size", type=positive_int, metavar="K",
                             help="with a sizes file: use its row for K CPUs")
    # argparse shows the command after -- as "...": every flag as argparse lists it, then that
    auto = " ".join(run.format_usage().split()[1:])
    run.usage = auto[:-len("...")] + "-- COMMAND [ARGS...]" if auto.endswith("...") else auto
    return parser


def _search_flags(commands: Any) -> argparse.ArgumentParser:
    s = commands.add_parser("search", help="run (or resume) a study and write the tuned YAML")
    s.add_argument("--config", help="the study config YAML (or --model)")
    model_flags(s, search=True)
    s.add_argument("--n-trials", type=positive_int, help="trials this run adds (as in Optuna)")
    s.add_argument("--timeout", type=_seconds,
                   help="seconds for the whole run, validation included")
    s.add_argument("--budget", type=duration,
                   help="wall time for the whole run (e.g. 10m, 90s, 1h): the tool splits it "
                   "between search and validation and may stop the search early")
    s.add_argument("--trial-timeout", type=_seconds, help="seconds one trial's child may take")
    s.add_argument("--max-trials", type=positive_int,
                   help="study-wide cap: every worker stops once the study holds this many trials")
    s.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://USER:PASS@HOST/DB to "
                   "share one study among several machines (default: $TUNER_STORAGE, else the "
                   "config's study.storage, else sqlite:///results/<study>.db; "
                   + STORAGE_PRECEDENCE + ")")
    s.add_argument("--study-name", help="study name (default: the config file's name)")
    s.add_argument("--output", help="tuned YAML path (default results/<study>/tuned.yaml)")
    s.add_argument("--seed", type=nonneg_int, help="sampler seed")
    accuracy_flags(s)
    s.add_argument("--allow-other-machines", action="store_true",
                   help="join a study recorded on another machine type; each machine type's "
                   "trials and validation are kept apart")
    s.add_argument("--force", action="store_true",
                   help="replace an output file that belongs to another study (kept as "
                   "NAME.<time>.bak)")
    keep_backups_flag(s, "tuned")
    s.add_argument("--quiet", action="store_true", help="print only the final summary")
    s.add_argument("--format", default="text", choices=("text", "json"),
                   help="the final summary as text (default) or one JSON document on stdout "
                        "(schema tuner.search, docs/results.md); progress goes to stderr")
    s.add_argument("--dry-run", action="store_true",
                   help="check the config, the space on this machine, the storage and the "
                        "output path, print the plan, and stop: no child, nothing written")
    s.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return s


def _run_flags(commands: Any) -> argparse.ArgumentParser:
    r = commands.add_parser("run", help="run a command with a tuned file's settings")
    r.add_argument("--tuned", required=True, help="the tuned YAML")
    r.add_argument("--strict", action="store_true",
                   help="refuse a file measured on another machine instead of warning")
    r.add_argument("--override", action="store_true",
                   help="the file's values win over variables already set in the environment")
    r.add_argument("--quiet", action="store_true", help="no warnings or notes on stderr")
    r.add_argument("--instance", type=nonneg_int, default=None,
                   help="when the file runs several instances: start only this one (0-based)")
    acceptance_flags(r)
    r.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    r.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]",
                   help="the command, after --")
    return r


def _diagnose_flags(commands: Any) -> argparse.ArgumentParser:
    d = commands.add_parser("diagnose", help="measure why TensorFlow isn't using all the CPUs")
    d.add_argument("--config", help="the workload config YAML (as for search), or --model")
    model_flags(d, search=False)
    d.add_argument("--format", default="text", choices=("text", "json"),
                   help="text (default) or json (only JSON on stdout)")
    d.add_argument("--seconds", type=_seconds, default=60.0, help=_diagnose_seconds_help())
    d.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return d


def _export_flags(commands: Any) -> argparse.ArgumentParser:
    e = commands.add_parser("export", help="print a tuned file's settings as environment variables")
    e.add_argument("tuned", help="the tuned YAML")
    e.add_argument("--format", default="shell", choices=_export_formats(),
                   help="shell (default), dotenv, docker, k8s or tf-serving (a "
                        "tensorflow_model_server wrapper script)")
    acceptance_flags(e)
    e.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return e


def _show_flags(commands: Any) -> argparse.ArgumentParser:
    sh = commands.add_parser("show", help="summarise one tuned file (or study)")
    sh.add_argument("tuned", nargs="?", help="the tuned YAML (or a sizes file)")
    sh.add_argument("--storage", help="Optuna storage URL, to show a study instead of a file "
                    "(default: $TUNER_STORAGE when no file is given; " + STORAGE_PRECEDENCE + ")")
    sh.add_argument("--study-name", help="the study in --storage (optional if it holds one)")
    sh.add_argument("--format", default="text", choices=FORMATS,
                    help="text (default), json or markdown")
    sh.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return sh


def _compare_flags(commands: Any) -> argparse.ArgumentParser:
    c = commands.add_parser(
        "compare", help="compare tuned files or studies: settings, throughput, significance")
    c.add_argument("sources", nargs="*", action=Ordered, metavar="TUNED",
                   help="tuned YAML files; the first result given is the reference (A)")
    c.add_argument("--storage", action=Ordered,
                   help="Optuna storage URL for the --study-name options that follow it "
                   "(default: $TUNER_STORAGE; " + STORAGE_PRECEDENCE + ")")
    c.add_argument("--study-name", action=Ordered,
                   help="a study to compare (repeatable), from the last --storage given")
    c.add_argument("--format", default="text", choices=FORMATS,
                   help="text (default), json or markdown")
    c.add_argument("--alpha", type=fraction, default=0.05, help="significance level (0.05)")
    c.add_argument("--min-ratio", type=_ratio, default=1.05,
                   help="smallest difference called real between separate runs (1.05)")
    c.add_argument("--strict", action="store_true",
                   help="refuse results from different machines or TensorFlow versions")
    c.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return c


def _report_flags(commands: Any) -> argparse.ArgumentParser:
    rp = commands.add_parser("report", help="one study's trials, importances and plots "
                                            "(terminal, or one offline HTML file)")
    rp.add_argument("sizes", nargs="?", metavar="SIZES",
                    help="a sizes file (python -m tuner size) instead of a study")
    rp.add_argument("--storage", help="Optuna storage URL (default: $TUNER_STORAGE when no "
                    "sizes file is given; " + STORAGE_PRECEDENCE + ")")
    rp.add_argument("--study-name", help="the study (optional if the storage holds one)")
    rp.add_argument("--html", help="also write a self-contained HTML report with plots here")
    rp.add_argument("--format", default="text", choices=("text", "json"),
                    help="text (default) or one JSON document on stdout (schema tuner.report, "
                         "docs/results.md)")
    rp.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return rp


def _diagnose_seconds_help() -> str:
    from tuner.diagnose.run import seconds_help

    return seconds_help()


def _export_formats() -> tuple[str, ...]:
    from tuner.production.launch import FORMATS as EXPORT_FORMATS

    return tuple(EXPORT_FORMATS)


def _check_flags(commands: Any) -> argparse.ArgumentParser:
    k = commands.add_parser(
        "check", help="re-measure a tuned file against TensorFlow's defaults here: still "
                      "faster (exit 0) or re-tune (exit 1)",
        description="Re-measure a tuned file's settings against TensorFlow's defaults on this "
                    "machine, interleaved in fresh processes, with validation's statistics. "
                    "The workload comes from --config or --model, never from the file.")
    k.add_argument("tuned", metavar="TUNED", help="the tuned YAML (or a sizes file, with --size)")
    k.add_argument("--config", help="the workload's study config YAML (or --model)")
    model_flags(k, search=False)
    k.add_argument("--size", type=positive_int, metavar="K",
                   help="with a sizes file: check its row for K CPUs")
    k.add_argument("--rounds", type=int_at_least(4, "an integer >= 4"),
                   help="interleaved rounds, one look (default: the config's validate: rounds, "
                        "extended as validation extends them up to max_rounds)")
    k.add_argument("--seconds", type=_seconds,
                   help="seconds measured per process (default: the config's measure: windows "
                        "x window_seconds)")
    k.add_argument("--format", default="text", choices=("text", "json"),
                   help="text (default) or json (one JSON document on stdout; progress on "
                        "stderr)")
    acceptance_flags(k)
    k.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return k


def _size_flags(commands: Any) -> argparse.ArgumentParser:
    z = commands.add_parser(
        "size", help="the best settings per CPU count, and how many CPUs and replicas to run")
    z.add_argument("--config", help="the study config YAML (as for search)")
    model_flags(z, search=False)
    z.add_argument("--cpus", type=cpu_list,
                   help="CPU counts to size, e.g. 1,2,4,8 (default: 1, 2, 4, ... and all the "
                        "usable CPUs)")
    z.add_argument("--n-trials", type=positive_int, help="trials per size (default: the "
                                                           "config's search.n_trials)")
    z.add_argument("--target-throughput", type=positive_number("samples/s"),
                   help="samples/s in all: the size and replica count that reach it with the "
                        "fewest CPUs")
    z.add_argument("--cpu-hour-price", type=positive_number("a price per CPU-hour"),
                   help="price of one CPU for one hour: cost per million samples per size")
    z.add_argument("--latency-budget-ms", type=positive_number("milliseconds"),
                   help="p95 step latency budget: sizes over it are excluded (and each size's "
                        "search prefers settings within it)")
    z.add_argument("--trial-timeout", type=_seconds, help="seconds one trial's child may take")
    z.add_argument("--storage", help="Optuna storage URL for the per-size studies (default: "
                   "$TUNER_STORAGE, else the config's study.storage; " + STORAGE_PRECEDENCE + ")")
    z.add_argument("--study-name", help="study name; size K's study is NAME.size-K "
                                        "(default: the config file's name)")
    z.add_argument("--output", help="sizes YAML path (default results/<study>/sizes.yaml)")
    z.add_argument("--seed", type=nonneg_int, help="sampler seed")
    keep_backups_flag(z, "sizes")
    accuracy_flags(z)
    z.add_argument("--quiet", action="store_true", help="print only the final table")
    z.add_argument("--budget", type=duration,
                   help="wall time for the whole size run (e.g. 30m, 1h): shared among the "
                        "sizes still to run, each split between its search and its validation "
                        "as search --budget splits it")
    z.add_argument("--format", default="text", choices=("text", "json"),
                   help="the final table as text (default) or one JSON document on stdout "
                        "(schema tuner.size, docs/results.md); progress goes to stderr")
    z.add_argument("--dry-run", action="store_true",
                   help="check the config, the sizes and spaces on this machine, the storage "
                        "and the output path, print the plan, and stop: no child, nothing "
                        "written")
    z.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return z


# every command, in the order `python -m tuner --help` lists them, with what adds its flags
COMMANDS = (("search", _search_flags), ("run", _run_flags), ("diagnose", _diagnose_flags),
            ("export", _export_flags), ("show", _show_flags), ("compare", _compare_flags),
            ("report", _report_flags), ("size", _size_flags), ("check", _check_flags))
