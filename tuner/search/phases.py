"""The structured search's plan and what it reads: the phases, the per-instance thread parameters
(``StructuredSpace``), a trial as the plan sees it (``Seen``), a step, and the reading of a
study's trials (``TrialReader``: the noise, the means, the parsimonious leader)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

import tuner.knobs as knobs
from tuner.base import cpusets
from tuner.base import host as host_mod
from tuner.knobs import space as space_mod

PHASES = ("reference", "noise", "layout", "compute", "knobs", "threads", "data", "tpe",
          "ablation")
SCREENED = ("layout", "compute", "knobs", "threads", "data")   # the screening phases, in order
REPLICATE = "replicate"           # a trial's role: the same configuration measured on purpose
STUDY_ATTR = "tuner.structured"   # the study's plan and what screening judged

# The per-instance thread choices: TensorFlow's default, one thread, half, all and twice the
# CPUs of one instance.
THREAD_LABELS = ("default", "1", "c/2", "c", "2c")
PER_INSTANCE = {"intra_op_parallelism_threads": "intra_op_per_instance",
                "inter_op_parallelism_threads": "inter_op_per_instance"}
LAYOUT = ("instances", "cpus", "allocator")
# at most this many values of one tf.data / declared knob are screened; TPE may try the rest
SCREEN_VALUES = 3


def per_instance_cpus(settings: dict[str, Any], machine: host_mod.Machine) -> int:
    """The CPUs one process of ``settings`` runs on."""
    count = settings.get("instances") or 1
    cpus = settings.get("cpus")
    if count > 1:
        return min(len(s) for s in cpusets.instance_sets(machine, count, cpus))
    if cpus:
        return len(cpusets.cpu_set(machine, cpus) or []) or machine.usable_cpus
    return max(1, machine.usable_cpus)


def thread_count(label: str, cpus: int) -> int:
    return {"default": 0, "1": 1, "c/2": max(1, cpus // 2), "c": cpus, "2c": 2 * cpus}[label]


def settings_key(settings: dict[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


class StructuredSpace:
    """The study's parameters in structured mode: the space's searched knobs, thread counts as
    per-instance choices (unless the config narrowed them to its own absolute list)."""

    def __init__(self, space: space_mod.Space, machine: host_mod.Machine) -> None:
        self.space, self.machine = space, machine
        self.relative: dict[str, str] = {}     # knob -> its per-instance parameter
        self.params: dict[str, list[Any]] = {}
        for name, values in space.searched.items():
            if name in PER_INSTANCE and values == _default_list(name, machine):
                self.relative[name] = PER_INSTANCE[name]
                self.params[PER_INSTANCE[name]] = list(THREAD_LABELS)
            else:
                self.params[name] = list(values)
        self.distributions = {n: CategoricalDistribution(v) for n, v in self.params.items()}

    def settings(self, params: dict[str, Any]) -> dict[str, Any]:
        """Parameters -> the flat absolute settings a trial measures."""
        plain = {n: v for n, v in params.items() if n in self.space.searched}
        settings = self.space.settings(plain)
        cpus = per_instance_cpus(settings, self.machine)
        for name, param in self.relative.items():
            settings[name] = thread_count(params[param], cpus)
        return settings

    def params_of(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Absolute settings -> parameters (a thread count no label gives maps to the nearest)."""
        params = {n: settings[n] for n in self.params if n in settings}
        cpus = per_instance_cpus(settings, self.machine)
        for name, param in self.relative.items():
            value = settings[name] or 0
            params[param] = min(THREAD_LABELS,
                                key=lambda lab: (abs(thread_count(lab, cpus) - value),
                                                 THREAD_LABELS.index(lab)))
        return params

    def key(self, params: dict[str, Any]) -> str:
        return settings_key(self.settings(params))

    def sensible(self, params: dict[str, Any]) -> bool:
        """Both pools above one instance's CPUs oversubscribe it twice over: never proposed."""
        if len(self.relative) < 2:
            return True
        settings = self.settings(params)
        cpus = per_instance_cpus(settings, self.machine)
        return not all(settings[name] > cpus for name in self.relative)

    def phase_dims(self) -> dict[str, list[str]]:
        layout = [n for n in self.params if n in LAYOUT]
        compute = [n for n in self.params if n in knobs.KNOBS and knobs.KNOBS[n].compute]
        declared = [n for n in self.params if knobs.DeclaredKnob.owns(n)]
        threads = [n for n in self.params
                   if n in PER_INSTANCE.values() or n in PER_INSTANCE]
        data = [n for n in self.params if n not in layout + compute + declared + threads]
        return {"layout": layout, "compute": compute, "knobs": declared, "threads": threads,
                "data": data}

    def knob_of(self, param: str) -> str:
        return next((k for k, p in self.relative.items() if p == param), param)


def _default_list(name: str, machine: host_mod.Machine) -> list[Any]:
    """A thread knob's candidates when the config does not narrow them (as build_space makes)."""
    values = list(knobs.KNOBS[name].candidates(machine))
    for ref in (knobs.default_settings(), space_mod.expert_settings(machine)):
        if ref[name] not in values:
            values.append(ref[name])
    return sorted(set(values))


@dataclass(frozen=True)
class Seen:
    """One trial as the plan sees it."""

    number: int
    params: dict[str, Any]
    key: str
    value: float | None        # complete: its score; pruned: its last running score
    complete: bool
    feasible: bool
    role: str | None
    phase: str | None
    spread: float | None       # the windows' relative spread within the process
    duplicate: bool = False    # returned from an earlier trial without measuring


@dataclass(frozen=True)
class Step:
    phase: str
    params: dict[str, Any] | None   # None: the model (TPE) proposes them
    role: str | None = None
    dims: tuple[str, ...] = ()      # tpe: the dimensions it searches
    fixed: dict[str, Any] = field(default_factory=dict)


class TrialReader:
    """What a study's trials say: the measured ones, the noise between replicates, the means,
    the leader (parsimonious: the fewest changed knobs within noise). :class:`Engine` plans
    the next step from it."""

    s: StructuredSpace
    base: dict[str, Any]
    base_key: str
    base_settings: dict[str, Any]
    dims: dict[str, list[str]]

    def seen(self, trials: Iterable[FrozenTrial],
             feasible: Callable[[dict[str, Any]], bool]) -> list[Seen]:
        out = []
        for t in trials:
            if t.state == TrialState.WAITING:
                continue
            settings = t.user_attrs.get("settings")
            params = (dict(t.params) if set(self.s.params) <= set(t.params)
                      else self.s.params_of(settings) if settings else None)
            if params is None:
                continue   # a running trial that has not sampled yet
            value = t.value if t.state == TrialState.COMPLETE else None
            if t.state == TrialState.PRUNED and t.intermediate_values:
                value = t.intermediate_values[max(t.intermediate_values)]
            tp = t.user_attrs.get("throughput") or {}
            out.append(Seen(t.number, params,
                            settings_key(settings) if settings else self.s.key(params),
                            value, t.state == TrialState.COMPLETE,
                            t.state == TrialState.COMPLETE and feasible(t.user_attrs),
                            t.user_attrs.get("role"), t.user_attrs.get("phase"),
                            tp.get("rel_spread"),
                            t.user_attrs.get("duplicate_of") is not None))
        return out

    @staticmethod
    def _measured(seen: list[Seen]) -> list[Seen]:
        return [s for s in seen if s.complete]

    def noise(self, seen: list[Seen]) -> float:
        """How far apart two single processes of one configuration may measure: 2 x sqrt(2) x
        the relative standard deviation pooled over the configurations measured more than once
        (the baseline's replicates first), at least half the windows' own spread within one
        process. "Beyond noise" is a ratio above 1 + this."""
        groups: dict[str, list[float]] = {}
        spreads = []
        for s in self._measured(seen):
            if s.duplicate or s.spread is None:
                continue   # a duplicate returned without measuring is not a replicate
            groups.setdefault(s.key, []).append(s.value)
            if s.key == self.base_key:
                spreads.append(s.spread)
        squares, df = 0.0, 0
        for values in groups.values():
            if len(values) > 1:
                mean = sum(values) / len(values)
                squares += sum((v / mean - 1) ** 2 for v in values)
                df += len(values) - 1
        floor = sorted(spreads)[len(spreads) // 2] / 2 if spreads else 0.0
        return max(floor, 2 * math.sqrt(2) * math.sqrt(squares / df) if df else 0.0)

    def means(self, seen: list[Seen]) -> dict[str, float]:
        values: dict[str, list[float]] = {}
        for s in seen:
            if s.value is not None and not s.duplicate:
                values.setdefault(s.key, []).append(s.value)
        return {k: sum(v) / len(v) for k, v in values.items()}

    def changed(self, params: dict[str, Any]) -> list[str]:
        """The knobs whose settings differ from the baseline, in registry order."""
        settings = self.s.settings(params)
        return [n for n in settings if settings[n] != self.base_settings.get(n)]

    def pick(self, seen: list[Seen], noise: float,
             among: Callable[[Seen], bool] = lambda s: True) -> Seen | None:
        """The leader: among the feasible measured configurations within one standard error of
        the best, the one that changes the fewest knobs (then the fastest). ``noise`` is the
        "beyond noise" bar, two standard errors of the ratio of two single processes, so one
        is half of it: the one-standard-error rule of model selection (Breiman et al., 1984).
        The full bar here would, under high noise, hand validation a one-knob change that
        barely moved the score while a two-knob configuration measured far above it."""
        means = self.means(seen)
        done = [s for s in seen if s.feasible and among(s)]
        if not done:
            return None
        best = max(means[s.key] for s in done)
        close = [s for s in done if means[s.key] * (1 + noise / 2) >= best]
        chosen = min(close, key=lambda s: (len(self.changed(s.params)), -means[s.key], s.number))
        return self._without_idle_compute(chosen, done, means, noise)

    def _without_idle_compute(self, chosen: Seen, done: list[Seen], means: dict[str, float],
                              noise: float) -> Seen:
        """``chosen`` with each compute knob reverted whose reverted configuration was measured
        and is not slower beyond noise: a compute lever costs something of its own (XLA compiles
        in every process, and a server must be told), so it ships only when it carries its weight
        beyond noise, not merely within one standard error of the best."""
        by_key = {s.key: s for s in done}
        for dim in self.dims.get("compute", ()):
            if chosen.params.get(dim) == self.base.get(dim):
                continue
            reverted = by_key.get(self.s.key({**chosen.params, dim: self.base[dim]}))
            if reverted is not None and \
                    means[reverted.key] * (1 + noise) >= means[chosen.key]:
                chosen = reverted
        return chosen
