"""tuner: measure, don't guess, the TensorFlow CPU settings that make your model fastest.

``import tuner`` is cheap: it never imports TensorFlow or Optuna and never touches the environment.
Use a tuned file with :func:`apply` (first thing in a job) or ``python -m tuner run``; the search
lives in :mod:`tuner.search`; the command line in :mod:`tuner.cli`.
"""

from __future__ import annotations

from ._version import __version__
from .apply import (
    Applied,
    ExplicitSettingWarning,
    LateSettingWarning,
    MachineMismatchError,
    MachineMismatchWarning,
    PinningWarning,
    RuntimeInitializedError,
    apply,
)
from .errors import (
    ConfigError,
    StudyError,
    StudyMismatchError,
    TrialFailed,
    TunerError,
    WorkloadError,
)

__all__ = ["Applied", "ConfigError", "ExplicitSettingWarning", "LateSettingWarning",
           "MachineMismatchError", "MachineMismatchWarning", "PinningWarning",
           "RuntimeInitializedError",
           "StudyError", "StudyMismatchError", "TrialFailed", "TunerError", "WorkloadError",
           "__version__", "apply"]
