"""What the study samples: the sampler, the one-knob-at-a-time screening points, the pruner."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.base import host as host_mod
from tuner.config import Config
from tuner.knobs import space as space_mod
from tuner.search import shared, structured

# Below this many trials, the screening points would leave the model-based sampler too little.
MIN_TRIALS_FOR_SCREEN = 12


def screening_points(space: space_mod.Space, machine: host_mod.Machine, *,
                     threads: bool = True) -> list[dict[str, Any]]:
    """One-knob-at-a-time points, everything else at the baseline: first every listed value of
    each declared knob and of the batch sizes (the user named them because they matter;
    ``Knob.screened``), then, with ``threads``, the
    two thread counts. Few trials that cover the biggest effects (on a many-branch CNN, intra=1
    alone is 1.4x the defaults; a sequential map made parallel, several times) before TPE models
    the rest. A random start found them only by luck."""
    n = machine.usable_cpus
    ladders: dict[str, list[Any]] = {
        name: values for name, values in space.searched.items()
        if name.startswith(space_mod.KNOB_PREFIX)
        or (name in space_mod.KNOBS and space_mod.KNOBS[name].screened)}
    if threads:
        ladders.update({"intra_op_parallelism_threads": [1, max(1, n // 2), n, 2 * n],
                        "inter_op_parallelism_threads": [1, n, 2 * n]})
    baseline, expert = space.baseline(), space.expert(machine)
    base = {name: baseline[name] for name in space.searched}
    seen = [base, {name: expert[name] for name in space.searched}]
    points = []
    for name, values in ladders.items():
        for value in values:
            if value not in space.searched.get(name, []):
                continue
            point = dict(base, **{name: value})
            if point not in seen:
                seen.append(point)
                points.append(point)
    return points


def screening_for(config: Config, space: space_mod.Space,
                  machine: host_mod.Machine) -> list[dict[str, Any]]:
    """The screening points a TPE study of ``config`` starts with."""
    n_trials = config.search.n_trials
    if n_trials >= MIN_TRIALS_FOR_SCREEN:
        return screening_points(space, machine)
    # a small budget still screens the declared knobs when that leaves TPE half
    points = screening_points(space, machine, threads=False)
    return points if len(points) <= n_trials // 2 else []


# The structured search measures the baseline this many more times from this many trials on.
REPLICATES_FROM = 16


def sampler(config: Config, space: space_mod.Space, joining: bool = False,
            machine: host_mod.Machine | None = None
            ) -> tuple[optuna.samplers.BaseSampler, str]:
    """The sampler and its name. ``auto``: an exhaustive grid when the space fits the budget,
    else the structured search (phases, see :mod:`tuner.search.structured`); ``tpe``, ``random`` and
    ``grid`` on request."""
    search = config.search
    seed = search.seed
    if joining and seed is not None:
        # Workers joining a study must not replay the first worker's random draws (two
        # workers with one seed propose the same points); the study's creator keeps --seed.
        seed = int(hashlib.sha256(f"{seed}|{shared.process_space()}|{os.getpid()}".encode())
                   .hexdigest()[:8], 16)
    search = dataclasses.replace(search, seed=seed)
    kind = search.sampler
    if kind == "auto":
        # the baseline and expert trials come on top of the grid (they are enqueued); a space
        # too large for the budget is searched in phases (layout first) when the machine is
        # known, which a replay on recorded grids found the most repeatable (docs/benchmarks.md)
        kind = ("grid" if space.size + 2 <= search.n_trials
                else "structured" if machine is not None else "tpe")
    if kind == "structured" and machine is not None:
        replicates = 2 if search.n_trials >= REPLICATES_FROM else 1
        return structured.StructuredSampler(structured.StructuredSpace(space, machine),
                                            seed=search.seed, replicates=replicates), kind
    if kind == "grid":
        return optuna.samplers.GridSampler(space.searched, seed=search.seed), "grid"
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=search.seed), "random"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        budget = config.objective.latency_budget_ms
        # constant_liar: another worker's running trial counts as a poor result, so workers do
        # not all sample the same promising point (no effect with one worker)
        tpe = optuna.samplers.TPESampler(
            seed=search.seed, multivariate=True, group=True, constant_liar=True,
            n_startup_trials=max(4, min(10, search.n_trials // 3)),
            # Optuna < 5 takes constraints this way; 5 reads trial.set_constraint (objective).
            # The accuracy guard's excess over its limit is one (feasible when <= 0).
            **({"constraints_func": lambda t: (
                t.user_attrs.get("latency_excess_ms", 0.0) if budget is not None else 0.0,
                t.user_attrs.get("accuracy_excess", 0.0))}
               if not hasattr(optuna.trial.Trial, "set_constraint") else {}))
    return tpe, "tpe"


def pruner(config: Config) -> optuna.pruners.BasePruner:
    # windows report throughput, so they can only prune a throughput objective
    if config.search.pruning and config.objective.percentile is None:
        return ClearlyWorsePruner(config.search.prune_ratio)
    return optuna.pruners.NopPruner()


class ClearlyWorsePruner(optuna.pruners.BasePruner):
    """Prune a trial whose running median is below ``ratio`` x the best complete trial.

    Optuna's median and percentile pruners compare against typical trials; here the question is
    only whether a trial can still win, and process-to-process noise reaches 1.6x, so the bar is
    set well below the best (0.5 by default) and checked only after ``min_windows`` windows.
    """

    def __init__(self, ratio: float = 0.5, min_windows: int = 2) -> None:
        self.ratio = ratio
        self.min_windows = min_windows

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step + 1 < self.min_windows:
            return False
        # the best of this machine type: another type's speed says nothing about this one
        mid = trial.user_attrs.get(shared.MACHINE_ID)
        values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if t.user_attrs.get(shared.MACHINE_ID, mid) == mid]
        if not values:
            return False
        return trial.intermediate_values[step] < self.ratio * max(values)
