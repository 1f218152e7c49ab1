"""tuner: measure, don't guess, the TensorFlow CPU settings that make your model fastest.

``import tuner`` is cheap: it never imports TensorFlow or Optuna and never touches the environment.
Use a tuned file with :func:`apply` (first thing in a job) or ``python -m tuner run``; the search
lives in :mod:`tuner.search.pipeline`; the command line in :mod:`tuner.cli`.
"""

from __future__ import annotations

from typing import Any

from tuner.base.version import __version__
from tuner.errors import (
    ConfigError,
    StudyError,
    StudyMismatchError,
    TrialFailed,
    TunerError,
    WorkloadError,
)

# What a production job uses, from tuner/production/apply.py, loaded on first use: every trial child
# imports this package, and has no use for the tuned-file reader behind apply().
_PRODUCTION = ("Applied", "ExplicitSettingWarning", "LateSettingWarning", "MachineMismatchError",
               "MachineMismatchWarning", "PinningWarning", "RuntimeInitializedError", "apply")


def __getattr__(name: str) -> Any:
    if name in _PRODUCTION:
        from tuner.production import apply as production

        value = getattr(production, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")


__all__ = ["Applied", "ConfigError", "ExplicitSettingWarning", "LateSettingWarning",
           "MachineMismatchError", "MachineMismatchWarning", "PinningWarning",
           "RuntimeInitializedError",
           "StudyError", "StudyMismatchError", "TrialFailed", "TunerError", "WorkloadError",
           "__version__", "apply"]
