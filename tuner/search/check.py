"""``python -m tuner check``: does a tuned file still beat TensorFlow's defaults here?

A file tuned last month, on another machine or TensorFlow version, is re-measured where it
runs: its settings against TensorFlow's defaults, each in a fresh process, interleaved with the
order rotated, by validation's own final rounds (:func:`tuner.search.validate.final_rounds`) and
judged by the verdict's own rule (:func:`tuner.search.verdict.judge`), so "still faster" means what
"tuned" meant when the file was written. The settings are placed as ``python -m tuner run``
places them: the file's CPU sets and instance sets as recorded, its allocator as found here.

The file is untrusted input (read by the one strict reader); the workload comes from the
command line (a config or a model file), never from a path recorded in the file.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import tuner.knobs as knobs
from tuner.base import host as host_mod
from tuner.base import render, stats
from tuner.child import guard
from tuner.config import Config
from tuner.errors import ConfigError
from tuner.knobs import settings as settings_mod
from tuner.production import apply
from tuner.search import measuring, validate, verdict
from tuner.tuned import reader as tunedfile
from tuner.tuned import sizes

# The JSON document of `check --format json` (docs/results.md, "check"). History:
# 1 - first version.
SCHEMA = "tuner.check"
SCHEMA_VERSION = 1

STILL_FASTER = "still_faster"
NO_LONGER_FASTER = "no_longer_faster"
NOTHING_TO_CHECK = "nothing_to_check"
EXIT_CODES = {STILL_FASTER: 0, NOTHING_TO_CHECK: 0, NO_LONGER_FASTER: 1}
LABEL = "tuned"


@dataclass(frozen=True)
class Options:
    """What the command line sets: ``rounds`` (a fixed number of final rounds, one look, instead
    of the config's sequential design), ``seconds`` (measured per process), ``size`` (a sizes
    file's row) and what the file may hold beyond a search's output."""

    rounds: int | None = None
    seconds: float | None = None
    size: int | None = None
    allow_env: tuple[str, ...] = ()
    allow_unvalidated: bool = False


@dataclass
class Checked:
    """The outcome: ``outcome`` is one of STILL_FASTER, NO_LONGER_FASTER, NOTHING_TO_CHECK;
    ``lines`` what the text form prints; ``record`` the JSON document."""

    outcome: str
    lines: list[str]
    record: dict[str, Any]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]


def read(path: str, options: Options) -> tunedfile.TunedFile:
    """The tuned file (or the sizes file's row ``options.size``) through the strict readers."""
    if options.size is not None:
        if not sizes.is_sizes_file(path):
            raise ConfigError(f"check --size {options.size}: {render.plain(path)} is a tuned "
                              f"file, not a sizes file: drop --size")
        return sizes.read_row(path, options.size, allow_env=options.allow_env)
    if sizes.is_sizes_file(path):
        counts = ", ".join(str(r.get("cpus")) for r in
                           sizes.read(path, allow_env=options.allow_env).rows)
        raise ConfigError(f"{render.plain(path)}: a sizes file has one row per CPU count "
                          f"({counts}): choose one with --size K")
    return tunedfile.read(path, allow_env=options.allow_env,
                          allow_unvalidated=options.allow_unvalidated)


def nothing_to_check(tuned: tunedfile.TunedFile, options: Options) -> Checked | None:
    """A file that keeps TensorFlow's defaults claims nothing to re-measure."""
    if tuned.verdict != "defaults":
        return None
    line = (f"nothing to check: {render.plain(tuned.path)}"
            + (f" (size {options.size})" if options.size is not None else "")
            + " keeps TensorFlow's defaults")
    return Checked(NOTHING_TO_CHECK, [line], _record(tuned, options, NOTHING_TO_CHECK, line))


def configure(config: Config, options: Options) -> Config:
    """``config`` with the command line's rounds and seconds: ``--rounds N`` is a fixed design
    (one look at N rounds, all of alpha spent there); ``--seconds S`` keeps the windows and
    spreads S over them."""
    changes: dict[str, Any] = {}
    if options.rounds is not None:
        changes["validate"] = dataclasses.replace(config.validate, rounds=options.rounds,
                                                  max_rounds=options.rounds)
    if options.seconds is not None:
        changes["measure"] = dataclasses.replace(
            config.measure, window_seconds=options.seconds / config.measure.windows)
    return config.replace(**changes)


@dataclass(frozen=True)
class _Placed(measuring.Measurer):
    """A measurer that places given settings where the tuned file says (its CPU sets, its
    instances' sets, its allocator as found here), as the launcher does; others as a search
    would."""

    placed: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def _placement(self, settings: dict[str, Any]) -> dict[str, Any]:
        key = _key(settings)
        for k, (preload, cpus, instances) in self.placed:
            if k == key:
                return {"preload": preload, "cpus": cpus, "instances": instances}
        return super()._placement(settings)


def _key(settings: dict[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


def run(tuned: tunedfile.TunedFile, config: Config, options: Options,
        say: measuring.Say = measuring.print_line,
        machine: host_mod.Machine | None = None) -> Checked:
    """Re-measure ``tuned`` against TensorFlow's defaults on ``config``'s workload."""
    skip = nothing_to_check(tuned, options)
    if skip is not None:
        return skip
    cfg = _judged_as_recorded(configure(config, options), tuned.doc)
    doc, path = tuned.doc, render.plain(tuned.path)
    flat = settings_mod.flatten(doc["settings"])
    undeclared = _undeclared(doc, cfg)
    if undeclared:
        raise ConfigError(f"{path}: settings.knobs: {', '.join(map(render.plain, undeclared))} "
                          f"not declared in {render.plain(cfg.path)}'s knobs: (declared: "
                          f"{', '.join(cfg.knobs) or 'none'}); check it against the config it "
                          f"was tuned with")
    detected = machine or host_mod.detect()
    # reduced precision on a CPU without its instructions: refused, as run and apply() refuse it
    tunedfile.check_cpu(doc, path, detected.cpu_flags)
    plan = settings_mod.file_plan(doc["settings"], detected.allocators)
    _check_fits(plan, detected, path)   # in a moment, before any child
    pre = measuring.Measurer(cfg, detected, say).preflight()
    here = pre.machine
    notes = _notes(doc, tuned.path, pre, cfg)
    for note in notes:
        say(f"note: {note}")
    baseline = pre.space.baseline()
    base_cpus = None
    if options.size is not None:   # a size is compared with the defaults on the same CPUs
        if plan.cpus:
            baseline, base_cpus = {**baseline, "cpus": len(plan.cpus)}, plan.cpus
    # every child also feeds the guard's fixed samples (TensorFlow's defaults' reference, kept per
    # machine type) and reports its outputs' deviation, as in a search's validation
    measurer = _Placed(cfg, here, say, guard=pre.guard, placed=(
        (_key(flat), (plan.preload, plan.cpus, plan.instances)),
        (_key(baseline), (None, base_cpus, None))))
    if _key(flat) == _key(baseline):
        raise ConfigError(f"{path}: settings: the file's settings are TensorFlow's defaults, "
                          f"but its verdict is {render.plain(tuned.verdict)}")
    candidate = validate.Candidate(number=-1, settings=flat, search_score=0.0, name=LABEL)
    v = validate.Validation(candidates=[candidate], winner=candidate, screening={}, final={},
                            failures={})
    say(f"check: {path} ({settings_mod.short(flat)}) vs TensorFlow's defaults, "
        f"{cfg.validate.rounds} interleaved rounds in fresh processes"
        + (f" (up to {cfg.validate.max_rounds})" if cfg.validate.max_rounds > cfg.validate.rounds
           else ""))
    validate.final_rounds(v, baseline, measurer, noise=[])
    return _decide(tuned, options, cfg, v, here, notes)


def _undeclared(doc: dict[str, Any], cfg: Config) -> list[str]:
    return sorted(str(k) for k in (doc["settings"].get("knobs") or {}) if k not in cfg.knobs)


def _check_fits(plan: settings_mod.ProcessPlan, machine: host_mod.Machine, path: str) -> None:
    """The file's CPU sets must be CPUs this process may run on: pinned elsewhere, the
    measurement would not be of what the file says."""
    usable = set(machine.affinity)
    for what, cpus in (("cpus", plan.cpus), *((f"instances.cpus[{i}]", s)
                                              for i, s in enumerate(plan.instances or []))):
        if cpus and not set(cpus) <= usable:
            raise ConfigError(f"{path}: settings.{what}: CPUs {host_mod.format_cpus(cpus)} are "
                              f"not all usable here (this process may run on "
                              f"{host_mod.format_cpus(sorted(usable))}); the file was tuned for "
                              f"another machine: re-tune here")


def _notes(doc: dict[str, Any], path: str, pre: measuring.Preflight, cfg: Config) -> list[str]:
    notes = [render.plain(d) for d in apply.machine_differences(doc, pre.machine.tf_version)]
    if notes:
        notes = ["the file was measured on another machine: " + "; ".join(notes)]
    plan = settings_mod.file_plan(doc["settings"], pre.machine.allocators)
    if plan.allocator != knobs.ALLOCATOR.default and plan.preload is None:
        notes.append(f"the file's allocator, {render.plain(plan.allocator)}, is not installed "
                     f"here; measured with the system allocator, as python -m tuner run would "
                     f"run it")
    objective = doc.get("objective")
    recorded = objective.get("metric") if isinstance(objective, dict) else objective
    if isinstance(recorded, str) and recorded != cfg.objective.metric:
        notes.append(f"the file was tuned for {render.plain(recorded)}; checked for "
                     f"{cfg.objective.metric} ({render.plain(cfg.path)})")
    return notes


def _judged_as_recorded(cfg: Config, doc: dict[str, Any]) -> Config:
    """The accuracy guard judges the file's settings by the metric and tolerance it was tuned
    with (``result.accuracy``; checked by the strict reader where the settings change the
    model's numbers); a file without one, by float noise."""
    result = doc.get("result") if isinstance(doc.get("result"), dict) else {}
    recorded = result.get("accuracy")
    if not isinstance(recorded, dict) or recorded.get("metric") not in guard.METRICS:
        return cfg.replace(accuracy=dataclasses.replace(cfg.accuracy, tolerance=None))
    tolerance = recorded.get("tolerance")
    if not (isinstance(tolerance, (int, float)) and not isinstance(tolerance, bool)
            and 0 < tolerance < 1):
        tolerance = None
    return cfg.replace(accuracy=dataclasses.replace(cfg.accuracy, metric=recorded["metric"],
                                                    tolerance=tolerance))


def _block(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    values = [m["throughput"]["median"] for m in runs]
    if not values:
        return None
    lo, hi = stats.bootstrap_ci(values)
    return {"median": stats.median(values), "ci95": [lo, hi], "unit": "samples/s",
            "per_process": values}


def _decide(tuned: tunedfile.TunedFile, options: Options, cfg: Config, v: validate.Validation,
            machine: host_mod.Machine, notes: list[str]) -> Checked:
    base_runs = v.final.get(validate.BASELINE, [])
    win_runs = v.final.get(LABEL, [])
    failed = v.failures.get(LABEL)
    comparison = verdict.judge(v, cfg) if len(win_runs) >= 2 and not failed else None
    # a run whose outputs were beyond the limit failed its round (validate.final_rounds): the
    # deviation of the runs that completed is the file's here
    accuracy = verdict.accuracy_block(cfg, win_runs) if not failed else None
    pct = cfg.objective.percentile
    measured: dict[str, Any] = {
        "rounds": len(base_runs), "level": verdict.level_of(v, cfg),
        "alpha": cfg.validate.alpha, "min_speedup": cfg.validate.min_speedup,
        "looks": v.looks, "stopped_early": v.stopped_early,
        "baseline_throughput": _block(base_runs), "throughput": _block(win_runs),
        "failed": failed, "accuracy": accuracy,
    }
    if comparison is not None:
        measured.update({k: comparison[k] for k in ("speedup", "speedup_ci95", "p_value",
                                                    "significant")},
                        reason=comparison["reason"] or None)
    lines: list[str]
    if comparison is not None and comparison["significant"]:
        lo, hi = comparison["speedup_ci95"]
        what = f"faster in {pct} step latency" if pct else "faster"
        line = (f"still {comparison['speedup']:.2f}x {what} (95% interval {lo:.2f}-{hi:.2f}, "
                f"p={comparison['p_value']:.2g})")
        outcome = STILL_FASTER
        lines = [line]
    else:
        line = "no longer faster than the defaults here: re-tune"
        outcome = NO_LONGER_FASTER
        if failed:
            why = f"the tuned settings failed here: {render.plain(failed)}"
        elif comparison is None:
            why = "too few rounds of the tuned settings completed"
        else:
            lo, hi = comparison["speedup_ci95"]
            why = (f"measured {comparison['speedup']:.2f}x (95% interval {lo:.2f}-{hi:.2f}, "
                   f"p={comparison['p_value']:.2g}): {comparison['reason']}")
        lines = [line, f"  {why}"]
        if v.stopped_early:
            lines.append(f"  stopped after {len(base_runs)} rounds: {v.stopped_early}")
    if accuracy is not None:
        lines.append(f"  outputs within the accuracy limit: {accuracy['metric']} "
                     f"{accuracy['deviation']:.3g} (limit {accuracy['limit']:.3g}, "
                     f"{accuracy['samples']} samples)")
    base, tp = measured["baseline_throughput"], measured["throughput"]
    if base and tp:
        lines.append(f"  tuned {tp['median']:.1f} samples/s, TensorFlow's defaults "
                     f"{base['median']:.1f} samples/s (medians of {len(tp['per_process'])} and "
                     f"{len(base['per_process'])} processes)")
    recorded = tuned.doc.get("result")
    claim = [recorded.get("speedup"), *(recorded.get("speedup_ci95") or [])] \
        if isinstance(recorded, dict) and isinstance(recorded.get("speedup_ci95"), list) else []
    # the file is untrusted: its numbers are shown only when they are numbers
    if len(claim) == 3 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                               for x in claim):
        lines.append(f"  when tuned: {claim[0]:.2f}x (95% interval {claim[1]:.2f}-"
                     f"{claim[2]:.2f})")
    record = _record(tuned, options, outcome, line)
    record.update(measured=measured, notes=notes, objective=cfg.objective.metric,
                  machine=machine.as_dict(), config=cfg.path)
    return Checked(outcome, lines, record)


def _record(tuned: tunedfile.TunedFile, options: Options, outcome: str, line: str
            ) -> dict[str, Any]:
    """The JSON document's common part: the outcome, and the file's own claim as written (every
    field of its ``verdict``, ``settings`` and ``result``, so new fields flow through)."""
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "file": tuned.path, "size": options.size,
        "outcome": outcome, "exit_code": EXIT_CODES[outcome], "message": line,
        "recorded": {"verdict": tuned.verdict, "settings": tuned.doc.get("settings"),
                     "result": tuned.doc.get("result"), "machine": tuned.doc.get("machine")},
    }
