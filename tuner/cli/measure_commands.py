"""The commands that measure in trial children: ``search``, ``size``, ``check`` and ``diagnose``
(each maps its flags onto a plain function), and the summary a search prints."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tuner.base.render import plain
from tuner.cli.flags import MODEL_ONLY, storage_from
from tuner.cli.output import _out, _terminal
from tuner.errors import ConfigError


def _model_config(args: argparse.Namespace, command: str) -> Any:
    """The config of ``--config`` or ``--model`` (exactly one); for ``--model`` also the
    generated config's text and path: ``(config, text, where)``, text None for ``--config``."""
    import tuner.config as config_mod
    from tuner.config import modelflags

    flags = {name: getattr(args, name, None) for name in MODEL_ONLY}
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
    return modelflags.config_for(modelflags.ModelFlags(
        model=args.model, data=flags["data"], mode=flags["mode"], signature=flags["signature"],
        batch_size=flags["batch_size"],
        batch_sizes=modelflags.parse_batch_sizes(sizes) if sizes is not None else None,
        input_shapes=tuple(flags["input_shape"] or ()),
        study_name=getattr(args, "study_name", None),
        # size's --output is the sizes file; the generated config goes to the default place
        output=getattr(args, "output", None) if command != "size" else None))


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


def cmd_search(args: argparse.Namespace) -> int:
    import tuner.config as config_mod
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
    from tuner.config import modelflags
    from tuner.errors import WorkloadError

    # both outputs proven creatable before anything is written or any child starts
    files.check_writable(where, "--output", "the generated config", make_folders=True)
    if getattr(cfg, "output", None):
        files.check_writable(cfg.output, "--output", "the tuned YAML", make_folders=True)
    written = modelflags.write(text, where)
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
    from tuner.diagnose import text as diagnose_text
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
        _out(diagnose_text.format_text(report))
    else:
        print(json.dumps(report, indent=2))
    return 0


def not_a_tuned_file(path: str, command: str, reads: str) -> None:
    """A tuned file given where it has no place: say so, and what to run on it instead."""
    from tuner.tuned import store

    if not is_sizes(path) and store.verdict_of(path) is not None:
        raise ConfigError(f"{command}: {plain(path)}: a tuned file; {reads}. For a tuned file: "
                          f"python -m tuner show {plain(path)} (or compare it with another)")


def not_a_sizes_file(path: str, command: str, reads: str) -> None:
    if is_sizes(path):
        raise ConfigError(f"{command}: {plain(path)}: a sizes file; {reads}. For a sizes file: "
                          f"python -m tuner show {plain(path)} or report {plain(path)}; "
                          f"run/export --size K use one row")


def is_sizes(path: str) -> bool:
    from tuner.tuned import sizes

    return sizes.is_sizes_file(path)


def cmd_size(args: argparse.Namespace) -> int:
    import tuner.config as config_mod
    from tuner.results import sizes_report
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
    _out(sizes_report.format_sizes(sizes.read(outcome.path), "text"))
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
