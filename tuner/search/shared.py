"""Several workers (search processes, usually on several machines) sharing one study.

Optuna's RDB storage does the scheduling: each worker asks for its next trial, an enqueued trial is
handed to exactly one worker, heartbeats mark a dead worker's trial FAIL and
:class:`~tuner.search.storage.RetryStaleTrial` re-enqueues its parameters
(:mod:`tuner.search.storage` has the database side). Three things need more than that, and get
database locks that die with the process holding them (so a killed worker never blocks the rest):

- **setup** (exclusive, held for a moment): create the study, record or check its machine
  fingerprint and enqueue the reference trials, so two workers starting together enqueue them once.
- **search**, shared, held from a worker's start (before its preflight) to the end of its trials,
  and taken exclusively to validate: a worker that has finished its trials validates only once no
  other worker is still searching, and only one validates at a time; the others reuse the stored
  result.

PostgreSQL uses session advisory locks; SQLite (one host) uses ``flock`` on files beside the
host-wide measurement lock. MySQL gets no locks: workers still share trials, but the references
may be enqueued twice when workers start at the same moment, and a worker may validate while
another still searches.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import os
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.base import host as host_mod
from tuner.base.lock import LockError, lock_path, open_lock_file
from tuner.errors import StudyError, StudyMismatchError
from tuner.search.storage import (
    RETRIES,
    RetryStaleTrial,
    backend,
    cannot_connect,
    engine_kwargs,
    retrying,
)
from tuner.tuned.store import STUDY_ATTR_PREFIX

HOST_ENV = "TUNER_HOST_ID"
# Study and trial attributes the tuner writes are named "tuner.<what>".
ATTR_PREFIX = STUDY_ATTR_PREFIX
# per trial: which worker runs it, so a dead worker's trial can be found and failed
HOST_ATTR, PID_ATTR, PIDNS_ATTR = ATTR_PREFIX + "host", ATTR_PREFIX + "pid", ATTR_PREFIX + "pidns"
# per trial: which machine type measured it (see machine_id)
MACHINE_ID = ATTR_PREFIX + "machine_id"


def host_id() -> str:
    """How this worker names its host in the study: the host name, or ``TUNER_HOST_ID``.

    ``TUNER_HOST_ID`` exists so tests can play several hosts on one machine; in production the host
    name (a pod's name on Kubernetes) is what tells workers apart."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


def machine_id(fingerprint: dict[str, Any]) -> str:
    """A machine type's short name in a study: a hash of its fingerprint. Workers on several
    machine types may share a study; each type's trials are compared only with each other."""
    return host_mod.type_id(fingerprint)


def now() -> str:
    """The time stamp of a study record: UTC, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def process_space() -> str:
    """Where a pid means this process: host id, boot and pid namespace. Two containers with one
    host name (``--network host``) have different pid namespaces, and a pid seen in the other one
    must not be declared dead from this one."""
    parts = [host_id()]
    for path in ("/proc/sys/kernel/random/boot_id",):
        try:
            parts.append(Path(path).read_text().strip())
        except OSError:
            pass
    try:
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        pass
    return "|".join(parts)


def state_counts(trials: Iterable[FrozenTrial], states: tuple[TrialState, ...] = (
        TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)) -> dict[str, int]:
    """How many of ``trials`` are in each of ``states``, by lower-case state name."""
    trials = list(trials)
    return {state.name.lower(): sum(1 for t in trials if t.state == state) for state in states}


def _mark_failed(storage: Any, trial_id: int, reason: str) -> bool:
    """Fail a RUNNING trial, saying why. A finished trial's attributes are read-only, so the
    reason is written before the state changes. Two workers may find the same trial: the state
    change is atomic, and True only for the worker that made it (which alone re-enqueues it)."""
    try:
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        return bool(storage.set_trial_state_values(trial_id, TrialState.FAIL))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # another worker failed it first, and retries it


def stale_reason(trial: FrozenTrial) -> str:
    host = trial.user_attrs.get(HOST_ATTR)
    pid = trial.user_attrs.get(PID_ATTR)
    where = f" (host {host}, pid {pid})" if host else ""
    return (f"interrupted: its worker stopped sending heartbeats (killed, or its machine or "
            f"network went away){where}")


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Optuna's ``fail_stale_trials``, which also says on each trial why it failed. Returns the
    numbers of the trials failed here."""
    storage = study._storage
    if storage.get_heartbeat_interval() is None:  # type: ignore[attr-defined]
        return []
    failed = []
    for trial_id in storage._get_stale_trial_ids(study._study_id):  # type: ignore[attr-defined]
        trial = storage.get_trial(trial_id)
        if not _mark_failed(storage, trial_id, stale_reason(trial)):
            continue
        callback = storage.get_heartbeat_stale_trial_callback()  # type: ignore[attr-defined]
        if callback is not None:
            callback(study, storage.get_trial(trial_id))
        failed.append(trial.number)
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_trials(study: optuna.Study) -> list[tuple[int, int]]:
    """A trial RUNNING for a search process on this host (and in this pid namespace) that no
    longer exists never ends: mark it FAIL now, rather than after the heartbeat grace period,
    and re-enqueue its parameters as the heartbeat would. Other hosts' trials are left to the
    heartbeat. Returns (trial number, pid) of the trials failed here."""
    host, here = host_id(), process_space()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get(PID_ATTR)
        if not isinstance(pid, int) or t.user_attrs.get(HOST_ATTR) != host:
            continue
        if t.user_attrs.get(PIDNS_ATTR, here) != here:
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        reason = f"interrupted: its search process (pid {pid}) ended while it ran"
        if _mark_failed(study._storage, t._trial_id, reason):
            RetryStaleTrial()(study, study._storage.get_trial(t._trial_id))
            failed.append((t.number, pid))
    return failed


# -- what a study is for -----------------------------------------------------------------------

def check_or_record(study: optuna.Study, *, config: dict[str, Any], machine: dict[str, Any],
                    space: dict[str, Any], machine_full: dict[str, Any], where: str,
                    allow_other_machines: bool, say: Callable[[str], None]) -> str:
    """Record what a new study is for (the config, machine and space fingerprints), or check
    that a joined one is for the same; returns the id of the machine type the study was first
    recorded on. A worker on another machine type joins only with ``allow_other_machines``, and
    its machine type is then recorded beside the first."""
    attrs, here = study.user_attrs, machine_id(machine)
    mine = {"config": config, "machine": machine, "space": space}
    if ATTR_PREFIX + "config" not in attrs:
        for key, value in mine.items():
            study.set_user_attr(ATTR_PREFIX + key, value)
        study.set_user_attr(ATTR_PREFIX + "machine_full", machine_full)
        study.set_user_attr(ATTR_PREFIX + "created", now())
        return here
    if attrs[ATTR_PREFIX + "config"] != config:
        raise StudyMismatchError(f"{where} was made for another workload or measurement "
                                 f"({_diff(attrs[ATTR_PREFIX + 'config'], config)}); "
                                 f"use a new --study-name")
    diffs = host_mod.fingerprint_differences(attrs[ATTR_PREFIX + "machine"], machine)
    if diffs and not allow_other_machines:
        raise StudyMismatchError(
            f"{where} was measured on another machine type ({'; '.join(diffs)}); this "
            f"worker does not join it. Use a new --study-name, or pass "
            f"--allow-other-machines to add this machine type to the study (each machine "
            f"type's trials and validation are then kept apart)")
    if diffs:
        say(f"note: joining {where}, recorded on another machine type ({'; '.join(diffs)}), "
            f"as machine type {here}: only its trials measured here are compared, validated "
            f"and written")
        study.set_user_attr(f"{ATTR_PREFIX}machine.{here}", machine)
    if attrs[ATTR_PREFIX + "space"] != space:
        raise StudyMismatchError(f"{where} searched another space "
                                 f"({_diff(attrs[ATTR_PREFIX + 'space'], space)}); "
                                 f"use a new --study-name")
    return machine_id(attrs[ATTR_PREFIX + "machine"])


def _diff(old: Any, new: Any, prefix: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _diff(old.get(key), new.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: was {old!r}, now {new!r}"


# -- locks --------------------------------------------------------------------------------------

def _lock_key(*parts: str) -> int:
    digest = hashlib.sha256("\0".join(("tuner",) + parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)  # a PostgreSQL bigint


class Locks:
    """The setup, search and validate locks of one study (see the module docstring)."""

    def __init__(self, url: str, study_name: str) -> None:
        self.url = url
        self.study_name = study_name
        self.kind = backend(url)
        self._engine: Any = None
        self._held: dict[str, Any] = {}

    # PostgreSQL ------------------------------------------------------------------------------

    def _pg_try(self, name: str, parts: tuple[str, ...], shared: bool) -> bool:
        import sqlalchemy
        import sqlalchemy.exc

        if self._engine is None:
            kwargs = engine_kwargs(self.url)
            kwargs.pop("pool_pre_ping")
            self._engine = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool,
                                                    isolation_level="AUTOCOMMIT", **kwargs)
        fn = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"

        def attempt() -> Any:
            conn = self._engine.connect()
            try:
                got = conn.execute(sqlalchemy.text(f"SELECT {fn}(:key)"),
                                   {"key": _lock_key(self.study_name, *parts)}).scalar()
            except BaseException:
                conn.close()
                raise
            if not got:
                conn.close()
                return None
            return conn

        try:
            # the first contact with the database: a short retry, a typo should not take 15 s
            conn = retrying(attempt, retries=RETRIES if self._held else 2, first_wait=1.0)()
        except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:  # no driver, no server
            raise cannot_connect(self.url, exc) from None
        if conn is None:
            return False
        self._held[name] = conn  # the lock lives as long as this connection
        return True

    # SQLite ----------------------------------------------------------------------------------

    def _file_try(self, name: str, parts: tuple[str, ...], shared: bool) -> bool:
        # SQLite lives on one host: the lock files go beside the host-wide measurement lock
        db = os.path.abspath(self.url[len("sqlite:///"):])
        digest = hashlib.sha256("\0".join((db, self.study_name) + parts).encode()).hexdigest()
        path = lock_path().parent / f"tuner-study-{digest[:20]}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = open_lock_file(path)
        except LockError as exc:
            raise StudyError(f"study {self.study_name!r}: {exc}") from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._held[name] = fd
        return True

    # both ------------------------------------------------------------------------------------

    def _coordinated(self) -> bool:
        if self.kind == "postgresql":
            return True
        if self.kind == "sqlite":
            db = self.url[len("sqlite:///"):] if self.url.startswith("sqlite:///") else ""
            return bool(db) and db != ":memory:"
        return False

    def try_acquire(self, name: str, *parts: str, shared: bool = False) -> bool:
        """Take lock ``name`` (identified by ``parts``) without waiting; True when held."""
        assert name not in self._held, f"lock {name} already held"
        if not self._coordinated():
            self._held[name] = None
            return True
        if self.kind == "postgresql":
            return self._pg_try(name, parts, shared)
        return self._file_try(name, parts, shared)

    def release(self, name: str) -> None:
        held = self._held.pop(name, None)
        if held is None:
            return
        if isinstance(held, int):
            os.close(held)  # closing the descriptor drops the flock
        else:
            with contextlib.suppress(Exception):  # a connection already gone took its locks along
                held.close()  # closing the session drops its advisory locks

    def acquire(self, name: str, *parts: str, shared: bool = False, poll: float = 0.5,
                on_wait: Callable[[], None] | None = None) -> float:
        """Wait for lock ``name``; returns the seconds waited. ``on_wait`` is called once if the
        lock is not free at once."""
        start = time.monotonic()
        told = False
        while not self.try_acquire(name, *parts, shared=shared):
            if not told and on_wait is not None:
                on_wait()
                told = True
            time.sleep(poll)
        return time.monotonic() - start

    @contextlib.contextmanager
    def holding(self, name: str, *parts: str, shared: bool = False, poll: float = 0.5,
                on_wait: Callable[[], None] | None = None) -> Iterator[float]:
        """Wait for lock ``name``, hold it for the ``with`` block; yields the seconds waited."""
        waited = self.acquire(name, *parts, shared=shared, poll=poll, on_wait=on_wait)
        try:
            yield waited
        finally:
            self.release(name)

    def close(self) -> None:
        for name in list(self._held):
            self.release(name)
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
