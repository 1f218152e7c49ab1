"""The exceptions tuner raises.

Every error the user can cause derives from :class:`TunerError`; the CLI prints it as one line
(``error: ...``) and exits with :attr:`TunerError.exit_code`.
"""

from __future__ import annotations


class TunerError(Exception):
    """Root of every error tuner raises on purpose."""

    exit_code = 1


class ConfigError(TunerError):
    """The config file, a flag or the workload it names is not usable. Nothing was written."""

    exit_code = 2


class WorkloadError(ConfigError):
    """The user's builders failed the preflight: missing, raising, crashing, hanging, wrong type."""


class StudyError(TunerError):
    """The study cannot go on: storage unusable, machine or space mismatch, every trial failed."""


class StudyMismatchError(StudyError):
    """An existing study or tuned file belongs to another workload, space or machine."""

    exit_code = 2


class CommandError(TunerError):
    """``run``'s command cannot be started: exit 127 when it is not found, 126 when it is found
    but cannot be executed, as shells do."""

    NOT_FOUND = 127
    NOT_EXECUTABLE = 126

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class TrialFailed(TunerError):
    """A trial's child process did not produce a valid measurement; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# A stop asked for by SIGTERM or SIGHUP. The CLI's handler raises KeyboardInterrupt, but Python
# swallows an exception raised while a weakref callback or __del__ runs (it prints "Exception
# ignored in ..."; SQLAlchemy's cleanups are such callbacks), so the request is kept here too and
# checked before every measurement: a lost signal still stops the search at the next one.
_stop_requested = False


def request_stop() -> None:
    global _stop_requested
    _stop_requested = True


def clear_stop() -> None:
    global _stop_requested
    _stop_requested = False


def check_stop() -> None:
    """Raise KeyboardInterrupt when a stop was asked for (see :func:`request_stop`)."""
    if _stop_requested:
        raise KeyboardInterrupt
