"""Validation: the best trials re-measured in fresh, interleaved processes.

One trial is one process, and processes differ by up to 1.6x, so the best trial is only a
candidate. The best few distinct candidates are screened in a few interleaved rounds; the
fastest then meets TensorFlow's defaults in the final rounds, which alone give the speedup and
its interval (not the trials that selected it). Rounds rotate the order, so no configuration
always runs first or last. The outcome is plain data, :class:`Validation`, which a shared study
stores so that every worker writes its tuned file from the same rounds.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial

from . import measuring, stats
from . import settings as settings_mod
from .config import Config
from .errors import StudyError, TrialFailed

# No futility stop before this many final rounds; a baseline alone is measured this often.
FUTILITY_MIN_ROUNDS = 3
BASELINE = "baseline"


@dataclass(frozen=True)
class Candidate:
    """A trial to validate: its number, its settings and its score in the search."""

    number: int
    settings: dict[str, Any]
    search_score: float

    @property
    def label(self) -> str:
        return f"#{self.number}"

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


def candidates(trials: Iterable[FrozenTrial], baseline: dict[str, Any],
               config: Config) -> list[Candidate]:
    """The best complete trials with distinct settings other than the baseline's, within the
    latency budget, best first."""
    seen = {_json_key(baseline)}
    chosen: list[Candidate] = []
    usable = [t for t in trials if "settings" in t.user_attrs
              and measuring.feasible(t.user_attrs, config.objective)]
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


def run(chosen: list[Candidate], baseline: dict[str, Any], measurer: measuring.Measurer
        ) -> Validation:
    """Screen ``chosen``, then the winner against ``baseline`` (see the module docstring)."""
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
    label = v.winner.label
    say(f"validation: trial {label} ({settings_mod.short(v.winner.settings)}) vs TensorFlow's "
        f"defaults, {cfg.rounds} interleaved rounds in fresh processes")
    entries = [(BASELINE, baseline), (label, v.winner.settings)]
    v.failures.pop(label, None)
    for r in range(cfg.rounds):
        _round(measurer, entries, r, cfg.rounds, "final", v.final, v.failures)
        stop = _futile(measurer, v.final.get(label, []), v.final.get(BASELINE, []), r + 1)
        if stop:
            say(f"  stopping after {r + 1} of {cfg.rounds} rounds: {stop}")
            v.stopped_early = stop
            break
    if BASELINE in v.failures:
        raise StudyError(f"validation: the baseline (TensorFlow's defaults) failed: "
                         f"{v.failures[BASELINE]}")
    return v


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
        store.setdefault(label, []).append(attrs)
        parts.append(f"{label} {attrs['throughput']['median']:.1f}")
    measurer.say(f"  {stage} round {round_no + 1}/{total}: " + "  ".join(parts))


def _futile(measurer: measuring.Measurer, candidate: list[dict[str, Any]],
            baseline: list[dict[str, Any]], done: int) -> str | None:
    """Why more final rounds cannot change the verdict to "tuned", or None.

    Only a futility stop: once at least three rounds ran, a candidate whose whole 95% interval
    lies below the minimum speedup worth adopting cannot be adopted by the remaining rounds
    in any plausible outcome, so they are skipped. There is no early stop for success: that
    would be a second look at the p-value and inflate the false-positive rate."""
    cfg = measurer.config.validate
    if done >= cfg.rounds or done < FUTILITY_MIN_ROUNDS:
        return None
    if len(candidate) < FUTILITY_MIN_ROUNDS or len(baseline) < FUTILITY_MIN_ROUNDS:
        return None
    lo, hi = stats.ratio_ci(_scores(measurer, candidate), _scores(measurer, baseline))
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
        stopped_early=stored["stopped_early"])
