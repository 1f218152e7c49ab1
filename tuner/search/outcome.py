"""What the study stage hands on: this machine type's trials (``Searched``), for the validation,
the verdict and the tuned file; when none completed, why, in one line."""

from __future__ import annotations

import re
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from tuner.errors import StudyError
from tuner.tuned.store import BASELINE, EXPERT


@dataclass(frozen=True)
class Searched:
    """This machine type's trials, for the verdict and the tuned file."""

    trials: list[FrozenTrial]
    other_machine_trials: int   # trials of the study measured on other machine types
    sampler: str

    @classmethod
    def of(cls, mine: list[FrozenTrial], everything: int, sampler: str) -> Searched:
        """``mine`` of the study's ``everything`` trials; StudyError when none of ``mine``
        completed, with the most common reason they failed."""
        if not any(t.state == TrialState.COMPLETE for t in mine):
            raise StudyError(_why_none_completed(mine))
        return cls(trials=mine, other_machine_trials=everything - len(mine), sampler=sampler)

    def _role(self, role: str) -> FrozenTrial | None:
        done = [t for t in self.trials
                if t.state == TrialState.COMPLETE and t.user_attrs.get("role") == role]
        return done[-1] if done else None

    @property
    def best(self) -> FrozenTrial:
        return max((t for t in self.trials if t.state == TrialState.COMPLETE),
                   key=lambda t: t.value)

    @property
    def baseline(self) -> FrozenTrial | None:
        return self._role(BASELINE)

    @property
    def expert(self) -> FrozenTrial | None:
        return self._role(EXPERT)


def _why_none_completed(trials: list[FrozenTrial]) -> str:
    failed = [t for t in trials if t.state == TrialState.FAIL]
    reasons: dict[str, int] = {}
    for t in failed:
        reason = t.user_attrs.get("fail_reason", "unknown reason")
        reason = re.sub(r"^instance \d+ of \d+: ", "", reason)  # the same failure, N times
        reasons[reason] = reasons.get(reason, 0) + 1
    if not reasons:
        return "no trial completed (the search was stopped before the first one finished)"
    common = max(reasons, key=lambda r: reasons[r])
    return f"all {len(failed)} trials failed; most common reason ({reasons[common]}x): {common}"
