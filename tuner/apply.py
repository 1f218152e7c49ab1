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
from . import placement, space, tuned
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


class PinningWarning(UserWarning):
    """The file's CPU set could not be applied here; the job runs on the CPUs it has."""


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
    allocator: str = "system"                 # the allocator this process runs with
    cpus: list[int] | None = None             # the CPUs this process is pinned to, None if not
    instance: int | None = None               # this process's instance index, when several
    pinning_note: str | None = None           # why the file's CPU set was not applied, if not

    @property
    def tf_data(self) -> dict[str, Any]:
        return dict(self.settings.get("tf_data") or {})

    @property
    def knobs(self) -> dict[str, Any]:
        """The declared knobs' tuned values, ready to pass on: ``autotune`` is
        ``tf.data.AUTOTUNE`` here (the file keeps the string), so
        ``ds.map(f, num_parallel_calls=cfg.knobs["map_parallelism"])`` works as it is."""
        raw = dict(self.settings.get("knobs") or {})
        if space.AUTOTUNE in raw.values():
            import tensorflow as tf

            return {k: tf.data.AUTOTUNE if v == space.AUTOTUNE else v for k, v in raw.items()}
        return raw

    def dataset_options(self) -> Any:
        """A ``tf.data.Options`` with the file's tf.data settings (thread pool, autotune, graph
        rewrites); use ``ds.with_options(...)``. An option this TensorFlow does not have is left
        at its default, with a :class:`LateSettingWarning` naming it."""
        import tensorflow as tf

        flat = space.flatten_settings({"tf_data": self.tf_data})
        options, missing = space.tf_data_options(tf, flat)
        if missing:
            warnings.warn(f"{self.path}: this TensorFlow ({tf.__version__}) has no tf.data "
                          f"option {', '.join(missing)}; left at its default (the file was "
                          f"tuned with another TensorFlow: re-run the search here)",
                          LateSettingWarning, stacklevel=2)
        return options

    def info(self) -> dict[str, Any]:
        return {
            "path": self.path, "verdict": self.verdict,
            "env_set": dict(self.env_set), "env_kept": dict(self.env_kept),
            "threading": dict(self.threading), "threading_kept": dict(self.threading_kept),
            "tf_data": self.tf_data, "knobs": dict(self.settings.get("knobs") or {}),
            "late": list(self.late),
            "machine_differences": list(self.machine_differences),
            "allocator": self.allocator, "cpus": self.cpus, "instance": self.instance,
            "pinning_note": self.pinning_note,
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
    _check_tf_data(settings.get("tf_data") or {}, path)
    knobs = settings.get("knobs") or {}
    if not isinstance(knobs, dict):
        raise ConfigError(f"{path}: settings.knobs: expected a mapping of knob names to values, "
                          f"got {knobs!r}")
    for key, value in knobs.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"{path}: settings.knobs: {key!r} is not a valid knob name")
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise ConfigError(f"{path}: settings.knobs.{key}: expected a number, a string, "
                              f"true, false or null, got {value!r}")
    allocator = settings.get("allocator", "system")
    if allocator not in placement.ALLOCATOR_NAMES:
        raise ConfigError(f"{path}: settings.allocator: {allocator!r} is not allowed; allowed: "
                          f"{', '.join(placement.ALLOCATOR_NAMES)}")
    cpus = settings.get("cpus")
    if cpus is not None and not _cpu_list(cpus):
        raise ConfigError(f"{path}: settings.cpus: expected a list of CPU numbers or null, "
                          f"got {cpus!r}")
    instances = settings.get("instances", 1)
    if isinstance(instances, int) and not isinstance(instances, bool):
        instances = {"count": instances, "cpus": None}
    if not isinstance(instances, dict) or not _int_at_least(instances.get("count"), 1):
        raise ConfigError(f"{path}: settings.instances: expected {{count: N >= 1, cpus: [[...], "
                          f"...]}}, got {settings.get('instances')!r}")
    sets = instances.get("cpus")
    if instances["count"] > 1 and (not isinstance(sets, list) or len(sets) != instances["count"]
                                   or not all(_cpu_list(s) for s in sets)):
        raise ConfigError(f"{path}: settings.instances.cpus: expected {instances['count']} lists "
                          f"of CPU numbers, one per instance, got {sets!r}")
    env = settings.get("env") or {}
    if not isinstance(env, dict):
        raise ConfigError(f"{path}: settings.env: expected a mapping, got {env!r}")
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key:
            raise ConfigError(f"{path}: settings.env: {key!r} is not a variable name")
        if not isinstance(value, str):
            raise ConfigError(f"{path}: settings.env.{key}: expected a string, got {value!r}")
    return settings


# the tuned file's settings.tf_data layout: {private_threadpool_size: .., autotune: {enabled: ..}}
_TF_DATA_FIELDS = {k.target: k for k in space.KNOBS.values() if k.applied == space.TF_DATA}


def _check_tf_data(data: Any, path: str, prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: settings.tf_data{'.' + prefix.rstrip('.') if prefix else ''}: "
                          f"expected a mapping, got {data!r}")
    for key, value in data.items():
        target = f"{prefix}{key}"
        knob = _TF_DATA_FIELDS.get(target)
        if knob is not None:
            if not knob.is_valid(value):
                raise ConfigError(f"{path}: settings.tf_data.{target}: expected "
                                  f"{_FILE_VALUES.get(knob.is_valid, knob.allowed)}, got {value!r}")
        elif any(t.startswith(target + ".") for t in _TF_DATA_FIELDS):
            _check_tf_data(value, path, target + ".")
        else:
            allowed = dict.fromkeys(t[len(prefix):].split(".")[0] for t in _TF_DATA_FIELDS
                                    if t.startswith(prefix))
            raise ConfigError(f"{path}: settings.tf_data.{target}: unknown; allowed: "
                              f"{', '.join(allowed)}")


# what a tuned file may hold, by validator (the config's 'default' is not a file value)
_FILE_VALUES = {space._pos_int_or_none: "an integer >= 1 or null",
                space._bool_or_none: "true, false or null",
                space._algorithm_or_none: f"one of {', '.join(space.AUTOTUNE_ALGORITHMS)} or null"}


def _cpu_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_int_at_least(c, 0) for c in value)


def instance_sets(doc: dict[str, Any]) -> list[list[int]] | None:
    """The CPU set of each instance, or None for a single instance."""
    instances = doc["settings"].get("instances", 1)
    if isinstance(instances, dict) and (instances.get("count") or 1) > 1:
        return [list(s) for s in instances["cpus"]]
    return None


def allocator_library(doc: dict[str, Any]) -> tuple[str, str | None]:
    """(allocator name, its library on this machine or None when it is not installed here)."""
    name = doc["settings"].get("allocator", "system")
    if name == "system":
        return name, None
    return name, placement.find_allocators().get(name)


def process_cpus(doc: dict[str, Any], instance: int | None) -> list[int] | None:
    """The CPUs this process should be pinned to: its instance's set, or the file's CPU set."""
    sets = instance_sets(doc)
    if sets is not None and instance is not None:
        if not 0 <= instance < len(sets):
            raise ConfigError(f"instance {instance}: the tuned file has {len(sets)} instances "
                              f"(0-{len(sets) - 1})")
        return sets[instance]
    return doc["settings"].get("cpus")


def pin(cpus: list[int] | None) -> str | None:
    """Pin this process to ``cpus`` when this process may run on all of them; else leave it and
    say why (the job then runs on the CPUs it has: a clean fallback, not a failure)."""
    if not cpus:
        return None
    current = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()
    if current and not set(cpus) <= current:
        missing = placement.format_cpus(sorted(set(cpus) - current))
        return (f"CPUs {missing} of the tuned CPU set {placement.format_cpus(cpus)} are not "
                f"available to this process (it may use {placement.format_cpus(sorted(current))}); "
                f"running unpinned")
    return placement.set_affinity(cpus)


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

    # Process placement: the CPU set (threads TensorFlow starts later inherit it), then the
    # allocator, which only a preload before the process starts can change.
    index_text = os.environ.get(placement.INSTANCE_ENV)
    instance = int(index_text) if index_text and index_text.isdigit() else None
    sets = instance_sets(doc)
    if sets is not None and instance is None:
        pinning_note = (f"the file runs {len(sets)} instances; start them with `python -m tuner "
                        f"run --tuned {path} -- ...` (each is pinned and told its index in "
                        f"{placement.INSTANCE_ENV}); this single process stays unpinned")
    else:
        pinning_note = pin(process_cpus(doc, instance))
    if pinning_note:
        warnings.warn(pinning_note, PinningWarning, stacklevel=2)
    wanted, library = allocator_library(doc)
    running = placement.allocator_in_process()
    if wanted != running:
        how = (f"LD_PRELOAD={library}" if library else
               f"{wanted} is not installed here ({placement.INSTALL_HINT.get(wanted, '')})")
        warnings.warn(f"the file's allocator, {wanted}, must be preloaded before the process "
                      f"starts ({how}); start the job with `python -m tuner run --tuned {path} "
                      f"-- ...`, which does it. This process runs with {running}.",
                      LateSettingWarning, stacklevel=2)
        late.append(f"allocator {wanted}")
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    pinned = affinity if (sets is not None and instance is not None) or \
        settings.get("cpus") else None

    import tensorflow as tf

    threading_set, threading_kept = _apply_threading(tf, settings, env_kept, override, path)
    return Applied(path=str(path), verdict=str(doc.get("verdict", "")), settings=settings,
                   env_set=env_set, env_kept=env_kept, threading=threading_set,
                   threading_kept=threading_kept, late=late, machine_differences=diffs,
                   allocator=running, cpus=pinned if not pinning_note else None,
                   instance=instance, pinning_note=pinning_note)


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
