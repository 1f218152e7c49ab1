"""The ``size`` command: how many CPUs per process (or pod), how many replicas, at what cost.

For each CPU count of a ladder (1, 2, 4, ... up to the usable CPUs, always with the usable count
itself), the search of :mod:`tuner.search.pipeline` runs once more, *pinned to that many CPUs*:

1. The machine is cut down to the first ``K`` CPUs of the pinning order (:func:`sized_machine`),
   so the space is built for ``K`` CPUs (thread ladders, instance counts) and every child, the
   baseline included, is pinned to those CPUs (:class:`PinnedSpace`).
2. A short study (``--n-trials`` per size, its own study ``<name>.size-K`` in the config's
   storage) starts from the references and, from the second size on, the previous size's winner
   rescaled to ``K`` CPUs (:func:`rescale`), so what a smaller size learnt is tried first.
3. The winner is validated in interleaved fresh processes against TensorFlow's defaults pinned to
   the same ``K`` CPUs (:func:`tuner.search.pipeline.validate_once`), and the verdict is the
   search's.
4. Each size becomes a row of the sizes file (:mod:`tuner.tuned.sizes`) with the validation rounds'
   numbers; :func:`recommend` turns the rows into the size and replica count that reach a target
   throughput with the fewest CPUs, the cost per million samples, and the sizes a latency budget
   excludes.

CPU pinning stands in for a pod's CPU limit; a cgroup quota throttles in periods instead
(docs/sizing.md says when that differs and how to measure inside the pod).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import optuna

from tuner.base import cpusets, files, stats
from tuner.base import host as host_mod
from tuner.config import Config, Objective
from tuner.config import budget as budget_mod
from tuner.errors import ConfigError, StudyError
from tuner.knobs import settings as settings_mod
from tuner.knobs import space as space_mod
from tuner.search import measuring, study, verdict
from tuner.search import pipeline as search
from tuner.search import shared as coord
from tuner.search.recommend import cost_per_million, recommend
from tuner.search.validate import BASELINE
from tuner.tuned import sizes

# knobs whose value is a count of CPUs' worth of work: rescaled with the CPU count
SCALED = ("intra_op_parallelism_threads", "tf_data.private_threadpool_size", "instances",
          "env.OMP_NUM_THREADS")
CARRIED_FROM = "carried_from"   # a trial's attribute: the size whose winner it carries


def ladder(usable: int, asked: list[int] | None = None) -> list[int]:
    """The CPU counts to size: ``asked`` (each at most ``usable``), else 1, 2, 4, ... below
    ``usable`` and ``usable`` itself."""
    if asked:
        over = [n for n in asked if n > usable]
        if over:
            raise ConfigError(f"--cpus: {over[0]} is more than the {usable} CPU(s) this process "
                              f"may use; allowed: 1 to {usable} (run size where the CPUs are, "
                              f"or with --cpus equal to a pod's CPU limit inside that pod)")
        return sorted(set(asked))
    counts = []
    n = 1
    while n < usable:
        counts.append(n)
        n *= 2
    return [*counts, usable]


def sized_machine(machine: host_mod.Machine, count: int) -> host_mod.Machine:
    """``machine`` cut down to the first ``count`` CPUs of its pinning order: what a process
    pinned there sees (its cores, NUMA nodes and thread ladders follow ``count``)."""
    cpus = cpusets.cpu_set(machine, count) or list(machine.affinity)
    keep = set(cpus)
    groups = [{**g, "cpus": [c for c in g["cpus"] if c in keep]}
              for g in machine.extra.get("cpu_cores") or []]
    groups = [g for g in groups if g["cpus"]]
    extra = {**machine.extra, **({"cpu_cores": groups} if groups else {})}
    return dataclasses.replace(
        machine, affinity=tuple(cpus), usable_cpus=len(cpus),
        physical_cores=len(groups) if groups else len(cpus),
        numa_nodes=max(1, len({g["node"] for g in groups})) if groups else 1,
        cpu_quota=None if machine.cpu_quota is None else min(machine.cpu_quota, float(count)),
        extra=extra)


@dataclass(frozen=True)
class PinnedSpace(space_mod.Space):
    """A space whose every point, TensorFlow's defaults and the expert rule included, is pinned
    to ``pinned`` CPUs: a size's baseline is the defaults on that many CPUs."""

    pinned: int = 1

    def baseline(self) -> dict[str, Any]:
        return {**super().baseline(), "cpus": self.pinned}

    def expert(self, machine: host_mod.Machine) -> dict[str, Any]:
        return {**super().expert(machine), "cpus": self.pinned}


def size_space(machine: host_mod.Machine, config: Config, pipeline: space_mod.Pipeline
               ) -> PinnedSpace:
    """The space of one size: built for ``machine`` (already cut to the size), ``cpus`` fixed."""
    count = machine.usable_cpus
    space = space_mod.build_space(machine, {**config.space, "cpus": count},
                                  mode=config.workload.mode, pipeline=pipeline,
                                  knobs=config.knobs,
                                  precision=config.accuracy.allows_precision(
                                      config.workload.mode))
    return PinnedSpace(searched=space.searched, fixed=space.fixed,
                       knob_baseline=space.knob_baseline, pinned=count)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def rescale(settings: dict[str, Any], space: space_mod.Space, from_cpus: int, to_cpus: int
            ) -> dict[str, Any]:
    """``settings`` found on ``from_cpus`` CPUs as a point of ``space`` (built for ``to_cpus``):
    the instances scaled by ``to_cpus / from_cpus``, the per-process CPU-sized counts (intra-op
    threads, the tf.data pool, OpenMP threads) by the ratio of one instance's CPUs, each snapped
    to the nearest candidate; other values kept where the space has them, else the
    baseline's."""
    baseline = space.baseline()
    out = dict(baseline)
    out.update(space.fixed)
    # "instances" first: the per-process counts scale with the CPUs of one instance, which
    # stay the same when the instances scale with the machine
    names = sorted(space.searched, key=lambda n: n != "instances")
    factor = to_cpus / from_cpus
    for name in names:
        choices = space.searched[name]
        value = settings.get(name, baseline.get(name))
        number = _as_int(value)
        default = baseline.get(name)
        if name in SCALED and number is not None and number > 0 and value != default:
            wanted = max(1, round(number * factor))
            numeric = [c for c in choices if _as_int(c) is not None and _as_int(c) > 0
                       and type(c) is type(value)]
            if numeric:
                value = min(numeric, key=lambda c: (abs(math.log(_as_int(c) / wanted)),
                                                    _as_int(c)))
        out[name] = value if any(space_mod.same_value(value, c) for c in choices) else default
        if name == "instances":
            before = _as_int(settings.get("instances")) or 1
            after = _as_int(out["instances"]) or 1
            factor = (to_cpus / after) / (from_cpus / before)
    return out


# -- the recommendation -------------------------------------------------------------------------

# -- running the ladder ------------------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    """The ``size`` command's own flags (the config carries the rest)."""

    cpus: list[int] | None = None
    target: float | None = None
    price: float | None = None
    budget: float | None = None
    output: str | None = None
    time_budget: float | None = None    # seconds for the whole run (--budget), shared by sizes


@dataclass
class SizingOutcome:
    path: str
    doc: dict[str, Any]
    backup: str | None
    interrupted: bool = False


def run(config: Config, options: Options, say: measuring.Say = measuring.print_line,
        machine: host_mod.Machine | None = None) -> SizingOutcome:
    """Size ``config``'s workload (see the module docstring). ``machine``: the machine as
    detected (tests pass a simulated one)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return _run(config, options, say, machine or host_mod.detect())
    except (optuna.exceptions.StorageInternalError, _sqlalchemy_error()) as exc:
        from tuner.search import storage

        raise storage.cannot_connect(config.storage, exc) from None
    finally:
        optuna.logging.set_verbosity(verbosity)


def _run(cfg: Config, opts: Options, say: measuring.Say, machine: host_mod.Machine
         ) -> SizingOutcome:
    started = time.monotonic()
    budget_started = budget_mod.clock()
    counts = ladder(machine.usable_cpus, opts.cpus)
    output = opts.output or sizes.default_output(cfg.study_name)
    files.check_writable(output, "--output", "the sizes file", make_folders=True)
    if opts.budget is not None and cfg.objective.percentile is None:
        # each size's search then prefers configurations within the budget
        cfg = cfg.replace(objective=Objective(metric=cfg.objective.metric,
                                              latency_budget_ms=opts.budget))
    say(f"size: {len(counts)} sizes ({', '.join(map(str, counts))} CPUs), "
        f"{cfg.search.n_trials} trials each, then validation per size")
    pre = measuring.Measurer(cfg, machine, say).preflight()
    seconds: dict[str, float] = {"preflight": time.monotonic() - started}
    pipeline = space_mod.Pipeline.from_preflight(pre.result)
    rows: list[dict[str, Any]] = []
    carried: tuple[int, dict[str, Any]] | None = None
    interrupted = False
    for index, count in enumerate(counts):
        say("")
        say(f"== size {count} CPU(s) ({index + 1} of {len(counts)}): CPUs "
            f"{host_mod.format_cpus(cpusets.cpu_set(pre.machine, count) or [])} ==")
        mark = time.monotonic()
        size_cfg = cfg
        if opts.time_budget is not None:
            # what is left, shared equally by the sizes still to run; each size splits its share
            # between search and validation as `search --budget` does
            left = opts.time_budget - (budget_mod.clock() - budget_started)
            share = left / (len(counts) - index)
            say(f"budget: {budget_mod.fmt(max(share, 0))} for this size "
                f"({budget_mod.fmt(max(left, 0))} left for {len(counts) - index} sizes)")
            size_cfg = cfg.replace(search=dataclasses.replace(cfg.search, budget=share))
        try:
            row, carried = _size(size_cfg, pre, pipeline, count, carried, say)
        except ConfigError as exc:
            if opts.time_budget is None or not rows or "--budget" not in str(exc):
                raise
            say(f"budget: stopping before size {count}: {exc}; writing the sizes measured so "
                f"far")
            break
        except KeyboardInterrupt:
            interrupted = True
            say(f"interrupted during size {count}: "
                + ("writing the sizes measured so far" if rows else "nothing to write"))
            break
        seconds[f"size_{count}"] = time.monotonic() - mark
        rows.append(row)
        say(_row_line(row))
    if not rows:
        raise KeyboardInterrupt
    if all(r["verdict"] == "failed" for r in rows):
        raise StudyError(f"size: every size failed; the first: {rows[0].get('reason')}")
    rec = recommend(rows, target=opts.target, price=opts.price, budget=opts.budget)
    if opts.price is not None:
        for row in rows:
            if row["verdict"] != "failed":
                row["cost_per_million"] = cost_per_million(
                    row["cpus"], row["throughput"]["median"], opts.price)
    seconds["total"] = time.monotonic() - started
    doc = document(cfg, pre, counts, rows, rec, seconds, interrupted)
    written = sizes.write(doc, output, keep_backups=cfg.keep_backups)
    return SizingOutcome(path=str(written.path), doc=doc,
                         backup=str(written.backup) if written.backup else None,
                         interrupted=interrupted)


def _size(cfg: Config, pre: measuring.Preflight, pipeline: space_mod.Pipeline, count: int,
          carried: tuple[int, dict[str, Any]] | None, say: measuring.Say
          ) -> tuple[dict[str, Any], tuple[int, dict[str, Any]] | None]:
    """Search, validate and decide one size; its row and what the next size carries. With
    ``cfg.search.budget``, the size's search and validation fit in it
    (:mod:`tuner.config.budget`)."""
    size_started = budget_mod.clock()
    machine = sized_machine(pre.machine, count)
    space = size_space(machine, cfg, pipeline)
    sized_cfg = cfg.replace(space={**cfg.space, "cpus": count},
                            study_name=f"{cfg.study_name}.size-{count}")
    sized_pre = dataclasses.replace(pre, machine=machine, space=space)
    measurer = measuring.Measurer(sized_cfg, machine, say, guard=pre.guard)
    locks = coord.Locks(sized_cfg.storage, sized_cfg.study_name)
    try:
        locks.acquire(search.SEARCH_LOCK, search.SEARCH_LOCK, shared=True, on_wait=lambda: say(
            "waiting: another worker is validating this size's study"))
        st = study.open_study(measurer, sized_pre, locks)
        if carried is not None:
            _enqueue_carried(st, carried, count, say)
        st.announce()
        plan = search.budget_for(st, size_started) if sized_cfg.search.budget is not None \
            else None
        watch = search.BudgetWatch(st, plan) if plan is not None else None
        if st.run_trials(None, callbacks=[watch] if watch else []):
            raise KeyboardInterrupt
        if plan is not None and watch is not None:
            plan.end_search(watch.reason(False))
            say(f"budget: the search stopped ({plan.stopped}); {budget_mod.fmt(plan.left())} "
                f"left for validation")
        try:
            searched = st.searched()
        except StudyError as exc:
            return {"cpus": count, "verdict": "failed", "reason": str(exc),
                    "study": sized_cfg.study_name}, carried
        st.say_best(searched)
        seconds: dict[str, float] = {}
        try:
            validation = search.validate_once(st, locks, seconds, plan)
            decided = verdict.validated(validation, sized_cfg, sized_pre)
        except StudyError as exc:
            return {"cpus": count, "verdict": "failed", "reason": str(exc),
                    "study": sized_cfg.study_name}, carried
    finally:
        locks.close()
    row = _row(count, decided, validation, machine, sized_cfg.study_name, carried)
    best = searched.best.user_attrs.get("settings")
    carry = decided.settings if decided.verdict == "tuned" else best
    return row, ((count, carry) if carry and carry != space.baseline() else carried)


def _enqueue_carried(st: study.Study, carried: tuple[int, dict[str, Any]], count: int,
                     say: measuring.Say) -> None:
    """The previous size's winner, rescaled, as this size's first trial after the references
    (for the structured search, one of its references: its phases may screen from it)."""
    from_cpus, settings = carried
    point = rescale(settings, st.space, from_cpus, count)
    if st.structured is not None:
        params = st.structured.space.params_of(point)
        point = st.structured.space.settings(params)   # thread counts as per-instance choices
        attrs = {CARRIED_FROM: from_cpus, "phase": "reference"}
    else:
        params = {name: point[name] for name in st.space.searched}
        attrs = {CARRIED_FROM: from_cpus}
    if point == st.space.baseline() or point == st.space.expert(st.machine):
        return
    if any(t.user_attrs.get(CARRIED_FROM) == from_cpus for t in st.optuna.get_trials(
            deepcopy=False)):
        return  # a resumed size already has it
    st.optuna.enqueue_trial(params, user_attrs=attrs)
    say(f"  carried from size {from_cpus}: {settings_mod.short(point)} (its winner, rescaled "
        f"to {count} CPUs)")


def _row(count: int, decided: verdict.Verdict, validation: Any, machine: host_mod.Machine,
         study_name: str, carried: tuple[int, dict[str, Any]] | None) -> dict[str, Any]:
    label = validation.winner.label if decided.verdict == "tuned" else BASELINE
    runs = validation.final.get(label) or validation.final[BASELINE]
    values = [m["throughput"]["median"] for m in runs]
    lo, hi = stats.bootstrap_ci(values)
    median = stats.median(values)
    latency = decided.result.get("step_latency_ms") or {}
    result = decided.result
    rejected = result.get("rejected") or {}
    base = result.get("baseline_throughput") or {}
    return {
        "cpus": count,
        "verdict": decided.verdict,
        "settings": settings_mod.nest(decided.settings, machine),
        "throughput": {"median": median, "ci95": [lo, hi], "unit": "samples/s",
                       "per_process": values},
        "per_cpu": median / count,
        "latency_ms": {"p50": latency.get("p50"), "p95": latency.get("p95")},
        "peak_rss_mb": max((m.get("peak_rss_mb") or 0.0) for m in runs) or None,
        "cpu_saturation": stats.median([m["cpu_saturation"] for m in runs]),
        "defaults_throughput": {"median": base.get("median"), "ci95": base.get("ci95")},
        # the validated candidate against the defaults on the same CPUs, adopted or not
        "vs_defaults": {key: (result if decided.verdict == "tuned" else rejected).get(key)
                        for key in ("speedup", "speedup_ci95", "p_value")},
        "rounds": len(runs),
        # the accuracy guard's block of the row's settings (reduced precision needs it)
        **({"accuracy": result["accuracy"]} if result.get("accuracy") else {}),
        "study": study_name,
        **({CARRIED_FROM: carried[0]} if carried else {}),
    }


def _row_line(row: dict[str, Any]) -> str:
    if row["verdict"] == "failed":
        return f"size {row['cpus']}: FAILED: {row.get('reason')}"
    tp = row["throughput"]
    lat = row["latency_ms"]
    p95 = f"{lat['p95']:.1f}" if lat.get("p95") is not None else "-"
    return (f"size {row['cpus']}: {row['verdict']}, {tp['median']:.1f} samples/s "
            f"(95% CI {tp['ci95'][0]:.1f}-{tp['ci95'][1]:.1f}), {row['per_cpu']:.1f} per CPU, "
            f"p95 {p95} ms, settings "
            f"{settings_mod.short(settings_mod.flatten(row['settings']))}")


def summary(rows: list[dict[str, Any]], rec: dict[str, Any]) -> str:
    done = [r for r in rows if r["verdict"] != "failed"]
    return (f"{len(done)} of {len(rows)} sizes measured ("
            f"{', '.join(str(r['cpus']) for r in rows)} CPUs); {rec.get('summary', '')}")


def document(cfg: Config, pre: measuring.Preflight, counts: list[int],
             rows: list[dict[str, Any]], rec: dict[str, Any], seconds: dict[str, float],
             interrupted: bool) -> dict[str, Any]:
    """The sizes file's content."""
    doc: dict[str, Any] = {
        "format_version": sizes.FORMAT_VERSION,
        "kind": sizes.KIND,
        "created": coord.now(),
        "summary": summary(rows, rec),
        "ladder": counts,
        "sizes": rows,
        "recommendation": rec,
        "workload": {"model": cfg.workload.model, "data": cfg.workload.data,
                     "mode": cfg.workload.mode, "batch_size": pre.batch_size,
                     "config": os.path.abspath(cfg.path)},
        "objective": {"metric": cfg.objective.metric,
                      "latency_budget_ms": cfg.objective.latency_budget_ms},
        "machine": pre.machine.as_dict(),
        "method": "per size: the process pinned to that many CPUs (the first of the pinning "
                  "order); a short search, then the winner against TensorFlow's defaults on the "
                  "same CPUs in interleaved fresh processes; figures from those final rounds",
        "search": {"n_trials_per_size": cfg.search.n_trials, "sampler": cfg.search.sampler,
                   "seconds": seconds,
                   "measure": dataclasses.asdict(cfg.measure),
                   "validate": {"rounds": cfg.validate.rounds,
                                "candidates": cfg.validate.candidates},
                   "studies": [f"{cfg.study_name}.size-{n}" for n in counts],
                   # what settings.knobs of a row may hold (readers refuse anything else)
                   **({"declared_knobs": cfg.knobs} if cfg.knobs else {})},
    }
    if interrupted:
        measured = {r["cpus"] for r in rows}
        doc["interrupted"] = (f"stopped before sizes "
                              f"{', '.join(str(n) for n in counts if n not in measured)}")
    return doc


def _sqlalchemy_error() -> type[BaseException]:
    import sqlalchemy.exc

    return sqlalchemy.exc.SQLAlchemyError
