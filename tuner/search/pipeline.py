"""The ``search`` command: preflight -> study -> validation -> verdict -> tuned file.

1. Detect the machine; preflight the workload once in a child (:mod:`tuner.search.measuring`), which
   also fixes the space to search.
2. Open or join the Optuna study and run this worker's trials (:mod:`tuner.search.study`).
3. Re-measure the best few in fresh, interleaved processes against TensorFlow's defaults
   (:mod:`tuner.search.validate`). With several workers, the last one to finish its trials validates
   and stores the result in the study; the others write their tuned file from it.
4. Decide and write the tuned file (:mod:`tuner.search.verdict`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any

import optuna

from tuner.base import files
from tuner.base import host as host_mod
from tuner.config import Config
from tuner.config import budget as budget_mod
from tuner.errors import StudyError
from tuner.search import measuring, storage, study, validate, verdict
from tuner.search import shared as coord
from tuner.search.validate import Validation
from tuner.tuned import store

# Held shared from before the preflight to the end of a worker's trials, and exclusively to
# validate (see tuner/search/shared.py).
SEARCH_LOCK = "search"
# per study and machine type: the stored validation, which every worker's tuned file comes from
VALIDATION = coord.ATTR_PREFIX + "validation."


@dataclass
class SearchOutcome:
    tuned_path: str             # where the result went (beside a validated file, if unvalidated)
    tuned: dict[str, Any]
    backup: str | None          # the replaced file's history copy
    interrupted: bool = False
    kept: str | None = None     # the validated file an unvalidated result was not put over
    retired: str | None = None  # history copy of the stale unvalidated file this result superseded
    budget: str | None = None   # how a budget was spent, one line


def run(config: Config, say: measuring.Say = measuring.print_line) -> SearchOutcome:
    """Run the whole search for ``config``; see the module docstring."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines say it all
    try:
        return _run(config, say)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _run(cfg: Config, say: measuring.Say) -> SearchOutcome:
    started = time.monotonic()
    budget_started = budget_mod.clock()
    measurer = measuring.Measurer(cfg, host_mod.detect(), say)
    # in seconds, not after the search; the write makes missing folders
    files.check_writable(cfg.output, "--output", "the tuned YAML", make_folders=True)
    store.check_replaceable(cfg.output, cfg.study_name, cfg.storage, cfg.force)
    locks = coord.Locks(cfg.storage, cfg.study_name)
    try:
        # Held (shared) from before the preflight to the end of this worker's trials, so a
        # worker started together with others never validates before they have all searched.
        locks.acquire(SEARCH_LOCK, SEARCH_LOCK, shared=True, on_wait=lambda: say(
            "waiting: another worker is validating this study; this one starts after"))
        mark = time.monotonic()
        pre = measurer.preflight()
        seconds = {"preflight": time.monotonic() - mark}
        measurer = measuring.Measurer(cfg, pre.machine, say, guard=pre.guard)
        return _search(measurer, pre, locks, started, seconds, budget_started)
    except (optuna.exceptions.StorageInternalError, _sqlalchemy_error()) as exc:
        # the database went away mid-run, beyond the retries: one line, never a traceback
        raise storage.cannot_connect(cfg.storage, exc) from None
    finally:
        locks.close()


def _search(measurer: measuring.Measurer, pre: measuring.Preflight, locks: coord.Locks,
            started: float, seconds: dict[str, float], budget_started: float) -> SearchOutcome:
    cfg, say = measurer.config, measurer.say
    st = study.open_study(measurer, pre, locks)
    plan, watch, mark = None, None, time.monotonic()
    try:
        st.announce()
        timeout = None
        if cfg.search.timeout is not None:
            timeout = cfg.search.timeout - (time.monotonic() - started) - st.validation_estimate
            if timeout <= 0:
                raise StudyError(f"--timeout: {cfg.search.timeout:g} s leaves no time for "
                                 f"trials after preflight and validation "
                                 f"(~{st.validation_estimate:.0f} s); allow more")
        plan = _budget(st, budget_started)
        watch = BudgetWatch(st, plan) if plan is not None else None
        mark = time.monotonic()
        interrupted = st.run_trials(timeout, callbacks=[watch] if watch else [])
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM before the first trial started: the same ending as during one
        say("interrupted: stopping the search")
        interrupted = True
    seconds["trials"] = time.monotonic() - mark
    if plan is not None and watch is not None:
        plan.end_search(watch.reason(interrupted))
        say(f"budget: the search stopped after {budget_mod.fmt(seconds['trials'])} "
            f"({plan.stopped}); {budget_mod.fmt(plan.left())} left for validation")
    if interrupted and not st.complete():
        say("no trial of this machine type completed: nothing to write")
        raise KeyboardInterrupt
    if interrupted:
        say("writing the best result so far (not validated)")
    searched = st.searched()
    st.say_best(searched)
    validation = None
    if not interrupted:
        try:
            validation = validate_once(st, locks, seconds, plan)
        except KeyboardInterrupt:
            interrupted = True
            say("interrupted during validation; writing the best result so far (not validated)")
    if validation is not None:
        # other workers of a shared study may have finished trials while this one waited to
        # validate: the file describes the study as it is when written
        searched = st.searched()
    decided = verdict.validated(validation, cfg, pre) if validation is not None \
        else verdict.unvalidated(searched, cfg)
    if st.structured is not None and decided.verdict != "defaults":
        decided = dataclasses.replace(decided, result={
            **decided.result, "carried_by": st.carried_by(decided.settings)})
    document = verdict.document(cfg, pre, searched, decided,
                                {**seconds, "total": time.monotonic() - started})
    if plan is not None:
        document["search"]["budget"] = plan.record()
    written = store.write(document, cfg.output, study_name=cfg.study_name, storage=cfg.storage,
                          force=cfg.force, keep_backups=cfg.keep_backups)
    st.optuna.set_user_attr(coord.ATTR_PREFIX + "last_result", {
        "verdict": document["verdict"], "settings": document["settings"],
        "result": document["result"], "written": coord.now(),
        "output": os.path.abspath(written.path)})
    return SearchOutcome(tuned_path=str(written.path), tuned=document,
                         backup=str(written.backup) if written.backup else None,
                         interrupted=interrupted,
                         kept=str(written.kept) if written.kept else None,
                         retired=str(written.retired) if written.retired else None,
                         budget=plan.summary_line() if plan is not None else None)


def validate_once(st: study.Study, locks: coord.Locks, seconds: dict[str, float],
                  plan: budget_mod.Budget | None = None) -> Validation:
    """Validate, unless a validation stored in the study already covers every complete trial
    of this machine type: then reuse it. Runs under the search lock taken exclusively, so it
    waits until no worker is still running trials (or about to: a worker holds the lock
    shared from its start), and only one worker validates at a time (the others then find
    its result)."""
    cfg, say = st.config, st.say

    def waiting() -> None:
        say("waiting: other workers are still running trials or validating; the last to "
            "finish validates, the others write their tuned file from its result")

    locks.release(SEARCH_LOCK)  # this worker's trials are done
    with locks.holding(SEARCH_LOCK, SEARCH_LOCK, poll=2.0, on_wait=waiting) as waited:
        if waited > 1:
            seconds["waiting_for_workers"] = waited
        st.fail_stale_trials()
        key = VALIDATION + st.machine_id
        record = st.optuna.user_attrs.get(key)
        stored = validate.from_record(record, complete=st.complete_numbers(), config=cfg,
                                      trials=st.optuna.get_trials(deepcopy=False))
        if stored is not None:
            say(f"validation: reusing the validation stored by {record['by']} at "
                f"{record['at']} (it covers all {len(record['complete'])} complete trials of "
                f"this machine type)")
            return stored
        mark = time.monotonic()
        chosen = validate.candidates(st.complete(), st.space.baseline(), cfg)
        leader = st.leader()   # structured: the parsimonious leader alone
        if leader is not None and leader.user_attrs["settings"] != st.space.baseline():
            chosen = [validate.Candidate.of(leader)]
        measurer = st.measurer
        if plan is not None:
            plan.start_validation()
            measurer = _within(plan, measurer)
        validation = validate.run(chosen, st.space.baseline(), measurer,
                                  validate.replicates(st.complete()))
        seconds["validation"] = time.monotonic() - mark
        if plan is not None:
            plan.end_validation()
        st.optuna.set_user_attr(key, validate.record(
            validation, complete=st.complete_numbers(), config=cfg,
            by=f"{coord.host_id()} (pid {os.getpid()})", at=coord.now()))
        return validation


def _budget(st: study.Study, started: float) -> budget_mod.Budget | None:
    """The run's budget, checked against what the preflight cost, and said."""
    cfg = st.config
    if cfg.search.budget is None:
        return None
    v = cfg.validate
    plan = budget_mod.Budget(
        seconds=cfg.search.budget, per_process=st.progress.child_seconds,
        started=started,
        processes=budget_mod.validation_processes(v.candidates, v.screen_rounds, v.rounds))
    # before any trial, one process costs what the estimate says, or what the preflight (one
    # child, start-up to result) really took when that was more
    plan.per_process = max(plan.per_process, plan.elapsed())
    plan.check("search.budget (--budget)")
    plan.start_search()
    st.say(plan.plan_line())
    return plan


def budget_for(st: study.Study, started: float) -> budget_mod.Budget | None:
    """The budget of ``st.config.search.budget`` for a run started at ``started`` (on
    :func:`budget_mod.clock`), checked and said: what ``size --budget`` gives each size."""
    return _budget(st, started)


def _within(plan: budget_mod.Budget, measurer: measuring.Measurer) -> measuring.Measurer:
    """The measurer validation runs with: its sequential extension capped at the rounds the
    budget still pays for."""
    v = measurer.config.validate
    capped = plan.validation_rounds(v.rounds, v.max_rounds)
    if capped >= v.max_rounds:
        return measurer
    measurer.say(f"budget: validation capped at {capped} final rounds (max_rounds "
                 f"{v.max_rounds}): {budget_mod.fmt(plan.left())} left")
    config = measurer.config.replace(validate=dataclasses.replace(v, max_rounds=capped))
    return dataclasses.replace(measurer, config=config)


class BudgetWatch:
    """After each trial: this run's trial wall times into the budget, then stop the search
    when the next trial would not fit, or when the last phase stalled (see tuner/budget.py).
    A structured search that stalls or runs short of time keeps the trials its ablation
    needs: its plan's end is moved (the engine ablates in the last trials before the end), not
    the search stopped at once."""

    def __init__(self, st: study.Study, plan: budget_mod.Budget) -> None:
        self.st, self.plan = st, plan
        self.cut = False     # the structured plan's end was moved to fit the time
        self.mark = plan.clock()

    def __call__(self, optuna_study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        st, plan = self.st, self.plan
        # a trial's cost as the search pays it: child, study database and sampler together
        now = plan.clock()
        plan.walls.append(now - self.mark)
        self.mark = now
        sampler = st.structured
        if sampler is None:
            if plan.stopped is None:
                plan.stopped = self._stalled() or (self._out_of_time() if plan.trials_left() < 1
                                                   else None)
                if plan.stopped is not None:
                    st.say(f"  budget: stopping the search: {plan.stopped}")
                    optuna_study.stop()
            return
        started = len([t for t in optuna_study.get_trials(deepcopy=False)
                       if t.state != optuna.trial.TrialState.WAITING])
        fit = started + plan.trials_left()
        if sampler.end is None or fit < sampler.end:
            if not self.cut:
                st.say(f"  budget: time for ~{plan.trials_left()} more trials (~"
                       f"{plan.trial_seconds:.1f} s each); the plan's ablation goes in the last "
                       f"of them")
            self.cut = True
            sampler.end = fit
        if plan.stopped is None:
            stall = self._stalled()
            if stall:
                seen = sampler.history(optuna_study)
                todo = sampler.engine.ablation(seen, sampler.engine.noise(seen))
                sampler.end = min(sampler.end, started + len(todo))
                plan.stopped = stall
                st.say(f"  budget: {stall}; {len(todo)} ablation trials, then validation")
        if started >= sampler.end:
            if plan.stopped is None:
                plan.stopped = self._out_of_time()
            optuna_study.stop()

    def _out_of_time(self) -> str:
        plan = self.plan
        return (f"no time for another trial (~{plan.trial_seconds:.1f} s each) before "
                f"validation's ~{budget_mod.fmt(plan.reserve)}")

    def _stalled(self) -> str | None:
        """The stall rule's reason, or None."""
        st = self.st
        trials = sorted(st.mine(st.optuna.get_trials(deepcopy=False)), key=lambda t: t.number)
        trials = [t for t in trials if t.state != optuna.trial.TrialState.WAITING
                  and t.state != optuna.trial.TrialState.RUNNING]
        if st.structured is not None:
            patience = budget_mod.STRUCTURED_PATIENCE
            if len(trials) < patience or any(t.user_attrs.get("phase") != "tpe"
                                             for t in trials[-patience:]):
                return None
            noise = st.structured.record(st.optuna)["noise"]
            phase = "model-phase (TPE) "
        else:
            patience = budget_mod.PATIENCE
            trials = [t for t in trials if t.user_attrs.get("role") not in (
                study.BASELINE, study.EXPERT, study.SCREEN)]
            noise = _trial_noise(st)
            phase = ""
        if len(trials) < patience:
            return None
        last = trials[-patience:]
        before = [t.value for t in st.complete() if t.number < last[0].number]
        if not before:
            return None
        values = [max(before), *(t.value if t.state == optuna.trial.TrialState.COMPLETE
                                 and "duplicate_of" not in t.user_attrs else None for t in last)]
        if not budget_mod.stalled(values, noise, patience):
            return None
        return (f"no gain beyond noise (±{noise:.1%}) in the last {patience} {phase}trials"
                + (", every dimension screened" if st.structured is not None else ""))

    def reason(self, interrupted: bool) -> str:
        """Why the search ended (for the record)."""
        st, plan = self.st, self.plan
        if interrupted:
            return budget_mod.STOP_INTERRUPTED
        if plan.stopped is not None:
            return plan.stopped
        if st.structured is not None and st.structured.finished(st.optuna):
            return budget_mod.STOP_PLAN
        if st.cap_reached():
            return "max_trials reached"
        return budget_mod.STOP_TRIALS


def _trial_noise(st: study.Study) -> float:
    """"Beyond noise" for a sampler without replicates: the windows' median spread within a
    trial, or the spread of repeated configurations across processes when larger, and never
    below the smallest win validation would adopt (a smaller gain cannot change the answer)."""
    spreads = sorted(t.user_attrs["throughput"]["rel_spread"] for t in st.complete()
                     if "throughput" in t.user_attrs and "duplicate_of" not in t.user_attrs)
    within = spreads[len(spreads) // 2] if spreads else 0.0
    across = 0.0
    for group in validate.replicates(st.complete()):
        mean = sum(group) / len(group)
        across = max(across, (max(group) - min(group)) / mean)
    return max(within, across, st.config.validate.min_speedup - 1)


def _sqlalchemy_error() -> type[BaseException]:
    import sqlalchemy.exc

    return sqlalchemy.exc.SQLAlchemyError
