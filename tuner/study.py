"""The search: preflight, an Optuna study of subprocess trials, then interleaved validation.

Flow of :func:`search`:

1. Detect the machine; preflight the workload once in a child (a typo costs seconds).
2. Open or resume the Optuna study (any RDB storage URL; SQLite by default). A resumed study must
   belong to the same workload, measurement and machine. Trials left RUNNING by a dead search on
   this host are marked FAIL at once; Optuna's heartbeat catches the rest, and both re-enqueue
   the lost trial's parameters. Several workers (on several identical machines) may share one
   study through PostgreSQL: see :mod:`tuner.coord` for what they coordinate and how.
3. The first trials are TensorFlow's defaults (the baseline) and the expert rule; then the sampler
   (exhaustive grid when the space fits the budget, TPE otherwise) proposes the rest. Every trial is
   a fresh child under the host-wide lock; clearly bad trials are pruned after a few windows.
4. One trial is one process, and processes differ by up to 1.6x, so the best trial is only a
   candidate: the best few are re-measured in fresh, interleaved processes, and the fastest against
   the baseline. With several workers, the last one to finish its trials validates and stores the
   result in the study; the others write their tuned file from it.
   The winner's speedup and interval come from those rounds alone (not from the trials that
   selected it), and unless it is faster beyond noise, the verdict keeps TensorFlow's defaults.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import re
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import coord, protocol, stats, tuned
from . import machine as machine_mod
from . import space as space_mod
from .config import Config
from .errors import StudyError, StudyMismatchError, TrialFailed, WorkloadError
from .lock import host_lock
from .trial import Watch, run_child, worker_command

ATTR_PREFIX = "tuner."
# per trial: which machine type measured it (a short hash of the machine fingerprint)
MACHINE_ID = ATTR_PREFIX + "machine_id"
# per study and machine type: the stored validation, which every worker's tuned file comes from
VALIDATION = ATTR_PREFIX + "validation."
SEARCH_LOCK = "search"  # see tuner/coord.py
BASELINE, EXPERT, SCREEN = "baseline", "expert", "screen"
# Below this many trials, the screening points would leave the model-based sampler too little.
MIN_TRIALS_FOR_SCREEN = 12


def screening_points(space: space_mod.Space, machine: machine_mod.Machine, *,
                     threads: bool = True) -> list[dict[str, Any]]:
    """One-knob-at-a-time points, everything else at the baseline: first every listed value of
    each declared knob (the user named them because they matter), then, with ``threads``, the
    two thread counts. Few trials that cover the biggest effects (on a many-branch CNN, intra=1
    alone is 1.4x the defaults; a sequential map made parallel, several times) before TPE models
    the rest. A random start found them only by luck."""
    n = machine.usable_cpus
    ladders: dict[str, list[Any]] = {
        name: values for name, values in space.searched.items()
        if name.startswith(space_mod.KNOB_PREFIX)}
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


class Printer:
    """Where progress goes. Tests collect lines; the CLI prints them."""

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self._write = write or (lambda line: print(line, flush=True))

    def __call__(self, line: str = "") -> None:
        self._write(line)


@dataclass
class SearchOutcome:
    tuned_path: str
    tuned: dict[str, Any]
    backup: str | None
    interrupted: bool = False
    lines: list[str] = field(default_factory=list)


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
        mid = trial.user_attrs.get(MACHINE_ID)
        values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if t.user_attrs.get(MACHINE_ID, mid) == mid]
        if not values:
            return False
        return trial.intermediate_values[step] < self.ratio * max(values)


def _json_key(settings: dict[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True)


def _estimate_child_seconds(preflight: dict[str, Any], config: Config) -> float:
    timings = preflight.get("timings", {})
    build = sum(timings.get(k, 0.0) for k in ("import", "build_model", "build_data"))
    return (preflight.get("startup_seconds", 0.5) + build + config.measure.warmup_seconds
            + config.measure.windows * config.measure.window_seconds + 0.5)


def _fmt_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def machine_id(fingerprint: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]


class Search:
    def __init__(self, config: Config, printer: Printer | None = None) -> None:
        self.config = config
        self.say = printer or Printer()
        self.machine = machine_mod.detect()
        self.started = time.monotonic()
        self.preflight: dict[str, Any] = {}
        self.pipeline = space_mod.Pipeline()
        self.space: space_mod.Space | None = None
        self.child_estimate = 20.0
        self.trial_walls: list[float] = []
        self.validation_estimate = 0.0
        self.sampler_name = ""
        self.phase_seconds: dict[str, float] = {}
        self._run_added = 0
        self._study_machine_id = ""  # the machine type the study was first recorded on
        self._interrupted_trial: int | None = None

    @property
    def machine_id(self) -> str:
        return machine_id(self.machine.fingerprint())

    def _mine(self, trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
        """The trials measured on this machine type (all of them, unless the study was joined
        with --allow-other-machines). Trials from before machine ids were recorded belong to the
        machine type the study was recorded on."""
        mine = self.machine_id
        return [t for t in trials
                if t.user_attrs.get(MACHINE_ID, self._study_machine_id or mine) == mine]

    # -- children ------------------------------------------------------------------------------

    def _baseline(self) -> dict[str, Any]:
        """TensorFlow's defaults with the user's pipeline as written (declared knobs at their
        builder defaults): what every speedup is measured against."""
        assert self.space is not None
        return self.space.baseline()

    def _task(self, kind: str) -> dict[str, Any]:
        return protocol.task(kind, self.config.workload, usable_cpus=self.machine.usable_cpus,
                             affinity=self.machine.affinity,
                             measure=dataclasses.asdict(self.config.measure),
                             knobs=self.config.knobs)

    def _run(self, kind: str, settings: dict[str, Any],
             watch: Watch | None = None) -> dict[str, Any]:
        def waiting() -> None:
            self.say("  waiting: another tuner process is measuring on this host")

        with host_lock(on_wait=waiting):
            return run_child(self._task(kind), timeout=self.config.search.trial_timeout,
                             settings=settings, watch=watch, worker=worker_command(),
                             **self._placement(settings))

    def _placement(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The allocator library, CPU set and instance CPU sets a trial's settings mean here."""
        allocator = settings.get("allocator") or "system"
        where = space_mod.placement_of(settings, self.machine)
        return {"preload": self.machine.allocators.get(allocator) if allocator != "system"
                else None,
                "cpus": where["cpus"], "instances": where["instances"]["cpus"]}

    def score(self, attrs: dict[str, Any]) -> float:
        """What the study maximises for one measurement: throughput (samples/s), or for a latency
        objective the inverse of that latency percentile (1000 / ms), so that "higher is better"
        and a ratio of scores is a speedup everywhere (pruning, ranking, validation)."""
        pct = self.config.objective.percentile
        if pct is None:
            return float(attrs["throughput"]["median"])
        return 1000.0 / float(attrs["step_latency_ms"][pct])

    def feasible(self, attrs: dict[str, Any]) -> bool:
        """Whether a measurement meets the latency budget (always, without one)."""
        budget = self.config.objective.latency_budget_ms
        return budget is None or float((attrs.get("step_latency_ms") or {}).get(
            "p95", float("inf"))) <= budget

    def measure(self, settings: dict[str, Any]) -> dict[str, Any]:
        """One measurement of ``settings`` in a fresh child, under the host lock."""
        return self._run("measure", settings)

    def run_preflight(self) -> None:
        wl = self.config.workload
        self.say(f"preflight: building {wl.model or '(no model)'} and {wl.data} once "
                 f"(timeout {self.config.search.trial_timeout:g} s)")
        try:
            result = self._run("preflight", space_mod.default_settings())
        except TrialFailed as exc:
            raise WorkloadError(f"{self.config.path}: workload preflight failed: {exc.reason}") \
                from None
        self.preflight = result
        self.machine = self.machine.with_tensorflow(result["tf_version"],
                                                    result.get("onednn_enabled"),
                                                    result.get("openmp"))
        self.child_estimate = _estimate_child_seconds(result, self.config)
        self.pipeline = space_mod.Pipeline.from_preflight(result)
        self.say(f"preflight ok: TensorFlow {result['tf_version']}, batch size "
                 f"{result['batch_size']}, first step {result['timings']['first_step']:.2f} s, "
                 f"next step {result['timings']['second_step'] * 1e3:.1f} ms")
        if self.pipeline.ops:
            self.say(f"  pipeline: {' -> '.join(self.pipeline.ops)}")
        for name, info in (result.get("knobs") or {}).items():
            self.say(f"  knob {name}: to {' and '.join('build_' + r for r in info['builders'])}"
                     f"; baseline {info['baseline']!r} ({info['source']})")

    # -- study ---------------------------------------------------------------------------------

    def _storage(self) -> optuna.storages.RDBStorage:
        url = self.config.storage
        if url.startswith("sqlite:///"):
            path = url[len("sqlite:///"):]
            if path and path != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return coord.open_storage(url, heartbeat_interval=self.config.search.heartbeat_interval,
                                  grace_period=self.config.search.grace_period, say=self.say)

    def _sampler(self, space: space_mod.Space, joining: bool = False
                 ) -> tuple[optuna.samplers.BaseSampler, str]:
        search = self.config.search
        seed = search.seed
        if joining and seed is not None:
            # Workers joining a study must not replay the first worker's random draws (two
            # workers with one seed propose the same points); the study's creator keeps --seed.
            seed = int(hashlib.sha256(f"{seed}|{coord.process_space()}|{os.getpid()}".encode())
                       .hexdigest()[:8], 16)
        search = dataclasses.replace(search, seed=seed)
        kind = search.sampler
        if kind == "auto":
            # the baseline and expert trials come on top of the grid (they are enqueued)
            kind = "grid" if space.size + 2 <= search.n_trials else "tpe"
        if kind == "grid":
            return optuna.samplers.GridSampler(space.searched, seed=search.seed), "grid"
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=search.seed), "random"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            budget = self.config.objective.latency_budget_ms
            # constant_liar: another worker's running trial counts as a poor result, so workers do
            # not all sample the same promising point (no effect with one worker)
            sampler = optuna.samplers.TPESampler(
                seed=search.seed, multivariate=True, group=True, constant_liar=True,
                n_startup_trials=max(4, min(10, search.n_trials // 3)),
                # Optuna < 5 takes constraints this way; 5 reads trial.set_constraint (objective)
                **({"constraints_func": lambda t: (t.user_attrs.get("latency_excess_ms", 0.0),)}
                   if budget is not None and not hasattr(optuna.trial.Trial, "set_constraint")
                   else {}))
        return sampler, "tpe"

    def open_study(self, locks: coord.Locks | None = None) -> optuna.Study:
        """Create or join the study, check it is this workload's and machine's, fail trials of
        dead workers and enqueue the reference trials: all under the setup lock, so workers
        starting together enqueue the references once."""
        assert self.space is not None
        locks = locks or coord.Locks(self.config.storage, self.config.study_name)
        with locks.holding("setup", "setup", on_wait=lambda: self.say(
                "  waiting: another worker is setting up this study")):
            storage = self._storage()
            try:
                storage.get_study_id_from_name(self.config.study_name)
                joining = True
            except KeyError:
                joining = False
            sampler, sampler_name = self._sampler(self.space, joining=joining)
            self.sampler_name = sampler_name
            # windows report throughput, so they can only prune a throughput objective
            pruner: optuna.pruners.BasePruner = (
                ClearlyWorsePruner(self.config.search.prune_ratio)
                if self.config.search.pruning and self.config.objective.percentile is None
                else optuna.pruners.NopPruner())
            study = optuna.create_study(storage=storage, study_name=self.config.study_name,
                                        direction="maximize", sampler=sampler, pruner=pruner,
                                        load_if_exists=True)
            self._check_or_record(study)
            self._fail_stale_trials(study)
            self.enqueue_references(study)
        return study

    def _check_or_record(self, study: optuna.Study) -> None:
        attrs = study.user_attrs
        mine = {"config": self.config.fingerprint(), "machine": self.machine.fingerprint(),
                "space": self.space.describe()}  # type: ignore[union-attr]
        if ATTR_PREFIX + "config" not in attrs:
            for key, value in mine.items():
                study.set_user_attr(ATTR_PREFIX + key, value)
            study.set_user_attr(ATTR_PREFIX + "machine_full", self.machine.as_dict())
            study.set_user_attr(ATTR_PREFIX + "created", _now())
            self._study_machine_id = self.machine_id
            return
        self._study_machine_id = machine_id(attrs[ATTR_PREFIX + "machine"])
        where = f"study {self.config.study_name!r} in {tuned.mask_url(self.config.storage)}"
        if attrs[ATTR_PREFIX + "config"] != mine["config"]:
            raise StudyMismatchError(f"{where} was made for another workload or measurement "
                                     f"({_diff(attrs[ATTR_PREFIX + 'config'], mine['config'])}); "
                                     f"use a new --study-name")
        diffs = machine_mod.fingerprint_differences(attrs[ATTR_PREFIX + "machine"], mine["machine"])
        if diffs and not self.config.search.allow_other_machines:
            raise StudyMismatchError(
                f"{where} was measured on another machine type ({'; '.join(diffs)}); this "
                f"worker does not join it. Use a new --study-name, or pass "
                f"--allow-other-machines to add this machine type to the study (each machine "
                f"type's trials and validation are then kept apart)")
        if diffs:
            self.say(f"note: joining {where}, recorded on another machine type "
                     f"({'; '.join(diffs)}), as machine type {self.machine_id}: only its trials "
                     f"measured here are compared, validated and written")
            study.set_user_attr(f"{ATTR_PREFIX}machine.{self.machine_id}", mine["machine"])
        if attrs[ATTR_PREFIX + "space"] != mine["space"]:
            raise StudyMismatchError(f"{where} searched another space "
                                     f"({_diff(attrs[ATTR_PREFIX + 'space'], mine['space'])}); "
                                     f"use a new --study-name")

    def _fail_dead_trials(self, study: optuna.Study) -> None:
        """A trial RUNNING for a search process on this host (and in this pid namespace) that no
        longer exists never ends: mark it FAIL now, rather than after the heartbeat grace period,
        and re-enqueue its parameters as the heartbeat would. Other hosts' trials are left to the
        heartbeat."""
        host, here = coord.host_id(), coord.process_space()
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            pid = t.user_attrs.get(ATTR_PREFIX + "pid")
            if not isinstance(pid, int) or t.user_attrs.get(ATTR_PREFIX + "host") != host:
                continue
            if t.user_attrs.get(ATTR_PREFIX + "pidns", here) != here:
                continue
            if pid != os.getpid() and not _alive(pid):
                reason = f"interrupted: its search process (pid {pid}) ended while it ran"
                study._storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
                try:
                    if not study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                        continue
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue  # another worker's heartbeat check got there first
                coord.RetryStaleTrial()(study, study._storage.get_trial(t._trial_id))
                self.say(f"marked trial {t.number} FAIL: its search process (pid {pid}) is gone; "
                         f"its settings are queued again")

    def _fail_stale_trials(self, study: optuna.Study) -> None:
        """Trials of dead workers: Optuna's heartbeat check (which Optuna also runs before each
        trial, without a reason on the trial) and this host's dead pids."""
        for number in coord.fail_stale_trials(study):
            self.say(f"marked trial {number} FAIL: its worker stopped sending heartbeats; its "
                     f"settings are queued again")
        self._fail_dead_trials(study)

    def enqueue_references(self, study: optuna.Study) -> None:
        assert self.space is not None
        roles = {t.user_attrs.get("role") for t in study.get_trials(deepcopy=False)}
        roles |= {t.user_attrs.get("role") for t in study.get_trials(
            deepcopy=False, states=(TrialState.WAITING,))}
        for role, settings in ((BASELINE, self.space.baseline()),
                               (EXPERT, self.space.expert(self.machine))):
            if role in roles:
                continue
            params = {name: settings[name] for name in self.space.searched}
            study.enqueue_trial(params, user_attrs={"role": role})
        if self.sampler_name == "tpe" and SCREEN not in roles:
            if self.config.search.n_trials >= MIN_TRIALS_FOR_SCREEN:
                points = screening_points(self.space, self.machine)
            else:
                # a small budget still screens the declared knobs when that leaves TPE half
                points = screening_points(self.space, self.machine, threads=False)
                if len(points) > self.config.search.n_trials // 2:
                    points = []
            for params in points:
                study.enqueue_trial(params, user_attrs={"role": SCREEN})

    # -- trials --------------------------------------------------------------------------------

    def objective(self, trial: optuna.Trial) -> float:
        assert self.space is not None
        role = trial.user_attrs.get("role")
        sampled = {name: trial.suggest_categorical(name, choices)
                   for name, choices in self.space.searched.items()}
        if role == BASELINE:
            settings = self.space.baseline()
        elif role == EXPERT:
            settings = self.space.expert(self.machine)
        else:
            settings = self.space.settings(sampled)
        trial.set_user_attr("settings", settings)
        trial.set_user_attr(ATTR_PREFIX + "host", coord.host_id())
        trial.set_user_attr(ATTR_PREFIX + "pid", os.getpid())
        trial.set_user_attr(ATTR_PREFIX + "pidns", coord.process_space())
        trial.set_user_attr(MACHINE_ID, self.machine_id)
        windows: list[float] = []

        def on_window(index: int, throughput: float) -> None:
            if self.config.objective.percentile is not None:
                return  # windows report throughput; a latency objective is judged at the end
            windows.append(throughput)
            trial.report(stats.median(windows), index)
            if trial.should_prune():
                raise optuna.TrialPruned(f"median {stats.median(windows):.1f} samples/s after "
                                         f"{len(windows)} windows is below "
                                         f"{self.config.search.prune_ratio:g} x the best")

        try:
            result = self._run("measure", settings, Watch(on_window))
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
        self.trial_walls.append(result["wall_seconds"])
        for key, value in result_attrs(result).items():
            trial.set_user_attr(key, value)
        attrs = result_attrs(result)
        budget = self.config.objective.latency_budget_ms
        if budget is not None:
            excess = attrs["step_latency_ms"]["p95"] - budget
            trial.set_user_attr("latency_excess_ms", excess)
            if hasattr(trial, "set_constraint"):  # feasible when <= 0; constrained TPE uses it
                trial.set_constraint("latency_budget", excess)
        return self.score(attrs)

    def after_trial(self, study: optuna.Study, frozen: FrozenTrial) -> None:
        self._run_added += 1
        self.say(self.trial_line(study, frozen))
        self._fail_stale_trials(study)  # before Optuna's own check, to say why on the trial
        if self._cap_reached(study):
            study.stop()

    def _cap_reached(self, study: optuna.Study) -> bool:
        """The study-wide cap counts every worker's trials, running ones included, so workers
        stop together instead of each starting one more."""
        cap = self.config.search.max_trials
        return cap is not None and len(study.get_trials(deepcopy=False, states=(
            TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING))) >= cap

    def trial_line(self, study: optuna.Study, t: FrozenTrial) -> str:
        settings = t.user_attrs.get("settings") or {}
        role = t.user_attrs.get("role")
        label = f"[{role}] " if role else ""
        head = f"trial {t.number:>3}  {space_mod.short(settings)}  {label}"
        if t.state == TrialState.COMPLETE:
            tp = t.user_attrs["throughput"]
            body = (f"{tp['median']:>10.1f} samples/s (±{tp['rel_spread'] * 50:.1f}%)  "
                    f"sat {t.user_attrs.get('cpu_saturation', float('nan')):.2f}")
        elif t.state == TrialState.PRUNED:
            body = f"PRUNED  {t.user_attrs.get('prune_reason', '')}"
        else:
            body = f"FAIL  {t.user_attrs.get('fail_reason', 'unknown reason')}"
        done = self._mine(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        best_text = ""
        if done:
            best = max(done, key=lambda c: c.value)
            best_text = f"  best {best.value:.1f} (#{best.number})"
        remaining = self.config.search.n_trials - self._run_added
        mean = (sum(self.trial_walls) / len(self.trial_walls)) if self.trial_walls else \
            self.child_estimate
        left = remaining * mean + self.validation_estimate
        return f"{head}{body}{best_text}  ~{_fmt_seconds(left)} left"

    # -- validation ----------------------------------------------------------------------------

    def candidates(self, study: optuna.Study) -> list[FrozenTrial]:
        defaults = _json_key(self._baseline())
        seen = {defaults}
        chosen = []
        complete = [t for t in self._mine(study.get_trials(deepcopy=False,
                                                           states=(TrialState.COMPLETE,)))
                    if "settings" in t.user_attrs and self.feasible(t.user_attrs)]
        for t in sorted(complete, key=lambda t: t.value, reverse=True):
            key = _json_key(t.user_attrs["settings"])
            if key in seen:
                continue
            seen.add(key)
            chosen.append(t)
            if len(chosen) >= self.config.validate.candidates:
                break
        return chosen

    def _measure_round(self, entries: list[tuple[str, dict[str, Any]]], round_no: int,
                       total: int, stage: str, store: dict[str, list[dict[str, Any]]],
                       failures: dict[str, str]) -> None:
        # Rotate the order every round so no configuration always runs first or last.
        shift = round_no % len(entries)
        ordered = entries[shift:] + entries[:shift]
        parts = []
        for label, settings in ordered:
            if label in failures:
                continue
            try:
                result = self.measure(settings)
            except TrialFailed as exc:
                failures[label] = exc.reason
                parts.append(f"{label} FAIL")
                continue
            store.setdefault(label, []).append(result_attrs(result))
            parts.append(f"{label} {result_attrs(result)['throughput']['median']:.1f}")
        self.say(f"  {stage} round {round_no + 1}/{total}: " + "  ".join(parts))

    def validate(self, study: optuna.Study) -> dict[str, Any]:
        cfg = self.config.validate
        candidates = self.candidates(study)
        baseline = self._baseline()
        failures: dict[str, str] = {}
        screening: dict[str, list[dict[str, Any]]] = {}
        labels = {f"#{t.number}": t for t in candidates}
        winner: FrozenTrial | None = candidates[0] if candidates else None
        if len(candidates) > 1 and cfg.screen_rounds > 0:
            # Screening only picks among the candidates, so the baseline is not measured here:
            # it is measured against the winner in every final round.
            self.say(f"validation: screening {len(candidates)} candidates, "
                     f"{cfg.screen_rounds} interleaved rounds in fresh processes")
            entries = [(label, t.user_attrs["settings"]) for label, t in labels.items()]
            for r in range(cfg.screen_rounds):
                self._measure_round(entries, r, cfg.screen_rounds, "screen", screening, failures)
            alive = [label for label in labels if label not in failures and label in screening]
            if not alive:
                winner = None
            else:
                best_label = max(alive, key=lambda lb: stats.median(
                    [self.score(m) for m in screening[lb]]))
                winner = labels[best_label]
        final: dict[str, list[dict[str, Any]]] = {}
        final_stop = None
        if winner is not None:
            label = f"#{winner.number}"
            self.say(f"validation: trial {label} ({space_mod.short(winner.user_attrs['settings'])})"
                     f" vs TensorFlow's defaults, {cfg.rounds} interleaved rounds"
                     f" in fresh processes")
            entries = [("baseline", baseline), (label, winner.user_attrs["settings"])]
            failures.pop(label, None)
            for r in range(cfg.rounds):
                self._measure_round(entries, r, cfg.rounds, "final", final, failures)
                stop = self._futile(final.get(label, []), final.get("baseline", []), r + 1)
                if stop:
                    self.say(f"  stopping after {r + 1} of {cfg.rounds} rounds: {stop}")
                    final_stop = stop
                    break
            if "baseline" in failures:
                raise StudyError(f"validation: the baseline (TensorFlow's defaults) failed: "
                                 f"{failures['baseline']}")
        else:
            # Nothing to compare: a few runs give the baseline's numbers for the tuned file.
            runs = min(cfg.rounds, self.FUTILITY_MIN_ROUNDS)
            self.say(f"validation: no candidate beyond TensorFlow's defaults; measuring the "
                     f"baseline {runs} times")
            for r in range(runs):
                self._measure_round([("baseline", baseline)], r, runs, "final", final, failures)
        return {"candidates": candidates, "winner": winner, "screening": screening,
                "final": final, "failures": failures, "stopped_early": final_stop}

    FUTILITY_MIN_ROUNDS = 3

    def _futile(self, candidate: list[dict[str, Any]], baseline: list[dict[str, Any]],
                done: int) -> str | None:
        """Why more final rounds cannot change the verdict to "tuned", or None.

        Only a futility stop: once at least three rounds ran, a candidate whose whole 95% interval
        lies below the minimum speedup worth adopting cannot be adopted by the remaining rounds
        in any plausible outcome, so they are skipped. There is no early stop for success: that
        would be a second look at the p-value and inflate the false-positive rate."""
        cfg = self.config.validate
        if done >= cfg.rounds or done < self.FUTILITY_MIN_ROUNDS:
            return None
        if len(candidate) < self.FUTILITY_MIN_ROUNDS or len(baseline) < self.FUTILITY_MIN_ROUNDS:
            return None
        cand = [self.score(m) for m in candidate]
        base = [self.score(m) for m in baseline]
        lo, hi = stats.ratio_ci(cand, base)
        if hi < cfg.min_speedup:
            return (f"the speedup's 95% interval ({lo:.3f}-{hi:.3f}x) is entirely below the "
                    f"minimum worth adopting ({cfg.min_speedup:g}x)")
        return None

    # -- the whole run -------------------------------------------------------------------------

    def run(self) -> SearchOutcome:
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines say it all
        try:
            return self._run_all()
        finally:
            optuna.logging.set_verbosity(verbosity)

    def _run_all(self) -> SearchOutcome:
        cfg = self.config
        tuned.check_replaceable(cfg.output, cfg.study_name, cfg.storage, cfg.force)
        locks = coord.Locks(cfg.storage, cfg.study_name)
        try:
            # Held (shared) from before the preflight to the end of this worker's trials, so a
            # worker started together with others never validates before they have all searched.
            locks.acquire(SEARCH_LOCK, SEARCH_LOCK, shared=True, on_wait=lambda: self.say(
                "waiting: another worker is validating this study; this one starts after"))
            mark = time.monotonic()
            self.run_preflight()
            self.phase_seconds["preflight"] = time.monotonic() - mark
            self.space = space_mod.build_space(self.machine, cfg.space, mode=cfg.workload.mode,
                                               pipeline=self.pipeline, knobs=cfg.knobs)
            return self._run_shared(locks)
        except (optuna.exceptions.StorageInternalError, _sqlalchemy_error()) as exc:
            # the database went away mid-run, beyond the retries: one line, never a traceback
            raise coord.cannot_connect(cfg.storage, exc) from None
        finally:
            locks.close()

    def _run_shared(self, locks: coord.Locks) -> SearchOutcome:
        cfg = self.config
        study = self.open_study(locks)
        v = cfg.validate
        self.validation_estimate = self.child_estimate * (
            v.candidates * v.screen_rounds * (v.candidates > 1) + 2 * v.rounds)
        prior = len([t for t in study.get_trials(deepcopy=False)
                     if t.state != TrialState.WAITING])  # enqueued references are not history
        space = self.space
        assert space is not None
        self.say(
            f"study {cfg.study_name!r} in {tuned.mask_url(cfg.storage)}: "
            f"{'resuming with ' + str(prior) + ' trials' if prior else 'new'}; sampler "
            f"{self.sampler_name}, space of {space.size} points over "
            f"{', '.join(space.searched) or 'nothing'}; {cfg.search.n_trials} trials of "
            f"~{self.child_estimate:.0f} s, then ~{_fmt_seconds(self.validation_estimate)} "
            f"of validation")
        self.say(f"machine: {self.machine.cpu_model}, {self.machine.usable_cpus} usable CPUs "
                 f"(visible {self.machine.visible_cpus}, quota {self.machine.cpu_quota}), "
                 f"TensorFlow {self.machine.tf_version}")
        interrupted = False
        search_timeout = None
        if cfg.search.timeout is not None:
            search_timeout = cfg.search.timeout - (time.monotonic() - self.started) \
                - self.validation_estimate
            if search_timeout <= 0:
                raise StudyError(f"--timeout: {cfg.search.timeout:g} s leaves no time for trials "
                                 f"after preflight and validation (~{self.validation_estimate:.0f} "
                                 f"s); allow more")
        mark = time.monotonic()
        try:
            if self._cap_reached(study):
                self.say(f"the study already holds {cfg.search.max_trials} trials (the "
                         f"study-wide cap): no trials to add")
            else:
                study.optimize(self.objective, n_trials=cfg.search.n_trials,
                               timeout=search_timeout, catch=(TrialFailed,),
                               callbacks=[self.after_trial])
        except KeyboardInterrupt:
            interrupted = True
            self.say("interrupted: stopping the search; writing the best result so far "
                     "(not validated)")
            self._requeue_interrupted(study)
        self.phase_seconds["trials"] = time.monotonic() - mark
        trials = self._mine(study.get_trials(deepcopy=False))
        self._require_some_success(trials)
        self.say("")
        self.say("best trials of the search (one process each; validation follows):")
        for line in summarize_trials(trials, limit=5):
            self.say("  " + line)
        validation = None
        if not interrupted:
            try:
                validation = self.validate_once(study, locks)
            except KeyboardInterrupt:
                interrupted = True
                self.say("interrupted during validation; writing the best result so far "
                         "(not validated)")
        document = self.document(study, validation)
        backup = tuned.write(document, cfg.output, study_name=cfg.study_name,
                             storage=cfg.storage, force=cfg.force)
        study.set_user_attr(ATTR_PREFIX + "last_result", {
            "verdict": document["verdict"], "settings": document["settings"],
            "result": document["result"], "written": _now(),
            "output": os.path.abspath(cfg.output)})
        return SearchOutcome(tuned_path=cfg.output, tuned=document,
                             backup=str(backup) if backup else None, interrupted=interrupted)

    def _requeue_interrupted(self, study: optuna.Study) -> None:
        """A trial cut short by Ctrl-C or SIGTERM (an orchestrator stopping a worker) lost only
        its measurement: queue its settings again for another worker, or the next run."""
        if self._interrupted_trial is None:
            return
        try:
            frozen = study.get_trials(deepcopy=False)[self._interrupted_trial]
            if frozen.state == TrialState.FAIL:
                coord.RetryStaleTrial()(study, frozen)
        except Exception as exc:  # noqa: BLE001 - best effort while stopping; the trial is FAIL
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.say(f"  could not queue trial {self._interrupted_trial} again: "
                     f"{tuned.mask_secret(first, self.config.storage)}")

    # -- validation once per study ------------------------------------------------------------

    def validate_once(self, study: optuna.Study, locks: coord.Locks) -> dict[str, Any]:
        """Validate, unless a validation stored in the study already covers every complete trial
        of this machine type: then reuse it. Runs under the search lock taken exclusively, so it
        waits until no worker is still running trials (or about to: a worker holds the lock
        shared from its start), and only one worker validates at a time (the others then find
        its result)."""

        def waiting() -> None:
            self.say("waiting: other workers are still running trials or validating; the last "
                     "to finish validates, the others write their tuned file from its result")

        locks.release(SEARCH_LOCK)  # this worker's trials are done
        with locks.holding(SEARCH_LOCK, SEARCH_LOCK, poll=2.0, on_wait=waiting) as waited:
            if waited > 1:
                self.phase_seconds["waiting_for_workers"] = waited
            self._fail_stale_trials(study)
            stored = self.stored_validation(study)
            if stored is not None:
                record = study.user_attrs[VALIDATION + self.machine_id]
                self.say(f"validation: reusing the validation stored by {record['by']} at "
                         f"{record['at']} (it covers all {len(record['complete'])} complete "
                         f"trials of this machine type)")
                return stored
            mark = time.monotonic()
            validation = self.validate(study)
            self.phase_seconds["validation"] = time.monotonic() - mark
            study.set_user_attr(VALIDATION + self.machine_id, self._validation_record(
                study, validation))
            return validation

    def _complete_numbers(self, study: optuna.Study) -> list[int]:
        return sorted(t.number for t in self._mine(study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,))))

    def _validation_record(self, study: optuna.Study, v: dict[str, Any]) -> dict[str, Any]:
        """What :meth:`validate` returned, JSON-ready (trials by number), with what it covers."""
        return {
            "complete": self._complete_numbers(study),
            "validate": dataclasses.asdict(self.config.validate),
            "by": f"{coord.host_id()} (pid {os.getpid()})",
            "at": _now(),
            "candidates": [t.number for t in v["candidates"]],
            "winner": v["winner"].number if v["winner"] is not None else None,
            "screening": v["screening"], "final": v["final"], "failures": v["failures"],
            "stopped_early": v["stopped_early"],
        }

    def stored_validation(self, study: optuna.Study) -> dict[str, Any] | None:
        """The stored validation of this machine type, if it is still current: it saw the same
        complete trials and ran with the same validation settings."""
        record = study.user_attrs.get(VALIDATION + self.machine_id)
        if not isinstance(record, dict):
            return None
        if record.get("complete") != self._complete_numbers(study) or \
                record.get("validate") != dataclasses.asdict(self.config.validate):
            return None
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        return {"candidates": [trials[n] for n in record["candidates"]],
                "winner": trials[record["winner"]] if record["winner"] is not None else None,
                "screening": record["screening"], "final": record["final"],
                "failures": record["failures"], "stopped_early": record["stopped_early"]}

    def _require_some_success(self, trials: list[FrozenTrial]) -> None:
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if complete:
            return
        failed = [t for t in trials if t.state == TrialState.FAIL]
        reasons: dict[str, int] = {}
        for t in failed:
            reason = t.user_attrs.get("fail_reason", "unknown reason")
            reason = re.sub(r"^instance \d+ of \d+: ", "", reason)  # the same failure, N times
            reasons[reason] = reasons.get(reason, 0) + 1
        if not reasons:
            raise StudyError("no trial completed (the search was stopped before the first one "
                             "finished)")
        common = max(reasons, key=lambda r: reasons[r])
        raise StudyError(f"all {len(failed)} trials failed; most common reason "
                         f"({reasons[common]}x): {common}")

    # -- the tuned file ------------------------------------------------------------------------

    def document(self, study: optuna.Study, validation: dict[str, Any] | None) -> dict[str, Any]:
        cfg = self.config
        everything = study.get_trials(deepcopy=False)
        trials = self._mine(everything)
        by_role = {t.user_attrs.get("role"): t for t in trials
                   if t.user_attrs.get("role") and t.state == TrialState.COMPLETE}
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = max(complete, key=lambda t: t.value)
        counts = {state.name.lower(): sum(1 for t in trials if t.state == state)
                  for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        result: dict[str, Any]
        if validation is None:
            verdict = "unvalidated"
            chosen = best.user_attrs["settings"]
            base = by_role.get(BASELINE)
            result = {
                "throughput": _trial_throughput(best),
                "baseline_throughput": _trial_throughput(base) if base else None,
                "speedup": (best.value / base.value) if base else None,
                "speedup_ci95": None, "p_value": None, "significant": False,
                "cpu_saturation": best.user_attrs.get("cpu_saturation"),
                "note": "search interrupted before validation: these are single-process "
                        "measurements; run the same command again to resume and validate",
            }
            validation_doc: dict[str, Any] = {"done": False}
        else:
            verdict, chosen, result, validation_doc = self._validated(validation)
        pct = cfg.objective.percentile
        better = f"{pct} step latency {result['speedup']:.3f}x lower" if pct else \
            f"{result['speedup']:.3f}x faster"
        summary = {
            "tuned": f"{better} than TensorFlow's defaults "
                     f"(95% CI {result['speedup_ci95'][0]:.3f}-{result['speedup_ci95'][1]:.3f}, "
                     f"p={result['p_value']:.3g})" if verdict == "tuned" else None,
            "defaults": "no configuration was faster than TensorFlow's defaults beyond noise; "
                        "keeping the defaults",
            "unvalidated": "search interrupted: best configuration so far, not validated",
        }[verdict]
        expert = by_role.get(EXPERT)
        base = by_role.get(BASELINE)
        return {
            "format_version": tuned.FORMAT_VERSION,
            "created": _now(),
            "verdict": verdict,
            "summary": summary,
            "settings": space_mod.nest_settings(chosen, self.machine),
            "workload": {"model": cfg.workload.model, "data": cfg.workload.data,
                         "mode": cfg.workload.mode,
                         "batch_size": self.preflight.get("batch_size"),
                         "config": os.path.abspath(cfg.path)},
            "objective": {"metric": cfg.objective.metric,
                          "latency_budget_ms": cfg.objective.latency_budget_ms,
                          "means": cfg.objective.describe() + (
                              "; speedup = baseline latency / tuned latency"
                              if cfg.objective.percentile else "")},
            "machine": self.machine.as_dict(),
            "result": result,
            "validation": validation_doc,
            "search": {
                "best_trial": {"number": best.number,
                               "settings": space_mod.nest_settings(best.user_attrs["settings"],
                                                                   self.machine),
                               "throughput": _trial_throughput(best)},
                "expert_rule": {
                    "settings": space_mod.nest_settings(
                        self.space.expert(self.machine),  # type: ignore[union-attr]
                        self.machine),
                    "throughput": _trial_throughput(expert) if expert else None,
                    "speedup_in_search": (expert.value / base.value) if expert and base else None,
                },
                "space": self.space.describe(),  # type: ignore[union-attr]
                "sampler": self.sampler_name,
                # this run's wall time per phase (a resumed study's earlier runs not included)
                "seconds": {**self.phase_seconds,
                            "total": time.monotonic() - self.started},
                "measure": {"warmup_seconds": cfg.measure.warmup_seconds,
                            "window_seconds": cfg.measure.window_seconds,
                            "windows": cfg.measure.windows},
            },
            "study": {"name": cfg.study_name, "storage": tuned.mask_url(cfg.storage),
                      "n_trials": len(trials), **counts,
                      # workers that measured these trials (several when the study is shared)
                      "hosts": sorted({t.user_attrs[ATTR_PREFIX + "host"] for t in trials
                                       if ATTR_PREFIX + "host" in t.user_attrs}),
                      **({"machine_id": self.machine_id, "other_machine_trials":
                          len(everything) - len(trials)} if len(everything) > len(trials)
                         else {})},
        }

    def _validated(self, v: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any],
                                                        dict[str, Any]]:
        cfg = self.config.validate
        final = v["final"]
        base_runs = final.get("baseline", [])
        if not base_runs:
            raise StudyError("validation: no baseline measurement succeeded")
        base_values = [self.score(m) for m in base_runs]
        winner: FrozenTrial | None = v["winner"]
        label = f"#{winner.number}" if winner is not None else None
        win_runs = final.get(label, []) if label else []
        validation_doc: dict[str, Any] = {
            "done": True,
            "method": "fresh process per measurement; configurations interleaved, order rotated "
                      "each round; winner picked in screening rounds, speedup from final rounds",
            "screen_rounds": cfg.screen_rounds if len(v["candidates"]) > 1 else 0,
            "rounds": len(base_runs),
            "max_rounds": cfg.rounds,
            **({"stopped_early": v["stopped_early"]} if v.get("stopped_early") else {}),
            "alpha": cfg.alpha,
            "min_speedup": cfg.min_speedup,
            "candidates": [
                {"trial": t.number,
                 "settings": space_mod.nest_settings(t.user_attrs["settings"], self.machine),
                 "search_score": t.value,
                 "screen_score": [self.score(m)
                                       for m in v["screening"].get(f"#{t.number}", [])],
                 **({"failed": v["failures"][f"#{t.number}"]}
                    if f"#{t.number}" in v["failures"] else {})}
                for t in v["candidates"]],
        }
        baseline_block = _throughput_block([m["throughput"]["median"] for m in base_runs])
        base_sat = stats.median([m["cpu_saturation"] for m in base_runs])
        if winner is None or len(win_runs) < 2:
            why = (f"the winner failed in validation: {v['failures'][label]}"
                   if label and label in v["failures"] else "no candidate to validate")
            result = {"throughput": baseline_block, "baseline_throughput": baseline_block,
                      "speedup": 1.0, "speedup_ci95": [1.0, 1.0], "p_value": 1.0,
                      "significant": False, "cpu_saturation": base_sat,
                      "baseline_cpu_saturation": base_sat,
                      "step_latency_ms": _median_latency(base_runs), "note": why}
            return "defaults", self._baseline(), result, validation_doc
        win_values = [self.score(m) for m in win_runs]
        comparison = stats.compare(win_values, base_values, alpha=cfg.alpha,
                                   min_speedup=cfg.min_speedup)
        winner_block = {
            "trial": winner.number,
            "settings": space_mod.nest_settings(winner.user_attrs["settings"], self.machine),
            "throughput": _throughput_block([m["throughput"]["median"] for m in win_runs]),
            "speedup": comparison["speedup"], "speedup_ci95": comparison["speedup_ci95"],
            "p_value": comparison["p_value"], "significant": comparison["significant"],
            "rejected_because": comparison["reason"] or None,
            "cpu_saturation": stats.median([m["cpu_saturation"] for m in win_runs]),
            "step_latency_ms": _median_latency(win_runs),
        }
        budget = self.config.objective.latency_budget_ms
        if comparison["significant"] and budget is not None \
                and winner_block["step_latency_ms"]["p95"] > budget:
            comparison = {**comparison, "significant": False,
                          "reason": f"its p95 step latency in validation, "
                                    f"{winner_block['step_latency_ms']['p95']:.2f} ms, is over "
                                    f"the {budget:g} ms budget"}
            winner_block.update(significant=False, rejected_because=comparison["reason"])
        validation_doc["winner"] = winner_block
        if comparison["significant"]:
            result = {"throughput": winner_block["throughput"],
                      "baseline_throughput": baseline_block,
                      "speedup": comparison["speedup"], "speedup_ci95": comparison["speedup_ci95"],
                      "p_value": comparison["p_value"], "significant": True,
                      "cpu_saturation": winner_block["cpu_saturation"],
                      "baseline_cpu_saturation": base_sat,
                      "step_latency_ms": winner_block["step_latency_ms"],
                      "baseline_step_latency_ms": _median_latency(base_runs),
                      "input_wait": stats.median([m["input_wait"] for m in win_runs])}
            return "tuned", winner.user_attrs["settings"], result, validation_doc
        result = {"throughput": baseline_block, "baseline_throughput": baseline_block,
                  "speedup": 1.0, "speedup_ci95": [1.0, 1.0], "p_value": 1.0,
                  "significant": False, "cpu_saturation": base_sat,
                  "baseline_cpu_saturation": base_sat,
                  "step_latency_ms": _median_latency(base_runs),
                  "input_wait": stats.median([m["input_wait"] for m in base_runs]),
                  "rejected": {k: winner_block[k] for k in ("trial", "settings", "speedup",
                                                            "speedup_ci95", "p_value",
                                                            "rejected_because")}}
        return "defaults", self._baseline(), result, validation_doc


def result_attrs(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready measurement summary stored on a trial (and used in validation)."""
    windows = [w["throughput"] for w in result["windows"]]
    summary = stats.summarize(windows)
    summary["windows"] = windows
    summary["unit"] = "samples/s"
    timings = dict(result.get("timings", {}))
    timings["startup"] = result.get("startup_seconds", 0.0)
    timings["total"] = result.get("wall_seconds", 0.0)
    return {
        "throughput": summary,
        # plain numbers next to the nested block, so optuna-dashboard can list and sort them
        "throughput_median": summary["median"],
        "throughput_spread": summary["rel_spread"],
        "step_latency_p50_ms": (result.get("step_latency_ms") or {}).get("p50"),
        "cpu_saturation": result["cpu_saturation"],
        "per_core_busy": result.get("per_core_busy"),
        "input_wait": result.get("input_wait"),
        "step_latency_ms": result.get("step_latency_ms"),
        "peak_rss_mb": round(result.get("peak_rss_bytes", 0) / 2 ** 20, 1),
        "threads": result.get("threads"),
        "tf_threading": result.get("tf_threading"),
        "batch_size": result.get("batch_size"),
        "allocator": result.get("allocator"),   # what was really mapped into the child
        # the tf.data options the dataset really carried, and the knob values the builders got
        **({"tf_data_options": result["tf_data_options"]} if result.get("tf_data_options")
           else {}),
        **({"knobs": result["knobs"]} if result.get("knobs") else {}),
        "affinity": result.get("affinity"),
        **({"instances": result["instances"]} if result.get("instances") else {}),
        "timings": timings,
    }


def _throughput_block(values: list[float]) -> dict[str, Any]:
    lo, hi = stats.bootstrap_ci(values)
    return {"median": stats.median(values), "ci95": [lo, hi], "unit": "samples/s",
            "per_process": values}


def _trial_throughput(t: FrozenTrial | None) -> dict[str, Any] | None:
    if t is None or "throughput" not in t.user_attrs:
        return None
    tp = t.user_attrs["throughput"]
    return {"median": tp["median"], "window_range": [tp["min"], tp["max"]], "unit": "samples/s",
            "windows": tp.get("windows")}


def _median_latency(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("p50", "p90", "p95", "p99")
    return {k: stats.median([m["step_latency_ms"][k] for m in runs])
            for k in keys if all(k in m["step_latency_ms"] for m in runs)}


def _sqlalchemy_error() -> type[BaseException]:
    import sqlalchemy.exc

    return sqlalchemy.exc.SQLAlchemyError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _diff(old: Any, new: Any, prefix: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _diff(old.get(key), new.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: was {old!r}, now {new!r}"


def search(config: Config, printer: Printer | None = None) -> SearchOutcome:
    """Run the whole search for ``config``; see the module docstring."""
    return Search(config, printer).run()


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
                     f"{space_mod.short(t.user_attrs.get('settings', {}))}"
                     f"{'  [' + role + ']' if role else ''}")
    return lines
