"""A search's time budget and its stopping rules.

``--budget 10m`` (``search.budget``) is the wall time for the whole run, preflight to tuned
file. The tool splits it itself: validation's expected cost (the processes its first look
needs, at the per-process cost measured so far) is held back, and the search runs with the rest,
as many trials as fit. The reserve is recomputed after every trial from the trials' own wall
times, so a slow workload leaves validation its share; a trial is started only when its
expected cost fits before the reserve, and a trial already running is always let finish (a
child is never left behind: it ends with its trial).

With a budget the search may also stop before it is spent (:func:`stalled`): when the last
phase's trials have not beaten the best beyond the measured noise. For the structured search
that is the model phase, reached only once every dimension has been screened (so no
unscreened dimension is left that could carry a large gain), and the stop leaves the trials
the ablation needs. For the other samplers it is a patience rule over the trials after the
references and screening points.

The budget then caps validation's sequential extension at the rounds the remaining time pays
for. What was spent where, and why the search stopped, is recorded (:meth:`Budget.record`)
in the tuned file's ``search.budget``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tuner.errors import ConfigError

FORMS = "seconds (e.g. 600) or a duration such as 90s, 10m, 1h, 1h30m"
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")

# Trials after the references (structured: in the model phase) with no gain beyond noise
# before the search stops early.
PATIENCE = 5
STRUCTURED_PATIENCE = 3
# A search is refused a budget that pays for fewer trials than this after validation's share.
MIN_TRIALS = 3

STOP_TRIALS = "n_trials reached"
STOP_PLAN = "the structured plan had nothing left to measure"
STOP_INTERRUPTED = "interrupted"


def clock() -> float:
    """The budget's clock (monotonic seconds); the tests replace it with one that counts
    measurements."""
    return time.monotonic()


def parse(value: Any, where: str) -> float:
    """Seconds from ``600``, ``"90s"``, ``"10m"``, ``"1h"``, ``"1h30m"``; ConfigError naming
    ``where`` otherwise."""
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            match = _DURATION.match(text)
            if match and text and any(match.groups()):
                seconds = sum(float(g) * unit for g, unit in zip(match.groups(),
                                                                 _UNITS.values()) if g)
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{where}: expected {FORMS}, got {value!r}")
    return seconds


def fmt(seconds: float) -> str:
    """``75`` -> ``1m15s``."""
    seconds = max(0, int(round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def validation_processes(candidates: int, screen_rounds: int, rounds: int) -> int:
    """The processes validation's first look runs: screening (with more than one candidate),
    then ``rounds`` rounds of winner and baseline."""
    return candidates * screen_rounds * (candidates > 1) + 2 * rounds


def affordable_rounds(seconds: float, per_process: float) -> int:
    """Final rounds (two processes each) that ``seconds`` pay for."""
    return int(seconds // (2 * per_process)) if per_process > 0 else 0


def stalled(values: Sequence[float | None], noise: float, patience: int) -> bool:
    """Whether none of the last ``patience`` values beat the best before them by more than
    ``noise`` (a ratio above ``1 + noise``). ``values`` are in trial order; None (failed,
    pruned) counts as no gain. Fewer than ``patience`` values after a first one: not stalled.
    The bar stays the best before the last ``patience``, so a run of small gains that adds up
    to more than the noise is progress."""
    if len(values) <= patience:
        return False
    best = max((v for v in values[:-patience] if v is not None), default=None)
    last = [v for v in values[-patience:] if v is not None]
    if best is None:
        return not last
    return all(v <= best * (1 + noise) for v in last)


@dataclass
class Budget:
    """One run's budget: what is held back for validation, what the search may still spend,
    and what was spent, on :func:`clock`."""

    seconds: float
    started: float
    processes: int                 # validation's first look
    per_process: float             # expected seconds of one process (updated from trials)
    clock: Callable[[], float] = field(default=lambda: clock())
    search_started: float | None = None
    search_ended: float | None = None
    validation_started: float | None = None
    validation_ended: float | None = None
    stopped: str | None = None
    walls: list[float] = field(default_factory=list)   # each trial's cost to the search

    def elapsed(self) -> float:
        return self.clock() - self.started

    def left(self) -> float:
        return self.seconds - self.elapsed()

    @property
    def trial_seconds(self) -> float:
        """One process's expected cost: the mean of this run's trials (each as the search paid
        for it: child, database, sampler), else the preflight's estimate."""
        return sum(self.walls) / len(self.walls) if self.walls else self.per_process

    @property
    def reserve(self) -> float:
        """Validation's expected cost: its first look's processes at the per-process cost."""
        return self.processes * self.trial_seconds

    def search_left(self) -> float:
        return self.left() - self.reserve

    def trials_left(self) -> int:
        """Trials that still fit before validation's reserve."""
        return max(0, int(self.search_left() // self.trial_seconds))

    def check(self, where: str) -> None:
        """ConfigError when what is left after the preflight cannot pay for validation and
        :data:`MIN_TRIALS` trials; names the smallest budget that would."""
        if self.trials_left() < MIN_TRIALS:
            need = self.elapsed() + self.reserve + MIN_TRIALS * self.trial_seconds
            raise ConfigError(
                f"{where}: {fmt(self.seconds)} leaves no time for a search: the preflight took "
                f"{fmt(self.elapsed())} and validation needs ~{fmt(self.reserve)} "
                f"({self.processes} processes of ~{self.trial_seconds:.0f} s); allow at least "
                f"{fmt(math.ceil(need / 10) * 10)}")

    def plan_line(self) -> str:
        return (f"budget {fmt(self.seconds)}: preflight took {fmt(self.elapsed())}, "
                f"~{fmt(self.reserve)} held back for validation ({self.processes} processes of "
                f"~{self.trial_seconds:.0f} s), the search gets ~{fmt(self.search_left())} "
                f"(~{self.trials_left()} trials)")

    def start_search(self) -> None:
        self.search_started = self.clock()

    def end_search(self, reason: str | None) -> None:
        self.search_ended = self.clock()
        if self.stopped is None:
            self.stopped = reason

    def start_validation(self) -> None:
        self.validation_started = self.clock()

    def end_validation(self) -> None:
        self.validation_ended = self.clock()

    def validation_rounds(self, rounds: int, max_rounds: int) -> int:
        """``max_rounds`` capped at the final rounds the time left pays for, never below
        ``rounds`` (the first look is always run)."""
        return max(rounds, min(max_rounds, affordable_rounds(self.left(), self.trial_seconds)))

    def record(self) -> dict[str, Any]:
        """The tuned file's ``search.budget``."""
        def span(a: float | None, b: float | None) -> float | None:
            return round(b - a, 1) if a is not None and b is not None else None

        return {"budget_s": round(self.seconds, 1),
                "spent_search_s": span(self.search_started, self.search_ended),
                "spent_validation_s": span(self.validation_started, self.validation_ended),
                "spent_total_s": round(self.elapsed(), 1),
                "reserved_validation_s": round(self.reserve, 1),
                "stopped": self.stopped}

    def summary_line(self) -> str:
        r = self.record()
        parts = [f"budget {fmt(self.seconds)}: spent {fmt(r['spent_total_s'])}"]
        if r["spent_search_s"] is not None:
            parts.append(f"search {fmt(r['spent_search_s'])}")
        if r["spent_validation_s"] is not None:
            parts.append(f"validation {fmt(r['spent_validation_s'])}")
        return ", ".join(parts) + (f"; search stopped: {self.stopped}" if self.stopped else "")
