"""``search --dry-run`` and ``size --dry-run``: what a run would do, checked in seconds.

The config is already parsed when these run. Here the space is built for this machine (a knob
the machine cannot offer is refused as the search would refuse it), the storage is reached
(a database server is connected to and asked nothing; a SQLite file's folder is checked), the
output path is checked writable and replaceable, and the plan is said: phases, trials, the
validation's rounds and the processes and measuring time they take. No child starts, no study
database is created, no file is written. What only the preflight can know (TensorFlow's
version, the pipeline's transformations, how long the model takes to build) is said to be
unknown, not guessed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from tuner.base import cpusets, files, render
from tuner.base import host as host_mod
from tuner.base.urls import mask_url
from tuner.config import Config
from tuner.config import budget as budget_mod
from tuner.knobs import space as space_mod
from tuner.search import sizing, storage, structured
from tuner.tuned import sizes, store


@dataclass
class Plan:
    """Label -> one line each, in order; ``title`` the first line."""

    title: str
    rows: list[tuple[str, str]] = field(default_factory=list)

    def add(self, label: str, text: str) -> None:
        self.rows.append((label, text))


def format_plan(plan: Plan) -> str:
    width = max(len(label) for label, _ in plan.rows) if plan.rows else 0
    return "\n".join([plan.title, *(f"  {label.ljust(width)}  {text}"
                                    for label, text in plan.rows)]) + "\n"


def _storage_line(url: str) -> str:
    """Reach the storage without creating anything: a server is connected to, a SQLite file's
    folder is checked (Optuna would create the file, and its tables, on the first run)."""
    masked = mask_url(url)
    if storage.backend(url) == "sqlite":
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if not path or path == ":memory:":
            return f"{render.plain(masked)} (in memory: nothing kept)"
        files.check_writable(path, "--storage", "the study database", make_folders=True)
        return (f"{render.plain(masked)}: " + ("exists (an existing study resumes)"
                                               if os.path.exists(path) else
                                               "a new database, created on the first run"))
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, **storage.engine_kwargs(url))
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except (ImportError, sqlalchemy.exc.SQLAlchemyError) as exc:
        raise storage.cannot_connect(url, exc) from None
    return f"{render.plain(masked)}: reachable"


def _output_line(cfg: Config, path: str, what: str) -> str:
    files.check_writable(path, "--output", what, make_folders=True)
    if what == "the tuned YAML":
        store.check_replaceable(path, cfg.study_name, cfg.storage, cfg.force)
    return render.plain(path) + (": replaced (the current file is kept as history)"
                                 if os.path.exists(path) else ": a new file")


def _per_process(cfg: Config) -> float:
    m = cfg.measure
    return m.warmup_seconds + m.windows * m.window_seconds


def _space_lines(plan: Plan, cfg: Config, machine: host_mod.Machine) -> space_mod.Space:
    space = space_mod.build_space(machine, cfg.space, mode=cfg.workload.mode, pipeline=None,
                                  knobs=cfg.knobs)
    fixed = {k: render.plain(v) for k, v in space.fixed.items() if v is not None}
    plan.add("space", f"{space.size} points over {', '.join(space.searched) or 'nothing'}"
             + (f"; fixed: {', '.join(f'{k}={v}' for k, v in fixed.items())}"
                if fixed else "")
             + " (tf.data rewrites the pipeline allows are added after the preflight)")
    return space


def _sampler_line(cfg: Config, space: space_mod.Space, machine: host_mod.Machine) -> str:
    kind = cfg.search.sampler
    if kind == "auto":
        kind = "grid" if space.size + 2 <= cfg.search.n_trials else "structured"
    if kind != "structured":
        return {"grid": "grid: every point of the space, after the two references",
                "tpe": "tpe: Optuna's TPE after the two references",
                "random": "random: uniform draws after the two references"}[kind]
    dims = structured.StructuredSpace(space, machine).phase_dims()
    phases = [f"{phase} ({', '.join(dims[phase])})" for phase in ("layout", "knobs", "threads",
                                                                  "data") if dims.get(phase)]
    return ("structured: references (TensorFlow's defaults, the rule of thumb), the baseline "
            "again (noise), " + ", ".join(phases) + ", then TPE over what moved beyond noise "
            "and an ablation of the leader")


def _validation_line(cfg: Config, per: float) -> tuple[str, int, int]:
    v = cfg.validate
    first = budget_mod.validation_processes(v.candidates, v.screen_rounds, v.rounds)
    most = first + 2 * (v.max_rounds - v.rounds)
    screen = (f"up to {v.candidates} candidates screened in {v.screen_rounds} round(s), then "
              f"the winner" if v.candidates > 1 else "the best trial")
    text = (f"{screen} vs TensorFlow's defaults in {v.rounds} interleaved rounds"
            + (f", extended up to {v.max_rounds} when inconclusive" if v.max_rounds > v.rounds
               else "")
            + f"; {first}-{most} processes")
    return text, first, most


def _time_line(trials: int, first: int, most: int, per: float, budget: float | None) -> str:
    low, high = (1 + trials + first) * per, (1 + trials + most) * per
    text = (f"{budget_mod.fmt(low)}-{budget_mod.fmt(high)} of measuring ({1 + trials + first}-"
            f"{1 + trials + most} processes of up to {per:g} s), plus each process's start-up "
            f"and model build (measured by the preflight)")
    if budget is not None:
        text += f"; --budget caps the whole run at {budget_mod.fmt(budget)}"
    return text


def search_plan(cfg: Config, *, generated: Any = None,
                machine: host_mod.Machine | None = None) -> Plan:
    """``search --dry-run``: the checks and the plan (see the module docstring)."""
    machine = machine or host_mod.detect()
    plan = Plan("dry run: search (nothing started, nothing written)")
    plan.add("config", render.plain(cfg.path) + (" (generated from --model, not written)"
                                                 if generated is not None else ""))
    plan.add("workload", f"{render.plain(cfg.workload.describe())}, mode {cfg.workload.mode}")
    plan.add("machine", f"{render.plain(machine.cpu_model)}, {machine.usable_cpus} usable CPUs "
                        f"(TensorFlow's version: known after the preflight)")
    space = _space_lines(plan, cfg, machine)
    plan.add("sampler", _sampler_line(cfg, space, machine))
    s = cfg.search
    plan.add("trials", f"{s.n_trials} this run" + (f" (study-wide cap {s.max_trials})"
                                                    if s.max_trials else "")
             + f", each a fresh process (timeout {s.trial_timeout:g} s)")
    per = _per_process(cfg)
    text, first, most = _validation_line(cfg, per)
    plan.add("validation", text)
    plan.add("time", _time_line(s.n_trials, first, most, per, s.budget))
    plan.add("storage", _storage_line(cfg.storage) + f", study {render.plain(cfg.study_name)}")
    plan.add("output", _output_line(cfg, cfg.output, "the tuned YAML"))
    return plan


def size_plan(cfg: Config, options: sizing.Options, *, generated: Any = None,
              machine: host_mod.Machine | None = None) -> Plan:
    """``size --dry-run``: the ladder, each size's space pinned to its CPUs, the plan."""
    machine = machine or host_mod.detect()
    plan = Plan("dry run: size (nothing started, nothing written)")
    counts = sizing.ladder(machine.usable_cpus, options.cpus)
    plan.add("config", render.plain(cfg.path) + (" (generated from --model, not written)"
                                                 if generated is not None else ""))
    plan.add("workload", f"{render.plain(cfg.workload.describe())}, mode {cfg.workload.mode}")
    plan.add("machine", f"{render.plain(machine.cpu_model)}, {machine.usable_cpus} usable CPUs")
    plan.add("sizes", ", ".join(
        f"{n} CPU(s) on {host_mod.format_cpus(cpusets.cpu_set(machine, n) or [])}"
        for n in counts))
    for n in counts:
        sized = sizing.sized_machine(machine, n)
        space = sizing.size_space(sized, cfg, None)  # type: ignore[arg-type]
        plan.add(f"size {n}", f"{space.size} points over "
                              f"{', '.join(space.searched) or 'nothing'}; study "
                              f"{render.plain(cfg.study_name)}.size-{n}")
    per = _per_process(cfg)
    text, first, most = _validation_line(cfg, per)
    plan.add("per size", f"{cfg.search.n_trials} trials, then validation: {text}")
    trials = len(counts) * cfg.search.n_trials
    plan.add("time", _time_line(trials, len(counts) * first, len(counts) * most, per,
                                options.time_budget))
    plan.add("storage", _storage_line(cfg.storage))
    output = options.output or sizes.default_output(cfg.study_name)
    plan.add("output", _output_line(cfg, output, "the sizes file"))
    return plan
