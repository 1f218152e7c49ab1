"""The verdict and the tuned document.

The winner's speedup and interval come from the final validation rounds alone, and unless it is
faster than TensorFlow's defaults beyond noise (and within the latency budget), the verdict keeps
the defaults. A search interrupted before validation writes its best trial as "unvalidated".
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

import tuner.knobs as knobs
from tuner.base import host as host_mod
from tuner.base import stats
from tuner.base.urls import mask_url
from tuner.child import guard
from tuner.config import Config
from tuner.errors import StudyError
from tuner.knobs import settings as settings_mod
from tuner.search import measuring
from tuner.search import shared as coord
from tuner.search.measuring import Preflight
from tuner.search.outcome import Searched
from tuner.search.validate import BASELINE, POWER, TARGET_SPEEDUP, Validation
from tuner.tuned import store


@dataclass(frozen=True)
class Verdict:
    """``verdict`` is "tuned", "defaults" or "unvalidated"; ``settings`` the chosen flat
    settings; ``result`` and ``validation`` the tuned file's blocks of those names."""

    verdict: str
    settings: dict[str, Any]
    result: dict[str, Any]
    validation: dict[str, Any]


def unvalidated(searched: Searched, config: Config | None = None) -> Verdict:
    """The best trial against the baseline trial: single-process measurements. With
    ``config``, the best feasible one (within the latency budget and the accuracy limit)."""
    best, base = searched.best, searched.baseline
    if config is not None:
        feasible = [t for t in searched.trials if t.state == TrialState.COMPLETE
                    and measuring.feasible(t.user_attrs, config.objective, config.accuracy)]
        best = max(feasible, key=lambda t: t.value, default=best)
    return Verdict("unvalidated", best.user_attrs["settings"], {
        "throughput": _trial_throughput(best),
        "baseline_throughput": _trial_throughput(base) if base else None,
        "speedup": (best.value / base.value) if base else None,
        "speedup_ci95": None, "p_value": None, "significant": False,
        "cpu_saturation": best.user_attrs.get("cpu_saturation"),
        "note": "search interrupted before validation: these are single-process "
                "measurements; run the same command again to resume and validate",
        **_accuracy_of(config, [best.user_attrs]),
    }, {"done": False})


def _accuracy_of(config: Config | None, runs: list[dict[str, Any]]) -> dict[str, Any]:
    block = accuracy_block(config, runs) if config is not None else None
    return {"accuracy": block} if block is not None else {}


def validated(v: Validation, config: Config, pre: Preflight) -> Verdict:
    """The verdict of the final rounds (see the module docstring)."""
    cfg, machine = config.validate, pre.machine

    base_runs = v.final.get(BASELINE, [])
    if not base_runs:
        raise StudyError("validation: no baseline measurement succeeded")
    label = v.winner.label if v.winner is not None else None
    win_runs = v.final.get(label, []) if label else []
    doc = _validation_block(v, config, machine)
    baseline_block = _throughput_block([m["throughput"]["median"] for m in base_runs])
    base_sat = stats.median([m["cpu_saturation"] for m in base_runs])
    defaults = pre.space.baseline()
    if v.winner is None:
        # nothing was compared: no speedup, interval or p-value exists to record
        return Verdict("defaults", defaults, {
            "throughput": baseline_block, "baseline_throughput": baseline_block,
            "speedup": None, "speedup_ci95": None, "p_value": None, "significant": False,
            "cpu_saturation": base_sat, "baseline_cpu_saturation": base_sat,
            "step_latency_ms": _median_latency(base_runs), "note": "no candidate to validate",
            **_accuracy_of(config, base_runs)}, doc)
    if label in v.failures:
        # A run that fails during validation is a verdict on the candidate, whatever its other
        # runs measured: it is never adopted, and no test is made of the rounds it survived
        # (its looks' levels are spent; another test would be an unplanned look).
        return _failed_in_validation(v, config, machine, doc, defaults, baseline_block,
                                     base_sat, base_runs, win_runs)
    level = level_of(v, config)
    comparison = judge(v, config)
    winner = {
        "trial": v.winner.number,
        "settings": settings_mod.nest(v.winner.settings, machine),
        "throughput": _throughput_block([m["throughput"]["median"] for m in win_runs]),
        "speedup": comparison["speedup"], "speedup_ci95": comparison["speedup_ci95"],
        "p_value": comparison["p_value"], "significant": comparison["significant"],
        "rejected_because": comparison["reason"] or None,
        "cpu_saturation": stats.median([m["cpu_saturation"] for m in win_runs]),
        "step_latency_ms": _median_latency(win_runs),
    }
    doc["winner"] = winner
    if not comparison["significant"] and v.noise_sd is not None:
        # what this validation could have found: the smallest win it confirms 4 times in 5
        doc["detectable_speedup"] = round(stats.detectable_speedup(
            v.noise_sd, min(len(win_runs), len(base_runs)), level, power=POWER,
            min_speedup=cfg.min_speedup), 4)
    if comparison["significant"]:
        return Verdict("tuned", v.winner.settings, {
            "throughput": winner["throughput"], "baseline_throughput": baseline_block,
            "speedup": comparison["speedup"], "speedup_ci95": comparison["speedup_ci95"],
            "p_value": comparison["p_value"], "significant": True,
            "cpu_saturation": winner["cpu_saturation"], "baseline_cpu_saturation": base_sat,
            "step_latency_ms": winner["step_latency_ms"],
            "baseline_step_latency_ms": _median_latency(base_runs),
            "input_wait": stats.median([m["input_wait"] for m in win_runs]),
            **_first_steps(win_runs, base_runs), **_advice(v.winner.settings),
            **_accuracy_of(config, win_runs)}, doc)
    # the rejected candidate's measured numbers, where a tuned file has them (result.speedup,
    # speedup_ci95, p_value: docs/tuned-file.md), and again under result.rejected with why
    return Verdict("defaults", defaults, {
        "throughput": baseline_block, "baseline_throughput": baseline_block,
        "speedup": winner["speedup"], "speedup_ci95": winner["speedup_ci95"],
        "p_value": winner["p_value"], "significant": False,
        "cpu_saturation": base_sat, "baseline_cpu_saturation": base_sat,
        "step_latency_ms": _median_latency(base_runs),
        "input_wait": stats.median([m["input_wait"] for m in base_runs]),
        **_first_steps(base_runs, []),   # the defaults are the baseline: said once
        "rejected": {k: winner[k] for k in ("trial", "settings", "speedup", "speedup_ci95",
                                            "p_value", "rejected_because")},
        **_accuracy_of(config, base_runs)}, doc)


def accuracy_block(config: Config, runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``result.accuracy``: the guard's metric, tolerance (None: the float-noise limit), limit,
    samples, and the adopted configuration's deviation: its worst over ``runs`` (each
    measurement's summary); None when the guard measured nothing (a data-only workload)."""
    measured = [m["accuracy"] for m in runs if isinstance(m.get("accuracy"), dict)
                and not m["accuracy"].get("error")]
    if not measured:
        return None
    acc = config.accuracy
    metric, bound = guard.limit(acc.metric, acc.tolerance)

    def worst(key: str, floor: bool = False) -> float | None:
        values = [d.get(key) for d in measured]
        if any(v is None for v in values):
            return None
        return min(values) if floor else max(values)

    every = {"rel_l2": worst("rel_l2"), "max_abs": worst("max_abs"),
             "top1": worst("top1", floor=True)}
    if every[metric] is None and metric == "top1":   # not a batch of scores: judged on rel_l2
        metric, bound = "rel_l2", guard.limit("rel_l2", acc.tolerance)[1]
    return {"metric": metric, "tolerance": acc.tolerance, "deviation": every[metric],
            "limit": bound, "samples": measured[0].get("samples"),
            "measured": every, "processes": len(measured)}


def infeasible(trials: list[FrozenTrial]) -> list[dict[str, Any]]:
    """The trials the accuracy guard ruled out (beyond its limit), with their deviation."""
    rows = []
    for t in trials:
        if t.state == TrialState.COMPLETE and (t.user_attrs.get("accuracy_excess") or 0) > 0 \
                and "duplicate_of" not in t.user_attrs:
            deviation = t.user_attrs.get("accuracy") or {}
            rows.append({"trial": t.number,
                         "settings": settings_mod.short(t.user_attrs.get("settings") or {}),
                         "deviation": {k: deviation.get(k) for k in guard.METRICS},
                         "throughput": (t.user_attrs.get("throughput") or {}).get("median")})
    return rows


FAILED_IN_VALIDATION = "failed during validation"


def _failed_in_validation(v: Validation, config: Config, machine: host_mod.Machine,
                          doc: dict[str, Any], defaults: dict[str, Any],
                          baseline_block: dict[str, Any], base_sat: float,
                          base_runs: list[dict[str, Any]], win_runs: list[dict[str, Any]]
                          ) -> Verdict:
    """The defaults, because the winner failed in a final round: its failure recorded, and what
    its rounds before the failure measured (the speedup and its interval, descriptive; no
    p-value, since no test is made)."""
    assert v.winner is not None
    reason = f"{FAILED_IN_VALIDATION}: {v.failures[v.winner.label]}"
    speedup = ci = None
    if len(win_runs) >= 2:
        cand = [measuring.score(m, config.objective) for m in win_runs]
        base = [measuring.score(m, config.objective) for m in base_runs]
        speedup = stats.median(cand) / stats.median(base)
        ci = list(stats.ratio_ci(cand, base))
    winner = {
        "trial": v.winner.number, "settings": settings_mod.nest(v.winner.settings, machine),
        "throughput": _throughput_block([m["throughput"]["median"] for m in win_runs])
        if win_runs else None,
        "speedup": speedup, "speedup_ci95": ci, "p_value": None, "significant": False,
        "rejected_because": reason, "failed": v.failures[v.winner.label],
        "failed_after_rounds": len(win_runs),
    }
    doc["winner"] = winner
    return Verdict("defaults", defaults, {
        "throughput": baseline_block, "baseline_throughput": baseline_block,
        "speedup": speedup, "speedup_ci95": ci, "p_value": None, "significant": False,
        "cpu_saturation": base_sat, "baseline_cpu_saturation": base_sat,
        "step_latency_ms": _median_latency(base_runs),
        "input_wait": stats.median([m["input_wait"] for m in base_runs]),
        "note": reason,
        "rejected": {k: winner[k] for k in ("trial", "settings", "speedup", "speedup_ci95",
                                            "p_value", "rejected_because", "failed")}}, doc)


def level_of(v: Validation, config: Config) -> float:
    """The level the final rounds are tested at: that of the look they stopped at (the looks
    together spend ``validate.alpha``)."""
    return v.level if v.level is not None else config.validate.alpha


def judge(v: Validation, config: Config) -> dict[str, Any]:
    """The speedup test of ``v``'s final rounds (winner against the baseline, one score per
    process) at :func:`level_of`, as :func:`stats.speedup_test` gives it; not significant when
    the rounds stopped between planned looks (no level is left to test them at) or when the
    winner's median p95 step latency is over the budget. What the verdict of a search and
    ``python -m tuner check`` both decide by (a winner with a failed run is never judged: see
    :func:`validated`)."""
    cfg = config.validate
    win_runs = v.final.get(v.winner.label, []) if v.winner is not None else []
    base_runs = v.final.get(BASELINE, [])
    comparison = stats.speedup_test(
        [measuring.score(m, config.objective) for m in win_runs],
        [measuring.score(m, config.objective) for m in base_runs],
        alpha=level_of(v, config), min_speedup=cfg.min_speedup)
    at_look = bool(v.looks) and v.looks[-1]["rounds"] == min(len(win_runs), len(base_runs))
    if not at_look and comparison["significant"]:
        # stopped between looks (the futility rule): the numbers are measured, but no level is
        # left to test them at
        return {**comparison, "significant": False,
                "reason": v.stopped_early or "stopped before a planned look"}
    budget = config.objective.latency_budget_ms
    p95 = _median_latency(win_runs).get("p95")
    if comparison["significant"] and budget is not None and p95 is not None and p95 > budget:
        comparison = {**comparison, "significant": False,
                      "reason": f"its p95 step latency in validation, {p95:.2f} ms, is over "
                                f"the {budget:g} ms budget"}
    return comparison


def _validation_block(v: Validation, config: Config, machine: host_mod.Machine
                      ) -> dict[str, Any]:
    """How the validation ran, and each candidate's scores (the winner's block follows)."""
    cfg = config.validate
    return {
        "done": True,
        "method": "fresh process per measurement; configurations interleaved, order rotated "
                  "each round; winner picked in screening rounds, speedup from final rounds",
        "screen_rounds": cfg.screen_rounds if len(v.candidates) > 1 else 0,
        "rounds": len(v.final.get(BASELINE, [])),
        # the rounds planned when it stopped: the first look's, or the extended plan's
        "max_rounds": v.plan[-1] if v.plan else cfg.rounds,
        **({"stopped_early": v.stopped_early} if v.stopped_early else {}),
        **({"sequential": {
            "design": "group-sequential, Lan-DeMets alpha spending of Pocock type",
            "looks": v.looks, "planned_looks": v.plan, "round_cap": cfg.max_rounds,
            "noise_cv": round(stats.cv_of(v.noise_sd), 4) if v.noise_sd is not None else None,
            "sized_for": {"speedup": TARGET_SPEEDUP, "power": POWER}}} if v.plan else {}),
        "alpha": cfg.alpha,
        "min_speedup": cfg.min_speedup,
        "candidates": [
            {"trial": c.number,
             "settings": settings_mod.nest(c.settings, machine),
             "search_score": c.search_score,
             "screen_score": [measuring.score(m, config.objective)
                              for m in v.screening.get(c.label, [])],
             **({"failed": v.failures[c.label]} if c.label in v.failures else {})}
            for c in v.candidates],
    }


def summary(verdict: Verdict, config: Config) -> str:
    """The tuned file's one-line summary."""
    result, pct = verdict.result, config.objective.percentile
    if verdict.verdict == "tuned":
        better = f"{pct} step latency {result['speedup']:.3f}x lower" if pct else \
            f"{result['speedup']:.3f}x faster"
        return (f"{better} than TensorFlow's defaults (95% CI {result['speedup_ci95'][0]:.3f}-"
                f"{result['speedup_ci95'][1]:.3f}, p={result['p_value']:.3g})")
    if verdict.verdict == "defaults" and \
            str(verdict.result.get("note") or "").startswith(FAILED_IN_VALIDATION):
        return (f"keeping TensorFlow's defaults: the best candidate (trial "
                f"{result['rejected']['trial']}) {result['note']}")
    if verdict.verdict == "defaults":
        detectable = verdict.validation.get("detectable_speedup")
        return ("no configuration was faster than TensorFlow's defaults beyond noise; keeping "
                "the defaults" + (f" (no win of {_percent(detectable)}% or more: the smallest "
                                  f"these rounds would have confirmed with {POWER:.0%} power)"
                                  if detectable else ""))
    return "search interrupted: best configuration so far, not validated"


def _percent(speedup: float) -> str:
    """1.083 -> "9": the gain in whole percent, rounded up (a claim of "no win of N%" must not
    understate what could have been missed)."""
    return str(math.ceil(round((speedup - 1) * 100, 6)))


def document(config: Config, pre: Preflight, searched: Searched, verdict: Verdict,
             seconds: dict[str, float]) -> dict[str, Any]:
    """The tuned file's content. ``seconds``: this run's wall time per phase."""
    cfg, machine = config, pre.machine
    best, base, expert = searched.best, searched.baseline, searched.expert
    return {
        "format_version": store.FORMAT_VERSION,
        "created": coord.now(),
        "verdict": verdict.verdict,
        "summary": summary(verdict, cfg),
        "settings": settings_mod.nest(verdict.settings, machine),
        "workload": {"model": cfg.workload.model, "data": cfg.workload.data,
                     "mode": cfg.workload.mode, "batch_size": pre.batch_size,
                     "config": os.path.abspath(cfg.path)},
        "objective": {"metric": cfg.objective.metric,
                      "latency_budget_ms": cfg.objective.latency_budget_ms,
                      "means": cfg.objective.describe() + (
                          "; speedup = baseline latency / tuned latency"
                          if cfg.objective.percentile else "")},
        "machine": machine.as_dict(),
        "result": verdict.result,
        "validation": verdict.validation,
        "search": {
            "best_trial": {"number": best.number,
                           "settings": settings_mod.nest(best.user_attrs["settings"],
                                                               machine),
                           "throughput": _trial_throughput(best)},
            "expert_rule": {
                "settings": settings_mod.nest(pre.space.expert(machine), machine),
                "throughput": _trial_throughput(expert) if expert else None,
                "speedup_in_search": (expert.value / base.value) if expert and base else None,
            },
            "space": pre.space.describe(),
            **({"batch_sizes": batch_sizes(searched.trials)}
               if knobs.BATCH_SIZE.name in pre.space.searched else {}),
            # trials the accuracy guard ruled out: never candidates, however fast
            **({"accuracy_infeasible": rows} if (rows := infeasible(searched.trials))
               else {}),
            "sampler": searched.sampler,
            # the declared knobs' names and values: all settings.knobs may hold (readers
            # refuse anything else)
            **({"declared_knobs": cfg.knobs} if cfg.knobs else {}),
            # this run's wall time per phase (a resumed study's earlier runs not included)
            "seconds": seconds,
            "measure": {"warmup_seconds": cfg.measure.warmup_seconds,
                        "window_seconds": cfg.measure.window_seconds,
                        "windows": cfg.measure.windows},
        },
        "study": _study_block(cfg, machine, searched),
    }


def batch_sizes(trials: list[FrozenTrial]) -> list[dict[str, Any]]:
    """Per batch size searched, its best complete trial: throughput (samples/s) and the latency
    of one batch (one step), since a larger batch buys throughput with each caller's wait."""
    best: dict[int, FrozenTrial] = {}
    for t in trials:
        size = (t.user_attrs.get("settings") or {}).get(knobs.BATCH_SIZE.name)
        if t.state != TrialState.COMPLETE or size is None or "throughput" not in t.user_attrs:
            continue
        if size not in best or t.user_attrs["throughput"]["median"] > \
                best[size].user_attrs["throughput"]["median"]:
            best[size] = t
    rows = []
    for size, t in sorted(best.items()):
        latency = t.user_attrs.get("step_latency_ms") or {}
        rows.append({"batch_size": size, "trial": t.number,
                     "throughput": t.user_attrs["throughput"]["median"],
                     "batch_latency_ms": {k: latency[k] for k in ("p50", "p95") if k in latency}})
    return rows


def _study_block(cfg: Config, machine: host_mod.Machine, searched: Searched
                 ) -> dict[str, Any]:
    trials = searched.trials
    hosts = sorted({t.user_attrs[coord.HOST_ATTR] for t in trials
                    if coord.HOST_ATTR in t.user_attrs})
    return {"name": cfg.study_name, "storage": mask_url(cfg.storage),
            "n_trials": len(trials), **coord.state_counts(trials),
            # workers that measured these trials (several when the study is shared)
            "hosts": hosts,
            **({"machine_id": coord.machine_id(machine.fingerprint()),
                "other_machine_trials": searched.other_machine_trials}
               if searched.other_machine_trials else {})}


def _throughput_block(values: list[float]) -> dict[str, Any]:
    lo, hi = stats.bootstrap_ci(values)
    return {"median": stats.median(values), "ci95": [lo, hi], "unit": "samples/s",
            "per_process": values}


def _trial_throughput(t: FrozenTrial | None) -> dict[str, Any] | None:
    if t is None or "throughput" not in t.user_attrs:
        return None
    tp = t.user_attrs["throughput"]
    return {"median": tp["median"], "window_range": [tp["min"], tp["max"]], "unit": "samples/s",
            "windows": tp.get("windows")}


def _first_steps_block(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    blocks = [m["first_steps"] for m in runs if m.get("first_steps")]
    if not blocks:
        return None
    return {"steps": int(stats.median([b["steps"] for b in blocks])),
            "seconds": round(stats.median([b["seconds"] for b in blocks]), 3),
            "extra_seconds": round(stats.median([b["extra_seconds"] for b in blocks]), 3),
            "processes": len(blocks)}


def _first_steps(runs: list[dict[str, Any]], base_runs: list[dict[str, Any]]
                 ) -> dict[str, Any]:
    """What the first steps of each process cost in validation (medians over its processes):
    tracing, and with XLA on the compilation, which a short job or a server's first requests
    pay. Optional fields: absent when the children did not report them."""
    first, base = _first_steps_block(runs), _first_steps_block(base_runs)
    return {**({"first_steps": first} if first else {}),
            **({"baseline_first_steps": base} if base else {})}


def _advice(flat: dict[str, Any]) -> dict[str, Any]:
    """What the adopted settings call for that no file can carry (``result.advice``)."""
    value = flat.get(knobs.XLA.name)
    if not knobs.XLA.on(value):
        return {}
    return {"advice": [knobs.XLA.jit_advice(), knobs.XLA.cache_advice(value)]}


def _median_latency(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("p50", "p90", "p95", "p99")
    return {k: stats.median([m["step_latency_ms"][k] for m in runs])
            for k in keys if all(k in m["step_latency_ms"] for m in runs)}
