"""Use a tuned file in a production job: ``cfg = tuner.apply("tuned.yaml")``.

``apply()`` is the first thing a job does, before TensorFlow runs an op. It sets the file's
environment variables, then ``tf.config.threading``, and returns an :class:`Applied` that says what
took effect (``info()``, JSON-ready) and carries the tf.data part (``dataset_options()``).

Precedence: what you set explicitly wins. An environment variable already set in the process
(``TF_ENABLE_ONEDNN_OPTS``, a thread-count variable, ...) or a thread count already set with
``tf.config.threading`` before ``apply()`` is kept, with a warning naming it; ``override=True``
makes the file win instead. The launcher (``python -m tuner run``) sets the same variables from the
same file, so under it the two agree.

If TensorFlow's runtime is already initialised with other thread counts, nothing can change them:
:class:`RuntimeInitializedError`. Settings that only act at process start (oneDNN, anything read
when TensorFlow is imported) and arrive too late are named in a :class:`LateSettingWarning`
pointing to the launcher.

The file is untrusted input, read by :func:`tuner.tuned.reader.read`: every setting is checked by
its knob's rule; ``settings.env`` may set only tuner's own variables unless ``allow_env`` names
others; an ``unvalidated`` verdict, or a ``tuned`` one its own evidence does not support, is
refused unless ``allow_unvalidated=True``; declared knobs stay within the declared space; CPUs
this machine lacks, or more instances than usable CPUs, are refused; under ``strict`` so is a
machine block that cannot be compared.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tuner.knobs as knobs
from tuner.base import cpusets, host
from tuner.base.yamlsafe import shown
from tuner.errors import ConfigError, TunerError
from tuner.knobs import settings
from tuner.tuned import reader as tunedfile

TUNED_FILE_ENV = "TUNER_TUNED_FILE"
# what the launcher accepted for that file (--allow-env NAME,..., --allow-unvalidated)
ALLOW_ENV_ENV = "TUNER_TUNED_ALLOW_ENV"
ALLOW_UNVALIDATED_ENV = "TUNER_TUNED_ALLOW_UNVALIDATED"
# the row of a sizes file the launcher was told to use (--size K)
SIZE_ENV = "TUNER_TUNED_SIZE"


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
    def batch_size(self) -> int | None:
        """The batch size measured best for a model file (None: not searched). The caller
        chooses its batches: ``model.predict(x, batch_size=cfg.batch_size)``, a server's
        batching parameters; apply() cannot set it."""
        return self.settings.get("batch_size")

    @property
    def knobs(self) -> dict[str, Any]:
        """The declared knobs' tuned values, ready to pass on: ``autotune`` is
        ``tf.data.AUTOTUNE`` here (the file keeps the string), so
        ``ds.map(f, num_parallel_calls=cfg.knobs["map_parallelism"])`` works as it is."""
        raw = dict(self.settings.get("knobs") or {})
        if knobs.AUTOTUNE in raw.values():
            import tensorflow as tf

            return {k: knobs.DeclaredKnob.to_tf(v, tf) for k, v in raw.items()}
        return raw

    def dataset_options(self) -> Any:
        """A ``tf.data.Options`` with the file's tf.data settings (thread pool, autotune, graph
        rewrites); use ``ds.with_options(...)``. An option this TensorFlow does not have is left
        at its default, with a :class:`LateSettingWarning` naming it."""
        import tensorflow as tf

        flat = settings.flatten({"tf_data": self.tf_data})
        options, missing = settings.dataset_options(tf, flat)
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
            "precision": dict(self.settings.get("precision") or {}),
            "late": list(self.late),
            "machine_differences": list(self.machine_differences),
            "allocator": self.allocator, "cpus": self.cpus, "instance": self.instance,
            "pinning_note": self.pinning_note,
        }


# -- reading a tuned file ------------------------------------------------------------------------

def pin(cpus: list[int] | None) -> str | None:
    """Pin this process to ``cpus`` when this process may run on all of them; else leave it and
    say why (the job then runs on the CPUs it has: a clean fallback, not a failure)."""
    if not cpus:
        return None
    return cpusets.pin_check(cpus) or cpusets.set_affinity(cpus)


def launcher_acceptance(path: str | Path) -> tuple[tuple[str, ...], bool]:
    """What the launcher was told to accept (``--allow-env``, ``--allow-unvalidated``) for the
    file it started this job with, when ``path`` is that file: the job's own ``apply()`` reads
    it again and must not refuse what the user accepted on the command line."""
    launched = os.environ.get(TUNED_FILE_ENV)
    if not launched or os.path.realpath(launched) != os.path.realpath(path):
        return (), False
    names = tuple(n for n in os.environ.get(ALLOW_ENV_ENV, "").split(",") if n)
    return tunedfile.allowed_names(names), os.environ.get(ALLOW_UNVALIDATED_ENV) == "1"


def launcher_size(path: str | Path) -> int | None:
    """The sizes-file row (``--size K``) the launcher used for ``path``, when it started this
    job with that file."""
    launched = os.environ.get(TUNED_FILE_ENV)
    text = os.environ.get(SIZE_ENV, "")
    if not launched or os.path.realpath(launched) != os.path.realpath(path):
        return None
    return int(text) if text.isascii() and text.isdigit() and int(text) >= 1 else None


def read(path: str | Path, allow_env: Iterable[str] | str = (),
         allow_unvalidated: bool = False, size: int | None = None) -> tunedfile.TunedFile:
    """The tuned file at ``path`` through the one strict reader, with what the caller and (for
    the launcher's own file) the launcher accept. ``size``: the row of a sizes file to use
    (:mod:`tuner.tuned.sizes`); a sizes file needs one, a tuned file takes none."""
    from tuner.tuned import sizes

    from_launcher, unvalidated = launcher_acceptance(path)
    names = (*tunedfile.allowed_names(allow_env), *from_launcher)
    if size is None:
        size = launcher_size(path)
    if size is not None:
        return sizes.read_row(path, size, allow_env=names)
    if sizes.is_sizes_file(path):
        counts = ", ".join(str(r.get("cpus")) for r in sizes.read(path, allow_env=names).rows)
        raise ConfigError(f"{path}: a sizes file has one row per CPU count ({counts}): "
                          f"choose one with --size K (python -m tuner run/export) or "
                          f"size=K (tuner.apply())")
    return tunedfile.read(path, allow_env=names,
                          allow_unvalidated=allow_unvalidated or unvalidated)


def resolve_path(path: str | Path | None) -> str:
    if path is not None:
        return str(path)
    from_env = os.environ.get(TUNED_FILE_ENV)
    if not from_env:
        raise ConfigError(f"no tuned file: pass a path to apply(), or run the job under "
                          f"`python -m tuner run --tuned FILE -- ...`, which sets {TUNED_FILE_ENV}")
    return from_env


# the machine facts compared with this machine; one the file lacks (or nulls) is a difference:
# what cannot be compared does not match
COMPARED = {"usable_cpus": "usable CPUs", "cpu_model": "CPU model", "tf_version": "TensorFlow"}


def machine_differences(doc: dict[str, Any], tf_version: str | None = None) -> list[str]:
    """What differs between the machine the file was measured on and this one."""
    recorded = doc.get("machine")
    recorded = recorded if isinstance(recorded, dict) else {}
    here = host.detect()
    version = tf_version or host.installed_tf_version()
    ours = {"usable_cpus": here.usable_cpus, "cpu_model": here.cpu_model, "tf_version": version}
    # (a fact this machine lacks too, a CPU model on some ARM machines, compares equal)
    missing = [key for key in COMPARED if recorded.get(key) is None and ours[key] is not None]
    diffs = ([f"the file does not record the machine's {', '.join(COMPARED[k] for k in missing)}"
              " (a missing or null machine field cannot be compared)"] if missing else [])
    pinned = (doc.get("settings") or {}).get("cpus")
    # a row of a sizes file: measured pinned to its CPUs, which fit in a bigger machine
    fits = isinstance(pinned, list) and "size" in doc and \
        recorded.get("usable_cpus") == len(pinned) <= here.usable_cpus
    if recorded.get("usable_cpus") is not None and recorded["usable_cpus"] != here.usable_cpus \
            and not fits:
        more = recorded["usable_cpus"] > here.usable_cpus
        diffs.append(f"usable CPUs: tuned for {recorded['usable_cpus']}, this process can use "
                     f"{here.usable_cpus}" + (" (thread counts tuned for more CPUs than you have "
                                              "usually make a job slower)" if more else ""))
    if recorded.get("cpu_model") and recorded["cpu_model"] != here.cpu_model:
        diffs.append(f"CPU model: tuned on {shown(recorded['cpu_model'])}, this is "
                     f"{here.cpu_model!r}")
    if recorded.get("tf_version") and version and recorded["tf_version"] != version:
        diffs.append(f"TensorFlow: tuned with {shown(recorded['tf_version'])[1:-1]}, this is "
                     f"{version}")
    return diffs


def present_cpus(root: Path | str = Path("/")) -> list[int]:
    """The CPUs this machine has (``/sys/devices/system/cpu/present``), whatever this process
    may use; ``os.cpu_count()``'s when the file is not there."""
    try:
        text = (Path(root) / "sys/devices/system/cpu/present").read_text().strip()
        cpus = host.parse_cpus(text)
    except (OSError, ValueError):
        cpus = []
    return cpus or list(range(os.cpu_count() or 1))


def check_placement(doc: dict[str, Any], path: str) -> None:
    """Refuse what this machine cannot run at all: CPUs it lacks (pinning would fall back to
    unpinned processes that the file's numbers do not describe) and more instances than the
    CPUs this process may use. A CPU that exists but is outside this process's set falls back
    to unpinned, with a warning (:func:`pin`)."""
    plan = settings.file_plan(doc["settings"])
    wanted = set(plan.cpus or []) | {c for s in plan.instances or [] for c in s}
    present = present_cpus()
    lacking = sorted(wanted - set(present))
    if lacking:
        raise ConfigError(f"{path}: settings: CPUs {host.format_cpus(lacking[:16])}"
                          f"{' ...' if len(lacking) > 16 else ''} do not exist on this machine "
                          f"(it has CPUs {host.format_cpus(present)}); re-run `python -m tuner "
                          f"search` here")
    count = len(plan.instances or [None])
    if os.environ.get(settings.INSTANCE_ENV, "").isdigit():
        # one of the instances `tuner run` started: pinned to its own share of the CPUs, which
        # the launcher checked against the job's before it split them
        return
    usable = host.detect().usable_cpus
    if count > usable:
        raise ConfigError(f"{path}: settings.instances.count: {count} instances, and this "
                          f"process may use {usable} CPU(s); re-run `python -m tuner search` "
                          f"here")


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


def apply(path: str | Path | None = None, *, strict: bool = False, override: bool = False,
          allow_env: Iterable[str] | str = (), allow_unvalidated: bool = False,
          size: int | None = None) -> Applied:
    """Apply a tuned file to this process. See the module docstring for precedence and errors.

    ``allow_env``: variables you added to the file's ``settings.env`` on purpose (any other
    variable than those of tuner's own knobs is refused). ``allow_unvalidated``: use a file whose
    verdict is ``unvalidated`` (an interrupted search's best trial, never validated).
    ``size``: with a sizes file (``python -m tuner size``), the row for that many CPUs."""
    path, doc, diffs = prepare(path, strict=strict, allow_env=allow_env,
                               allow_unvalidated=allow_unvalidated, size=size)
    tunedfile.check_cpu(doc, path, host.detect().cpu_flags)
    tree = doc["settings"]
    tf_loaded = "tensorflow" in sys.modules

    env_set: dict[str, str] = {}
    env_kept: dict[str, str] = {}
    late: list[str] = []
    for var, value in settings.environment(tree).items():
        current = os.environ.get(var)
        if current is not None and current != value and not override:
            env_kept[var] = current
            continue
        if current != value:
            os.environ[var] = value
            env_set[var] = value
            # Thread counts are set through tf.config below, which works after import too;
            # everything else is read when TensorFlow starts.
            if tf_loaded and var not in _SET_IN_PROCESS:
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
    plan = settings.file_plan(tree)
    index_text = os.environ.get(settings.INSTANCE_ENV)
    instance = int(index_text) if index_text and index_text.isdigit() else None
    if plan.instances is not None and instance is None:
        pinning_note = (f"the file runs {len(plan.instances)} instances; start them with `python "
                        f"-m tuner run --tuned {path} -- ...` (each is pinned and told its index "
                        f"in {settings.INSTANCE_ENV}); this single process stays unpinned")
    else:
        pinning_note = pin(plan.cpus_of(instance))
    if pinning_note:
        warnings.warn(pinning_note, PinningWarning, stacklevel=2)
    running = host.allocator_in_process()
    if plan.allocator != running:
        how = (f"{knobs.ALLOCATOR.variable}={plan.preload}" if plan.preload else
               f"{plan.allocator} is not installed here "
               f"({host.INSTALL_HINT.get(plan.allocator, '')})")
        warnings.warn(f"the file's allocator, {plan.allocator}, must be preloaded before the "
                      f"process starts ({how}); start the job with `python -m tuner run --tuned "
                      f"{path} -- ...`, which does it. This process runs with {running}.",
                      LateSettingWarning, stacklevel=2)
        late.append(f"allocator {plan.allocator}")
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    pinned = affinity if (plan.instances is not None and instance is not None) or \
        tree.get("cpus") else None

    import tensorflow as tf

    threading_set, threading_kept = _apply_threading(tf, tree, env_kept, override, path)
    # reduced precision inside the process (measured within the file's accuracy tolerance)
    settings.apply_precision(tf, settings.flatten(tree))
    return Applied(path=str(path), verdict=str(doc.get("verdict", "")), settings=tree,
                   env_set=env_set, env_kept=env_kept, threading=threading_set,
                   threading_kept=threading_kept, late=late, machine_differences=diffs,
                   allocator=running, cpus=pinned if not pinning_note else None,
                   instance=instance, pinning_note=pinning_note)


def prepare(path: str | Path | None = None, *, strict: bool = False,
            allow_env: Iterable[str] | str = (), allow_unvalidated: bool = False,
            size: int | None = None) -> tuple[str, dict[str, Any], list[str]]:
    """Everything :func:`apply` checks before it changes anything in the process: the file
    read through the strict reader, its placement possible here, its machine compared (refused
    under ``strict``). Returns the path, the document and the machine differences."""
    path = resolve_path(path)
    if size is not None and (type(size) is not int or size < 1):
        raise ConfigError(f"size: expected a CPU count (an integer >= 1), got {size!r}")
    doc = read(path, allow_env, allow_unvalidated, size).doc
    tf_loaded = "tensorflow" in sys.modules
    tf_version = getattr(sys.modules.get("tensorflow"), "__version__", None) if tf_loaded else None
    check_placement(doc, path)
    return path, doc, check_machine(doc, path, strict, tf_version)


# variables of the knobs apply() sets inside TensorFlow, which works after import too
_SET_IN_PROCESS = {var for k in knobs.KNOBS.values() if k.in_process for var in k.controls}


def _apply_threading(tf: Any, tree: dict[str, Any], env_kept: dict[str, str], override: bool,
                     path: str) -> tuple[dict[str, int], dict[str, int]]:
    # a count the job set itself before apply() wins, unless the runtime already runs (then
    # setting it fails loudly below)
    keep_own = not override and not _runtime_initialized(tf)
    try:
        applied, kept = settings.apply_threading(tf, settings.flatten(tree), env_kept=env_kept,
                                                 keep_own=keep_own)
    except settings.ThreadsFixed as exc:
        raise RuntimeInitializedError(
            f"TensorFlow's runtime is already initialised with "
            f"{exc.name}={exc.current or 'default'}, and {path} asks for "
            f"{exc.wanted or 'default'}: it cannot change now. Call tuner.apply() first thing in "
            f"the job, before any TensorFlow op, or start the job with `python -m tuner run "
            f"--tuned {path} -- ...` ({exc})") from None
    if kept:
        warnings.warn("kept thread counts the job set itself over the tuned file's: " + ", ".join(
            f"{k}={v}" for k, v in kept.items()) + " (apply(..., override=True) to use the "
            "file's)", ExplicitSettingWarning, stacklevel=3)
    return applied, kept
