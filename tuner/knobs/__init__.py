"""The knobs tuner searches: one registry, one small object per knob that owns its whole life.

A knob knows its candidate values on a machine, how to check a value, where it lives in the tuned
file's ``settings`` layout, how it is applied (an environment variable of a process started with
it, ``tf.config.threading`` before TensorFlow's runtime starts, ``tf.data.Options`` on the
dataset, or where and with what the process runs), and its short label for progress lines and
reports. One class per way of applying; adding a knob means adding one entry to :data:`KNOBS`.

Settings are flat dicts keyed by knob name (``"tf_data.private_threadpool_size"``); the same dotted
names are the Optuna parameter names, so a study reads the same in tuner and in optuna-dashboard.
Declared knobs (the user's builder arguments, ``knobs:`` in the config) are
:class:`DeclaredKnob` objects named ``knobs.<argument>``.
"""

from __future__ import annotations

import re
from typing import Any, Callable, ClassVar

from tuner.base import host
from tuner.base.host import Machine
from tuner.base.render import did_you_mean, plain
from tuner.errors import ConfigError

MODES = ("train", "predict", "data")


def thread_ladder(n: int, *, over: float = 2.0) -> list[int]:
    """Thread counts worth trying on ``n`` usable CPUs: powers of two, fractions of ``n`` and a few
    values above ``n`` (up to ``over * n``) so oversubscription is measured rather than assumed."""
    values = {1, n}
    power = 2
    while power <= n:
        values.add(power)
        power *= 2
    for fraction in (0.5, 0.75, 1.5, 2.0):
        if fraction <= over:
            values.add(max(1, int(n * fraction)))
    return sorted(v for v in values if v <= max(1, int(n * over)))


def text(value: Any) -> str:
    """How a knob value reads in one line: true / false / null, else as it is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _nonneg_int(value: Any) -> bool:
    return _int(value) and value >= 0


def _pos_int(value: Any) -> bool:
    return _int(value) and value >= 1


def _pos_int_or_none(value: Any) -> bool:
    return value is None or _pos_int(value)


def _bool_or_none(value: Any) -> bool:
    return value is None or isinstance(value, bool)


# tf.data.experimental.AutotuneAlgorithm's members (the preflight reports those the installed
# TensorFlow really has)
AUTOTUNE_ALGORITHMS = ("DEFAULT", "HILL_CLIMB", "GRADIENT_DESCENT", "MAX_PARALLELISM",
                       "STAGE_BASED")


def _algorithm_or_none(value: Any) -> bool:
    return value is None or value in AUTOTUNE_ALGORITHMS


# what a tuned file may hold, by check (the config's 'default' is not a file value)
_FILE_VALUES: dict[Callable[[Any], bool], str] = {
    _pos_int_or_none: "an integer >= 1 or null",
    _bool_or_none: "true, false or null",
    _algorithm_or_none: f"one of {', '.join(AUTOTUNE_ALGORITHMS)} or null",
}


def _put(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def _get(tree: Any, path: str, default: Any) -> Any:
    for key in path.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return default
        tree = tree[key]
    return tree


class Knob:
    """What every knob has. Subclasses say how it is applied and where it lives in the file."""

    how: ClassVar[str] = ""            # how it is applied, for the knob table
    # every listed value measured first, one at a time, when searched (the user listed them)
    screened: ClassVar[bool] = False

    def __init__(self, name: str, *, default: Any, allowed: str, valid: Callable[[Any], bool],
                 candidates: Callable[[Machine], list[Any]], help: str, label: str,
                 modes: tuple[str, ...] = MODES, needs_openmp: bool = False,
                 always_shown: bool = False, compute: bool = False,
                 changes_numbers: bool = False, cpu_flags: tuple[str, ...] = ()) -> None:
        self.name = name                  # dotted: "tf_data.private_threadpool_size"
        self.default = default            # the value that means "TensorFlow decides"
        self.allowed = allowed            # for error messages
        self.is_valid = valid
        self._candidates = candidates
        self.help = help
        self.label = label                # short name in progress lines: "data.pool"
        self.modes = modes                # the workload modes it applies to
        self.needs_openmp = needs_openmp  # only meaningful on TensorFlow builds that use OpenMP
        self.always_shown = always_shown  # in progress lines even at its default
        # how TensorFlow computes (XLA, oneDNN's math mode): screened in the structured search's
        # compute phase, right after the layout
        self.compute = compute
        # a value other than the default changes the model's numbers (reduced precision): never
        # searched without the user's accuracy tolerance, never applied without its deviation
        self.changes_numbers = changes_numbers
        # offered only on a CPU with at least one of these instructions (host.COMPUTE_FLAGS)
        self.cpu_flags = cpu_flags

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # -- the CPU's instructions (compute knobs) ---------------------------------------------------

    def flags_for(self, value: Any) -> tuple[str, ...]:
        """The CPU instructions ``value`` needs, one of which must be present (none for the
        default)."""
        return () if value == self.default else self.cpu_flags

    def lacks_flags(self, value: Any, flags: Any) -> str | None:
        """Why ``value`` cannot run on a CPU with ``flags`` (one line naming the instructions it
        needs), or None."""
        need = self.flags_for(value)
        if need and not set(need) & set(flags or ()):
            return (f"{self.name}={text(value)} needs a CPU with {' or '.join(need)}; this CPU "
                    f"has {', '.join(sorted(flags)) if flags else 'none of them'}")
        return None

    # -- values -----------------------------------------------------------------------------------

    def check(self, value: Any, where: str) -> Any:
        """A config value -> the knob's value (``default`` is the default), or a ConfigError that
        names the field, the bad value and the allowed ones."""
        if isinstance(value, str) and value == "default":
            return self.default
        if not self.is_valid(value):
            raise ConfigError(f"{where}: {value!r} is not a valid value for {self.name}; "
                              f"allowed: {self.allowed}")
        return value

    @property
    def file_allowed(self) -> str:
        """What the tuned file may hold, for its reader's errors."""
        return _FILE_VALUES.get(self.is_valid, self.allowed)

    def candidates(self, machine: Machine) -> list[Any]:
        """The values worth measuring on ``machine``, TensorFlow's default first."""
        return self._candidates(machine)

    def searched_by_default(self, machine: Machine, mode: str, pipeline: Any) -> bool:
        """Whether an unconfigured search tries more than the default (``pipeline``: what the
        preflight learnt, see :class:`tuner.space.Pipeline`). A knob that needs CPU instructions
        is searched only on a CPU with one of them; one that changes the model's numbers only
        with an accuracy tolerance (:func:`tuner.space.build_space` decides that)."""
        if self.cpu_flags and not set(self.cpu_flags) & machine.cpu_flags:
            return False
        return mode in self.modes and not (self.needs_openmp and not machine.openmp)

    def check_available(self, value: Any, machine: Machine, mode: str, pipeline: Any,
                        field: str) -> None:
        """A value the config asks for that this machine or workload cannot honour: a config
        error, not a trial that silently measures something else."""
        if value == self.default:
            return
        if mode not in self.modes:
            raise ConfigError(f"{field}: {value!r} applies to workload modes "
                              f"{', '.join(self.modes)} only, not {mode!r}")
        if self.needs_openmp and machine.extra.get("openmp") is False:
            raise ConfigError(f"{field}: {value!r} has no effect: this TensorFlow build does not "
                              f"use OpenMP (stock builds use their own thread pool); remove it")
        lacking = self.lacks_flags(value, machine.cpu_flags)
        if lacking:
            raise ConfigError(f"{field}: {lacking}; remove it")

    def baseline(self, pipeline: Any) -> Any:
        """The value the baseline (the workload as written) runs with when the knob is searched:
        the default, except where the workload says otherwise (``pipeline``: what the preflight
        learnt)."""
        return self.default

    def shown(self, value: Any) -> str:
        """The value in a progress line: ``-`` for TensorFlow's own choice."""
        return "-" if value is None else text(value)

    def applied_by(self) -> str:
        """How it is applied, in a few words (the knob table of the docs)."""
        return self.how

    def note(self, tree: Any) -> str | None:
        """What a report says under the settings table about this knob's value in a tuned
        file's (unchecked) ``settings`` ``tree``, beyond the value the table shows."""
        return None

    # -- the tuned file's settings layout ---------------------------------------------------------

    def nest(self, tree: dict[str, Any], flat: dict[str, Any], machine: Machine | None) -> None:
        """Write this knob's value of ``flat`` into the tuned file's ``settings`` ``tree``."""
        raise NotImplementedError

    def read(self, tree: dict[str, Any]) -> Any:
        """This knob's value from a tuned file's ``settings`` ``tree`` (absent: the default)."""
        raise NotImplementedError

    # -- applying ---------------------------------------------------------------------------------

    controls: tuple[str, ...] = ()     # environment variables it owns
    # set inside the TensorFlow process (by apply() and the trial child) rather than only
    # through the environment it starts with
    in_process: ClassVar[bool] = False

    def environment(self, value: Any) -> dict[str, str]:
        """Environment variables that carry ``value`` into a process started with them."""
        return {}


class ThreadKnob(Knob):
    """A TensorFlow op thread pool: ``tf.config.threading`` before the runtime starts; a process
    started by the launcher also gets the variable TensorFlow reads by itself."""

    how = "tf.config.threading"
    in_process = True

    def __init__(self, name: str, *, variable: str, setter: str, getter: str,
                 **kwargs: Any) -> None:
        super().__init__(name, default=0, valid=_nonneg_int, always_shown=True,
                         allowed="an integer >= 0 (0 = TensorFlow's default), 'default'", **kwargs)
        self.variable = variable
        self.setter = setter
        self.getter = getter
        self.controls = (variable,)

    def shown(self, value: Any) -> str:
        return "-" if value is None or value == 0 else text(value)

    def nest(self, tree: dict[str, Any], flat: dict[str, Any], machine: Machine | None) -> None:
        tree[self.name] = flat.get(self.name, self.default)

    def read(self, tree: dict[str, Any]) -> Any:
        return tree.get(self.name, self.default)

    def environment(self, value: Any) -> dict[str, str]:
        return {self.variable: str(value)} if value else {}

    def current(self, tf: Any) -> int:
        return int(getattr(tf.config.threading, self.getter)())

    def set(self, tf: Any, value: int) -> None:
        """Raises RuntimeError once the runtime has started with other counts."""
        getattr(tf.config.threading, self.setter)(int(value))

    def applied_by(self) -> str:
        return f"{self.how}: `{self.setter}`; `{self.variable}` under the launcher"

    def by_hand(self, value: int) -> str:
        """How a job sets it itself."""
        return (f"tf.config.threading.{self.setter}({value}) before the first op, "
                f"or {self.variable}={value}")


class TfDataKnob(Knob):
    """An attribute of ``tf.data.Options`` set on the user's dataset; in the tuned file under
    ``tf_data:`` at ``target``. ``optional``: searched by default only on TensorFlow builds that
    have it (the preflight reports which) and, with ``applies``, only for pipelines it can change
    (``applies(ops)``, the dataset's transformations)."""

    how = "tf.data.Options"
    in_process = True

    def __init__(self, name: str, *, option: str, target: str, optional: bool = False,
                 applies: Callable[[tuple[str, ...]], bool] | None = None, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.option = option              # the attribute path in tf.data.Options
        self.target = target              # the path under the tuned file's tf_data:
        self.optional = optional
        self.applies = applies

    def searched_by_default(self, machine: Machine, mode: str, pipeline: Any) -> bool:
        if not super().searched_by_default(machine, mode, pipeline):
            return False
        if self.optional and self.name not in (pipeline.options or ()):
            return False
        return self.applies is None or pipeline.ops is None or self.applies(pipeline.ops)

    def check_available(self, value: Any, machine: Machine, mode: str, pipeline: Any,
                        field: str) -> None:
        super().check_available(value, machine, mode, pipeline, field)
        if value != self.default and self.optional and self.name not in (pipeline.options or ()):
            raise ConfigError(f"{field}: the installed TensorFlow "
                              f"({machine.tf_version or 'version unknown'}) has no "
                              f"tf.data.Options().{self.option}; remove it")

    def nest(self, tree: dict[str, Any], flat: dict[str, Any], machine: Machine | None) -> None:
        value = flat.get(self.name, self.default)
        data = tree.setdefault("tf_data", {})
        # optional options only when set (absent means TensorFlow's default), so files without
        # them read the same everywhere
        if value is not None or not self.optional:
            _put(data, self.target, value)

    def read(self, tree: dict[str, Any]) -> Any:
        return _get(tree.get("tf_data") or {}, self.target, self.default)

    def applied_by(self) -> str:
        return f"{self.how}: `{self.option}`"

    def _holder(self, options: Any) -> tuple[Any, str]:
        *parents, leaf = self.option.split(".")
        holder = options
        for attr in parents:
            holder = getattr(holder, attr, None)
        return holder, leaf

    def exists(self, options: Any) -> bool:
        holder, leaf = self._holder(options)
        return holder is not None and hasattr(holder, leaf)

    def tf_value(self, tf: Any, value: Any) -> Any:
        """``value`` as ``tf.data.Options`` takes it; raises LookupError when this TensorFlow
        has no such value."""
        return int(value) if _int(value) else value

    def set_option(self, tf: Any, options: Any, value: Any) -> str | None:
        """Set ``value`` on ``options``; what this TensorFlow lacks for it, or None."""
        if not self.exists(options):
            return self.option
        try:
            converted = self.tf_value(tf, value)
        except LookupError:
            return f"{self.option}={value}"
        holder, leaf = self._holder(options)
        setattr(holder, leaf, converted)
        return None

    def in_effect(self, options: Any) -> Any:
        """The value ``options`` carry (None: TensorFlow's default; an enum by its name)."""
        value: Any = options
        for attr in self.option.split("."):
            value = getattr(value, attr, None)
        return getattr(value, "name", value)


class AutotuneAlgorithmKnob(TfDataKnob):
    """The autotuner's algorithm: an enum whose members differ between TensorFlow versions."""

    def check_available(self, value: Any, machine: Machine, mode: str, pipeline: Any,
                        field: str) -> None:
        super().check_available(value, machine, mode, pipeline, field)
        if value != self.default and pipeline.algorithms is not None \
                and value not in pipeline.algorithms:
            raise ConfigError(f"{field}: {value!r} is not an autotune algorithm of the installed "
                              f"TensorFlow; allowed: {', '.join(pipeline.algorithms)}")

    def tf_value(self, tf: Any, value: Any) -> Any:
        members = algorithms_of(tf)
        if members is None or value not in members.__members__:
            raise LookupError(value)
        return members[value]


def algorithms_of(tf: Any) -> Any:
    """``tf.data.experimental.AutotuneAlgorithm``, or None where this TensorFlow lacks it."""
    return getattr(getattr(tf.data, "experimental", None), "AutotuneAlgorithm", None)


class EnvKnob(Knob):
    """An environment variable, set before the process starts (TensorFlow reads it when it
    loads); in the tuned file under ``env:`` when set."""

    how = "environment variable"

    def __init__(self, name: str, *, variable: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.variable = variable
        self.controls = (variable,)

    def check(self, value: Any, where: str) -> Any:
        if _int(value):  # YAML reads OMP_NUM_THREADS: 4 as a number; the environment is text
            value = str(value)
        return super().check(value, where)

    def applied_by(self) -> str:
        return f"{self.how} `{self.variable}`"

    @property
    def file_allowed(self) -> str:
        # the file's env: holds only variables that are set: neither null nor 'default'
        return self.allowed.split(", null or 'default'")[0]

    def nest(self, tree: dict[str, Any], flat: dict[str, Any], machine: Machine | None) -> None:
        value = flat.get(self.name, self.default)
        env = tree.setdefault("env", {})
        if value is not None:
            env[self.variable] = value

    def read(self, tree: dict[str, Any]) -> Any:
        return (tree.get("env") or {}).get(self.variable, self.default)

    def environment(self, value: Any) -> dict[str, str]:
        return {} if value is None else {self.variable: str(value)}


# XLA auto-clustering by its level: the only values TF_XLA_FLAGS may take in a tuned file. The
# variable is free text to TensorFlow (any of its flags, read once per process), so a file is
# held to these. On CPU nothing is clustered without --tf_xla_cpu_global_jit.
XLA_LEVELS = {"1": "--tf_xla_auto_jit=1 --tf_xla_cpu_global_jit",
              "2": "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit"}
XLA_VALUES = tuple(XLA_LEVELS.values())


class XlaKnob(EnvKnob):
    """XLA auto-clustering (``TF_XLA_FLAGS``): TensorFlow compiles clusters of ops with XLA on
    their first executions. Only :data:`XLA_VALUES` are accepted. The knob also knows what goes
    with it: TF Serving refuses every XLA compilation unless started with
    ``--xla_cpu_compilation_enabled=true``, the first steps pay the compilation, and
    ``jit_compile=True`` on the job's own ``tf.function`` is the in-code form no file carries."""

    # TensorFlow Serving's switch for XLA on CPU (tensorflow_serving/model_servers/main.cc)
    SERVING_FLAG = "--xla_cpu_compilation_enabled=true"
    # TensorFlow's persistent XLA compile cache (a TF_XLA_FLAGS flag of its own)
    CACHE_FLAG = "--tf_xla_persistent_cache_directory"

    def on(self, value: Any) -> bool:
        """Whether ``value`` turns XLA compilation on."""
        return value in XLA_VALUES

    def level(self, value: Any) -> str | None:
        return next((lvl for lvl, flags in XLA_LEVELS.items() if flags == value), None)

    def shown(self, value: Any) -> str:
        return "-" if value is None else f"auto_jit={self.level(value) or '?'}"

    def serving_flags(self, value: Any) -> list[str]:
        """What ``tensorflow_model_server`` needs for ``value``."""
        return [self.SERVING_FLAG] if self.on(value) else []

    def jit_advice(self) -> str:
        """Where XLA helped: the in-code form, which no file can carry."""
        return ("XLA helped this model: in your own code, @tf.function(jit_compile=True) on the "
                "step function compiles it whole, which auto-clustering may not (a file cannot "
                "carry that; measure it)")

    def cache_advice(self, value: Any) -> str:
        """How a job keeps compiled clusters across processes (a flag a file cannot hold)."""
        return (f"to skip most of the compilation in later processes, give TensorFlow a "
                f"persistent cache: set TF_XLA_FLAGS='{value or XLA_VALUES[-1]} "
                f"{self.CACHE_FLAG}=DIR' in the job's environment (it then wins over the file's "
                f"value; a tuned file holds only the values tuner searched)")

    def note(self, tree: Any) -> str | None:
        env = tree.get("env") if isinstance(tree, dict) else None
        value = env.get(self.variable) if isinstance(env, dict) else None
        if not self.on(value):
            return None
        return (f"XLA auto-clustering {self.shown(value)}: the first steps of each process "
                f"compile (see first_steps); TF Serving needs {self.SERVING_FLAG}")


# CPU instructions that make oneDNN's reduced-precision math real (without them oneDNN emulates
# or ignores it): bfloat16 on AVX512-BF16 / AMX-BF16, float16 on AVX512-FP16 / AMX-FP16
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
F16_FLAGS = ("avx512_fp16", "amx_fp16")
FPMATH_MODES = {"BF16": BF16_FLAGS, "F16": F16_FLAGS}


class FpmathKnob(EnvKnob):
    """oneDNN's fp32 math mode (``ONEDNN_DEFAULT_FPMATH_MODE``): f32 matmuls and convolutions
    computed in bfloat16 or float16, results kept in f32. TensorFlow reads its own
    ``TF_SET_ONEDNN_FPMATH_MODE`` too; both are tuner's own (cleared in every reference run), only
    oneDNN's is set. Each mode is offered only on a CPU with its instructions."""

    how = "environment variable"

    def __init__(self, name: str, *, variable: str, also: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(name, variable=variable, **kwargs)
        self.controls = (variable, *also)

    def flags_for(self, value: Any) -> tuple[str, ...]:
        return FPMATH_MODES.get(value, ()) if value != self.default else ()

    def candidates(self, machine: Machine) -> list[Any]:
        return [self.default, *[mode for mode, flags in FPMATH_MODES.items()
                                if set(flags) & machine.cpu_flags]]


class PrecisionKnob(Knob):
    """Reduced precision set inside the TensorFlow process (by ``tuner.apply()`` and the trial
    child; the environment cannot carry it): TensorFlow's oneDNN bfloat16 auto-mixed-precision
    graph rewrite (``tf.config.optimizer``), or Keras's global dtype policy for a model a builder
    makes. In the tuned file under ``precision:``."""

    in_process = True

    def __init__(self, name: str, *, applied: str, needs_onednn: bool = False,
                 declared_only: bool = False, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.how = applied
        self.needs_onednn = needs_onednn      # acts only where oneDNN's kernels run
        self.declared_only = declared_only    # searched only when the config lists it
        self.key = name.split(".", 1)[1]

    def searched_by_default(self, machine: Machine, mode: str, pipeline: Any) -> bool:
        if self.declared_only or (self.needs_onednn and machine.onednn_default is not True):
            return False
        return super().searched_by_default(machine, mode, pipeline)

    def nest(self, tree: dict[str, Any], flat: dict[str, Any], machine: Machine | None) -> None:
        value = flat.get(self.name, self.default)
        if value is not None:    # absent means off, so files without it read as before
            tree.setdefault("precision", {})[self.key] = value

    def read(self, tree: dict[str, Any]) -> Any:
        return (tree.get("precision") or {}).get(self.key, self.default)

    def set(self, tf: Any, value: Any) -> None:
        """Apply ``value`` in this TensorFlow process (before the model is built)."""
        if value is None:
            return
        if self.name == PRECISION_REWRITE:
            tf.config.optimizer.set_experimental_options({self.key: bool(value)})
        else:
            import keras

            keras.mixed_precision.set_global_policy(value)


PRECISION_REWRITE = "precision.auto_mixed_precision_onednn_bfloat16"
PRECISION_POLICY = "precision.keras_policy"


class ProcessKnob(Knob):
    """Where and with what the process runs; the tuned file keeps it at the top level."""

    how = "process"


class AllocatorKnob(ProcessKnob):
    """The memory allocator, preloaded before the process starts. The variable is not a plain
    setting: the library path is this machine's, and a user's own preloads are kept after it."""

    how = "process: LD_PRELOAD"
    variable = "LD_PRELOAD"

    def check_available(self, value: Any, machine: Machine, mode: str, pipeline: Any,
                        field: str) -> None:
        super().check_available(value, machine, mode, pipeline, field)
        if value != self.default and value not in machine.allocators:
            raise ConfigError(f"{field}: {value!r} is not installed on this machine (none of "
                              f"{', '.join(host.ALLOCATORS[value])} found); install it "
                              f"({host.INSTALL_HINT[value]}) or remove it")

    def nest(self, tree: dict[str, Any], flat: dict[str, Any], machine: Machine | None) -> None:
        tree[self.name] = flat.get(self.name) or self.default

    def read(self, tree: dict[str, Any]) -> Any:
        return tree.get(self.name) or self.default

    def library(self, value: Any, found: dict[str, str]) -> str | None:
        """The library that provides ``value`` among those ``found``; None for the system's own
        allocator or one that is not installed."""
        return None if value == self.default else found.get(value)

    def preloaded(self, env: dict[str, str], library: str | None) -> dict[str, str]:
        """``env`` with ``library`` preloaded first and whatever the user preloads kept after."""
        if not library:
            return env
        parts = [p for p in re.split(r"[:\s]+", env.get(self.variable) or "")
                 if p and p != library]
        return {**env, self.variable: ":".join([library, *parts])}


class CpusKnob(ProcessKnob):
    """How many CPUs the process is pinned to; the tuned file keeps the CPU set it means on the
    machine it was measured on (the pinning order of :mod:`tuner.host`)."""

    how = "process: CPU affinity"

    def check_available(self, value: Any, machine: Machine, mode: str, pipeline: Any,
                        field: str) -> None:
        super().check_available(value, machine, mode, pipeline, field)
        if value != self.default and value > len(machine.affinity):
            raise ConfigError(f"{field}: {value} CPUs asked for, but this process may run on "
                              f"{len(machine.affinity)}")

    def cpu_set(self, flat: dict[str, Any], machine: Machine | None) -> list[int] | None:
        count = flat.get(self.name)
        if count is None:
            return None
        if machine is None:
            raise ValueError("CPU sets need the machine")
        return host.cpu_set(machine, count)

    def nest(self, tree: dict[str, Any], flat: dict[str, Any], machine: Machine | None) -> None:
        tree[self.name] = self.cpu_set(flat, machine)

    def read(self, tree: dict[str, Any]) -> Any:
        cpus = tree.get(self.name)
        return len(cpus) if isinstance(cpus, list) and cpus else None

    def note(self, tree: Any) -> str | None:
        cpus = tree.get(self.name)
        return f"pinned to CPUs {host.format_cpus(cpus)}" if isinstance(cpus, list) and cpus \
            else None


class InstancesKnob(ProcessKnob):
    """Independent processes sharing the CPUs (of the ``cpus`` knob when set), each pinned to its
    own disjoint set; the tuned file keeps the count and the sets."""

    how = "process: several pinned processes"

    def check_available(self, value: Any, machine: Machine, mode: str, pipeline: Any,
                        field: str) -> None:
        super().check_available(value, machine, mode, pipeline, field)
        if value != self.default and value > len(machine.affinity):
            raise ConfigError(f"{field}: {value} instances need {value} CPUs at least; this "
                              f"process may run on {len(machine.affinity)}")

    def cpu_sets(self, flat: dict[str, Any], machine: Machine | None) -> list[list[int]] | None:
        """One CPU set per instance; None for a single instance."""
        count = flat.get(self.name) or 1
        if count == 1:
            return None
        if machine is None:
            raise ValueError("CPU sets need the machine")
        return host.instance_sets(machine, count, flat.get("cpus"))

    def nest(self, tree: dict[str, Any], flat: dict[str, Any], machine: Machine | None) -> None:
        tree[self.name] = {"count": flat.get(self.name) or 1,
                           "cpus": self.cpu_sets(flat, machine)}

    def read(self, tree: dict[str, Any]) -> Any:
        instances = tree.get(self.name)
        if isinstance(instances, dict):
            return instances.get("count") or 1
        if _int(instances):
            return instances
        return self.default

    def note(self, tree: Any) -> str | None:
        instances = tree.get(self.name)
        if isinstance(instances, dict) and (instances.get("count") or 1) > 1 \
                and instances.get("cpus"):
            return (f"{instances['count']} instances on CPUs "
                    + " | ".join(host.format_cpus(s) for s in instances["cpus"])
                    + " (python -m tuner run starts them)")
        return None


class BatchSizeKnob(Knob):
    """The batch a model file is fed, for workloads whose inputs tuner generates (a model file
    without ``data:``); searched only when asked (``--batch-sizes``, ``space: {batch_size:
    [...]}``). Its default, null, is the workload's own batch size (``--batch-size``,
    ``workload.batch_size``). In production the batch is the caller's: ``tuner.apply()`` cannot
    set it, so the tuned file keeps it at the top of ``settings`` (only when set) for the job or
    the server's batching to use (``Applied.batch_size``)."""

    how = "the caller: batches of this size"
    in_process = True
    screened = True

    def searched_by_default(self, machine: Machine, mode: str, pipeline: Any) -> bool:
        return False

    def check_available(self, value: Any, machine: Machine, mode: str, pipeline: Any,
                        field: str) -> None:
        super().check_available(value, machine, mode, pipeline, field)
        if value != self.default and getattr(pipeline, "batch_size", None) is None:
            raise ConfigError(f"{field}: {value!r}: the batch size is searched only for a model "
                              f"file whose inputs tuner generates (workload.model: a .keras, .h5 "
                              f"or SavedModel, without data:); a dataset's batches fix their "
                              f"own size")

    def baseline(self, pipeline: Any) -> Any:
        return getattr(pipeline, "batch_size", None)

    def nest(self, tree: dict[str, Any], flat: dict[str, Any], machine: Machine | None) -> None:
        value = flat.get(self.name, self.default)
        if value is not None:
            tree[self.name] = value

    def read(self, tree: dict[str, Any]) -> Any:
        return tree.get(self.name, self.default)

    def note(self, tree: Any) -> str | None:
        value = tree.get(self.name)
        if not _pos_int(value):
            return None
        return (f"batch size {value}: the caller's choice, which tuner.apply() cannot set; send "
                f"batches of {value} (cfg.batch_size), or with TF Serving set max_batch_size "
                f"{value} in --batching_parameters_file")

    def applied_by(self) -> str:
        return "the caller (`cfg.batch_size`; TF Serving: `max_batch_size`)"

    def batch(self, flat: dict[str, Any], workload_batch: int) -> int:
        """The batch a trial with ``flat`` feeds the model."""
        value = flat.get(self.name)
        return int(value) if value is not None else int(workload_batch)


KNOB_PREFIX = "knobs."     # declared knobs: Optuna parameter "knobs.map_parallelism"
AUTOTUNE = "autotune"     # a declared knob's value that arrives as tf.data.AUTOTUNE


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


class DeclaredKnob(Knob):
    """A keyword argument of the user's builders (``knobs:`` in the config), passed to every
    builder that takes it; ``autotune`` arrives as ``tf.data.AUTOTUNE``. The tuned file keeps
    the values as searched under ``knobs:``."""

    how = "builder argument"

    def __init__(self, argument: str, candidates: list[Any] | None = None) -> None:
        values = list(candidates or [])
        super().__init__(KNOB_PREFIX + argument, default=values[0] if values else None,
                         allowed=f"numbers, strings, true, false, null and {AUTOTUNE} "
                                 f"(tf.data.AUTOTUNE)",
                         valid=_plain, candidates=lambda m: list(values),
                         help="declared in the config's knobs:", label=argument)
        self.argument = argument

    @staticmethod
    def owns(name: str) -> bool:
        return name.startswith(KNOB_PREFIX)

    def shown(self, value: Any) -> str:
        return text(value)

    def nest(self, tree: dict[str, Any], flat: dict[str, Any], machine: Machine | None) -> None:
        tree.setdefault("knobs", {})[self.argument] = flat[self.name]

    def read(self, tree: dict[str, Any]) -> Any:
        return (tree.get("knobs") or {}).get(self.argument)

    @staticmethod
    def to_tf(value: Any, tf: Any) -> Any:
        """The value a builder receives."""
        return tf.data.AUTOTUNE if value == AUTOTUNE else value


def declared(flat: dict[str, Any]) -> dict[str, Any]:
    """The declared knobs of ``flat`` by argument name: ``{"map_parallelism": 2}``."""
    return {name[len(KNOB_PREFIX):]: value for name, value in flat.items()
            if DeclaredKnob.owns(name)}


# -- the registry ---------------------------------------------------------------------------------

def _rewrite(option: str, applies: Callable[[tuple[str, ...]], bool], help: str,
             label: str) -> TfDataKnob:
    """A tf.data graph rewrite (``Options().experimental_optimization``): on by default in
    TensorFlow, searched as [default, off] where the pipeline has what it rewrites."""
    return TfDataKnob(
        f"tf_data.optimization.{option}", target=f"optimization.{option}",
        option=f"experimental_optimization.{option}", default=None, optional=True,
        allowed="true, false, null or 'default' (TensorFlow's default: on)",
        valid=_bool_or_none, candidates=lambda m: [None, False], applies=applies, help=help,
        label=label)


def _onednn_candidates(machine: Machine) -> list[Any]:
    # Only the value that differs from the build's default is worth a trial: "unset" already is
    # the default. When the default is unknown, try both.
    if machine.onednn_default is None:
        return [None, "0", "1"]
    return [None, "0" if machine.onednn_default else "1"]


def _cpus_candidates(m: Machine) -> list[Any]:
    # Fewer CPUs than the process may use only pays off for specific counts: one hardware thread
    # per physical core (hyperthreaded machines), one NUMA node, or the quota's size when the
    # cgroup allows less CPU time than the affinity mask has CPUs.
    total = len(m.affinity)
    counts = {m.physical_cores, m.usable_cpus}
    if m.numa_nodes > 1:
        counts.update(len(cpus) for cpus in host.cpus_per_node(m).values())
    return [None, *sorted(c for c in counts if 1 <= c < total)]


def _instance_candidates(m: Machine) -> list[Any]:
    # powers of two up to one instance per usable CPU
    return [n for n in (1, 2, 4, 8, 16) if n <= max(1, m.usable_cpus)]


def _digits(value: Any) -> bool:
    # ASCII only: str.isdigit() also takes '²' and other digits int() and the C runtime refuse
    return isinstance(value, str) and value.isascii() and value.isdigit()


def _omp_threads_value(value: Any) -> bool:
    return value is None or (_digits(value) and int(value) >= 1)


def _digits_or_none(value: Any) -> bool:
    return value is None or _digits(value)


def _str_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and bool(value))


KNOBS: dict[str, Knob] = {knob.name: knob for knob in (
    ThreadKnob(
        "intra_op_parallelism_threads", variable="TF_NUM_INTRAOP_THREADS",
        setter="set_intra_op_parallelism_threads", getter="get_intra_op_parallelism_threads",
        candidates=lambda m: [0, *thread_ladder(m.usable_cpus)],
        help="threads one op (a matmul, a convolution) may use", label="intra",
    ),
    ThreadKnob(
        "inter_op_parallelism_threads", variable="TF_NUM_INTEROP_THREADS",
        setter="set_inter_op_parallelism_threads", getter="get_inter_op_parallelism_threads",
        candidates=lambda m: [0, *sorted({1, 2, m.usable_cpus, *[2 ** i for i in range(8)
                                                                 if 2 ** i <= 2 * m.usable_cpus]})],
        help="independent ops that may run at the same time", label="inter",
    ),
    TfDataKnob(
        "tf_data.private_threadpool_size", target="private_threadpool_size",
        option="threading.private_threadpool_size",
        default=None, allowed="an integer >= 1, null or 'default' (TensorFlow's shared pool)",
        valid=_pos_int_or_none,
        candidates=lambda m: [None, *thread_ladder(m.usable_cpus, over=2.0)],
        help="threads of a private pool for the input pipeline", label="data.pool",
        always_shown=True,
    ),
    TfDataKnob(
        "tf_data.max_intra_op_parallelism", target="max_intra_op_parallelism",
        option="threading.max_intra_op_parallelism",
        default=None, allowed="an integer >= 1, null or 'default'",
        valid=_pos_int_or_none,
        candidates=lambda m: [None, 1],
        help="threads one input-pipeline op may use (1 turns intra-op parallelism off there)",
        label="data.intra", always_shown=True,
    ),
    TfDataKnob(
        "tf_data.autotune.enabled", target="autotune.enabled",
        option="autotune.enabled", default=None, optional=True,
        allowed="true, false, null or 'default' (TensorFlow's default: on)",
        valid=_bool_or_none,
        candidates=lambda m: [None, False],
        help="tf.data's autotuner (AUTOTUNE parallelism and buffer sizes); off fixes them",
        label="data.autotune",
    ),
    TfDataKnob(
        "tf_data.autotune.cpu_budget", target="autotune.cpu_budget",
        option="autotune.cpu_budget", default=None, optional=True,
        allowed="an integer >= 1 (CPUs), null or 'default'", valid=_pos_int_or_none,
        candidates=lambda m: [None],
        help="CPUs the autotuner may plan for (default: all schedulable cores)",
        label="data.cpu_budget",
    ),
    TfDataKnob(
        "tf_data.autotune.ram_budget", target="autotune.ram_budget",
        option="autotune.ram_budget", default=None, optional=True,
        allowed="an integer >= 1 (bytes), null or 'default'", valid=_pos_int_or_none,
        candidates=lambda m: [None],
        help="bytes of buffers the autotuner may use (default: half the RAM)",
        label="data.ram_budget",
    ),
    AutotuneAlgorithmKnob(
        "tf_data.autotune.autotune_algorithm", target="autotune.autotune_algorithm",
        option="autotune.autotune_algorithm", default=None, optional=True,
        allowed=f"one of {', '.join(AUTOTUNE_ALGORITHMS)}, null or 'default'",
        valid=_algorithm_or_none,
        candidates=lambda m: [None],
        help="how the autotuner searches (tf.data.experimental.AutotuneAlgorithm)",
        label="data.algorithm",
    ),
    TfDataKnob(
        "tf_data.autotune.min_parallelism", target="autotune.min_parallelism",
        option="autotune.min_parallelism", default=None, optional=True,
        allowed="an integer >= 1, null or 'default'", valid=_pos_int_or_none,
        candidates=lambda m: [None],
        help="the least parallelism the autotuner gives an autotuned op", label="data.min_par",
    ),
    _rewrite("map_parallelization", lambda ops: "Map" in ops,
             "rewrite: run sequential (num_parallel_calls=None) stateless maps in parallel",
             "data.map_par"),
    _rewrite("inject_prefetch", lambda ops: bool(ops) and ops[-1] != "Prefetch",
             "rewrite: add a prefetch after the last asynchronous transformation",
             "data.inject_prefetch"),
    _rewrite("parallel_batch", lambda ops: "Batch" in ops,
             "rewrite: copy the elements of a batch in parallel", "data.par_batch"),
    EnvKnob(
        "env.TF_ENABLE_ONEDNN_OPTS", variable="TF_ENABLE_ONEDNN_OPTS",
        default=None, allowed="'0', '1', null or 'default' (unset)",
        valid=lambda v: v is None or v in ("0", "1"),
        candidates=_onednn_candidates,
        help="oneDNN (MKL-DNN) optimised CPU kernels", label="onednn", always_shown=True,
    ),
    AllocatorKnob(
        "allocator", default="system",
        allowed=f"{', '.join(repr(n) for n in host.ALLOCATOR_NAMES[:-1])} or "
                f"{host.ALLOCATOR_NAMES[-1]!r} (the latter two when installed)",
        valid=lambda v: v in host.ALLOCATOR_NAMES,
        candidates=lambda m: ["system", *sorted(m.allocators)],
        help="memory allocator, preloaded (LD_PRELOAD) before the process starts", label="alloc",
    ),
    CpusKnob(
        "cpus", default=None,
        allowed="an integer >= 1 (pin to that many CPUs: physical cores first, one NUMA node "
                "first), null or 'default' (no pinning)",
        valid=_pos_int_or_none,
        candidates=_cpus_candidates,
        help="how many CPUs the job is pinned to (through its CPU affinity)", label="cpus",
    ),
    BatchSizeKnob(
        "batch_size", default=None,
        allowed="an integer >= 1 (samples per batch), null or 'default' (the workload's batch "
                "size)",
        valid=_pos_int_or_none,
        candidates=lambda m: [None], modes=("predict",),
        help="samples per batch fed to a model file (searched with --batch-sizes)",
        label="batch",
    ),
    InstancesKnob(
        "instances", default=1,
        allowed="an integer >= 1 (processes, each pinned to its own share of the CPUs)",
        valid=_pos_int,
        candidates=_instance_candidates, modes=("predict", "data"),
        help="independent processes sharing the CPUs; throughput is their sum", label="inst",
    ),
    EnvKnob(
        "env.OMP_NUM_THREADS", variable="OMP_NUM_THREADS", default=None,
        allowed="a positive integer as a string, null or 'default'", valid=_omp_threads_value,
        candidates=lambda m: [None, *[str(v) for v in thread_ladder(m.usable_cpus, over=1.0)]],
        help="OpenMP threads (builds that use OpenMP only)", needs_openmp=True, label="omp",
    ),
    EnvKnob(
        "env.KMP_BLOCKTIME", variable="KMP_BLOCKTIME", default=None,
        allowed="milliseconds as a string ('0', '1', '200'), null or 'default'",
        valid=_digits_or_none,
        candidates=lambda m: [None, "0", "1"],
        help="how long an OpenMP thread spins before sleeping (Intel OpenMP only)",
        needs_openmp=True, label="kmp.block",
    ),
    EnvKnob(
        "env.KMP_AFFINITY", variable="KMP_AFFINITY", default=None,
        allowed="an Intel OpenMP affinity string, null or 'default'", valid=_str_or_none,
        candidates=lambda m: [None, "granularity=fine,compact,1,0"],
        help="how Intel OpenMP binds its threads to cores", needs_openmp=True, label="kmp.aff",
    ),
    XlaKnob(
        "env.TF_XLA_FLAGS", variable="TF_XLA_FLAGS", default=None,
        allowed=f"{', '.join(repr(v) for v in XLA_VALUES)}, null or 'default' (unset: no XLA)",
        valid=lambda v: v is None or v in XLA_VALUES,
        candidates=lambda m: [None, *XLA_VALUES], modes=("predict", "train"), compute=True,
        help="XLA auto-clustering: compiles clusters of ops on their first steps", label="xla",
    ),
    FpmathKnob(
        "env.ONEDNN_DEFAULT_FPMATH_MODE", variable="ONEDNN_DEFAULT_FPMATH_MODE",
        also=("TF_SET_ONEDNN_FPMATH_MODE",),
        default=None, allowed="'BF16', 'F16', null or 'default' (unset: strict f32)",
        valid=lambda v: v is None or v in FPMATH_MODES,
        candidates=lambda m: [None],  # FpmathKnob.candidates: the modes this CPU has
        help="oneDNN computes f32 matmuls and convolutions in bfloat16 / float16 (changes the "
             "model's numbers: searched only with an accuracy tolerance)",
        label="fpmath", compute=True, changes_numbers=True, cpu_flags=BF16_FLAGS + F16_FLAGS,
    ),
    PrecisionKnob(
        PRECISION_REWRITE, needs_onednn=True, default=None,
        applied="tf.config.optimizer: `auto_mixed_precision_onednn_bfloat16` (tuner.apply() "
                "only)",
        allowed="true, null or 'default' (off)", valid=lambda v: v is None or v is True,
        candidates=lambda m: [None, True],
        help="TensorFlow's oneDNN bfloat16 auto-mixed-precision graph rewrite (oneDNN on "
             "only; changes the model's numbers: searched only with an accuracy tolerance)",
        label="amp.bf16", compute=True, changes_numbers=True, cpu_flags=BF16_FLAGS,
    ),
    PrecisionKnob(
        PRECISION_POLICY, declared_only=True, default=None,
        applied="keras.mixed_precision.set_global_policy (tuner.apply() only)",
        allowed="'mixed_bfloat16', null or 'default' (float32)",
        valid=lambda v: v is None or v == "mixed_bfloat16",
        candidates=lambda m: [None, "mixed_bfloat16"],
        help="Keras's mixed_bfloat16 dtype policy for a model a builder makes (searched only "
             "where the config lists it under space.precision; changes the model's numbers)",
        label="policy", compute=True, changes_numbers=True, cpu_flags=BF16_FLAGS,
    ),
)}

THREADS = [k for k in KNOBS.values() if isinstance(k, ThreadKnob)]
INTRA_OP: ThreadKnob = KNOBS["intra_op_parallelism_threads"]  # type: ignore[assignment]
TF_DATA = [k for k in KNOBS.values() if isinstance(k, TfDataKnob)]
ALLOCATOR: AllocatorKnob = KNOBS["allocator"]  # type: ignore[assignment]
CPUS: CpusKnob = KNOBS["cpus"]  # type: ignore[assignment]
INSTANCES: InstancesKnob = KNOBS["instances"]  # type: ignore[assignment]
BATCH_SIZE: BatchSizeKnob = KNOBS["batch_size"]  # type: ignore[assignment]
XLA: XlaKnob = KNOBS["env.TF_XLA_FLAGS"]  # type: ignore[assignment]
# the knobs that change the model's numbers (reduced precision): opt-in, behind the guard
PRECISION = [k for k in KNOBS.values() if k.changes_numbers]
PRECISION_IN_PROCESS = [k for k in PRECISION if isinstance(k, PrecisionKnob)]


# the top-level keys of the config's space: section and of the tuned file's settings
SECTIONS = tuple(dict.fromkeys(name.split(".")[0] for name in KNOBS))


def knob(name: str) -> Knob:
    """The registry's knob, or a declared one for ``knobs.<argument>``."""
    if DeclaredKnob.owns(name):
        return DeclaredKnob(name[len(KNOB_PREFIX):])
    return KNOBS[name]


def check_overrides(overrides: dict[str, Any], where: str = "space") -> dict[str, Any]:
    """Check a config's ``space`` section (flattened to knob names) without knowing the machine:
    each entry is a list of candidates, a single fixed value, or ``default``."""
    checked: dict[str, Any] = {}
    for name, raw in overrides.items():
        field_name = f"{where}.{name}"
        if name.startswith(KNOB_PREFIX) or name == KNOB_PREFIX.rstrip("."):
            raise ConfigError(f"{field_name}: declared knobs are not narrowed here; list their "
                              f"candidate values under the top-level knobs: section")
        if name not in KNOBS:
            raise ConfigError(f"{plain(field_name)}: unknown knob{did_you_mean(name, list(KNOBS))}"
                              f"; allowed: {', '.join(KNOBS)}")
        knob = KNOBS[name]
        if isinstance(raw, list):
            if not raw:
                raise ConfigError(f"{field_name}: empty list; give candidate values, one value to "
                                  f"fix the knob, or 'default' to leave it to TensorFlow")
            checked[name] = [knob.check(v, field_name) for v in raw]
        else:
            checked[name] = knob.check(raw, field_name)
    return checked


def default_settings() -> dict[str, Any]:
    return {name: knob.default for name, knob in KNOBS.items()}
