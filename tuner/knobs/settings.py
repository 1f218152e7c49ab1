"""One chosen configuration as a whole, from the search to production.

A configuration is a flat dict of knob values (``{"intra_op_parallelism_threads": 2, ...}``, the
Optuna parameters). Here it becomes the tuned file's ``settings`` layout and back, the plan of the
process(es) that run it (environment, preloaded allocator, CPU sets), and what is set inside a
TensorFlow process (``tf.config.threading``, ``tf.data.Options``). The trial child,
``tuner.apply()`` and the launcher all go through these functions, so what was measured is what
ships.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuner.base import host
from tuner.base.host import Machine
from tuner.errors import ConfigError
from tuner.knobs import (
    ALLOCATOR,
    AUTOTUNE_ALGORITHMS,
    CPUS,
    INSTANCES,
    KNOBS,
    PRECISION_IN_PROCESS,
    TF_DATA,
    THREADS,
    XLA,
    DeclaredKnob,
    algorithms_of,
    knob,
)

INSTANCE_ENV = "TUNER_INSTANCE"      # index of this instance, 0-based
INSTANCES_ENV = "TUNER_INSTANCES"    # how many instances the job runs

# Variables removed from a measured child's environment, so that the baseline really is
# TensorFlow's defaults and a trial measures only what it sets.
CONTROLLED_ENV = tuple(var for k in KNOBS.values() for var in k.controls)


# -- the tuned file's layout ----------------------------------------------------------------------

def nest(flat: dict[str, Any], machine: Machine | None = None) -> dict[str, Any]:
    """Flat knob settings -> the tuned file's ``settings`` layout. CPU counts become the CPU sets
    they mean on ``machine`` (needed only when they are not the defaults). The tf.data thread
    settings are always written; the optional tf.data options only when set (absent means
    TensorFlow's default), so files without them read as before. Declared knobs go to
    ``knobs:`` as they were searched (``autotune`` stays the string)."""
    tree: dict[str, Any] = {}
    for k in KNOBS.values():
        k.nest(tree, flat, machine)
    for name in flat:
        if DeclaredKnob.owns(name):
            knob(name).nest(tree, flat, machine)
    return tree


def flatten(tree: dict[str, Any]) -> dict[str, Any]:
    """The tuned file's ``settings`` layout -> flat knob settings (unknown keys ignored)."""
    flat = {name: k.read(tree) for name, k in KNOBS.items()}
    for argument, value in (tree.get("knobs") or {}).items():
        flat[DeclaredKnob(argument).name] = value
    return flat


def short(settings: dict[str, Any], only: list[str] | None = None) -> str:
    """Compact one-line form for progress lines: ``intra=2 inter=1 data.pool=- onednn=0``;
    declared knobs follow by their own names (``map_parallelism=autotune``)."""
    parts = []
    for name in only if only is not None else list(KNOBS):
        k = KNOBS[name]
        value = settings.get(name, k.default)
        if only is None and not k.always_shown and value == k.default:
            continue  # the newer knobs appear only when a trial sets them
        parts.append(f"{k.label}={k.shown(value)}")
    if only is None:
        parts.extend(f"{knob(name).label}={knob(name).shown(value)}"
                     for name, value in settings.items() if DeclaredKnob.owns(name))
    return " ".join(parts)


def notes(tree: Any) -> list[str]:
    """What a report says beyond the settings table (the CPU sets behind the CPU counts)."""
    if not isinstance(tree, dict):
        return []
    return [note for k in KNOBS.values() if (note := k.note(tree))]


# -- the process plan -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ProcessPlan:
    """Where and with what the process(es) of a configuration run."""

    allocator: str                          # the allocator's name
    preload: str | None                     # its library here; None: the system's, or missing
    cpus: list[int] | None                  # the CPU set of a single process; None: unpinned
    instances: list[list[int]] | None       # one CPU set per instance; None: one process

    def cpus_of(self, instance: int | None) -> list[int] | None:
        """The CPUs a process should be pinned to: its instance's set, or the CPU set."""
        if self.instances is not None and instance is not None:
            if not 0 <= instance < len(self.instances):
                raise ConfigError(f"instance {instance}: the tuned file has "
                                  f"{len(self.instances)} instances (0-{len(self.instances) - 1})")
            return self.instances[instance]
        return self.cpus


def process_plan(flat: dict[str, Any], machine: Machine) -> ProcessPlan:
    """The plan of a configuration measured on ``machine``: its CPU counts as CPU sets in the
    pinning order, its allocator as the library found there."""
    allocator = flat.get(ALLOCATOR.name) or ALLOCATOR.default
    return ProcessPlan(allocator=allocator,
                       preload=ALLOCATOR.library(allocator, machine.allocators),
                       cpus=CPUS.cpu_set(flat, machine),
                       instances=INSTANCES.cpu_sets(flat, machine))


def file_plan(tree: dict[str, Any], found: dict[str, str] | None = None) -> ProcessPlan:
    """The plan a tuned file's (checked) ``settings`` hold: the CPU sets it was measured with,
    and its allocator's library among those ``found`` on this machine (looked up by default)."""
    allocator = ALLOCATOR.read(tree)
    instances = tree.get(INSTANCES.name, 1)
    sets = None
    if isinstance(instances, dict) and (instances.get("count") or 1) > 1:
        sets = [list(s) for s in instances["cpus"]]
    library = None
    if allocator != ALLOCATOR.default:
        library = ALLOCATOR.library(allocator, host.find_allocators() if found is None else found)
    return ProcessPlan(allocator=allocator, preload=library, cpus=tree.get(CPUS.name),
                       instances=sets)


def child_environment(flat: dict[str, Any], base: dict[str, str],
                      preload: str | None = None) -> dict[str, str]:
    """A measured child's environment: ``base`` minus every variable a knob controls, plus the
    variables of the knobs set only through the environment, with ``preload`` preloaded. The
    child sets the rest itself, inside TensorFlow, as ``tuner.apply()`` does."""
    env = ALLOCATOR.preloaded(dict(base), preload)
    for var in CONTROLLED_ENV:
        env.pop(var, None)
    for k in KNOBS.values():
        if not k.in_process:
            env.update(k.environment(flat.get(k.name, k.default)))
    return env


def environment(tree: dict[str, Any]) -> dict[str, str]:
    """Every environment variable a tuned file's ``settings`` imply for a job, thread counts
    included (TensorFlow reads those itself, so a job that never calls ``tuner.apply()`` gets
    them too): the file's ``env:`` as it is, then what the other knobs add."""
    env = {var: str(value) for var, value in (tree.get("env") or {}).items()}
    flat = flatten(tree)
    for k in KNOBS.values():
        for var, value in k.environment(flat[k.name]).items():
            env.setdefault(var, value)
    return env


def compiles(flat: dict[str, Any]) -> bool:
    """Whether a configuration has TensorFlow compile with XLA (its first steps compile)."""
    return XLA.on(flat.get(XLA.name))


# -- inside a TensorFlow process ------------------------------------------------------------------

class ThreadsFixed(RuntimeError):
    """TensorFlow's runtime already runs with another thread count than the one asked for."""

    def __init__(self, name: str, current: int, wanted: int, cause: RuntimeError) -> None:
        super().__init__(str(cause))
        self.name, self.current, self.wanted = name, current, wanted


def apply_threading(tf: Any, flat: dict[str, Any], *, env_kept: dict[str, str] | None = None,
                    keep_own: bool = False) -> tuple[dict[str, int], dict[str, int]]:
    """Set the thread pools of ``flat`` with ``tf.config.threading`` (0: TensorFlow's default).
    Must run before the first op starts the runtime. A count the job chose itself is kept: from
    an environment variable in ``env_kept``, or, with ``keep_own``, one set with
    ``tf.config.threading`` before. Returns (set, kept) by knob name; raises
    :class:`ThreadsFixed` once the runtime runs with other counts."""
    env_kept = env_kept or {}
    applied: dict[str, int] = {}
    kept: dict[str, int] = {}
    for k in THREADS:
        wanted = int(flat.get(k.name) or 0)
        if k.variable in env_kept:
            kept[k.name] = int(env_kept[k.variable])
            continue
        current = k.current(tf)
        if current == wanted:
            applied[k.name] = wanted
            continue
        if current != 0 and keep_own:
            kept[k.name] = current
            continue
        try:
            k.set(tf, wanted)
        except RuntimeError as exc:
            raise ThreadsFixed(k.name, current, wanted, exc) from None
        applied[k.name] = wanted
    return applied, kept


def apply_precision(tf: Any, flat: dict[str, Any]) -> dict[str, Any]:
    """Set the reduced-precision knobs of ``flat`` that act inside the process (the oneDNN
    bfloat16 graph rewrite, Keras's dtype policy), before the model is built; what was set."""
    applied = {}
    for k in PRECISION_IN_PROCESS:
        value = flat.get(k.name, k.default)
        if value != k.default:
            k.set(tf, value)
            applied[k.name] = value
    return applied


def dataset_options(tf: Any, flat: dict[str, Any]) -> tuple[Any, list[str]]:
    """A ``tf.data.Options`` with every tf.data knob of ``flat`` that is set, and the options this
    TensorFlow does not have (left out; the caller decides whether that is an error)."""
    options = tf.data.Options()
    missing: list[str] = []
    for k in TF_DATA:
        value = flat.get(k.name)
        if value is not None:
            lacking = k.set_option(tf, options, value)
            if lacking:
                missing.append(lacking)
    return options, missing


def options_in_effect(dataset: Any) -> dict[str, Any]:
    """The tf.data knobs as the dataset really carries them (None: TensorFlow's default)."""
    options = dataset.options()
    return {k.name: k.in_effect(options) for k in TF_DATA}


def tf_data_available(tf: Any) -> tuple[list[str], list[str]]:
    """The optional tf.data knobs this TensorFlow has, and its autotune algorithms."""
    probe = tf.data.Options()
    names = [k.name for k in TF_DATA if k.optional and k.exists(probe)]
    algorithms = algorithms_of(tf)
    return names, [a for a in AUTOTUNE_ALGORITHMS if algorithms is not None
                   and a in algorithms.__members__]
