"""Validation: the best trials re-measured in fresh, interleaved processes.

One trial is one process, and processes differ by up to 1.6x, so the best trial is only a
candidate. The best few distinct candidates are screened in a few interleaved rounds; the
fastest then meets TensorFlow's defaults in the final rounds, which alone give the speedup and
its interval (not the trials that selected it). Rounds rotate the order, so no configuration
always runs first or last. The outcome is plain data, :class:`Validation`, which a shared study
stores so that every worker writes its tuned file from the same rounds.

The final rounds are a group-sequential test (:func:`sequential`): a clear win stops at the
first look; an inconclusive one is extended, sized from the noise measured, in a few looks
whose levels spend the false-positive rate so that looking again does not inflate it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial

from tuner.base import stats
from tuner.child import guard
from tuner.config import Config
from tuner.errors import StudyError, TrialFailed
from tuner.knobs import settings as settings_mod
from tuner.search import measuring

# No futility stop before this many final rounds; a baseline alone is measured this often.
FUTILITY_MIN_ROUNDS = 3
BASELINE = "baseline"
# An inconclusive first look is extended to the rounds that confirm a win of this size with
# this probability, at the noise measured (up to validate.max_rounds).
TARGET_SPEEDUP = 1.10
POWER = 0.80


@dataclass(frozen=True)
class Candidate:
    """A trial to validate: its number, its settings and its score in the search."""

    number: int
    settings: dict[str, Any]
    search_score: float
    name: str | None = None     # the label instead of "#number" (a tuned file being checked)

    @property
    def label(self) -> str:
        return self.name or f"#{self.number}"

    @classmethod
    def of(cls, trial: FrozenTrial) -> Candidate:
        return cls(trial.number, trial.user_attrs["settings"], trial.value)


@dataclass
class Validation:
    """The rounds' measurement summaries by label ("baseline", "#12"), and what failed."""

    candidates: list[Candidate]
    winner: Candidate | None
    screening: dict[str, list[dict[str, Any]]]
    final: dict[str, list[dict[str, Any]]]
    failures: dict[str, str]
    stopped_early: str | None = None
    # the sequential design: rounds at each look (cumulative), each look's nominal one-sided
    # level, what each look found, the per-process noise (sd of log values) at the end
    plan: list[int] = dataclasses.field(default_factory=list)
    levels: list[float] = dataclasses.field(default_factory=list)
    looks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    noise_sd: float | None = None

    @property
    def level(self) -> float | None:
        """The nominal level the final rounds are tested at: that of the last look taken,
        else (stopped before any) the first look's."""
        if self.looks:
            return self.looks[-1]["level"]
        return self.levels[0] if self.levels else None


def candidates(trials: Iterable[FrozenTrial], baseline: dict[str, Any],
               config: Config) -> list[Candidate]:
    """The best complete trials with distinct settings other than the baseline's, within the
    latency budget, best first."""
    seen = {_json_key(baseline)}
    chosen: list[Candidate] = []
    usable = [t for t in trials if "settings" in t.user_attrs
              and measuring.feasible(t.user_attrs, config.objective, config.accuracy)]
    for t in sorted(usable, key=lambda t: t.value, reverse=True):
        key = _json_key(t.user_attrs["settings"])
        if key in seen:
            continue
        seen.add(key)
        chosen.append(Candidate.of(t))
        if len(chosen) >= config.validate.candidates:
            break
    return chosen


def _json_key(settings: dict[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True)


def replicates(trials: Iterable[FrozenTrial]) -> list[list[float]]:
    """The scores of complete trials that measured the same settings more than once (the
    baseline's replicates, repeated configurations): each list is fresh-process noise."""
    groups: dict[str, list[float]] = {}
    for t in trials:
        if "settings" in t.user_attrs and t.value is not None and t.value > 0:
            groups.setdefault(_json_key(t.user_attrs["settings"]), []).append(float(t.value))
    return [g for g in groups.values() if len(g) > 1]


def run(chosen: list[Candidate], baseline: dict[str, Any], measurer: measuring.Measurer,
        replicates: Iterable[list[float]] = ()) -> Validation:
    """Screen ``chosen``, then the winner against ``baseline`` (see the module docstring).
    ``replicates``: the study's repeated measurements (:func:`replicates`), for the noise."""
    cfg, say = measurer.config.validate, measurer.say
    v = Validation(candidates=chosen, winner=chosen[0] if chosen else None, screening={},
                   final={}, failures={})
    if len(chosen) > 1 and cfg.screen_rounds > 0:
        # Screening only picks among the candidates, so the baseline is not measured here:
        # it is measured against the winner in every final round.
        say(f"validation: screening {len(chosen)} candidates, {cfg.screen_rounds} interleaved "
            f"rounds in fresh processes")
        entries = [(c.label, c.settings) for c in chosen]
        for r in range(cfg.screen_rounds):
            _round(measurer, entries, r, cfg.screen_rounds, "screen", v.screening, v.failures)
        alive = [c for c in chosen if c.label not in v.failures and c.label in v.screening]
        v.winner = max(alive, key=lambda c: stats.median(_scores(measurer, v.screening[c.label])),
                       default=None)
    if v.winner is None:
        # Nothing to compare: a few runs give the baseline's numbers for the tuned file.
        runs = min(cfg.rounds, FUTILITY_MIN_ROUNDS)
        say(f"validation: no candidate beyond TensorFlow's defaults; measuring the baseline "
            f"{runs} times")
        for r in range(runs):
            _round(measurer, [(BASELINE, baseline)], r, runs, "final", v.final, v.failures)
        return v
    say(f"validation: trial {v.winner.label} ({settings_mod.short(v.winner.settings)}) vs "
        f"TensorFlow's defaults, {cfg.rounds} interleaved rounds in fresh processes")
    noise = [*replicates, *(_scores(measurer, runs) for runs in v.screening.values())]
    final_rounds(v, baseline, measurer, noise)
    return v


def final_rounds(v: Validation, baseline: dict[str, Any], measurer: measuring.Measurer,
                 noise: list[list[float]]) -> None:
    """``v.winner`` against ``baseline`` in interleaved rounds, each configuration in a fresh
    process, as the group-sequential test of :func:`sequential`; fills ``v.final`` and
    ``v.failures``. What validation's final rounds and ``python -m tuner check`` run."""
    if v.winner is None:
        raise ValueError("final_rounds: no winner to measure")
    label = v.winner.label
    entries = [(BASELINE, baseline), (label, v.winner.settings)]
    v.failures.pop(label, None)

    def measure(r: int, total: int) -> tuple[list[float], list[float]] | None:
        _round(measurer, entries, r, total, "final", v.final, v.failures)
        if BASELINE in v.failures:
            raise StudyError(f"validation: the baseline (TensorFlow's defaults) failed: "
                             f"{v.failures[BASELINE]}")
        if label in v.failures:
            return None
        return _scores(measurer, v.final.get(label, [])), _scores(measurer, v.final[BASELINE])

    sequential(v, measure, noise, measurer.config, measurer.say)


def sequential(v: Validation, measure, noise: list[list[float]], config: Config, say) -> None:
    """The final rounds as a group-sequential test (docs/methodology.md, "Validation").

    ``measure(r, total)`` runs round ``r`` and returns the candidate's and the baseline's scores
    so far (None once the candidate failed); ``noise`` holds other fresh-process replicates
    (screening rounds, repeated trials) for the noise estimate. Looks at ``v.plan``'s sizes:
    the first after ``rounds``; if it is inconclusive, the noise measured so far sizes the rest
    (:func:`stats.plan_rounds`) for 80% power at a 1.10x win, at most ``max_rounds``. Each look
    tests at its nominal level from Pocock-type alpha spending, so the looks together keep the
    false-positive rate at ``alpha``. The futility stop may end it at any round from the third.
    Fills ``v.plan``, ``v.levels``, ``v.looks``, ``v.noise_sd``, ``v.stopped_early``."""
    cfg = config.validate
    v.plan = [cfg.rounds]
    v.levels = list(stats.look_levels((cfg.rounds,), cfg.max_rounds, cfg.alpha))
    cand: list[float] = []
    base: list[float] = []
    r = 0
    while r < v.plan[-1]:
        got = measure(r, v.plan[-1])
        r += 1
        if got is None:  # the candidate failed: the baseline alone, for the file's numbers
            if r >= cfg.rounds:
                break
            continue
        cand, base = got
        look = v.plan.index(r) if r in v.plan else None
        if look is None:
            stop = _futile(cand, base, r, config)
            if stop:
                say(f"  stopping after {r} of {v.plan[-1]} rounds: {stop}")
                v.stopped_early = stop
                break
            continue
        level = v.levels[look]
        test = stats.speedup_test(cand, base, alpha=level, min_speedup=cfg.min_speedup)
        v.looks.append({"rounds": r, "level": level, "p_value": test["p_value"],
                        "significant": test["significant"]})
        if test["significant"]:
            if len(v.plan) > 1 or cfg.max_rounds > cfg.rounds:
                of = len(v.plan) if look else f"up to {cfg.looks}"
                say(f"  confirmed at look {look + 1} of {of}: p={test['p_value']:.3g} "
                    f"< {level:.3g}")
            break
        stop = _futile(cand, base, r, config) if look == 0 or look + 1 < len(v.plan) else None
        if stop:
            say(f"  stopping at look {look + 1}, after {r} rounds: {stop}")
            v.stopped_early = stop
            break
        if look == 0:
            if cfg.max_rounds <= cfg.rounds:  # a fixed design: one look, all alpha spent
                break
            sigma, df = stats.log_sd([*noise, cand, base])
            sigma = 0.0 if math.isnan(sigma) else sigma
            v.plan = list(stats.plan_rounds(
                cfg.rounds, cfg.max_rounds, cfg.looks, stats.sd_upper(sigma, df), alpha=cfg.alpha,
                effect=TARGET_SPEEDUP, power=POWER, min_speedup=cfg.min_speedup))
            v.levels = list(stats.look_levels(tuple(v.plan), cfg.max_rounds, cfg.alpha))
            power = stats.rule_power(math.log(TARGET_SPEEDUP), sigma, v.plan[-1], v.levels[-1],
                                     min_speedup=cfg.min_speedup)
            noisy = f"noise {stats.cv_of(sigma):.1%} per process"
            if len(v.plan) == 1:
                say(f"  inconclusive after {r} rounds ({_why(test, level)}), which already had "
                    f"{power:.0%} power for a {TARGET_SPEEDUP:g}x win ({noisy}): stopping")
                break
            say(f"  {noisy}: {v.plan[-1]} rounds give {power:.0%} power for a "
                f"{TARGET_SPEEDUP:g}x win" + ("" if power >= POWER else
                                              f" (max_rounds is {cfg.max_rounds})"))
        if look + 1 < len(v.plan):
            say(f"  inconclusive at look {look + 1} of {len(v.plan)}: {_why(test, level)}, "
                f"continuing with {v.plan[look + 1] - r} more rounds")
    v.noise_sd = _noise(noise, cand, base)


def _why(test: dict[str, Any], level: float) -> str:
    """Why a look did not confirm: the p-value against its level, else the failed condition."""
    if test["p_value"] >= level:
        return f"p={test['p_value']:.3g} (needs < {level:.3g})"
    return str(test["reason"])


def _noise(noise: list[list[float]], cand: list[float], base: list[float]) -> float | None:
    sigma, df = stats.log_sd([*noise, cand, base])
    return sigma if df else None


def _scores(measurer: measuring.Measurer, runs: list[dict[str, Any]]) -> list[float]:
    return [measuring.score(m, measurer.config.objective) for m in runs]


def _round(measurer: measuring.Measurer, entries: list[tuple[str, dict[str, Any]]],
           round_no: int, total: int, stage: str, store: dict[str, list[dict[str, Any]]],
           failures: dict[str, str]) -> None:
    shift = round_no % len(entries)
    parts = []
    for label, settings in entries[shift:] + entries[:shift]:
        if label in failures:
            continue
        try:
            attrs = measuring.summary(measurer.measure(settings))
        except TrialFailed as exc:
            failures[label] = exc.reason
            parts.append(f"{label} FAIL")
            continue
        accuracy = measurer.config.accuracy
        if label != BASELINE and (measuring.accuracy_excess(attrs, accuracy) or 0.0) > 0:
            # the guard runs in every process validation measures: beyond the limit once is
            # never adopted, however fast
            failures[label] = (f"outputs beyond the accuracy limit: "
                               f"{guard.describe_deviation(attrs.get('accuracy'), 'rel_l2')}")
            parts.append(f"{label} INFEASIBLE")
            continue
        store.setdefault(label, []).append(attrs)
        parts.append(f"{label} {attrs['throughput']['median']:.1f}")
    measurer.say(f"  {stage} round {round_no + 1}/{total}: " + "  ".join(parts))


def _futile(candidate: list[float], baseline: list[float], done: int, config: Config
            ) -> str | None:
    """Why more final rounds cannot change the verdict to "tuned", or None.

    Once at least three rounds ran, a candidate whose whole 95% interval lies below the minimum
    speedup worth adopting cannot be adopted by the remaining rounds in any plausible outcome,
    so they are skipped. It only ever stops without adopting, so it cannot add false
    positives, and the looks' levels do not count on it (a non-binding futility rule)."""
    cfg = config.validate
    if done < FUTILITY_MIN_ROUNDS:
        return None
    if len(candidate) < FUTILITY_MIN_ROUNDS or len(baseline) < FUTILITY_MIN_ROUNDS:
        return None
    lo, hi = stats.ratio_ci(candidate, baseline)
    if hi < cfg.min_speedup:
        return (f"the speedup's 95% interval ({lo:.3f}-{hi:.3f}x) is entirely below the "
                f"minimum worth adopting ({cfg.min_speedup:g}x)")
    return None


# -- stored in a shared study ----------------------------------------------------------------

def record(v: Validation, *, complete: list[int], config: Config, by: str, at: str
           ) -> dict[str, Any]:
    """``v`` JSON-ready (trials by number), with what it covers: the complete trials it chose
    from and the validation settings it ran with."""
    return {
        "complete": complete,
        "validate": dataclasses.asdict(config.validate),
        "by": by,
        "at": at,
        "candidates": [c.number for c in v.candidates],
        "winner": v.winner.number if v.winner is not None else None,
        "screening": v.screening, "final": v.final, "failures": v.failures,
        "stopped_early": v.stopped_early,
        "plan": v.plan, "levels": v.levels, "looks": v.looks, "noise_sd": v.noise_sd,
    }


def from_record(stored: Any, *, complete: list[int], config: Config,
                trials: Iterable[FrozenTrial]) -> Validation | None:
    """The stored validation, if it is still current: it saw the same complete trials and ran
    with the same validation settings."""
    if not isinstance(stored, dict):
        return None
    if stored.get("complete") != complete or \
            stored.get("validate") != dataclasses.asdict(config.validate):
        return None
    by_number = {t.number: t for t in trials}
    return Validation(
        candidates=[Candidate.of(by_number[n]) for n in stored["candidates"]],
        winner=Candidate.of(by_number[stored["winner"]]) if stored["winner"] is not None
        else None,
        screening=stored["screening"], final=stored["final"], failures=stored["failures"],
        stopped_early=stored["stopped_early"], plan=stored.get("plan", []),
        levels=stored.get("levels", []), looks=stored.get("looks", []),
        noise_sd=stored.get("noise_sd"))
