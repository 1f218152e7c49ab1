"""The structured search (``search.sampler: structured``): phases built on what is known about
these knobs, with Optuna underneath.

1. ``noise``: the baseline measured again in fresh processes. Its spread across processes is the
   noise every later judgement is made against ("beyond noise"), not a fixed percentage.
2. ``layout``: process layout (instances, CPUs) and allocator, one at a time from the baseline,
   then the best of each together: the largest effects on inference.
3. ``compute``: how TensorFlow computes (the knobs marked ``compute``: XLA auto-clustering,
   and oneDNN's reduced-precision math where the space offers it), around the layout's leader:
   each value alone, then their combinations, each dimension at its best value alone. These
   levers interact with the layout (XLA's gain on one process is not its gain on two), and with
   each other (XLA's clusters bypass oneDNN's kernels, so XLA and a oneDNN math mode can cancel),
   so combinations are measured, never assumed to add up.
4. ``knobs``: the config's declared knobs (the builders' own arguments), around the best
   layout: the levers the user named, screened before the threads so that a short search
   still reaches them (a sequential map's parallelism is a 2x lever).
5. ``threads``: intra/inter-op counts *per instance* (TensorFlow's default, 1, c/2, c, 2c for c
   CPUs per instance) around the best layout. The study's parameters hold the relative choice
   (``intra_op_per_instance: c``), so a count is never proposed that means nothing for its
   layout; the trial's settings (and the tuned file) hold the absolute counts. When the leader
   runs one process, the threads are also screened around the fastest multi-instance layout.
6. ``data``: tf.data options and oneDNN, around the best so far.
7. ``tpe``: Optuna's TPE over the dimensions whose screening moved the score beyond noise; the
   others stay at the leader's values.
8. ``ablation`` (the last trials of the run): each changed knob of the leader reverted, and the
   leader replicated. Among configurations within one standard error of the best, the one
   that changes the fewest knobs leads (:func:`Engine.pick`), so a knob without an effect does
   not ship: a compute knob too, which must carry its weight beyond noise like any other.

A configuration already measured is never proposed again, except as a deliberate replicate
(role ``replicate``). Every step is a function of the study's trials, so a resumed study picks up
where it stopped. The phase of each trial is its ``phase`` user attribute.
"""

from __future__ import annotations

import itertools
import random
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.search.phases import (
    PHASES,
    REPLICATE,
    SCREEN_VALUES,
    SCREENED,
    STUDY_ATTR,
    THREAD_LABELS,
    Seen,
    Step,
    StructuredSpace,
    TrialReader,
    settings_key,
)


class Engine(TrialReader):
    """The phase plan over a study's trials: what to measure next, the noise, the leader."""

    def __init__(self, sspace: StructuredSpace, replicates: int = 1) -> None:
        self.s = sspace
        self.replicates = replicates
        self.base = sspace.params_of(sspace.space.baseline())
        self.base_key = sspace.key(self.base)
        self.base_settings = sspace.settings(self.base)
        self.dims = sspace.phase_dims()

    def plan(self) -> dict[str, Any]:
        """What the study records as its phase plan."""
        return {"phases": list(PHASES), "baseline_replicates": self.replicates,
                "dims": {phase: [self.s.knob_of(d) for d in dims]
                         for phase, dims in self.dims.items()},
                "thread_choices": list(THREAD_LABELS) if self.s.relative else []}

    # -- the next step ------------------------------------------------------------------------

    def next_step(self, seen: list[Seen], remaining: int | None = None) -> Step | None:
        tried = {s.key for s in seen}
        noise = self.noise(seen)
        base_runs = sum(1 for s in seen if s.key == self.base_key and not s.duplicate)
        if base_runs < 1 + self.replicates:
            return Step("noise", dict(self.base), REPLICATE)
        todo = self.ablation(seen, noise)
        if remaining is not None and todo and remaining <= len(todo):
            return todo[0]
        for phase in SCREENED:
            step = self.screen(phase, seen, tried, noise)
            if step is not None:
                return step
        step = self.model(seen, tried, noise)
        if step is not None:
            return step
        return todo[0] if todo else None

    def anchor(self, phase: str, seen: list[Seen], noise: float) -> dict[str, Any]:
        """Where a phase screens from: the leader of the phases before it."""
        earlier = PHASES[:PHASES.index(phase)]
        leader = self.pick(seen, noise, lambda s: s.role != "expert" and (
            s.key == self.base_key or s.phase in earlier))
        return dict(leader.params) if leader else dict(self.base)

    def screen_values(self, phase: str, dim: str, anchor: dict[str, Any]) -> list[Any]:
        values = [v for v in self.s.params[dim] if v != anchor[dim]]
        if phase in ("knobs", "data") and len(values) > SCREEN_VALUES:
            step = (len(values) - 1) / (SCREEN_VALUES - 1)
            values = [values[round(i * step)] for i in range(SCREEN_VALUES)]
        return values

    def anchors(self, phase: str, seen: list[Seen], noise: float) -> list[dict[str, Any]]:
        """Where a phase screens from: the leader of the phases before it; for the threads,
        also the fastest multi-instance layout when the leader runs one process. Several
        instances often win only with their own thread counts (a layout that is no faster
        with TensorFlow's defaults can be with inter-op threads set for its CPUs)."""
        anchor = self.anchor(phase, seen, noise)
        out = [anchor]
        if phase != "threads" or (self.s.settings(anchor).get("instances") or 1) > 1:
            return out
        means = self.means(seen)
        multi = [s for s in seen if s.phase == "layout" and s.feasible and s.key in means
                 and (self.s.settings(s.params).get("instances") or 1) > 1]
        if multi:
            out.append(dict(max(multi, key=lambda s: (means[s.key], -s.number)).params))
        return out

    def screen(self, phase: str, seen: list[Seen], tried: set[str], noise: float
               ) -> Step | None:
        """The phase's next point: each dimension changed alone from each anchor (the anchors
        taken in turn), then the best value of each dimension together."""
        if not self.dims[phase]:
            return None
        anchors = self.anchors(phase, seen, noise)
        queues = [self._singles(phase, anchor) for anchor in anchors]
        for point in itertools.chain.from_iterable(itertools.zip_longest(*queues)):
            if point is not None and self.s.key(point) not in tried:
                return Step(phase, point)
        if phase == "compute":
            # compute levers can cancel each other (XLA's clusters bypass oneDNN's kernels):
            # their combinations are measured, never assumed to add up
            for point in self._combinations(anchors[0], seen):
                if self.s.key(point) not in tried:
                    return Step(phase, point)
            return None
        for anchor in anchors:
            point = self._together(phase, anchor, seen, noise)
            if point is not None and self.s.key(point) not in tried:
                return Step(phase, point)
        return None

    def _combinations(self, anchor: dict[str, Any], seen: list[Seen]
                      ) -> list[dict[str, Any]]:
        """The compute phase's combinations: for every set of two or more of its dimensions,
        each at its best value measured alone from ``anchor`` (whether or not it beat the
        anchor: one lever may only pay off with another), the largest sets last."""
        means = self.means(seen)
        best: dict[str, Any] = {}
        for dim in self.dims["compute"]:
            alone = [(means[key], value) for value in self.screen_values("compute", dim, anchor)
                     if (key := self.s.key({**anchor, dim: value})) in means]
            if alone:
                best[dim] = max(alone, key=lambda mv: mv[0])[1]
        points = []
        for size in range(2, len(best) + 1):
            for dims in itertools.combinations(best, size):
                point = {**anchor, **{d: best[d] for d in dims}}
                if self.s.sensible(point):
                    points.append(point)
        return points

    def _singles(self, phase: str, anchor: dict[str, Any]) -> list[dict[str, Any]]:
        """``anchor`` with one dimension changed, each sensible configuration once. In the
        compute phase the dimensions take turns (XLA's first level, then bf16 math, then the
        graph rewrite, then XLA's second level...), so a short search screens every lever once
        before a second value of any."""
        changes = [(dim, value) for dim in self.dims[phase]
                   for value in self.screen_values(phase, dim, anchor)]
        if phase == "compute":
            rank = {dim: 0 for dim in self.dims[phase]}
            turns = []
            for dim, value in changes:
                turns.append((rank[dim], self.dims[phase].index(dim), dim, value))
                rank[dim] += 1
            changes = [(dim, value) for *_, dim, value in sorted(turns, key=lambda t: t[:2])]
        points, keys = [], set()
        for dim, value in changes:
            point = {**anchor, dim: value}
            key = self.s.key(point)
            if self.s.sensible(point) and key not in keys:
                keys.add(key)
                points.append(point)
        return points

    def _together(self, phase: str, anchor: dict[str, Any], seen: list[Seen], noise: float
                  ) -> dict[str, Any] | None:
        """The best value of each dimension together, when more than one beat the anchor's."""
        best: dict[str, Any] = {}
        for dim in self.dims[phase]:
            leader = self.pick(seen, noise, lambda s, d=dim: all(
                s.params[k] == anchor[k] for k in anchor if k != d))
            if leader is not None and leader.params[dim] != anchor[dim]:
                best[dim] = leader.params[dim]
        point = {**anchor, **best}
        return point if len(best) > 1 and self.s.sensible(point) else None

    def effects(self, seen: list[Seen]) -> dict[str, float]:
        """Each screened dimension's effect: its fastest over its slowest value, each measured
        from the phase's anchor with only that dimension changed (1.0: no effect seen)."""
        means = self.means(seen)
        noise = self.noise(seen)
        out: dict[str, float] = {}
        for phase in SCREENED:
            anchor = self.anchor(phase, seen, noise)
            for dim in self.dims[phase]:
                keys = {self.s.key({**anchor, dim: v}) for v in self.s.params[dim]}
                scores = [means[k] for k in keys if k in means]
                out[dim] = max(scores) / min(scores) if len(scores) > 1 and min(scores) > 0 \
                    else 1.0
        return out

    def judged(self, seen: list[Seen]) -> dict[str, Any]:
        """What screening found: the noise, each dimension's effect, those beyond noise."""
        noise = self.noise(seen)
        effects = self.effects(seen)
        matter = [d for d, e in effects.items() if e > 1 + noise]
        leader = self.pick(seen, noise)
        return {"noise": noise, "effects": {self.s.knob_of(d): e for d, e in effects.items()},
                "matter": [self.s.knob_of(d) for d in matter], "matter_params": matter,
                "leader": leader.number if leader else None,
                "carried_by": self.changed(leader.params) if leader else []}

    def model(self, seen: list[Seen], tried: set[str], noise: float) -> Step | None:
        judged = self.judged(seen)
        dims = tuple(judged["matter_params"])
        leader = self.pick(seen, noise)
        if not dims or leader is None:
            return None
        fixed = {k: v for k, v in leader.params.items() if k not in dims}
        open_points = [p for p in self.points(dims, fixed)
                       if self.s.sensible(p) and self.s.key(p) not in tried]
        return Step("tpe", None, dims=dims, fixed=fixed) if open_points else None

    def points(self, dims: tuple[str, ...], fixed: dict[str, Any]) -> Iterable[dict[str, Any]]:
        for combo in itertools.islice(
                itertools.product(*(self.s.params[d] for d in dims)), 20000):
            yield {**fixed, **dict(zip(dims, combo))}

    def ablation(self, seen: list[Seen], noise: float) -> list[Step]:
        """The leader with each changed knob reverted (those not measured yet), then a
        replicate of the leader when it was measured once."""
        leader = self.pick(seen, noise)
        if leader is None or leader.key == self.base_key:
            return []
        tried = {s.key for s in seen}
        steps = []
        for dim, value in leader.params.items():
            point = {**leader.params, dim: self.base[dim]}
            if value != self.base[dim] and self.s.key(point) not in tried \
                    and self.s.sensible(point):
                steps.append(Step("ablation", point))
        runs = sum(1 for s in seen if s.key == leader.key and s.complete and not s.duplicate)
        if runs < 2:
            steps.append(Step("ablation", dict(leader.params), REPLICATE))
        return steps


class StructuredSampler(optuna.samplers.BaseSampler):
    """Optuna's side of the plan: each trial's parameters come from :meth:`Engine.next_step`;
    the ``tpe`` phase asks a TPE sampler for the dimensions that matter (re-sampling a point
    already measured, then a random open point). ``select`` keeps this machine type's trials;
    ``end`` is the number of trials the study holds when this run's trials are done."""

    def __init__(self, sspace: StructuredSpace, seed: int | None, replicates: int = 1) -> None:
        self.space = sspace
        self.engine = Engine(sspace, replicates)
        self.seed = seed
        self.select: Callable[[list[FrozenTrial]], list[FrozenTrial]] = lambda ts: ts
        self.feasible: Callable[[dict[str, Any]], bool] = lambda attrs: True
        self.end: int | None = None
        self.steps: dict[int, Step] = {}   # trial number -> the step that proposed it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.tpe = optuna.samplers.TPESampler(seed=seed, multivariate=True,
                                                  n_startup_trials=0, constant_liar=True)

    def reseed_rng(self) -> None:
        self.tpe.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                    ) -> dict[str, optuna.distributions.BaseDistribution]:
        return dict(self.space.distributions)

    def history(self, study: optuna.Study, trial: FrozenTrial | None = None) -> list[Seen]:
        trials = [t for t in study.get_trials(deepcopy=False)
                  if trial is None or t.number != trial.number]
        return self.engine.seen(self.select(trials), self.feasible)

    def remaining(self, study: optuna.Study, trial: FrozenTrial | None = None) -> int | None:
        if self.end is None:
            return None
        started = [t for t in study.get_trials(deepcopy=False)
                   if t.state != TrialState.WAITING and (trial is None or t.number != trial.number)]
        return self.end - len(started)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, Any]) -> dict[str, Any]:
        seen = self.history(study, trial)
        step = self.engine.next_step(seen, self.remaining(study, trial))
        if step is None:   # nothing left to learn: the leader again (the study stops after it)
            leader = self.engine.pick(seen, self.engine.noise(seen))
            step = Step("done", dict(leader.params) if leader else dict(self.engine.base))
        elif step.params is None:
            step = Step("tpe", self._model_point(study, trial, step, seen), dims=step.dims)
        self.steps[trial.number] = step
        return dict(step.params or {})

    def _model_point(self, study: optuna.Study, trial: FrozenTrial, step: Step,
                     seen: list[Seen]) -> dict[str, Any]:
        tried = {s.key for s in seen}
        space = {d: self.space.distributions[d] for d in step.dims}
        for _ in range(5):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                proposal = self.tpe.sample_relative(study, trial, space)
            point = {**step.fixed, **proposal}
            if len(proposal) == len(space) and self.space.sensible(point) \
                    and self.space.key(point) not in tried:
                return point
        open_points = [p for p in self.engine.points(step.dims, step.fixed)
                       if self.space.sensible(p) and self.space.key(p) not in tried]
        rng = random.Random(f"{self.seed}|{trial.number}")
        return rng.choice(open_points)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: optuna.distributions.BaseDistribution) -> Any:
        # every parameter is relative; only a parameter outside the space lands here
        return self.engine.base.get(param_name, param_distribution.to_external_repr(0))

    def finished(self, study: optuna.Study) -> bool:
        """Whether the plan has nothing left to measure."""
        return self.engine.next_step(self.history(study), self.remaining(study)) is None

    def record(self, study: optuna.Study) -> dict[str, Any]:
        """The plan and what screening judged so far, as the study's attribute."""
        seen = self.history(study)
        state = {**self.engine.plan(), **self.engine.judged(seen)}
        state.pop("matter_params")
        state["effects"] = {k: round(v, 4) for k, v in state["effects"].items()}
        state["noise"] = round(state["noise"], 4)
        study.set_user_attr(STUDY_ATTR, state)
        return state

    def leader(self, study: optuna.Study) -> FrozenTrial | None:
        """The parsimonious leader's trial (the fastest of its replicates)."""
        seen = self.history(study)
        pick = self.engine.pick(seen, self.engine.noise(seen))
        if pick is None:
            return None
        same = [t for t in self.select(study.get_trials(deepcopy=False,
                                                        states=(TrialState.COMPLETE,)))
                if t.user_attrs.get("settings") is not None
                and settings_key(t.user_attrs["settings"]) == pick.key]
        return max(same, key=lambda t: t.value) if same else None
