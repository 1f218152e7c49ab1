"""Use a tuned file in a production job: ``cfg = tuner.apply("tuned.yaml")``.

``apply()`` is the first thing a job does, before TensorFlow runs an op. It sets the file's
environment variables, then ``tf.config.threading``, and returns an :class:`Applied` that says what
took effect (``info()``, JSON-ready) and carries the tf.data part (``dataset_options()``).

Precedence: what you set explicitly wins. An environment variable already set in the process
(``TF_ENABLE_ONEDNN_OPTS``, ``TF_NUM_INTRAOP_THREADS``, ...) or a thread count already set with
``tf.config.threading`` before ``apply()`` is kept, with a warning naming it; ``override=True``
makes the file win instead. The launcher (``python -m tuner run``) sets the same variables from the
same file, so under it the two agree.

If TensorFlow's runtime is already initialised with other thread counts, nothing can change them:
:class:`RuntimeInitializedError`. Settings that only act at process start (oneDNN, anything read
when TensorFlow is imported) and arrive too late are named in a :class:`LateSettingWarning`
pointing to the launcher.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import machine as machine_mod
from . import tuned
from .errors import ConfigError, TunerError

TUNED_FILE_ENV = "TUNER_TUNED_FILE"
THREAD_ENV = {"intra_op_parallelism_threads": "TF_NUM_INTRAOP_THREADS",
              "inter_op_parallelism_threads": "TF_NUM_INTEROP_THREADS"}


class RuntimeInitializedError(TunerError):
    """TensorFlow's runtime already runs with other thread counts than the tuned file's."""


class MachineMismatchError(TunerError):
    """The tuned file was measured on another machine (raised under ``strict``)."""

    exit_code = 2


class MachineMismatchWarning(UserWarning):
    """The tuned file was measured on another machine; its numbers may not hold here."""


class LateSettingWarning(UserWarning):
    """A setting that must be in place before TensorFlow starts came too late to take effect."""


class ExplicitSettingWarning(UserWarning):
    """A value the job set itself was kept over the tuned file's."""


@dataclass(frozen=True)
class Applied:
    """What :func:`apply` did. ``info()`` is JSON-ready, in the manner of threadpoolctl."""

    path: str
    verdict: str
    settings: dict[str, Any]
    env_set: dict[str, str] = field(default_factory=dict)
    env_kept: dict[str, str] = field(default_factory=dict)
    threading: dict[str, int] = field(default_factory=dict)
    threading_kept: dict[str, int] = field(default_factory=dict)
    late: list[str] = field(default_factory=list)
    machine_differences: list[str] = field(default_factory=list)

    @property
    def tf_data(self) -> dict[str, Any]:
        return dict(self.settings.get("tf_data") or {})

    def dataset_options(self) -> Any:
        """A ``tf.data.Options`` with the file's tf.data settings; use ``ds.with_options(...)``."""
        import tensorflow as tf

        options = tf.data.Options()
        data = self.tf_data
        if data.get("private_threadpool_size") is not None:
            options.threading.private_threadpool_size = int(data["private_threadpool_size"])
        if data.get("max_intra_op_parallelism") is not None:
            options.threading.max_intra_op_parallelism = int(data["max_intra_op_parallelism"])
        return options

    def info(self) -> dict[str, Any]:
        return {
            "path": self.path, "verdict": self.verdict,
            "env_set": dict(self.env_set), "env_kept": dict(self.env_kept),
            "threading": dict(self.threading), "threading_kept": dict(self.threading_kept),
            "tf_data": self.tf_data, "late": list(self.late),
            "machine_differences": list(self.machine_differences),
        }


# -- reading and checking a tuned file ------------------------------------------------------------

def _int_at_least(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_settings(doc: dict[str, Any], path: str) -> dict[str, Any]:
    """Check the ``settings`` block field by field; errors name the field and the bad value."""
    settings = doc["settings"]
    for name in THREAD_ENV:
        if name not in settings:
            raise ConfigError(f"{path}: settings.{name}: missing")
        if not _int_at_least(settings[name], 0):
            raise ConfigError(f"{path}: settings.{name}: expected an integer >= 0, "
                              f"got {settings[name]!r}")
    data = settings.get("tf_data") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: settings.tf_data: expected a mapping, got {data!r}")
    for key, value in data.items():
        if key not in ("private_threadpool_size", "max_intra_op_parallelism"):
            raise ConfigError(f"{path}: settings.tf_data.{key}: unknown; allowed: "
                              f"private_threadpool_size, max_intra_op_parallelism")
        if value is not None and not _int_at_least(value, 1):
            raise ConfigError(f"{path}: settings.tf_data.{key}: expected an integer >= 1 or "
                              f"null, got {value!r}")
    env = settings.get("env") or {}
    if not isinstance(env, dict):
        raise ConfigError(f"{path}: settings.env: expected a mapping, got {env!r}")
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key:
            raise ConfigError(f"{path}: settings.env: {key!r} is not a variable name")
        if not isinstance(value, str):
            raise ConfigError(f"{path}: settings.env.{key}: expected a string, got {value!r}")
    return settings


def load_checked(path: str | Path) -> dict[str, Any]:
    doc = tuned.load(path)
    check_settings(doc, str(path))
    return doc


def resolve_path(path: str | Path | None) -> str:
    if path is not None:
        return str(path)
    from_env = os.environ.get(TUNED_FILE_ENV)
    if not from_env:
        raise ConfigError(f"no tuned file: pass a path to apply(), or run the job under "
                          f"`python -m tuner run --tuned FILE -- ...`, which sets {TUNED_FILE_ENV}")
    return from_env


def environment(doc: dict[str, Any]) -> dict[str, str]:
    """Every environment variable the file implies, threads included (TensorFlow reads
    TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS itself, without code changes)."""
    settings = doc["settings"]
    env = {k: str(v) for k, v in (settings.get("env") or {}).items()}
    for name, var in THREAD_ENV.items():
        if settings.get(name):
            env[var] = str(settings[name])
    return env


def machine_differences(doc: dict[str, Any], tf_version: str | None = None) -> list[str]:
    """What differs between the machine the file was measured on and this one."""
    recorded = doc.get("machine") or {}
    here = machine_mod.detect()
    version = tf_version or machine_mod.installed_tf_version()
    diffs = []
    if recorded.get("usable_cpus") is not None and recorded["usable_cpus"] != here.usable_cpus:
        more = recorded["usable_cpus"] > here.usable_cpus
        diffs.append(f"usable CPUs: tuned for {recorded['usable_cpus']}, this process can use "
                     f"{here.usable_cpus}" + (" (thread counts tuned for more CPUs than you have "
                                              "usually make a job slower)" if more else ""))
    if recorded.get("cpu_model") and recorded["cpu_model"] != here.cpu_model:
        diffs.append(f"CPU model: tuned on {recorded['cpu_model']!r}, this is {here.cpu_model!r}")
    if recorded.get("tf_version") and version and recorded["tf_version"] != version:
        diffs.append(f"TensorFlow: tuned with {recorded['tf_version']}, this is {version}")
    return diffs


def check_machine(doc: dict[str, Any], path: str, strict: bool,
                  tf_version: str | None = None) -> list[str]:
    diffs = machine_differences(doc, tf_version)
    if diffs:
        text = f"{path} was measured on another machine: " + "; ".join(diffs) + \
            "; re-run `python -m tuner search` here"
        if strict:
            raise MachineMismatchError(text)
        warnings.warn(text, MachineMismatchWarning, stacklevel=3)
    return diffs


# -- apply ----------------------------------------------------------------------------------------

def _runtime_initialized(tf: Any) -> bool:
    try:
        from tensorflow.python.eager import context

        return bool(context.context()._context_handle is not None)
    except Exception:  # a private API; when unsure, let set_* tell us
        return False


def apply(path: str | Path | None = None, *, strict: bool = False,
          override: bool = False) -> Applied:
    """Apply a tuned file to this process. See the module docstring for precedence and errors."""
    path = resolve_path(path)
    doc = load_checked(path)
    settings = doc["settings"]
    tf_loaded = "tensorflow" in sys.modules
    tf_version = getattr(sys.modules.get("tensorflow"), "__version__", None) if tf_loaded else None
    diffs = check_machine(doc, path, strict, tf_version)

    env_set: dict[str, str] = {}
    env_kept: dict[str, str] = {}
    late: list[str] = []
    for var, value in environment(doc).items():
        current = os.environ.get(var)
        if current is not None and current != value and not override:
            env_kept[var] = current
            continue
        if current != value:
            os.environ[var] = value
            env_set[var] = value
            # Thread counts are set through tf.config below, which works after import too;
            # everything else is read when TensorFlow starts.
            if tf_loaded and var not in THREAD_ENV.values():
                late.append(f"env {var}={value}")
    if env_kept:
        warnings.warn("kept the environment's own values over the tuned file's: " + ", ".join(
            f"{k}={v}" for k, v in env_kept.items()) + " (apply(..., override=True) to use the "
            "file's)", ExplicitSettingWarning, stacklevel=2)
    if late:
        warnings.warn("TensorFlow was imported before tuner.apply(), so these settings cannot "
                      "take effect in this process: " + ", ".join(late) + "; call apply() before "
                      "importing TensorFlow, or start the job with `python -m tuner run --tuned "
                      f"{path} -- ...`", LateSettingWarning, stacklevel=2)

    import tensorflow as tf

    threading_set, threading_kept = _apply_threading(tf, settings, env_kept, override, path)
    return Applied(path=str(path), verdict=str(doc.get("verdict", "")), settings=settings,
                   env_set=env_set, env_kept=env_kept, threading=threading_set,
                   threading_kept=threading_kept, late=late, machine_differences=diffs)


def _apply_threading(tf: Any, settings: dict[str, Any], env_kept: dict[str, str], override: bool,
                     path: str) -> tuple[dict[str, int], dict[str, int]]:
    pools = {
        "intra_op_parallelism_threads": (tf.config.threading.get_intra_op_parallelism_threads,
                                         tf.config.threading.set_intra_op_parallelism_threads),
        "inter_op_parallelism_threads": (tf.config.threading.get_inter_op_parallelism_threads,
                                         tf.config.threading.set_inter_op_parallelism_threads),
    }
    applied: dict[str, int] = {}
    kept: dict[str, int] = {}
    for name, (get, set_) in pools.items():
        wanted = int(settings[name])
        if THREAD_ENV[name] in env_kept:
            kept[name] = int(env_kept[THREAD_ENV[name]])
            continue
        current = get()
        if current == wanted:
            applied[name] = wanted
            continue
        if current != 0 and not override and not _runtime_initialized(tf):
            kept[name] = current  # the job set it itself before apply(): explicit wins
            continue
        try:
            set_(wanted)
        except RuntimeError as exc:
            raise RuntimeInitializedError(
                f"TensorFlow's runtime is already initialised with {name}={current or 'default'}, "
                f"and {path} asks for {wanted or 'default'}: it cannot change now. Call "
                f"tuner.apply() first thing in the job, before any TensorFlow op, or start the "
                f"job with `python -m tuner run --tuned {path} -- ...` ({exc})") from None
        applied[name] = wanted
    if kept:
        warnings.warn("kept thread counts the job set itself over the tuned file's: " + ", ".join(
            f"{k}={v}" for k, v in kept.items()) + " (apply(..., override=True) to use the "
            "file's)", ExplicitSettingWarning, stacklevel=3)
    return applied, kept
