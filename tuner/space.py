"""The knobs tuner searches: one registry, one small declaration per knob.

A knob says how it is applied (an environment variable set before the child starts,
``tf.config.threading`` before the runtime initialises, or ``tf.data.Options`` on the user's
dataset), what value means "leave it to TensorFlow", and how its candidate values follow from the
machine. Adding a knob means adding one entry to :data:`KNOBS`.

Settings are flat dicts keyed by knob name (``"tf_data.private_threadpool_size"``); the same dotted
names are the Optuna parameter names, so a study reads the same in tuner and in optuna-dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from . import placement
from .errors import ConfigError
from .machine import Machine

THREADING = "threading"   # tf.config.threading, before the runtime initialises
TF_DATA = "tf_data"       # tf.data.Options() (threading, autotune, graph rewrites) on the dataset
ENV = "env"               # environment variable, set before the child process starts
PROCESS = "process"       # where the process runs: preloaded allocator, CPU set, instances


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


def _nonneg_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _pos_int_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)


def _bool_or_none(value: Any) -> bool:
    return value is None or isinstance(value, bool)


# tf.data.experimental.AutotuneAlgorithm's members (the preflight reports those the installed
# TensorFlow really has)
AUTOTUNE_ALGORITHMS = ("DEFAULT", "HILL_CLIMB", "GRADIENT_DESCENT", "MAX_PARALLELISM",
                       "STAGE_BASED")


def _algorithm_or_none(value: Any) -> bool:
    return value is None or value in AUTOTUNE_ALGORITHMS


def _onednn_value(value: Any) -> bool:
    return value is None or value in ("0", "1")


@dataclass(frozen=True)
class Knob:
    name: str                                  # dotted: "tf_data.private_threadpool_size"
    applied: str                               # THREADING | TF_DATA | ENV | PROCESS
    # the setting or variable it writes; for TF_DATA its path under the tuned file's tf_data:
    target: str
    default: Any                               # the value that means "TensorFlow decides"
    allowed: str                               # for error messages
    is_valid: Callable[[Any], bool]
    candidates: Callable[[Machine], list[Any]]
    help: str
    modes: tuple[str, ...] = ("train", "predict", "data")   # workload modes it applies to
    needs_openmp: bool = False          # only meaningful on TensorFlow builds that use OpenMP
    # TF_DATA: the attribute path in tf.data.Options ("autotune.cpu_budget")
    option: str = ""
    # TF_DATA: searched by default only on TensorFlow builds that have the option (the preflight
    # reports which) and, with ``applies``, only for pipelines it can change
    optional: bool = False
    applies: Callable[[tuple[str, ...]], bool] | None = None

    def check(self, value: Any, where: str) -> Any:
        if isinstance(value, str) and value == "default":
            return self.default
        if self.applied == ENV and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not self.is_valid(value):
            raise ConfigError(f"{where}: {value!r} is not a valid value for {self.name}; "
                              f"allowed: {self.allowed}")
        return value


def _onednn_candidates(machine: Machine) -> list[Any]:
    # Only the value that differs from the build's default is worth a trial: "unset" already is
    # the default. When the default is unknown, try both.
    if machine.onednn_default is None:
        return [None, "0", "1"]
    return [None, "0" if machine.onednn_default else "1"]


def _allocator_value(value: Any) -> bool:
    return value in placement.ALLOCATOR_NAMES


def _cpus_candidates(m: Machine) -> list[Any]:
    # Fewer CPUs than the process may use only pays off for specific counts: one hardware thread
    # per physical core (hyperthreaded machines), one NUMA node, or the quota's size when the
    # cgroup allows less CPU time than the affinity mask has CPUs.
    total = len(m.affinity)
    counts = {m.physical_cores, m.usable_cpus}
    if m.numa_nodes > 1:
        counts.update(len(g) for g in _per_node(m).values())
    return [None, *sorted(c for c in counts if 1 <= c < total)]


def _per_node(m: Machine) -> dict[int, list[int]]:
    nodes: dict[int, list[int]] = {}
    for group in m.extra.get("cpu_cores") or []:
        nodes.setdefault(group["node"], []).extend(group["cpus"])
    return nodes


def _instance_candidates(m: Machine) -> list[Any]:
    # powers of two up to one instance per usable CPU
    return [n for n in (1, 2, 4, 8, 16) if n <= max(1, m.usable_cpus)]


def _omp_threads_value(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.isdigit() and int(value) >= 1)


def _digits_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.isdigit())


def _str_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and bool(value))


def _rewrite(option: str, applies: Callable[[Any], bool], help: str) -> Knob:
    """A tf.data graph rewrite (``Options().experimental_optimization``): on by default in
    TensorFlow, searched as [default, off] where the pipeline has what it rewrites."""
    return Knob(
        name=f"tf_data.optimization.{option}", applied=TF_DATA,
        target=f"optimization.{option}", option=f"experimental_optimization.{option}",
        default=None, optional=True,
        allowed="true, false, null or 'default' (TensorFlow's default: on)",
        is_valid=_bool_or_none, candidates=lambda m: [None, False], applies=applies, help=help)


KNOBS: dict[str, Knob] = {knob.name: knob for knob in (
    Knob(
        name="intra_op_parallelism_threads", applied=THREADING,
        target="intra_op_parallelism_threads",
        default=0, allowed="an integer >= 0 (0 = TensorFlow's default), 'default'",
        is_valid=_nonneg_int,
        candidates=lambda m: [0, *thread_ladder(m.usable_cpus)],
        help="threads one op (a matmul, a convolution) may use",
    ),
    Knob(
        name="inter_op_parallelism_threads", applied=THREADING,
        target="inter_op_parallelism_threads",
        default=0, allowed="an integer >= 0 (0 = TensorFlow's default), 'default'",
        is_valid=_nonneg_int,
        candidates=lambda m: [0, *sorted({1, 2, m.usable_cpus, *[2 ** i for i in range(8)
                                                                 if 2 ** i <= 2 * m.usable_cpus]})],
        help="independent ops that may run at the same time",
    ),
    Knob(
        name="tf_data.private_threadpool_size", applied=TF_DATA, target="private_threadpool_size",
        option="threading.private_threadpool_size",
        default=None, allowed="an integer >= 1, null or 'default' (TensorFlow's shared pool)",
        is_valid=_pos_int_or_none,
        candidates=lambda m: [None, *thread_ladder(m.usable_cpus, over=2.0)],
        help="threads of a private pool for the input pipeline",
    ),
    Knob(
        name="tf_data.max_intra_op_parallelism", applied=TF_DATA, target="max_intra_op_parallelism",
        option="threading.max_intra_op_parallelism",
        default=None, allowed="an integer >= 1, null or 'default'",
        is_valid=_pos_int_or_none,
        candidates=lambda m: [None, 1],
        help="threads one input-pipeline op may use (1 turns intra-op parallelism off there)",
    ),
    Knob(
        name="tf_data.autotune.enabled", applied=TF_DATA, target="autotune.enabled",
        option="autotune.enabled", default=None, optional=True,
        allowed="true, false, null or 'default' (TensorFlow's default: on)",
        is_valid=_bool_or_none,
        candidates=lambda m: [None, False],
        help="tf.data's autotuner (AUTOTUNE parallelism and buffer sizes); off fixes them",
    ),
    Knob(
        name="tf_data.autotune.cpu_budget", applied=TF_DATA, target="autotune.cpu_budget",
        option="autotune.cpu_budget", default=None, optional=True,
        allowed="an integer >= 1 (CPUs), null or 'default'", is_valid=_pos_int_or_none,
        candidates=lambda m: [None],
        help="CPUs the autotuner may plan for (default: all schedulable cores)",
    ),
    Knob(
        name="tf_data.autotune.ram_budget", applied=TF_DATA, target="autotune.ram_budget",
        option="autotune.ram_budget", default=None, optional=True,
        allowed="an integer >= 1 (bytes), null or 'default'", is_valid=_pos_int_or_none,
        candidates=lambda m: [None],
        help="bytes of buffers the autotuner may use (default: half the RAM)",
    ),
    Knob(
        name="tf_data.autotune.autotune_algorithm", applied=TF_DATA,
        target="autotune.autotune_algorithm", option="autotune.autotune_algorithm",
        default=None, optional=True,
        allowed=f"one of {', '.join(AUTOTUNE_ALGORITHMS)}, null or 'default'",
        is_valid=_algorithm_or_none,
        candidates=lambda m: [None],
        help="how the autotuner searches (tf.data.experimental.AutotuneAlgorithm)",
    ),
    Knob(
        name="tf_data.autotune.min_parallelism", applied=TF_DATA,
        target="autotune.min_parallelism", option="autotune.min_parallelism",
        default=None, optional=True,
        allowed="an integer >= 1, null or 'default'", is_valid=_pos_int_or_none,
        candidates=lambda m: [None],
        help="the least parallelism the autotuner gives an autotuned op",
    ),
    _rewrite("map_parallelization", lambda ops: "Map" in ops,
             "rewrite: run sequential (num_parallel_calls=None) stateless maps in parallel"),
    _rewrite("inject_prefetch", lambda ops: bool(ops) and ops[-1] != "Prefetch",
             "rewrite: add a prefetch after the last asynchronous transformation"),
    _rewrite("parallel_batch", lambda ops: "Batch" in ops,
             "rewrite: copy the elements of a batch in parallel"),
    Knob(
        name="env.TF_ENABLE_ONEDNN_OPTS", applied=ENV, target="TF_ENABLE_ONEDNN_OPTS",
        default=None, allowed="'0', '1', null or 'default' (unset)",
        is_valid=_onednn_value,
        candidates=_onednn_candidates,
        help="oneDNN (MKL-DNN) optimised CPU kernels",
    ),
    Knob(
        name="allocator", applied=PROCESS, target="allocator", default="system",
        allowed="'system', 'tcmalloc' or 'jemalloc' (the latter two when installed)",
        is_valid=_allocator_value,
        candidates=lambda m: ["system", *sorted(m.allocators)],
        help="memory allocator, preloaded (LD_PRELOAD) before the process starts",
    ),
    Knob(
        name="cpus", applied=PROCESS, target="cpus", default=None,
        allowed="an integer >= 1 (pin to that many CPUs: physical cores first, one NUMA node "
                "first), null or 'default' (no pinning)",
        is_valid=_pos_int_or_none,
        candidates=_cpus_candidates,
        help="how many CPUs the job is pinned to (through its CPU affinity)",
    ),
    Knob(
        name="instances", applied=PROCESS, target="instances", default=1,
        allowed="an integer >= 1 (processes, each pinned to its own share of the CPUs)",
        is_valid=lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        candidates=_instance_candidates, modes=("predict", "data"),
        help="independent processes sharing the CPUs; throughput is their sum",
    ),
    Knob(
        name="env.OMP_NUM_THREADS", applied=ENV, target="OMP_NUM_THREADS", default=None,
        allowed="a positive integer as a string, null or 'default'", is_valid=_omp_threads_value,
        candidates=lambda m: [None, *[str(v) for v in thread_ladder(m.usable_cpus, over=1.0)]],
        help="OpenMP threads (builds that use OpenMP only)", needs_openmp=True,
    ),
    Knob(
        name="env.KMP_BLOCKTIME", applied=ENV, target="KMP_BLOCKTIME", default=None,
        allowed="milliseconds as a string ('0', '1', '200'), null or 'default'",
        is_valid=_digits_or_none,
        candidates=lambda m: [None, "0", "1"],
        help="how long an OpenMP thread spins before sleeping (Intel OpenMP only)",
        needs_openmp=True,
    ),
    Knob(
        name="env.KMP_AFFINITY", applied=ENV, target="KMP_AFFINITY", default=None,
        allowed="an Intel OpenMP affinity string, null or 'default'", is_valid=_str_or_none,
        candidates=lambda m: [None, "granularity=fine,compact,1,0"],
        help="how Intel OpenMP binds its threads to cores", needs_openmp=True,
    ),
)}

# Variables the parent removes from the child's environment, so that the baseline really is
# TensorFlow's defaults and a trial measures only what it sets.
CONTROLLED_ENV = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                  *(k.target for k in KNOBS.values() if k.applied == ENV))


def default_settings() -> dict[str, Any]:
    return {name: knob.default for name, knob in KNOBS.items()}


def expert_settings(machine: Machine) -> dict[str, Any]:
    """The common rule of thumb (Intel's guide): intra-op = physical cores, inter-op = sockets
    (or 2 on a single socket); everything else left to TensorFlow."""
    settings = default_settings()
    settings["intra_op_parallelism_threads"] = machine.physical_cores
    settings["inter_op_parallelism_threads"] = machine.sockets if machine.sockets > 1 else 2
    return settings


KNOB_PREFIX = "knobs."     # declared knobs: Optuna parameter "knobs.map_parallelism"
AUTOTUNE = "autotune"     # a declared knob's value that arrives as tf.data.AUTOTUNE


@dataclass(frozen=True)
class Pipeline:
    """What the preflight child learnt about the installed TensorFlow and the user's pipeline.
    A ``None`` field is unknown: optional tf.data options are then not searched by default (as
    OpenMP knobs on a build not known to use OpenMP), and every rewrite counts as applicable."""

    options: tuple[str, ...] | None = None     # optional TF_DATA knobs this TensorFlow has
    algorithms: tuple[str, ...] | None = None  # the AutotuneAlgorithm members it has
    ops: tuple[str, ...] | None = None         # the dataset's transformations, source first
    knobs: dict[str, Any] = field(default_factory=dict)   # declared knob -> its baseline value

    @classmethod
    def from_preflight(cls, result: dict[str, Any]) -> Pipeline:
        def names(key: str) -> tuple[str, ...] | None:
            value = result.get(key)
            return tuple(value) if isinstance(value, list) else None

        knobs = {name: info["baseline"] for name, info in (result.get("knobs") or {}).items()}
        return cls(options=names("tf_data_options"), algorithms=names("autotune_algorithms"),
                   ops=names("pipeline"), knobs=knobs)


@dataclass(frozen=True)
class Space:
    """What a study searches: candidate lists for searched knobs, fixed values for the rest, and
    the baseline value of each declared knob (the builder's own default, see
    :func:`build_space`)."""

    searched: dict[str, list[Any]]
    fixed: dict[str, Any]
    knob_baseline: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        size = 1
        for values in self.searched.values():
            size *= len(values)
        return size

    def describe(self) -> dict[str, Any]:
        return {"searched": {k: list(v) for k, v in self.searched.items()},
                "fixed": dict(self.fixed)}

    def baseline(self) -> dict[str, Any]:
        """TensorFlow's defaults, and the user's pipeline as written."""
        return {**default_settings(), **self.knob_baseline}

    def expert(self, machine: Machine) -> dict[str, Any]:
        """The expert rule; declared knobs keep the pipeline as written."""
        return {**expert_settings(machine), **self.knob_baseline}

    def settings(self, sampled: dict[str, Any]) -> dict[str, Any]:
        settings = self.baseline()
        settings.update(self.fixed)
        settings.update(sampled)
        return settings


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
            raise ConfigError(f"{field_name}: unknown knob; allowed: {', '.join(KNOBS)}")
        knob = KNOBS[name]
        if isinstance(raw, list):
            if not raw:
                raise ConfigError(f"{field_name}: empty list; give candidate values, one value to "
                                  f"fix the knob, or 'default' to leave it to TensorFlow")
            checked[name] = [knob.check(v, field_name) for v in raw]
        else:
            checked[name] = knob.check(raw, field_name)
    return checked


def _check_available(name: str, value: Any, machine: Machine, mode: str, where: str,
                     pipeline: Pipeline) -> None:
    """A value the config asks for that this machine or workload cannot honour: a config error,
    not a trial that silently measures something else."""
    knob = KNOBS[name]
    field_name = f"{where}.{name}"
    if value == knob.default:
        return
    if mode not in knob.modes:
        raise ConfigError(f"{field_name}: {value!r} applies to workload modes "
                          f"{', '.join(knob.modes)} only, not {mode!r}")
    if knob.needs_openmp and machine.extra.get("openmp") is False:
        raise ConfigError(f"{field_name}: {value!r} has no effect: this TensorFlow build does not "
                          f"use OpenMP (stock builds use their own thread pool); remove it")
    if knob.optional and name not in (pipeline.options or ()):
        raise ConfigError(f"{field_name}: the installed TensorFlow "
                          f"({machine.tf_version or 'version unknown'}) has no "
                          f"tf.data.Options().{knob.option}; remove it")
    if name == "tf_data.autotune.autotune_algorithm" and pipeline.algorithms is not None \
            and value not in pipeline.algorithms:
        raise ConfigError(f"{field_name}: {value!r} is not an autotune algorithm of the installed "
                          f"TensorFlow; allowed: {', '.join(pipeline.algorithms)}")
    if name == "allocator" and value not in machine.allocators:
        raise ConfigError(f"{field_name}: {value!r} is not installed on this machine (none of "
                          f"{', '.join(placement.ALLOCATORS[value])} found); install it "
                          f"({placement.INSTALL_HINT[value]}) or remove it")
    if name == "cpus" and value > len(machine.affinity):
        raise ConfigError(f"{field_name}: {value} CPUs asked for, but this process may run on "
                          f"{len(machine.affinity)}")
    if name == "instances" and value > len(machine.affinity):
        raise ConfigError(f"{field_name}: {value} instances need {value} CPUs at least; this "
                          f"process may run on {len(machine.affinity)}")


def _searched_by_default(knob: Knob, machine: Machine, mode: str, pipeline: Pipeline) -> bool:
    if mode not in knob.modes or (knob.needs_openmp and not machine.openmp):
        return False
    if knob.optional and knob.name not in (pipeline.options or ()):
        return False
    return knob.applies is None or pipeline.ops is None or knob.applies(pipeline.ops)


def build_space(machine: Machine, overrides: dict[str, Any], where: str = "space",
                mode: str = "predict", pipeline: Pipeline | None = None,
                knobs: dict[str, list[Any]] | None = None) -> Space:
    """The default space for ``machine`` with the config's ``space`` section applied.

    An override is a list (narrow the candidates), a single value (fix the knob) or ``default``
    (remove it from the search: TensorFlow's default is used). TensorFlow's default and the expert
    rule's value stay candidates of every searched knob, because the baseline and expert trials are
    points of the same space.

    Optional tf.data options are searched by default only where the installed TensorFlow has them
    and, for graph rewrites, where the pipeline has what they rewrite (``pipeline``). Declared
    ``knobs`` are always searched, over their listed values in the listed order plus their
    baseline value (the builder's own default) when it is not listed.
    """
    pipeline = pipeline or Pipeline()
    overrides = check_overrides(overrides, where)
    references = [default_settings(), expert_settings(machine)]
    searched: dict[str, list[Any]] = {}
    fixed: dict[str, Any] = {}
    for name, knob in KNOBS.items():
        if name not in overrides:
            available = _searched_by_default(knob, machine, mode, pipeline)
            values = knob.candidates(machine) if available else [knob.default]
        elif isinstance(overrides[name], list):
            values = list(overrides[name])
            for v in values:
                _check_available(name, v, machine, mode, where, pipeline)
        else:
            _check_available(name, overrides[name], machine, mode, where, pipeline)
            fixed[name] = overrides[name]
            continue
        for ref in references:
            if ref[name] not in values:
                values.append(ref[name])
        unique: list[Any] = []
        for v in values:
            if v not in unique:
                unique.append(v)
        if len(unique) > 1:
            searched[name] = sorted(unique, key=_sort_key)
        else:
            fixed[name] = unique[0]
    baseline: dict[str, Any] = {}
    for name, candidates in (knobs or {}).items():
        key = KNOB_PREFIX + name
        base = pipeline.knobs.get(name, candidates[0])
        values = list(candidates)
        if not any(same_value(base, v) for v in values):
            values.append(base)
        baseline[key] = next(v for v in values if same_value(base, v))
        if len(values) > 1:
            searched[key] = values
        else:
            fixed[key] = values[0]
    return Space(searched=searched, fixed=fixed, knob_baseline=baseline)


def same_value(a: Any, b: Any) -> bool:
    """Equal as knob values: ``1`` is not ``True`` nor ``1.0``, as they reach a builder."""
    return type(a) is type(b) and a == b


def _sort_key(value: Any) -> tuple[int, Any]:
    # None (TensorFlow's default) first, then numbers / strings in order.
    if value is None:
        return (0, 0)
    if isinstance(value, str):
        return (2, value)
    return (1, value)


def placement_of(flat: dict[str, Any], machine: Machine | None) -> dict[str, Any]:
    """The concrete CPU sets behind flat ``cpus`` / ``instances`` counts on ``machine``:
    ``{"cpus": [0, 1] | None, "instances": {"count": 2, "cpus": [[0], [1]] | None}}``."""
    count = flat.get("cpus")
    instances = flat.get("instances") or 1
    if machine is None:
        if count is not None or instances > 1:
            raise ValueError("CPU sets need the machine")
        return {"cpus": None, "instances": {"count": 1, "cpus": None}}
    cpus = placement.cpu_set(machine, count)
    sets = placement.instance_sets(machine, instances, count) if instances > 1 else None
    return {"cpus": cpus, "instances": {"count": instances, "cpus": sets}}


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


def nest_settings(flat: dict[str, Any], machine: Machine | None = None) -> dict[str, Any]:
    """Flat knob settings -> the tuned file's ``settings`` layout. CPU counts become the CPU sets
    they mean on ``machine`` (needed only when they are not the defaults). The tf.data thread
    settings are always written; the optional tf.data options only when set (absent means
    TensorFlow's default), so files without them read as before. Declared knobs go to
    ``knobs:`` as they were searched (``autotune`` stays the string)."""
    nested: dict[str, Any] = {k.target: k.default for k in KNOBS.values() if k.applied == THREADING}
    nested.update({"tf_data": {}, "env": {}})
    knobs: dict[str, Any] = {}
    for name, value in flat.items():
        if name.startswith(KNOB_PREFIX):
            knobs[name[len(KNOB_PREFIX):]] = value
            continue
        knob = KNOBS.get(name)
        if knob is None:
            continue
        if knob.applied == THREADING:
            nested[knob.target] = value
        elif knob.applied == TF_DATA:
            if value is not None or not knob.optional:
                _put(nested["tf_data"], knob.target, value)
        elif knob.applied == ENV and value is not None:
            nested["env"][knob.target] = value
    nested["allocator"] = flat.get("allocator") or "system"
    nested.update(placement_of(flat, machine))
    if knobs:
        nested["knobs"] = knobs
    return nested


def flatten_settings(nested: dict[str, Any]) -> dict[str, Any]:
    """The tuned file's ``settings`` layout -> flat knob settings (unknown keys ignored)."""
    flat = default_settings()
    for name, knob in KNOBS.items():
        if knob.applied == THREADING:
            flat[name] = nested.get(knob.target, knob.default)
        elif knob.applied == TF_DATA:
            flat[name] = _get(nested.get("tf_data") or {}, knob.target, knob.default)
        elif knob.applied == ENV:
            flat[name] = (nested.get("env") or {}).get(knob.target, knob.default)
    flat["allocator"] = nested.get("allocator") or "system"
    cpus = nested.get("cpus")
    flat["cpus"] = len(cpus) if isinstance(cpus, list) and cpus else None
    instances = nested.get("instances")
    if isinstance(instances, dict):
        flat["instances"] = instances.get("count") or 1
    elif isinstance(instances, int):
        flat["instances"] = instances
    for name, value in (nested.get("knobs") or {}).items():
        flat[KNOB_PREFIX + name] = value
    return flat


def tf_data_options(tf: Any, flat: dict[str, Any]) -> tuple[Any, list[str]]:
    """A ``tf.data.Options`` with every TF_DATA knob of ``flat`` that is set, and the options this
    TensorFlow does not have (left out; the caller decides whether that is an error). Used by
    the trial child and by ``Applied.dataset_options()``, so both set exactly the same."""
    options = tf.data.Options()
    missing: list[str] = []
    for name, knob in KNOBS.items():
        value = flat.get(name)
        if knob.applied != TF_DATA or value is None:
            continue
        *parents, leaf = knob.option.split(".")
        holder = options
        for attr in parents:
            holder = getattr(holder, attr, None)
        if holder is None or not hasattr(holder, leaf):
            missing.append(knob.option)
            continue
        if name == "tf_data.autotune.autotune_algorithm":
            algorithms = getattr(getattr(tf.data, "experimental", None), "AutotuneAlgorithm", None)
            if algorithms is None or value not in algorithms.__members__:
                missing.append(f"{knob.option}={value}")
                continue
            value = algorithms[value]
        elif isinstance(value, int) and not isinstance(value, bool):
            value = int(value)
        setattr(holder, leaf, value)
    return options, missing


def tf_data_available(tf: Any) -> tuple[list[str], list[str]]:
    """The optional tf.data knobs this TensorFlow has, and its autotune algorithms."""
    probe = tf.data.Options()
    names = []
    for name, knob in KNOBS.items():
        if not knob.optional:
            continue
        *parents, leaf = knob.option.split(".")
        holder = probe
        for attr in parents:
            holder = getattr(holder, attr, None)
        if holder is not None and hasattr(holder, leaf):
            names.append(name)
    algorithms = getattr(getattr(tf.data, "experimental", None), "AutotuneAlgorithm", None)
    return names, [a for a in AUTOTUNE_ALGORITHMS if algorithms is not None
                   and a in algorithms.__members__]


ALWAYS_SHOWN = ("intra_op_parallelism_threads", "inter_op_parallelism_threads",
                "tf_data.private_threadpool_size", "tf_data.max_intra_op_parallelism",
                "env.TF_ENABLE_ONEDNN_OPTS")

ABBREV = {"intra_op_parallelism_threads": "intra", "inter_op_parallelism_threads": "inter",
          "tf_data.private_threadpool_size": "data.pool",
          "tf_data.max_intra_op_parallelism": "data.intra",
          "tf_data.autotune.enabled": "data.autotune",
          "tf_data.autotune.cpu_budget": "data.cpu_budget",
          "tf_data.autotune.ram_budget": "data.ram_budget",
          "tf_data.autotune.autotune_algorithm": "data.algorithm",
          "tf_data.autotune.min_parallelism": "data.min_par",
          "tf_data.optimization.map_parallelization": "data.map_par",
          "tf_data.optimization.inject_prefetch": "data.inject_prefetch",
          "tf_data.optimization.parallel_batch": "data.par_batch",
          "env.TF_ENABLE_ONEDNN_OPTS": "onednn", "allocator": "alloc",
          "instances": "inst", "env.OMP_NUM_THREADS": "omp",
          "env.KMP_BLOCKTIME": "kmp.block", "env.KMP_AFFINITY": "kmp.aff"}


def short(settings: dict[str, Any], only: list[str] | None = None) -> str:
    """Compact one-line form for progress lines: ``intra=2 inter=1 data.pool=- onednn=0``;
    declared knobs follow by their own names (``map_parallelism=autotune``)."""
    parts = []
    for name in only if only is not None else list(KNOBS):
        value = settings.get(name, KNOBS[name].default)
        if only is None and name not in ALWAYS_SHOWN and value == KNOBS[name].default:
            continue  # the newer knobs appear only when a trial sets them
        shown = "-" if value is None or (value == 0 and KNOBS[name].applied == THREADING) else value
        parts.append(f"{ABBREV.get(name, name)}={text(shown)}")
    if only is None:
        parts.extend(f"{name[len(KNOB_PREFIX):]}={text(value)}"
                     for name, value in settings.items() if name.startswith(KNOB_PREFIX))
    return " ".join(parts)


def text(value: Any) -> str:
    """How a knob value reads in one line: true / false / null, else as it is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)

