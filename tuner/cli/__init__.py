"""Command line: ``python -m tuner <command>``. Each command maps its flags onto a plain function.

Errors print as one line, ``error: ...``, and exit with the error's code (2 for bad input);
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from tuner.base.render import FORMATS, did_you_mean, plain, quoted
from tuner.errors import ConfigError, TunerError

STORAGE_ENV = "TUNER_STORAGE"
# one precedence wherever a storage is read, said in every --storage help and docs/config.md
STORAGE_PRECEDENCE = ("--storage wins over $TUNER_STORAGE, which wins over the config's "
                      "study.storage")


def storage_from(flag: str | None) -> str | None:
    """The storage URL a command uses: ``--storage``, else ``$TUNER_STORAGE`` (which keeps a
    password out of the command line and ``ps``), else None (the config's, or none)."""
    return flag or os.environ.get(STORAGE_ENV) or None


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors stay one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message}")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # argparse's own message, with the closest choice suggested and the value escaped
        if action.choices is not None and value not in action.choices:
            choices = [str(c) for c in action.choices]
            if isinstance(action, argparse._SubParsersAction):
                raise argparse.ArgumentError(None, f"{quoted(value)} is not a command"
                                             f"{did_you_mean(value, choices)}; commands: "
                                             f"{', '.join(choices)}")
            raise argparse.ArgumentError(action, f"{quoted(value)} is not allowed"
                                         f"{did_you_mean(value, choices)}; allowed: "
                                         f"{', '.join(choices)}")


def _int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonneg_int = _int_at_least(0, "an integer >= 0")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (a number > 0), got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds (a number > 0), got {text!r}")
    return value


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0 (e.g. 0.05), got {text!r}")
    return value


def _accuracy_flags(parser: argparse.ArgumentParser) -> None:
    from tuner.config import ACCURACY_METRICS

    parser.add_argument("--accuracy-tolerance", type=_tolerance,
                        help="search reduced precision (bf16/f16 math, where the CPU has it): "
                        "every trial's outputs must stay within this deviation from TensorFlow's "
                        "defaults (e.g. 0.05); without it, only float noise is allowed")
    parser.add_argument("--accuracy-metric", choices=ACCURACY_METRICS,
                        help="how the deviation is measured: rel_l2 (default), max_abs, or top1 "
                        "(the share of samples whose top class changes)")


def _duration(text: str) -> float:
    from tuner.config import budget

    try:
        return budget.parse(text, "--budget")
    except ConfigError:
        raise argparse.ArgumentTypeError(f"expected {budget.FORMS}, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m tuner",
                     description="Measure the TensorFlow CPU settings that make a model fastest.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="subcommand", parser_class=_Parser)

    s = commands.add_parser("search", help="run (or resume) a study and write the tuned YAML")
    s.add_argument("--config", help="the study config YAML (or --model)")
    _model_flags(s, search=True)
    s.add_argument("--n-trials", type=_positive_int, help="trials this run adds (as in Optuna)")
    s.add_argument("--timeout", type=_seconds,
                   help="seconds for the whole run, validation included")
    s.add_argument("--budget", type=_duration,
                   help="wall time for the whole run (e.g. 10m, 90s, 1h): the tool splits it "
                   "between search and validation and may stop the search early")
    s.add_argument("--trial-timeout", type=_seconds, help="seconds one trial's child may take")
    s.add_argument("--max-trials", type=_positive_int,
                   help="study-wide cap: every worker stops once the study holds this many trials")
    s.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://USER:PASS@HOST/DB to "
                   "share one study among several machines (default: $TUNER_STORAGE, else the "
                   "config's study.storage, else sqlite:///results/<study>.db; "
                   + STORAGE_PRECEDENCE + ")")
    s.add_argument("--study-name", help="study name (default: the config file's name)")
    s.add_argument("--output", help="tuned YAML path (default results/<study>/tuned.yaml)")
    s.add_argument("--seed", type=_nonneg_int, help="sampler seed")
    _accuracy_flags(s)
    s.add_argument("--allow-other-machines", action="store_true",
                   help="join a study recorded on another machine type; each machine type's "
                   "trials and validation are kept apart")
    s.add_argument("--force", action="store_true",
                   help="replace an output file that belongs to another study (kept as "
                   "NAME.<time>.bak)")
    _keep_backups_flag(s, "tuned")
    s.add_argument("--quiet", action="store_true", help="print only the final summary")
    s.add_argument("--format", default="text", choices=("text", "json"),
                   help="the final summary as text (default) or one JSON document on stdout "
                        "(schema tuner.search, docs/results.md); progress goes to stderr")
    s.add_argument("--dry-run", action="store_true",
                   help="check the config, the space on this machine, the storage and the "
                        "output path, print the plan, and stop: no child, nothing written")
    s.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    r = commands.add_parser("run", help="run a command with a tuned file's settings")
    r.add_argument("--tuned", required=True, help="the tuned YAML")
    r.add_argument("--strict", action="store_true",
                   help="refuse a file measured on another machine instead of warning")
    r.add_argument("--override", action="store_true",
                   help="the file's values win over variables already set in the environment")
    r.add_argument("--quiet", action="store_true", help="no warnings or notes on stderr")
    r.add_argument("--instance", type=_nonneg_int, default=None,
                   help="when the file runs several instances: start only this one (0-based)")
    _acceptance_flags(r)
    r.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    r.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]",
                   help="the command, after --")

    d = commands.add_parser("diagnose", help="measure why TensorFlow isn't using all the CPUs")
    d.add_argument("--config", help="the workload config YAML (as for search), or --model")
    _model_flags(d, search=False)
    d.add_argument("--format", default="text", choices=("text", "json"),
                   help="text (default) or json (only JSON on stdout)")
    d.add_argument("--seconds", type=_seconds, default=60.0, help=_diagnose_seconds_help())
    d.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    e = commands.add_parser("export", help="print a tuned file's settings as environment variables")
    e.add_argument("tuned", help="the tuned YAML")
    e.add_argument("--format", default="shell", choices=_export_formats(),
                   help="shell (default), dotenv, docker, k8s or tf-serving (a "
                        "tensorflow_model_server wrapper script)")
    _acceptance_flags(e)
    e.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    sh = commands.add_parser("show", help="summarise one tuned file (or study)")
    sh.add_argument("tuned", nargs="?", help="the tuned YAML (or a sizes file)")
    sh.add_argument("--storage", help="Optuna storage URL, to show a study instead of a file "
                    "(default: $TUNER_STORAGE when no file is given; " + STORAGE_PRECEDENCE + ")")
    sh.add_argument("--study-name", help="the study in --storage (optional if it holds one)")
    sh.add_argument("--format", default="text", choices=FORMATS,
                    help="text (default), json or markdown")
    sh.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    c = commands.add_parser(
        "compare", help="compare tuned files or studies: settings, throughput, significance")
    c.add_argument("sources", nargs="*", action=_Ordered, metavar="TUNED",
                   help="tuned YAML files; the first result given is the reference (A)")
    c.add_argument("--storage", action=_Ordered,
                   help="Optuna storage URL for the --study-name options that follow it "
                   "(default: $TUNER_STORAGE; " + STORAGE_PRECEDENCE + ")")
    c.add_argument("--study-name", action=_Ordered,
                   help="a study to compare (repeatable), from the last --storage given")
    c.add_argument("--format", default="text", choices=FORMATS,
                   help="text (default), json or markdown")
    c.add_argument("--alpha", type=_fraction, default=0.05, help="significance level (0.05)")
    c.add_argument("--min-ratio", type=_ratio, default=1.05,
                   help="smallest difference called real between separate runs (1.05)")
    c.add_argument("--strict", action="store_true",
                   help="refuse results from different machines or TensorFlow versions")
    c.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

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
    _add_size_parser(commands)
    _add_size_flags(r, e, rp)
    # argparse shows the command after -- as "...": every flag as argparse lists it, then that
    auto = " ".join(r.format_usage().split()[1:])
    r.usage = auto[:-len("...")] + "-- COMMAND [ARGS...]" if auto.endswith("...") else auto
    _add_check_parser(commands)
    return parser


def _diagnose_seconds_help() -> str:
    from tuner.diagnose.run import seconds_help

    return seconds_help()


def _export_formats() -> tuple[str, ...]:
    from tuner.production.launch import FORMATS as EXPORT_FORMATS

    return tuple(EXPORT_FORMATS)


def _add_check_parser(commands: Any) -> None:
    k = commands.add_parser(
        "check", help="re-measure a tuned file against TensorFlow's defaults here: still "
                      "faster (exit 0) or re-tune (exit 1)",
        description="Re-measure a tuned file's settings against TensorFlow's defaults on this "
                    "machine, interleaved in fresh processes, with validation's statistics. "
                    "The workload comes from --config or --model, never from the file.")
    k.add_argument("tuned", metavar="TUNED", help="the tuned YAML (or a sizes file, with --size)")
    k.add_argument("--config", help="the workload's study config YAML (or --model)")
    _model_flags(k, search=False)
    k.add_argument("--size", type=_positive_int, metavar="K",
                   help="with a sizes file: check its row for K CPUs")
    k.add_argument("--rounds", type=_int_at_least(4, "an integer >= 4"),
                   help="interleaved rounds, one look (default: the config's validate: rounds, "
                        "extended as validation extends them up to max_rounds)")
    k.add_argument("--seconds", type=_seconds,
                   help="seconds measured per process (default: the config's measure: windows "
                        "x window_seconds)")
    k.add_argument("--format", default="text", choices=("text", "json"),
                   help="text (default) or json (one JSON document on stdout; progress on "
                        "stderr)")
    _acceptance_flags(k)
    k.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)


def _model_flags(parser: argparse.ArgumentParser, *, search: bool) -> None:
    """``--model PATH`` and the flags that go with it: a study config generated from a model file
    (:mod:`tuner.modelfile`)."""
    parser.add_argument("--model", metavar="PATH",
                        help="a .keras or .h5 (.hdf5) file or a SavedModel directory, measured "
                             "on inputs generated from its signature (instead of --config)")
    parser.add_argument("--data", metavar="FILE.py:FUNCTION",
                        help="with --model: your tf.data pipeline instead of generated inputs")
    parser.add_argument("--mode", choices=("predict", "train"),
                        help="with --model: predict (default), or train (a compiled .keras model)")
    parser.add_argument("--signature", metavar="NAME",
                        help="with a SavedModel: the signature called (default serving_default)")
    parser.add_argument("--batch-size", type=_positive_int, metavar="N",
                        help="with --model: samples per generated batch (default 32)")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=DIMS",
                        help="with --model: an input's shape, e.g. image=1x224x224x3, for "
                             "dimensions the model leaves unknown (repeatable)")
    if search:
        parser.add_argument("--batch-sizes", metavar="N,N,...",
                            help="with --model: search the batch size among these, e.g. "
                                 "1,8,32,128 (reported with per-batch latency)")


_MODEL_ONLY = ("data", "mode", "signature", "batch_size", "input_shape", "batch_sizes")


def _model_config(args: argparse.Namespace, command: str) -> Any:
    """The config of ``--config`` or ``--model`` (exactly one); for ``--model`` also the
    generated config's text and path: ``(config, text, where)``, text None for ``--config``."""
    from tuner import config as config_mod
    from tuner.config import modelflags as modelfile

    flags = {name: getattr(args, name, None) for name in _MODEL_ONLY}
    given = [f"--{name.replace('_', '-')}" for name, value in flags.items() if value]
    if args.config and args.model:
        raise ConfigError(f"{command}: give --config or --model, not both")
    if args.config:
        loaded = config_mod.load(args.config)
        if given:
            raise ConfigError(f"{command}: {given[0]} goes with --model; "
                              + _instead_in_config(given[0], loaded))
        return loaded, None, None
    if not args.model:
        raise ConfigError(f"{command}: give --model PATH (a .keras or .h5 file, or a SavedModel "
                          f"directory) or --config FILE")
    sizes = flags["batch_sizes"]
    return modelfile.config_for(modelfile.ModelFlags(
        model=args.model, data=flags["data"], mode=flags["mode"], signature=flags["signature"],
        batch_size=flags["batch_size"],
        batch_sizes=modelfile.parse_batch_sizes(sizes) if sizes is not None else None,
        input_shapes=tuple(flags["input_shape"] or ()),
        study_name=getattr(args, "study_name", None),
        # size's --output is the sizes file; the generated config goes to the default place
        output=getattr(args, "output", None) if command != "size" else None))


def _keep_backups_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--keep-backups", type=_nonneg_int, default=5, metavar="N",
                        help=f"a replaced {what} file is kept as NAME.<UTC time>.bak; keep the "
                             f"newest N such copies and remove older ones (default 5; 0 keeps "
                             f"none)")


# where a model-file flag's value goes in a config: for a model-file config, and for builders
_IN_MODEL_CONFIG = {"--data": "workload.data", "--mode": "workload.mode",
                    "--signature": "workload.signature", "--batch-size": "workload.batch_size",
                    "--input-shape": "workload.input_shapes", "--batch-sizes": "space.batch_size"}


def _instead_in_config(flag: str, cfg: Any) -> str:
    """What to do instead of a model-file flag given with ``--config``, for that config."""
    path = cfg.path
    if cfg.workload.model_format is not None:
        return f"with --config, set {_IN_MODEL_CONFIG[flag]} in {path} (docs/config.md)"
    if flag in ("--mode", "--data"):
        return f"with --config, set {_IN_MODEL_CONFIG[flag]} in {path} (docs/config.md)"
    return (f"{path} names builder functions, whose build_data() makes the batches, so "
            f"{flag} has no meaning there: change build_data(), or declare the value as a knob "
            f"of your builders (docs/knobs.md)")


def _acceptance_flags(parser: argparse.ArgumentParser) -> None:
    """What a tuned file may hold beyond what a search writes, accepted explicitly."""
    parser.add_argument("--allow-env", action="append", default=[], metavar="NAME",
                        help="accept this variable in the file's settings.env although no tuner "
                             "knob sets it (repeatable); others are refused")
    parser.add_argument("--allow-unvalidated", action="store_true",
                        help="accept a file whose verdict is unvalidated (an interrupted "
                             "search's best trial, never validated against the defaults), or "
                             "whose evidence does not support its verdict")


class _Ordered(argparse.Action):
    """Keeps files, --storage and --study-name in command-line order: the first result given is
    the reference, and a --storage applies to the --study-name options after it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        order = getattr(namespace, "order", None) or []
        kind = {"--storage": "storage", "--study-name": "study"}.get(option_string or "", "file")
        for value in values if isinstance(values, list) else [values]:
            order.append((kind, value))
        namespace.order = order


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 1 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a ratio >= 1 (e.g. 1.05), got {text!r}")
    return value


def cmd_search(args: argparse.Namespace) -> int:
    from tuner import config as config_mod
    from tuner.search import measuring
    from tuner.search import pipeline as search_mod

    loaded, text, where = _model_config(args, "search")
    cfg = config_mod.with_overrides(
        loaded, n_trials=args.n_trials, timeout=args.timeout,
        budget=args.budget, trial_timeout=args.trial_timeout,
        # the environment keeps a password out of the command line (and `ps`): a Secret's value
        storage=storage_from(args.storage), study_name=args.study_name,
        output=args.output, seed=args.seed, force=args.force, max_trials=args.max_trials,
        allow_other_machines=args.allow_other_machines, keep_backups=args.keep_backups,
        accuracy_tolerance=args.accuracy_tolerance, accuracy_metric=args.accuracy_metric)
    if args.dry_run:
        from tuner.search import plan

        sys.stdout.write(plan.format_plan(plan.search_plan(cfg, generated=where)))
        return 0
    say = (lambda line: None) if args.quiet else measuring.print_line
    outcome = _with_model_config(cfg, text, where, say, search_mod.run) if text is not None \
        else search_mod.run(cfg, say)
    code = 130 if outcome.interrupted else 0
    if args.format == "json":
        sys.stdout.write(search_json(outcome, where, code))
        return code
    print_summary(outcome.tuned, outcome.tuned_path, outcome.backup, outcome.kept,
                  outcome.retired)
    if outcome.budget:
        print(outcome.budget)
    if where is not None:
        print(f"config: {where} (resume with python -m tuner search --config {where})")
    return code


# `search --format json` and `size --format json` (docs/results.md, "JSON output"). History:
# 1 - first version.
SEARCH_SCHEMA, SIZE_SCHEMA, OUTPUT_SCHEMA_VERSION = "tuner.search", "tuner.size", 1


def search_json(outcome: Any, where: Any, code: int) -> str:
    """The search's final summary as one JSON document: where the result went, and the tuned
    document it wrote, whole (every field, new ones included)."""
    from tuner.base import render

    return render.json_document(SEARCH_SCHEMA, OUTPUT_SCHEMA_VERSION, {
        "exit_code": code, "interrupted": outcome.interrupted,
        "tuned_file": outcome.tuned_path, "previous_file": outcome.backup,
        "kept": outcome.kept, "retired": outcome.retired, "budget": outcome.budget,
        "config": str(where) if where is not None else None,
        "tuned": outcome.tuned})


def _with_model_config(cfg: Any, text: str, where: Any, say: Any, run: Any) -> Any:
    """``search --model`` / ``size --model``: the generated config written beside the result
    before the run (so an interrupted run resumes from it), and taken back when the model fails
    its preflight or the run is refused before it started."""
    from tuner.base import files
    from tuner.config import modelflags as modelfile
    from tuner.errors import WorkloadError

    # both outputs proven creatable before anything is written or any child starts
    files.check_writable(where, "--output", "the generated config", make_folders=True)
    if getattr(cfg, "output", None):
        files.check_writable(cfg.output, "--output", "the tuned YAML", make_folders=True)
    written = modelfile.write(text, where)
    say(f"config: {where}" + (" (written)" if written.created else " (as before)"))
    try:
        return run(cfg, say)
    except ConfigError as exc:
        written.undo()
        if isinstance(exc, WorkloadError):   # the model named, not a file the user never wrote
            raise WorkloadError(str(exc).replace(f"{cfg.path}: ", "--model: ", 1)) from None
        raise


def cmd_diagnose(args: argparse.Namespace) -> int:
    import json

    from tuner.diagnose import run as diagnose_mod
    from tuner.search.trial import worker_command

    cfg = _model_config(args, "diagnose")[0]
    text = args.format == "text"
    if text:
        what = cfg.workload.model if args.model else cfg.path
        print(f"diagnosing {_terminal(str(what))}: about {args.seconds:g} s of measuring plus "
              f"start-up", file=sys.stderr)

    def waiting() -> None:
        print("waiting: another tuner process is measuring on this host", file=sys.stderr)

    report = diagnose_mod.diagnose(cfg, args.seconds, worker=worker_command(), on_wait=waiting)
    if text:
        _out(diagnose_mod.format_text(report))
    else:
        print(json.dumps(report, indent=2))
    return 0


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


def _terminal(text: str) -> str:
    from tuner.base.render import terminal

    return terminal(text)


def _out(text: str) -> None:
    """Every printout of a command goes out through here: a value from a file, a study or a
    model that slipped past its printer's escaping still cannot act on the terminal."""
    sys.stdout.write(_terminal(text))


def _quiet_optuna() -> None:
    """Optuna's log lines ("There are no complete trials.") would only repeat what these commands
    print; the commands are the process's last act, so a global setting is fine here."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)


def cmd_show(args: argparse.Namespace) -> int:
    from tuner.results import compare
    from tuner.results import model as results

    compare.check_format(args.format)
    if args.tuned and (args.storage or args.study_name):
        raise ConfigError("show: give a tuned file or --storage/--study-name, not both")
    if args.tuned and _is_sizes(args.tuned):
        return show_sizes(args.tuned, args.format)
    storage = storage_from(args.storage)
    if args.tuned:
        result = results.from_tuned_file(args.tuned)
    elif storage:
        _quiet_optuna()
        result = results.from_study(storage, args.study_name)
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
    from tuner.results import compare
    from tuner.results import model as results

    compare.check_format(args.format)
    read = []
    if args.storage or args.study_name or storage_from(None):
        _quiet_optuna()
    for kind, where, name in sources(getattr(args, "order", None) or []):
        if kind == "file":
            _not_a_sizes_file(where, "compare", "compare reads tuned files and studies")
        read.append(results.from_tuned_file(where) if kind == "file"
                    else results.from_study(where, name))  # type: ignore[arg-type]
    comparison = compare.compare_results(read, alpha=args.alpha, min_ratio=args.min_ratio,
                                         strict=args.strict)
    _out(compare.format_compare(comparison, args.format))
    if args.format != "text":
        for warning in comparison.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tuner.results import report

    if args.sizes is not None:
        if args.storage or args.study_name:
            raise ConfigError("report: give a sizes file or --storage/--study-name, not both")
        _not_a_tuned_file(args.sizes, "report",
                          "report reads a study (--storage URL) or a sizes file")
        return report_sizes(args.sizes, args.html, args.format)
    storage = storage_from(args.storage)
    if not storage:
        raise ConfigError("report: give --storage URL [--study-name NAME] (a study; or set "
                          f"${STORAGE_ENV}), or a sizes file (python -m tuner report "
                          "results/NAME/sizes.yaml)")
    if args.html:  # before the study is read: a bad path is found in a moment
        report.check_html_path(args.html)
    _quiet_optuna()
    built = report.build(storage, args.study_name)
    _out(report.format_json(built) if args.format == "json" else report.format_text(built))
    if args.html:
        report.write_html(built, args.html)
        print(f"wrote {args.html}", file=sys.stderr if args.format == "json" else sys.stdout)
    return 0


# -- size: the CPU ladder, and the sizes file it writes -------------------------------------------

def _cpu_list(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    counts = [int(p) if p.isascii() and p.isdigit() else 0 for p in parts]
    if not parts or any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of CPU counts >= 1 "
                                         f"(e.g. 1,2,4), got {text!r}")
    if len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"a CPU count appears twice in {text!r}")
    return counts


def _positive_number(what: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"expected {what} (a number > 0), got {text!r}")
        return value

    return parse


def _add_size_parser(commands: Any) -> None:
    z = commands.add_parser(
        "size", help="the best settings per CPU count, and how many CPUs and replicas to run")
    z.add_argument("--config", help="the study config YAML (as for search)")
    _model_flags(z, search=False)
    z.add_argument("--cpus", type=_cpu_list,
                   help="CPU counts to size, e.g. 1,2,4,8 (default: 1, 2, 4, ... and all the "
                        "usable CPUs)")
    z.add_argument("--n-trials", type=_positive_int, help="trials per size (default: the "
                                                           "config's search.n_trials)")
    z.add_argument("--target-throughput", type=_positive_number("samples/s"),
                   help="samples/s in all: the size and replica count that reach it with the "
                        "fewest CPUs")
    z.add_argument("--cpu-hour-price", type=_positive_number("a price per CPU-hour"),
                   help="price of one CPU for one hour: cost per million samples per size")
    z.add_argument("--latency-budget-ms", type=_positive_number("milliseconds"),
                   help="p95 step latency budget: sizes over it are excluded (and each size's "
                        "search prefers settings within it)")
    z.add_argument("--trial-timeout", type=_seconds, help="seconds one trial's child may take")
    z.add_argument("--storage", help="Optuna storage URL for the per-size studies (default: "
                   "$TUNER_STORAGE, else the config's study.storage; " + STORAGE_PRECEDENCE + ")")
    z.add_argument("--study-name", help="study name; size K's study is NAME.size-K "
                                        "(default: the config file's name)")
    z.add_argument("--output", help="sizes YAML path (default results/<study>/sizes.yaml)")
    z.add_argument("--seed", type=_nonneg_int, help="sampler seed")
    _keep_backups_flag(z, "sizes")
    _accuracy_flags(z)
    z.add_argument("--quiet", action="store_true", help="print only the final table")
    z.add_argument("--budget", type=_duration,
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


def _add_size_flags(run: argparse.ArgumentParser, export: argparse.ArgumentParser,
                    report: argparse.ArgumentParser) -> None:
    for parser in (run, export):
        parser.add_argument("--size", type=_positive_int, metavar="K",
                            help="with a sizes file: use its row for K CPUs")


def _not_a_tuned_file(path: str, command: str, reads: str) -> None:
    """A tuned file given where it has no place: say so, and what to run on it instead."""
    from tuner.tuned import store as tuned

    if not _is_sizes(path) and tuned.verdict_of(path) is not None:
        raise ConfigError(f"{command}: {plain(path)}: a tuned file; {reads}. For a tuned file: "
                          f"python -m tuner show {plain(path)} (or compare it with another)")


def _not_a_sizes_file(path: str, command: str, reads: str) -> None:
    if _is_sizes(path):
        raise ConfigError(f"{command}: {plain(path)}: a sizes file; {reads}. For a sizes file: "
                          f"python -m tuner show {plain(path)} or report {plain(path)}; "
                          f"run/export --size K use one row")


def _is_sizes(path: str) -> bool:
    from tuner.tuned import sizes

    return sizes.is_sizes_file(path)


def cmd_size(args: argparse.Namespace) -> int:
    from tuner import config as config_mod
    from tuner.results import report
    from tuner.search import measuring, sizing
    from tuner.tuned import sizes

    loaded, text, where = _model_config(args, "size")
    cfg = config_mod.with_overrides(
        loaded, n_trials=args.n_trials, trial_timeout=args.trial_timeout,
        storage=storage_from(args.storage), study_name=args.study_name,
        seed=args.seed, keep_backups=args.keep_backups,
        accuracy_tolerance=args.accuracy_tolerance, accuracy_metric=args.accuracy_metric)
    output = config_mod.check_output(args.output, "--output") if args.output else None
    options = sizing.Options(cpus=args.cpus, target=args.target_throughput,
                             price=args.cpu_hour_price, budget=args.latency_budget_ms,
                             output=output, time_budget=args.budget)
    if args.dry_run:
        from tuner.search import plan

        sys.stdout.write(plan.format_plan(plan.size_plan(cfg, options, generated=where)))
        return 0
    say = (lambda line: None) if args.quiet else measuring.print_line
    outcome = _with_model_config(cfg, text, where, say,
                                 lambda c, s: sizing.run(c, options, s)) if text is not None \
        else sizing.run(cfg, options, say)
    code = 130 if outcome.interrupted else 0
    if args.format == "json":
        from tuner.base import render

        sys.stdout.write(render.json_document(SIZE_SCHEMA, OUTPUT_SCHEMA_VERSION, {
            "exit_code": code, "interrupted": outcome.interrupted,
            "sizes_file": outcome.path, "previous_file": outcome.backup,
            "config": str(where) if where is not None else None,
            "sizes": sizes.read(outcome.path).doc}))
        return code
    print()
    _out(report.format_sizes(sizes.read(outcome.path), "text"))
    print(f"wrote {outcome.path}" + (f" (previous file kept as {outcome.backup})"
                                      if outcome.backup else ""))
    return code


def cmd_check(args: argparse.Namespace) -> int:
    from tuner.base import render
    from tuner.search import check, measuring

    options = check.Options(rounds=args.rounds, seconds=args.seconds, size=args.size,
                            allow_env=tuple(args.allow_env),
                            allow_unvalidated=args.allow_unvalidated)
    tuned = check.read(args.tuned, options)
    checked = check.nothing_to_check(tuned, options)
    if checked is None:
        cfg = _model_config(args, "check")[0]
        checked = check.run(tuned, cfg, options, measuring.print_line)
    if args.format == "json":
        sys.stdout.write(render.json_document(check.SCHEMA, check.SCHEMA_VERSION,
                                              checked.record))
    else:
        for line in checked.lines:
            _out(line + "\n")
    return checked.exit_code


def show_sizes(path: str, fmt: str) -> int:
    from tuner.results import report
    from tuner.tuned import sizes

    _out(report.format_sizes(sizes.read(path), fmt))
    return 0


def report_sizes(path: str, html_path: str | None, fmt: str = "text") -> int:
    from tuner.results import report
    from tuner.tuned import sizes

    if html_path:
        report.check_html_path(html_path)
    read = sizes.read(path)
    _out(report.format_sizes_json(read) if fmt == "json"
         else report.format_sizes(read, "text"))
    if html_path:
        report.write_sizes_html(read, html_path)
        print(f"wrote {html_path}", file=sys.stderr if fmt == "json" else sys.stdout)
    return 0


def print_summary(doc: dict[str, Any], path: str, backup: str | None,
                  kept: str | None = None, retired: str | None = None) -> None:
    from tuner.knobs import settings as settings_mod

    result = doc["result"]
    flat = settings_mod.flatten(doc["settings"])
    print()
    print(f"verdict: {doc['verdict']} - {doc['summary']}")
    base = result.get("baseline_throughput") or {}
    tp = result.get("throughput") or {}

    from tuner.base import render

    def block(b: dict[str, Any]) -> str:
        return render.throughput(b.get("median", float("nan")), b.get("per_process"))

    if base:
        print(f"  TensorFlow defaults: {block(base)}")
    if doc["verdict"] == "tuned":
        print(f"  tuned:               {block(tp)}")
        print(f"  speedup:             "
              f"{render.ratio(result['speedup'], result['speedup_ci95'], result['p_value'])}")
    elif "rejected" in result:
        r = result["rejected"]
        ratio = render.ratio(r.get("speedup"), r.get("speedup_ci95"), r.get("p_value"),
                             untested=True)
        print(f"  best candidate (trial {r['trial']}): {ratio}"
              f" - not adopted: {r.get('rejected_because') or 'not significant'}")
    expert = doc.get("search", {}).get("expert_rule", {})
    if expert.get("speedup_in_search") is not None:
        print(f"  expert rule (intra={expert['settings']['intra_op_parallelism_threads']}, "
              f"inter={expert['settings']['inter_op_parallelism_threads']}): "
              f"{expert['speedup_in_search']:.3f}x the defaults in its search trial")
    print(f"  settings: {settings_mod.short(flat)}  ({render.LEGEND_DEFAULT})")
    _print_batch_sizes(doc)
    print(f"  cpu saturation: {result.get('cpu_saturation') or float('nan'):.2f}")
    print(f"wrote {path}" + (f" (previous file kept as {backup})" if backup else ""))
    if kept:
        print(f"kept {kept} as it was: it holds a validated result, and this one is not "
              f"validated; run the same command again to resume and validate")
    if retired:
        print(f"moved the earlier unvalidated result beside it to {retired}: this validated "
              f"result supersedes it")


def _print_batch_sizes(doc: dict[str, Any]) -> None:
    """With the batch size searched: each size's best throughput and latency per batch, and
    where the chosen size goes (the caller's, not something tuner.apply() sets)."""
    rows = (doc.get("search") or {}).get("batch_sizes")
    if not rows:
        return
    print("  batch sizes (best trial each): "
          + ", ".join(f"{r['batch_size']}: {r['throughput']:.1f} samples/s, "
                      f"{r['batch_latency_ms'].get('p50', float('nan')):.1f} ms/batch p50"
                      for r in rows))
    size = doc["settings"].get("batch_size") or doc["workload"].get("batch_size")
    print(f"  batch size {size} is the caller's: tuner.apply() cannot set it; send batches of "
          f"{size} (cfg.batch_size), or with TF Serving set max_batch_size {size} "
          f"(docs/production.md)")


def _on_sigterm(signum: int, frame: Any) -> None:
    # Orchestrators stop jobs with SIGTERM, a closed terminal sends SIGHUP, a user Ctrl-C: clean
    # up (kill the child and its process group, mark the trial). Recorded as well, in case the
    # exception lands in a callback that Python swallows it in (errors.request_stop).
    from tuner import errors

    errors.request_stop()
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        if args.version:
            from tuner.base.version import __version__

            print(__version__)
            return 0
        if args.subcommand is None:
            build_parser().print_help()
            return 2
        from tuner import errors

        errors.clear_stop()   # a stop asked of an earlier command in this process is done
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm)}
        # `run` forwards signals to its command itself; under nohup a hang-up stays ignored
        if args.subcommand != "run" and signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, _on_sigterm)
        # Ctrl-C: Python's own handler raises the same KeyboardInterrupt but records nothing
        if args.subcommand != "run" and signal.getsignal(signal.SIGINT) is \
                signal.default_int_handler:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, _on_sigterm)
        # a blocked signal survives exec: a search started by a parent that blocked SIGTERM
        # would never see it (no stop, and its children run to their timeouts)
        mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, list(previous))
        try:
            commands = {"search": cmd_search, "diagnose": cmd_diagnose, "run": cmd_run,
                        "export": cmd_export, "show": cmd_show, "compare": cmd_compare,
                        "report": cmd_report, "size": cmd_size, "check": cmd_check}
            return commands[args.subcommand](args)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    except TunerError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {_terminal(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of the output went away (`| head`): nothing to report, and the interpreter's
        # last flush of stdout must not fail again on the way out
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 128 + signal.SIGPIPE
    except OSError as exc:
        # the last resort: commands name the path themselves where they can say more
        if debug:
            traceback.print_exc()
        print(f"error: {_terminal(os_error_line(exc))}", file=sys.stderr)
        return 1


def os_error_line(exc: OSError) -> str:
    """``path: reason`` in one line, for an OSError no command turned into a better message."""
    text = exc.strerror or str(exc) or type(exc).__name__
    reason = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    names = []
    for name in (exc.filename, exc.filename2):
        if name is not None:
            name = os.fsdecode(name) if isinstance(name, bytes) else str(name)
            names.append(name if name.isprintable() else repr(name))
    return (" -> ".join(names) + ": " if names else "") + reason
