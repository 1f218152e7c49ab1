"""Several workers (search processes, usually on several machines) sharing one study.

Optuna's RDB storage does the scheduling: each worker asks for its next trial, an enqueued trial
is handed to exactly one worker, heartbeats mark a dead worker's trial FAIL and
:class:`RetryStaleTrial` re-enqueues its parameters. Three things need more than that, and get
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
import functools
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import tuned
from .errors import StudyError
from .lock import lock_path

HOST_ENV = "TUNER_HOST_ID"
# Study and trial attributes the tuner writes are named "tuner.<what>".
ATTR_PREFIX = "tuner."
# per trial: which worker runs it, so a dead worker's trial can be found and failed
HOST_ATTR, PID_ATTR, PIDNS_ATTR = ATTR_PREFIX + "host", ATTR_PREFIX + "pid", ATTR_PREFIX + "pidns"
# per trial: which machine type measured it (see machine_id)
MACHINE_ID = ATTR_PREFIX + "machine_id"
# Transient errors are retried this many times, after 0.5, 1, 2, 4, 8 s (15 s in all).
RETRIES = 5


def host_id() -> str:
    """How this worker names its host in the study: the host name, or ``TUNER_HOST_ID``.

    ``TUNER_HOST_ID`` exists so tests can play several hosts on one machine; in production the host
    name (a pod's name on Kubernetes) is what tells workers apart."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


def machine_id(fingerprint: dict[str, Any]) -> str:
    """A machine type's short name in a study: a hash of its fingerprint. Workers on several
    machine types may share a study; each type's trials are compared only with each other."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]


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


# -- transient database errors ---------------------------------------------------------------------

def _is_transient(exc: BaseException) -> bool:
    """A lost or refused connection, a server restarting, a serialization conflict: worth
    another try. A bad query or a constraint violation is not."""
    import sqlalchemy.exc as sa_exc

    cause: BaseException | None = exc
    if isinstance(exc, optuna.exceptions.StorageInternalError):
        cause = exc.__cause__
    if "authentication failed" in str(cause) or "does not exist" in str(cause):
        return False  # wrong password, user or database: the same next time
    if isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated:
        return True
    return isinstance(cause, (sa_exc.OperationalError, sa_exc.InterfaceError))


def retrying(fn: Callable[..., Any], *, retries: int = RETRIES, first_wait: float = 0.5,
             on_retry: Callable[[BaseException, float], None] | None = None) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        wait = first_wait
        for attempt in range(retries + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if attempt == retries or not _is_transient(exc):
                    raise
                if on_retry is not None:
                    on_retry(exc, wait)
                time.sleep(wait)
                wait *= 2
        raise AssertionError("unreachable")

    return call


# Storage methods that may run twice without changing the outcome. create_new_trial is left out:
# a retried insert could leave a second RUNNING trial that nobody runs.
_IDEMPOTENT = (
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_all_studies", "get_trial",
    "get_all_trials", "get_n_trials", "get_best_trial", "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id", "get_trial_param", "get_trial_params", "get_trial_user_attrs",
    "get_trial_system_attrs", "set_study_user_attr", "set_study_system_attr",
    "set_trial_param", "set_trial_user_attr", "set_trial_system_attr",
    "set_trial_intermediate_value", "_get_stale_trial_ids",
)


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage, with idempotent operations retried on transient database errors.

    Connections dropped while idle are replaced before use (``pool_pre_ping``); an error in the
    middle of an operation is retried with backoff. A heartbeat that still cannot be recorded is
    skipped (the next one follows), rather than ending the heartbeat thread with a traceback."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        for name in _IDEMPOTENT:
            setattr(self, name, retrying(getattr(self, name)))

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            retrying(super().record_heartbeat, retries=2)(trial_id)
        except Exception as exc:  # the thread would die with a traceback; the next beat retries
            if not _is_transient(exc):
                raise

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        for name in _IDEMPOTENT:
            state.pop(name, None)
        return state


class RetryStaleTrial(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a heartbeat-stale trial (at most 3 times), re-enqueueing only its
    parameters and role, not the dead worker's host, pid or partial measurements."""

    KEEP = ("role",)

    def __init__(self, max_retry: int = 3) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        clean = FrozenTrial(
            number=trial.number, state=trial.state, value=None, values=None,
            datetime_start=trial.datetime_start, datetime_complete=trial.datetime_complete,
            params=trial.params, distributions=trial.distributions,
            user_attrs={k: v for k, v in trial.user_attrs.items() if k in self.KEEP},
            system_attrs=trial.system_attrs, intermediate_values={}, trial_id=trial._trial_id)
        super().__call__(study, clean)


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


# -- connecting ---------------------------------------------------------------------------------

def backend(url: str) -> str:
    return url.split("://", 1)[0].split("+", 1)[0]


def engine_kwargs(url: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.split("://", 1)[0] in ("postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        # libpq drivers (psycopg 3 is SQLAlchemy 2.1's default for postgresql://, psycopg2 2.0's)
        # Fail fast when the server is unreachable, and let the server notice a worker whose
        # machine vanished (its advisory locks are released when the connection is declared dead).
        kwargs["connect_args"] = {
            "connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30,
            "keepalives_interval": 10, "keepalives_count": 3,
            "options": "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 "
                       "-c tcp_keepalives_count=3",
        }
    return kwargs


def cannot_connect(url: str, exc: BaseException) -> StudyError:
    """One line, password masked, for an error reaching the database."""
    if isinstance(exc, ImportError) or isinstance(exc.__cause__, ImportError):
        extra = {"postgresql": "postgres"}.get(backend(url))
        hint = f"; install it with pip install 'tuner[{extra}]'" if extra else ""
        return StudyError(f"--storage {tuned.mask_url(url)}: the database driver is not "
                          f"installed{hint}")
    cause = exc.__cause__ if isinstance(exc, optuna.exceptions.StorageInternalError) and \
        exc.__cause__ is not None else exc
    orig = getattr(cause, "orig", None) or cause
    lines = [line.strip() for line in str(orig).strip().splitlines() if line.strip()]
    first = lines[0] if lines else type(orig).__name__
    # psycopg2 puts the useful part (refused, auth failed) on the second line
    if len(lines) > 1 and first.startswith("connection to server"):
        first = f"{first} {lines[1]}"
    return StudyError(f"--storage {tuned.mask_url(url)}: cannot connect: "
                      f"{tuned.mask_secret(first, url)}")


def open_storage(url: str, *, heartbeat_interval: int, grace_period: int,
                 say: Callable[[str], None]) -> RetryingRDBStorage:
    """The RDB storage, created with retries (two workers creating the tables of a new database at
    the same moment conflict once; a server starting up refuses for a moment)."""
    import warnings

    def told(exc: BaseException, wait: float) -> None:
        say(f"  database not reachable ({cannot_connect(url, exc)}); retrying in {wait:g} s")

    def create() -> RetryingRDBStorage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RetryingRDBStorage(url, engine_kwargs=engine_kwargs(url),
                                      heartbeat_interval=heartbeat_interval,
                                      grace_period=grace_period,
                                      heartbeat_stale_trial_callback=RetryStaleTrial())

    def create_or_race() -> RetryingRDBStorage:
        try:
            return create()
        except Exception as exc:
            import sqlalchemy.exc as sa_exc

            # a concurrent CREATE TABLE: the other worker made them; once more finds them there
            if isinstance(exc, (sa_exc.IntegrityError, sa_exc.ProgrammingError)):
                return create()
            raise

    try:
        return retrying(create_or_race, retries=2, first_wait=1.0, on_retry=told)()
    except Exception as exc:  # noqa: BLE001 - drivers raise many types; all mean "cannot use it"
        raise cannot_connect(url, exc) from None


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
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
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
