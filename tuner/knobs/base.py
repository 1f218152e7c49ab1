"""What every knob is: the ``Knob`` base class (candidates, value check, place in the tuned file,
how it is applied, label), the modes, the value checks and tree helpers the kinds share."""

from __future__ import annotations

from typing import Any, Callable, ClassVar

from tuner.base.host import Machine
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


def nonneg_int(value: Any) -> bool:
    return _int(value) and value >= 0


def pos_int(value: Any) -> bool:
    return _int(value) and value >= 1


def pos_int_or_none(value: Any) -> bool:
    return value is None or pos_int(value)


def bool_or_none(value: Any) -> bool:
    return value is None or isinstance(value, bool)


# tf.data.experimental.AutotuneAlgorithm's members (the preflight reports those the installed
# TensorFlow really has)
AUTOTUNE_ALGORITHMS = ("DEFAULT", "HILL_CLIMB", "GRADIENT_DESCENT", "MAX_PARALLELISM",
                       "STAGE_BASED")


def algorithm_or_none(value: Any) -> bool:
    return value is None or value in AUTOTUNE_ALGORITHMS


# what a tuned file may hold, by check (the config's 'default' is not a file value)
_FILE_VALUES: dict[Callable[[Any], bool], str] = {
    pos_int_or_none: "an integer >= 1 or null",
    bool_or_none: "true, false or null",
    algorithm_or_none: f"one of {', '.join(AUTOTUNE_ALGORITHMS)} or null",
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
        preflight learnt, see :class:`tuner.knobs.space.Pipeline`). A knob that needs CPU
        instructions is searched only on a CPU with one of them; one that changes the model's
        numbers only with an accuracy tolerance (:func:`tuner.knobs.space.build_space` decides
        that)."""
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


def _digits(value: Any) -> bool:
    # ASCII only: str.isdigit() also takes '²' and other digits int() and the C runtime refuse
    return isinstance(value, str) and value.isascii() and value.isdigit()


def omp_threads_value(value: Any) -> bool:
    return value is None or (_digits(value) and int(value) >= 1)


def digits_or_none(value: Any) -> bool:
    return value is None or _digits(value)


def str_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and bool(value))
