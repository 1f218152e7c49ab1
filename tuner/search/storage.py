"""The study's database: Optuna's RDB storage with transient errors retried, and errors
reaching it turned into one line with the password masked.

A worker's database connection drops, a server restarts, two workers create the tables of a new
database at the same moment: each is retried with backoff where running the operation twice
cannot change its outcome. A wrong password, a missing driver or database is reported at once.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
import warnings
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial

from tuner.base.urls import mask_secret, masked
from tuner.errors import StudyError

# Transient errors are retried this many times, after 0.5, 1, 2, 4, 8 s (15 s in all).
RETRIES = 5


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
        return StudyError(f"--storage {masked(url)}: the database driver is not "
                          f"installed{hint}")
    cause = exc.__cause__ if isinstance(exc, optuna.exceptions.StorageInternalError) and \
        exc.__cause__ is not None else exc
    orig = getattr(cause, "orig", None) or cause
    lines = [line.strip() for line in str(orig).strip().splitlines() if line.strip()]
    first = lines[0] if lines else type(orig).__name__
    # psycopg2 puts the useful part (refused, auth failed) on the second line
    if len(lines) > 1 and first.startswith("connection to server"):
        first = f"{first} {lines[1]}"
    return StudyError(f"--storage {masked(url)}: cannot connect: "
                      f"{mask_secret(first, url)}")


class _NotTheStop(logging.Filter):
    """Passes every record but one whose exception is the stop itself (a KeyboardInterrupt)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, KeyboardInterrupt)


def quiet_stop_in_pool() -> None:
    """SQLAlchemy's pool logs "Exception during reset or similar" with the whole traceback when a
    stop (SIGTERM, Ctrl-C: a KeyboardInterrupt) lands while it returns a connection; the stop is
    handled (the search says "interrupted" and exits 130), so that traceback is noise on a
    command's stderr. Its other errors still print, as Python's last-resort handler would."""
    pool = logging.getLogger("sqlalchemy.pool")
    if not any(isinstance(h, _StopFilteredHandler) for h in pool.handlers):
        pool.addHandler(_StopFilteredHandler())


class _StopFilteredHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self) -> None:
        super().__init__()
        self.setLevel(logging.WARNING)
        self.addFilter(_NotTheStop())

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr   # the current one (a command's, a test's capture)
        super().emit(record)


def open_storage(url: str, *, heartbeat_interval: int, grace_period: int,
                 say: Callable[[str], None]) -> RetryingRDBStorage:
    """The RDB storage, created with retries (two workers creating the tables of a new database at
    the same moment conflict once; a server starting up refuses for a moment). A SQLite file's
    directory is made first."""
    quiet_stop_in_pool()
    if url.startswith("sqlite:///") and url[len("sqlite:///"):] not in ("", ":memory:"):
        os.makedirs(os.path.dirname(os.path.abspath(url[len("sqlite:///"):])), exist_ok=True)

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
