"""tuner: measure, don't guess, the TensorFlow CPU settings that make your model fastest.

``import tuner`` is cheap: it never imports TensorFlow or Optuna and never touches the environment.
The search lives in :mod:`tuner.study`; the command line in :mod:`tuner.cli`.
"""

from __future__ import annotations

from .errors import ConfigError, StudyError, StudyMismatchError, TrialFailed, TunerError, WorkloadError

__version__ = "0.1.0"

__all__ = ["ConfigError", "StudyError", "StudyMismatchError", "TrialFailed", "TunerError",
           "WorkloadError", "__version__"]
