"""What a search says while its trials run: the opening lines, one line per trial with the best so
far and the time left, the end of the structured search's screening, and the table of the best
trials. Plain text from plain data; the study decides when to say it."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from tuner.base.render import LEGEND_DEFAULT, SPREAD, plain
from tuner.child import guard
from tuner.knobs import settings as settings_mod
from tuner.knobs import space as space_mod


def fmt_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """The time a search has left: this run's trials still to come (at the mean wall time of
    those measured so far, or the preflight's estimate of one child) and the validation."""

    def __init__(self, config: Any, child_seconds: float) -> None:
        v = config.validate
        self.n_trials = config.search.n_trials
        self.child_seconds = child_seconds
        self.validation_estimate = child_seconds * (
            v.candidates * v.screen_rounds * (v.candidates > 1) + 2 * v.rounds)
        self.trial_walls: list[float] = []
        self.added = 0

    def measured(self, wall_seconds: float) -> None:
        self.trial_walls.append(wall_seconds)

    def seconds_left(self) -> float:
        walls = self.trial_walls
        mean = sum(walls) / len(walls) if walls else self.child_seconds
        return (self.n_trials - self.added) * mean + self.validation_estimate

    def trial_line(self, t: FrozenTrial, best: FrozenTrial | None) -> str:
        """The line of a finished trial of this run (counted as added)."""
        self.added += 1
        role = t.user_attrs.get("role")
        phase = t.user_attrs.get("phase")
        head = (f"trial {t.number:>3}{f' [{phase}]' if phase else ''}  "
                f"{settings_mod.short(t.user_attrs.get('settings') or {})}  "
                f"{f'[{role}] ' if role else ''}")
        if t.state == TrialState.COMPLETE and "duplicate_of" in t.user_attrs:
            body = (f"duplicate of #{t.user_attrs['duplicate_of']}: not measured, "
                    f"{t.value:.1f} as measured there")
        elif t.state == TrialState.COMPLETE:
            tp = t.user_attrs["throughput"]
            body = (f"{tp['median']:>10.1f} samples/s (spread {tp['rel_spread'] * 100:.1f}%)  "
                    f"sat {t.user_attrs.get('cpu_saturation', float('nan')):.2f}")
            if (t.user_attrs.get("settings") or {}).get("batch_size") is not None \
                    and t.user_attrs.get("step_latency_p50_ms") is not None:
                # with the batch size searched, what each caller waits matters too
                body += f"  {t.user_attrs['step_latency_p50_ms']:.1f} ms/batch (p50)"
            if (t.user_attrs.get("accuracy_excess") or 0.0) > 0:
                body += (f"  INFEASIBLE: outputs beyond the accuracy limit ("
                         f"{guard.describe_deviation(t.user_attrs.get('accuracy'), 'rel_l2')})")
        elif t.state == TrialState.PRUNED:
            body = f"PRUNED  {plain(t.user_attrs.get('prune_reason', ''))}"
        else:
            # a child's reason (and, in a shared study, another worker's): one line, inert
            body = f"FAIL  {plain(t.user_attrs.get('fail_reason', 'unknown reason'))}"
        best_text = f"  best {best.value:.1f} (#{best.number})" if best else ""
        return f"{head}{body}{best_text}  ~{fmt_seconds(self.seconds_left())} left"


def opening(config: Any, machine: Any, space: Any, sampler: str, prior: int,
            progress: Progress, where: str, plan: dict[str, Any] | None) -> list[str]:
    """The study, its space and estimate, the machine, and the structured search's ``plan``."""
    lines = [
        f"study {config.study_name!r} in {where}: "
        f"{'resuming with ' + str(prior) + ' trials' if prior else 'new'}; sampler "
        f"{sampler}, space of {space.size} points over "
        f"{', '.join(space.searched) or 'nothing'}; {config.search.n_trials} trials of "
        f"~{progress.child_seconds:.0f} s, then ~{fmt_seconds(progress.validation_estimate)} "
        f"of validation",
        f"machine: {machine.cpu_model}, {machine.usable_cpus} usable CPUs (visible "
        f"{machine.visible_cpus}, "
        f"{'no CPU quota' if machine.cpu_quota is None else f'quota {machine.cpu_quota:g} CPUs'}"
        f"), TensorFlow {machine.tf_version}"]
    if plan is not None:
        dims = plan["dims"]
        lines.append(f"structured search: baseline x{1 + plan['baseline_replicates']} (noise), "
                     f"layout ({', '.join(dims['layout']) or 'nothing'}), "
                     + (f"compute, alone and combined ({', '.join(dims['compute'])}), "
                        if dims.get("compute") else "")
                     + (f"declared knobs ({', '.join(dims['knobs'])}), " if dims.get("knobs")
                        else "")
                     + f"threads per instance "
                     f"({', '.join(dims['threads']) or 'nothing'}), data "
                     f"({', '.join(dims['data']) or 'nothing'}), then TPE over what moved "
                     f"beyond noise; ablation of the leader in the last trials")
    lines.append(f"(settings: {LEGEND_DEFAULT}; {SPREAD})")
    lines.extend(accuracy_lines(config, machine))
    return lines


def accuracy_lines(config: Any, machine: Any) -> list[str]:
    """What the accuracy guard holds every trial to, and, without a tolerance on a CPU that
    could use reduced precision, how to opt in."""
    acc, mode = config.accuracy, config.workload.mode
    if mode == "data" or (mode == "train" and not acc.train):
        levers = space_mod.precision_levers(machine, mode) if mode == "train" else []
        return [f"reduced precision: this CPU could use {', '.join(levers)}; in train mode "
                f"they are searched only with accuracy: {{train: true, tolerance: 0.05}}"] \
            if levers else []
    metric, bound = guard.limit(acc.metric, acc.tolerance)
    if acc.tolerance is not None:
        return [f"accuracy guard: every trial's outputs on {acc.samples} fixed samples against "
                f"TensorFlow's defaults; {metric} {'>=' if metric == 'top1' else '<='} {bound:g}"
                f" (tolerance {acc.tolerance:g}); reduced precision searched"]
    line = (f"accuracy guard: every trial's outputs on {acc.samples} fixed samples against "
            f"TensorFlow's defaults; float noise only ({metric} <= {bound:g})")
    levers = space_mod.precision_levers(machine, mode)
    if levers:
        flags = ", ".join(sorted(machine.cpu_flags & {"avx512_bf16", "amx_bf16", "avx512_fp16",
                                                      "amx_fp16"}))
        return [line, f"reduced precision not searched: this CPU ({flags}) could use "
                      f"{', '.join(levers)}; to opt in, give a tolerance: --accuracy-tolerance "
                      f"0.05 (or accuracy: {{tolerance: 0.05}} in the config)"]
    return [line]


def screening_done(state: dict[str, Any]) -> str:
    """The structured search's screening as it ends: noise, effects, what TPE searches."""
    effects = ", ".join(f"{k} {v:.2f}x" for k, v in state["effects"].items())
    return (f"  screening done: noise ±{state['noise'] * 100:.1f}% (the baseline across "
            f"processes); effects {effects}; TPE over {', '.join(state['matter'])}, the rest "
            f"fixed at the leader's values")


def summarize_trials(trials: Iterable[FrozenTrial], limit: int = 10) -> list[str]:
    """A small end-of-run table of the best trials."""
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE),
                  key=lambda t: t.value, reverse=True)[:limit]
    lines = [f"{'trial':>5}  {'samples/s':>10}  {'spread':>7}  {'sat':>5}  settings"]
    for t in done:
        tp = t.user_attrs.get("throughput", {})
        role = t.user_attrs.get("role")
        lines.append(f"{t.number:>5}  {t.value:>10.1f}  "
                     f"{tp.get('rel_spread', math.nan) * 100:>6.1f}%"
                     f"  {t.user_attrs.get('cpu_saturation', math.nan):>5.2f}  "
                     f"{settings_mod.short(t.user_attrs.get('settings', {}))}"
                     f"{'  [' + role + ']' if role else ''}")
    return lines
