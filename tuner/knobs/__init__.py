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

from typing import Any, Callable

from tuner.base import cpusets, host
from tuner.base.host import Machine
from tuner.base.render import did_you_mean, plain
from tuner.errors import ConfigError
from tuner.knobs.base import (
    AUTOTUNE_ALGORITHMS,
    MODES,
    Knob,
    algorithm_or_none,
    bool_or_none,
    digits_or_none,
    omp_threads_value,
    pos_int,
    pos_int_or_none,
    str_or_none,
    text,
    thread_ladder,
)
from tuner.knobs.batch import BatchSizeKnob
from tuner.knobs.declared import AUTOTUNE, KNOB_PREFIX, DeclaredKnob, declared
from tuner.knobs.env import (
    BF16_FLAGS,
    F16_FLAGS,
    FPMATH_MODES,
    XLA_VALUES,
    EnvKnob,
    FpmathKnob,
    XlaKnob,
)
from tuner.knobs.precision import PRECISION_REWRITE, PrecisionKnob
from tuner.knobs.process import AllocatorKnob, CpusKnob, InstancesKnob
from tuner.knobs.tfdata import AutotuneAlgorithmKnob, TfDataKnob, algorithms_of
from tuner.knobs.threads import ThreadKnob

PRECISION_POLICY = "precision.keras_policy"


# -- the registry ---------------------------------------------------------------------------------

def _rewrite(option: str, applies: Callable[[tuple[str, ...]], bool], help: str,
             label: str) -> TfDataKnob:
    """A tf.data graph rewrite (``Options().experimental_optimization``): on by default in
    TensorFlow, searched as [default, off] where the pipeline has what it rewrites."""
    return TfDataKnob(
        f"tf_data.optimization.{option}", target=f"optimization.{option}",
        option=f"experimental_optimization.{option}", default=None, optional=True,
        allowed="true, false, null or 'default' (TensorFlow's default: on)",
        valid=bool_or_none, candidates=lambda m: [None, False], applies=applies, help=help,
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
        counts.update(len(cpus) for cpus in cpusets.cpus_per_node(m).values())
    return [None, *sorted(c for c in counts if 1 <= c < total)]


def _instance_candidates(m: Machine) -> list[Any]:
    # powers of two up to one instance per usable CPU
    return [n for n in (1, 2, 4, 8, 16) if n <= max(1, m.usable_cpus)]


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
        valid=pos_int_or_none,
        candidates=lambda m: [None, *thread_ladder(m.usable_cpus, over=2.0)],
        help="threads of a private pool for the input pipeline", label="data.pool",
        always_shown=True,
    ),
    TfDataKnob(
        "tf_data.max_intra_op_parallelism", target="max_intra_op_parallelism",
        option="threading.max_intra_op_parallelism",
        default=None, allowed="an integer >= 1, null or 'default'",
        valid=pos_int_or_none,
        candidates=lambda m: [None, 1],
        help="threads one input-pipeline op may use (1 turns intra-op parallelism off there)",
        label="data.intra", always_shown=True,
    ),
    TfDataKnob(
        "tf_data.autotune.enabled", target="autotune.enabled",
        option="autotune.enabled", default=None, optional=True,
        allowed="true, false, null or 'default' (TensorFlow's default: on)",
        valid=bool_or_none,
        candidates=lambda m: [None, False],
        help="tf.data's autotuner (AUTOTUNE parallelism and buffer sizes); off fixes them",
        label="data.autotune",
    ),
    TfDataKnob(
        "tf_data.autotune.cpu_budget", target="autotune.cpu_budget",
        option="autotune.cpu_budget", default=None, optional=True,
        allowed="an integer >= 1 (CPUs), null or 'default'", valid=pos_int_or_none,
        candidates=lambda m: [None],
        help="CPUs the autotuner may plan for (default: all schedulable cores)",
        label="data.cpu_budget",
    ),
    TfDataKnob(
        "tf_data.autotune.ram_budget", target="autotune.ram_budget",
        option="autotune.ram_budget", default=None, optional=True,
        allowed="an integer >= 1 (bytes), null or 'default'", valid=pos_int_or_none,
        candidates=lambda m: [None],
        help="bytes of buffers the autotuner may use (default: half the RAM)",
        label="data.ram_budget",
    ),
    AutotuneAlgorithmKnob(
        "tf_data.autotune.autotune_algorithm", target="autotune.autotune_algorithm",
        option="autotune.autotune_algorithm", default=None, optional=True,
        allowed=f"one of {', '.join(AUTOTUNE_ALGORITHMS)}, null or 'default'",
        valid=algorithm_or_none,
        candidates=lambda m: [None],
        help="how the autotuner searches (tf.data.experimental.AutotuneAlgorithm)",
        label="data.algorithm",
    ),
    TfDataKnob(
        "tf_data.autotune.min_parallelism", target="autotune.min_parallelism",
        option="autotune.min_parallelism", default=None, optional=True,
        allowed="an integer >= 1, null or 'default'", valid=pos_int_or_none,
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
        valid=pos_int_or_none,
        candidates=_cpus_candidates,
        help="how many CPUs the job is pinned to (through its CPU affinity)", label="cpus",
    ),
    BatchSizeKnob(
        "batch_size", default=None,
        allowed="an integer >= 1 (samples per batch), null or 'default' (the workload's batch "
                "size)",
        valid=pos_int_or_none,
        candidates=lambda m: [None], modes=("predict",),
        help="samples per batch fed to a model file (searched with --batch-sizes)",
        label="batch",
    ),
    InstancesKnob(
        "instances", default=1,
        allowed="an integer >= 1 (processes, each pinned to its own share of the CPUs)",
        valid=pos_int,
        candidates=_instance_candidates, modes=("predict", "data"),
        help="independent processes sharing the CPUs; throughput is their sum", label="inst",
    ),
    EnvKnob(
        "env.OMP_NUM_THREADS", variable="OMP_NUM_THREADS", default=None,
        allowed="a positive integer as a string, null or 'default'", valid=omp_threads_value,
        candidates=lambda m: [None, *[str(v) for v in thread_ladder(m.usable_cpus, over=1.0)]],
        help="OpenMP threads (builds that use OpenMP only)", needs_openmp=True, label="omp",
    ),
    EnvKnob(
        "env.KMP_BLOCKTIME", variable="KMP_BLOCKTIME", default=None,
        allowed="milliseconds as a string ('0', '1', '200'), null or 'default'",
        valid=digits_or_none,
        candidates=lambda m: [None, "0", "1"],
        help="how long an OpenMP thread spins before sleeping (Intel OpenMP only)",
        needs_openmp=True, label="kmp.block",
    ),
    EnvKnob(
        "env.KMP_AFFINITY", variable="KMP_AFFINITY", default=None,
        allowed="an Intel OpenMP affinity string, null or 'default'", valid=str_or_none,
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


__all__ = ["ALLOCATOR", "AUTOTUNE", "AUTOTUNE_ALGORITHMS", "BATCH_SIZE", "CPUS", "INSTANCES",
           "INTRA_OP", "KNOBS", "KNOB_PREFIX", "MODES", "PRECISION", "PRECISION_IN_PROCESS",
           "PRECISION_POLICY", "PRECISION_REWRITE", "SECTIONS", "TF_DATA", "THREADS", "XLA",
           "XLA_VALUES", "AllocatorKnob", "BatchSizeKnob", "CpusKnob", "DeclaredKnob", "EnvKnob",
           "FpmathKnob", "InstancesKnob", "Knob", "PrecisionKnob", "TfDataKnob", "ThreadKnob",
           "XlaKnob", "algorithms_of", "check_overrides", "declared", "default_settings", "knob",
           "text", "thread_ladder"]
