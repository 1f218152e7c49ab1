"""The Optuna study of a search: storage, sampler, reference trials, the objective.

Any RDB storage URL works (SQLite by default). A resumed or joined study must belong to the same
workload, measurement and machine type. Trials left RUNNING by a dead search on this host are marked
FAIL at once; Optuna's heartbeat catches the rest, and both re-enqueue the lost trial's parameters
(see :mod:`tuner.search.shared` for what several workers coordinate and how). The first trials are
TensorFlow's defaults (the baseline) and the expert rule, then the sampler's (see
:mod:`tuner.search.sampling`). Every trial is one fresh child under the host-wide lock; clearly bad
trials are pruned after a few windows. A configuration already measured is not measured again as a
new trial (the trial returns the earlier measurement, marked ``duplicate_of``), except as a
deliberate replicate. ``search.sampler: structured`` runs the phases of
:mod:`tuner.search.structured`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.base import stats
from tuner.base.urls import mask_secret, masked
from tuner.child import guard
from tuner.errors import TrialFailed, WorkloadError
from tuner.search import measuring, progress, sampling, shared, structured
from tuner.search import storage as storage_mod
from tuner.search.outcome import Searched
from tuner.search.trial import Watch
from tuner.tuned import store

BASELINE, EXPERT, SCREEN = store.BASELINE, store.EXPERT, store.SCREEN   # a reference trial's "role"


class Study:
    """One worker's study: made by :func:`open_study`, ready to run trials."""

    def __init__(self, study: optuna.Study, measurer: measuring.Measurer,
                 pre: measuring.Preflight, sampler: str, recorded_on: str) -> None:
        self.optuna = study
        self.measurer = measurer
        self.config = measurer.config
        self.say = measurer.say
        self.machine, self.space = pre.machine, pre.space
        self.sampler = sampler
        self.machine_id = shared.machine_id(self.machine.fingerprint())
        self.recorded_on = recorded_on  # the machine type the study was first recorded on
        self.progress = progress.Progress(self.config, pre.child_seconds)
        self.validation_estimate = self.progress.validation_estimate
        self._interrupted_trial: int | None = None
        self._tpe_said = False
        self.structured = study.sampler if isinstance(
            study.sampler, structured.StructuredSampler) else None
        if self.structured is not None:
            self.structured.select = self.mine
            objective, accuracy = self.config.objective, self.config.accuracy
            self.structured.feasible = lambda attrs: measuring.feasible(attrs, objective,
                                                                        accuracy)

    def mine(self, trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
        """The trials measured on this machine type (all of them, unless the study was joined
        with --allow-other-machines). Trials from before machine ids were recorded belong to the
        machine type the study was recorded on."""
        return [t for t in trials
                if t.user_attrs.get(shared.MACHINE_ID, self.recorded_on) == self.machine_id]

    def complete(self) -> list[FrozenTrial]:
        """This machine type's complete trials."""
        return self.mine(self.optuna.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def complete_numbers(self) -> list[int]:
        return sorted(t.number for t in self.complete())

    def fail_stale_trials(self) -> None:
        """Trials of dead workers: Optuna's heartbeat check (which Optuna also runs before each
        trial, without a reason on the trial) and this host's dead pids."""
        for number in shared.fail_stale_trials(self.optuna):
            self.say(f"marked trial {number} FAIL: its worker stopped sending heartbeats; its "
                     f"settings are queued again")
        for number, pid in shared.fail_dead_trials(self.optuna):
            self.say(f"marked trial {number} FAIL: its search process (pid {pid}) is gone; "
                     f"its settings are queued again")

    def enqueue_references(self) -> None:
        """The baseline and the expert rule, and for TPE the screening points, once a study."""
        study = self.optuna
        roles = {t.user_attrs.get("role") for t in study.get_trials(deepcopy=False)}
        for role, settings in ((BASELINE, self.space.baseline()),
                               (EXPERT, self.space.expert(self.machine))):
            if role not in roles:
                params = ({name: settings[name] for name in self.space.searched}
                          if self.structured is None
                          else self.structured.space.params_of(settings))
                study.enqueue_trial(params, user_attrs={"role": role, **(
                    {"phase": "reference"} if self.structured is not None else {})})
        if self.sampler == "tpe" and SCREEN not in roles:
            for params in sampling.screening_for(self.config, self.space, self.machine):
                study.enqueue_trial(params, user_attrs={"role": SCREEN})

    # -- trials --------------------------------------------------------------------------------

    def announce(self) -> None:
        prior = len([t for t in self.optuna.get_trials(deepcopy=False)
                     if t.state != TrialState.WAITING])  # enqueued references are not history
        plan = self.structured.record(self.optuna) if self.structured is not None else None
        for line in progress.opening(self.config, self.machine, self.space, self.sampler, prior,
                                     self.progress, masked(self.config.storage), plan):
            self.say(line)

    def run_trials(self, timeout: float | None, callbacks: Iterable[Any] = ()) -> bool:
        """Add this run's trials; True when Ctrl-C or SIGTERM stopped them. ``callbacks`` run
        after each trial, after this study's own."""
        cfg = self.config
        try:
            if self.cap_reached():
                self.say(f"the study already holds {cfg.search.max_trials} trials (the "
                         f"study-wide cap): no trials to add")
            else:
                if self.structured is not None:
                    self.structured.end = len([t for t in self.optuna.get_trials(
                        deepcopy=False) if t.state != TrialState.WAITING]) + cfg.search.n_trials
                self.optuna.optimize(self.objective, n_trials=cfg.search.n_trials,
                                     timeout=timeout, catch=(TrialFailed,),
                                     callbacks=[self.after_trial, *callbacks])
            return False
        except KeyboardInterrupt:
            self.say("interrupted: stopping the search")
            self._requeue_interrupted()
            return True

    def objective(self, trial: optuna.Trial) -> float:
        role = trial.user_attrs.get("role")
        params = (self.space.searched if self.structured is None
                  else self.structured.space.params)
        sampled = {name: trial.suggest_categorical(name, choices)
                   for name, choices in params.items()}
        if role == BASELINE:
            settings = self.space.baseline()
        elif role == EXPERT:
            settings = self.space.expert(self.machine)
        elif self.structured is not None:
            settings = self.structured.space.settings(sampled)
        else:
            settings = self.space.settings(sampled)
        if self.structured is not None and trial.number in self.structured.steps:
            step = self.structured.steps.pop(trial.number)
            trial.set_user_attr("phase", step.phase)
            if step.role:
                role = step.role
                trial.set_user_attr("role", role)
        trial.set_user_attr("settings", settings)
        trial.set_user_attr(shared.HOST_ATTR, shared.host_id())
        trial.set_user_attr(shared.PID_ATTR, os.getpid())
        trial.set_user_attr(shared.PIDNS_ATTR, shared.process_space())
        trial.set_user_attr(shared.MACHINE_ID, self.machine_id)
        if role not in (BASELINE, EXPERT, structured.REPLICATE):
            earlier = self.measured_before(settings, trial.number)
            if earlier is not None:   # no trial spent measuring what is known
                for key, value in earlier.user_attrs.items():
                    if key not in trial.user_attrs and key not in ("role", "phase"):
                        trial.set_user_attr(key, value)
                trial.set_user_attr("duplicate_of", earlier.number)
                return float(earlier.value)
        objective = self.config.objective
        windows: list[float] = []

        def on_window(index: int, throughput: float) -> None:
            if objective.percentile is not None:
                return  # windows report throughput; a latency objective is judged at the end
            windows.append(throughput)
            trial.report(stats.median(windows), index)
            if trial.should_prune():
                raise optuna.TrialPruned(f"median {stats.median(windows):.1f} samples/s after "
                                         f"{len(windows)} windows is below "
                                         f"{self.config.search.prune_ratio:g} x the best")

        try:
            result = self.measurer.measure(settings, Watch(on_window))
        except TrialFailed as exc:
            trial.set_user_attr("fail_reason", exc.reason)
            raise
        except optuna.TrialPruned as exc:
            trial.set_user_attr("prune_reason", str(exc))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C or SIGTERM)")
            self._interrupted_trial = trial.number
            raise
        self.progress.measured(result["wall_seconds"])
        attrs = measuring.summary(result)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if objective.latency_budget_ms is not None:
            excess = attrs["step_latency_ms"]["p95"] - objective.latency_budget_ms
            trial.set_user_attr("latency_excess_ms", excess)
            if hasattr(trial, "set_constraint"):  # feasible when <= 0; constrained TPE uses it
                trial.set_constraint("latency_budget", excess)
        _guard(trial, role, attrs, self.config.accuracy)
        return measuring.score(attrs, objective)

    def measured_before(self, settings: dict[str, Any], number: int) -> FrozenTrial | None:
        """This machine type's measured (not itself duplicated) complete trial of ``settings``."""
        key = structured.settings_key(settings)
        for t in self.complete():
            if t.number != number and "duplicate_of" not in t.user_attrs \
                    and structured.settings_key(t.user_attrs.get("settings") or {}) == key:
                return t
        return None

    def after_trial(self, study: optuna.Study, frozen: FrozenTrial) -> None:
        best = max(self.complete(), key=lambda c: c.value, default=None)
        self.say(self.progress.trial_line(frozen, best))
        self.fail_stale_trials()  # before Optuna's own check, to say why on the trial
        if self.cap_reached():
            study.stop()
        if self.structured is not None:
            self.after_structured(study)

    def after_structured(self, study: optuna.Study) -> None:
        """Record what screening judged; say it when the model phase starts; stop when the
        plan has nothing left to measure."""
        sampler = self.structured
        state = sampler.record(study)
        seen = sampler.history(study)
        step = sampler.engine.next_step(seen, sampler.remaining(study))
        if step is not None and step.phase == "tpe" and not self._tpe_said \
                and (sampler.remaining(study) or 0) > 0:
            self._tpe_said = True
            self.say(progress.screening_done(state))
        if step is None:
            self.say("  structured search: nothing left to measure; stopping early")
            study.stop()

    def cap_reached(self) -> bool:
        """The study-wide cap counts every worker's trials, running ones included, so workers
        stop together instead of each starting one more."""
        cap = self.config.search.max_trials
        return cap is not None and len(self.optuna.get_trials(deepcopy=False, states=(
            TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING))) >= cap

    def _requeue_interrupted(self) -> None:
        """A trial cut short by Ctrl-C or SIGTERM (an orchestrator stopping a worker) lost only
        its measurement: queue its settings again for another worker, or the next run."""
        if self._interrupted_trial is None:
            return
        try:
            frozen = self.optuna.get_trials(deepcopy=False)[self._interrupted_trial]
            if frozen.state == TrialState.FAIL:
                storage_mod.RetryStaleTrial()(self.optuna, frozen)
        except Exception as exc:  # noqa: BLE001 - best effort while stopping; the trial is FAIL
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.say(f"  could not queue trial {self._interrupted_trial} again: "
                     f"{mask_secret(first, self.config.storage)}")

    # -- what the trials found -----------------------------------------------------------------

    def leader(self) -> FrozenTrial | None:
        """The structured search's parsimonious leader: among the configurations within noise
        of the best, the one that changes the fewest knobs (None for the other samplers)."""
        return self.structured.leader(self.optuna) if self.structured is not None else None

    def carried_by(self, settings: dict[str, Any]) -> list[str]:
        """The knobs of ``settings`` that differ from the baseline: after the structured
        search's ablation, those whose revert lost beyond noise (or that no trial reverted)."""
        baseline = self.space.baseline()
        return [name for name, value in settings.items() if baseline.get(name) != value]

    def searched(self) -> Searched:
        """This machine type's trials; StudyError when none completed, with the most common
        reason they failed."""
        everything = self.optuna.get_trials(deepcopy=False)
        return Searched.of(self.mine(everything), len(everything), self.sampler)

    def say_best(self, searched: Searched) -> None:
        self.say("")
        self.say("best trials of the search (one process each; validation follows):")
        for line in progress.summarize_trials(searched.trials, limit=5):
            self.say("  " + line)


# -- opening ---------------------------------------------------------------------------------------

def open_study(measurer: measuring.Measurer, pre: measuring.Preflight,
               locks: shared.Locks) -> Study:
    """Create or join the study, check it is this workload's and machine's, fail trials of dead
    workers and enqueue the reference trials: all under the setup lock, so workers starting
    together enqueue the references once."""
    cfg, say = measurer.config, measurer.say
    with locks.holding("setup", "setup", on_wait=lambda: say(
            "  waiting: another worker is setting up this study")):
        storage = storage_mod.open_storage(
            cfg.storage, heartbeat_interval=cfg.search.heartbeat_interval,
            grace_period=cfg.search.grace_period, say=say)
        try:
            storage.get_study_id_from_name(cfg.study_name)
            joining = True
        except KeyError:
            joining = False
        sampler, sampler_name = sampling.sampler(cfg, pre.space, joining=joining,
                                                 machine=pre.machine)
        optuna_study = optuna.create_study(storage=storage, study_name=cfg.study_name,
                                           direction="maximize", sampler=sampler,
                                           pruner=sampling.pruner(cfg), load_if_exists=True)
        recorded_on = shared.check_or_record(
            optuna_study, config=cfg.fingerprint(), machine=pre.machine.fingerprint(),
            space=pre.space.describe(), machine_full=pre.machine.as_dict(),
            where=f"study {cfg.study_name!r} in {masked(cfg.storage)}",
            allow_other_machines=cfg.search.allow_other_machines, say=say)
        study = Study(optuna_study, measurer, pre, sampler_name, recorded_on)
        study.fail_stale_trials()
        study.enqueue_references()
    return study


def _guard(trial: optuna.Trial, role: str | None, attrs: dict[str, Any], accuracy: Any) -> None:
    """The accuracy guard's verdict on a measured trial: its excess over the limit (> 0:
    infeasible, never adopted), stored for constrained samplers; a baseline beyond float
    noise means the workload is not deterministic, and the search stops with why."""
    excess = measuring.accuracy_excess(attrs, accuracy)
    if excess is None:
        return
    trial.set_user_attr("accuracy_excess", min(excess, 1e300))
    if hasattr(trial, "set_constraint"):  # Optuna's "constraints:accuracy" system attr
        trial.set_constraint("accuracy", min(excess, 1e300))
    if role == BASELINE:
        why = guard.refused_baseline(attrs.get("accuracy"))
        if why:
            trial.set_user_attr("fail_reason", why)
            raise WorkloadError(why)
