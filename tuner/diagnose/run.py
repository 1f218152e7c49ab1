"""``python -m tuner diagnose``: why TensorFlow isn't using all the CPUs, measured.

One child runs the workload with TensorFlow's defaults, as a trial would, in alternating rounds:
a chunk on the real pipeline, then a shorter one on one batch held in memory (the same step,
compute alone), so both see the same load from other processes. It counts
the threads each pool started, the CPU each group of threads used, the wait for data, and reads
the pipeline's graph. Here, in the parent, those numbers become a report: CPUs, saturation, input
or compute, and findings, each with what was measured, what it means and what to try.

Thresholds (module constants, reported in the JSON under ``thresholds``):

- **input-bound**: the pipeline's throughput is below ``INPUT_BOUND_RATIO`` (0.8) of the cached
  batch's (the median of the rounds' ratios, and in at least ``INPUT_BOUND_ROUNDS``, 3/4, of the
  rounds), or the step loop waits for data ``INPUT_WAIT_SHARE`` (25%) of its time or more. The
  same configuration varies by about ±10% from process to process on a busy VM, and within one
  process from second to second, so a gap under 20% is not called.
- **idle CPUs**: cores busy below ``LOW_SATURATION`` (60%) of what the process may use.
- **system time**: ``HIGH_SYSTEM_SHARE`` (25%) or more of the process's CPU time in the kernel.
- **throttling**: the cgroup was throttled in ``THROTTLED_PERIODS`` (10%) or more of its periods.
- **competing load**: other processes kept ``COMPETING_LOAD`` (25%) or more of the usable CPUs
  busy (only without a quota, where per-core numbers describe this job's CPUs).
- **oversubscribed**: TensorFlow's intra-op pool has more threads than usable CPUs.

When nothing is found the findings list holds one finding of kind ``ok`` that says so, so the
list always explains the verdict.

Report history (``FORMAT_VERSION``):
  1: first version.
"""

from __future__ import annotations

import shlex
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tuner import knobs
from tuner.base import host
from tuner.base.lock import host_lock
from tuner.child import protocol
from tuner.config import Config
from tuner.errors import TrialFailed, TunerError
from tuner.search.trial import run_child

FORMAT_VERSION = 1

INPUT_BOUND_RATIO = 0.8
INPUT_BOUND_ROUNDS = 0.75
INPUT_WAIT_SHARE = 0.25
LOW_SATURATION = 0.6
HIGH_SYSTEM_SHARE = 0.25
THROTTLED_PERIODS = 0.10
COMPETING_LOAD = 0.25

DEFAULT_SECONDS = 60.0


class DiagnoseError(TunerError):
    """The diagnose run could not finish: its child crashed, hung or raised."""


# how --seconds is shared (plan(); said in diagnose --help and docs/diagnose.md)
WARMUP_SHARE, PIPELINE_SHARE, CACHED_SHARE, DRAIN_SHARE = 0.10, 0.50, 0.15, 0.25


def seconds_help() -> str:
    """``diagnose --seconds``'s help, from the shares :func:`plan` uses."""
    return (f"seconds of measuring (default 60): {PIPELINE_SHARE:.0%} on the real pipeline, "
            f"{CACHED_SHARE:.0%} on one cached batch, {DRAIN_SHARE:.0%} on uncounted pipeline "
            f"steps before each pipeline chunk, up to {WARMUP_SHARE:.0%} warm-up; start-up "
            f"comes on top").replace("%", "%%")


def plan(seconds: float) -> dict[str, Any]:
    """How ``seconds`` of measuring are spent: up to 10% warming up (less once the step rate
    settles), then 5 to 30 rounds of a chunk on the real pipeline (50% of the time in all), one
    on the cached batch (15%) and, before the next pipeline chunk, an uncounted drain (25%):
    at 60 s, 30 rounds of 1 s, 0.3 s and 0.5 s. Short chunks follow the load of a shared machine
    closely; many rounds let the median ratio ignore the few a burst of other work lands on."""
    rounds = max(5, min(30, round(seconds)))
    return {
        "seconds": seconds,
        "warmup_seconds": min(5.0, max(0.5, WARMUP_SHARE * seconds)),
        "cached_warmup_seconds": min(1.0, 0.03 * seconds),
        "rounds": rounds,
        "pipeline_seconds": PIPELINE_SHARE * seconds / rounds,
        "cached_seconds": CACHED_SHARE * seconds / rounds,
        "drain_seconds": DRAIN_SHARE * seconds / rounds,
    }


def capacity(machine: host.Machine) -> float:
    """CPUs' worth of time the process may use: its affinity, capped by the quota."""
    cpus = float(len(machine.affinity))
    return min(cpus, machine.cpu_quota) if machine.cpu_quota is not None else cpus


def diagnose(config: Config, seconds: float = DEFAULT_SECONDS, *, root: Path | str = "/",
             affinity: list[int] | None = None, worker: list[str] | None = None,
             on_wait: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run the diagnosis child for ``config`` and return the report (JSON-ready).

    ``root`` and ``affinity`` simulate a machine (tests); ``worker`` replaces the worker
    command. Raises :class:`DiagnoseError` when the child fails."""
    machine = host.detect(root, affinity)
    task = protocol.task("diagnose", config.workload, usable_cpus=machine.usable_cpus,
                         affinity=machine.affinity, capacity=capacity(machine),
                         cgroup_root=str(root), diagnose=plan(seconds))
    # Room for start-up, building and tracing on top of the measuring itself.
    timeout = seconds * 1.5 + config.search.trial_timeout
    try:
        with host_lock(on_wait=on_wait, timeout=config.search.timeout):
            result = run_child(task, timeout=timeout, settings=knobs.default_settings(),
                               worker=worker)
    except TrialFailed as exc:
        raise DiagnoseError(f"{config.path}: the diagnose run failed: {exc.reason}") from None
    return analyse(machine, result, config)


# -- analysis ------------------------------------------------------------------------------------

def _num(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _cpus(value: float) -> str:
    """'1 CPU', '2 CPUs', '1.5 CPUs'."""
    return f"{_num(value)} CPU" + ("" if value == 1 else "s")


def _throttling(result: dict[str, Any], wall: float) -> dict[str, Any] | None:
    """The child's throttling counters over the pipeline rounds, with the share of periods."""
    counted = result.get("throttling")
    if not counted:
        return None
    periods, throttled = counted["nr_periods"], counted["nr_throttled"]
    return {"cgroup": counted["cgroup"], "nr_periods": periods, "nr_throttled": throttled,
            "throttled_seconds": round(counted["throttled_seconds"], 3),
            "throttled_periods_share": round(throttled / periods, 4) if periods > 0 else 0.0,
            "measured_seconds": round(wall, 3)}


def _step_name(step: dict[str, Any]) -> str:
    kind = {"MapDataset": "map", "ParallelMapDatasetV2": "map", "ParallelMapDataset": "map",
            "InterleaveDataset": "interleave", "FlatMapDataset": "flat_map",
            "FilterDataset": "filter", "MapAndBatchDataset": "map"}.get(step["op"], step["op"])
    if step.get("from_generator"):
        return "Dataset.from_generator"
    functions = step.get("functions") or []
    return f"{kind}({', '.join(functions)})" if functions else kind


@dataclass(frozen=True)
class Facts:
    """What the diagnosis measured, in the terms the findings use."""

    machine: host.Machine
    search: str                       # the search command line, for the advice
    mode: str
    cap: float                        # CPUs' worth of time the process may use
    threads: dict[str, Any]           # the child's counts, plus oversubscription and settings
    intra_pool: int
    inter_pool: int
    cores_busy: float                 # CPUs this process kept busy on average
    saturation: float
    user: float
    system: float
    per_core: list[float]
    others: float | None              # CPUs other processes kept busy (None: not measured)
    throttling: dict[str, Any] | None
    pipeline_tp: float
    cached_tp: float | None
    round_ratios: list[float]
    ratio: float | None               # pipeline / cached batch
    wait: float                       # share of the step loop spent waiting for data
    pipeline: dict[str, Any]
    generated: bool = False           # the inputs are tuner's, generated for a model file

    @property
    def usable(self) -> int:
        return self.machine.usable_cpus

    @property
    def system_share(self) -> float:
        return self.system / (self.user + self.system) if self.user + self.system > 0 else 0.0

    @property
    def input_bound(self) -> bool:
        if self.mode == "data":
            return True  # the pipeline is the whole workload
        below = self.ratio is not None and self.ratio < INPUT_BOUND_RATIO
        if below and self.round_ratios:
            # The gap must hold in most rounds, not just the median: bursts of other work on a
            # shared machine slowed half the rounds of a compute-bound model to 0.5-0.7x.
            share = sum(r < INPUT_BOUND_RATIO for r in self.round_ratios) / len(self.round_ratios)
            below = share >= INPUT_BOUND_ROUNDS
        return bool(below or self.wait >= INPUT_WAIT_SHARE)

    @property
    def steps(self) -> list[dict[str, Any]]:
        return self.pipeline.get("transformations") or []

    @property
    def sequential(self) -> list[dict[str, Any]]:
        """The transformations that process one element at a time."""
        return [s for s in self.steps if s.get("sequential")]

    @property
    def python(self) -> list[dict[str, Any]]:
        """The transformations that call Python."""
        return [s for s in self.steps if s.get("python") or s.get("from_generator")]

    @property
    def pools(self) -> str:
        intra_s = "" if self.intra_pool == 1 else "s"
        return (f"intra-op pool {self.intra_pool} thread{intra_s}, inter-op pool "
                f"{self.inter_pool}, tf.data {self.threads.get('tf_data', 0)}")

    @property
    def quota_below_affinity(self) -> bool:
        quota = self.machine.cpu_quota
        return quota is not None and quota < len(self.machine.affinity)


def _facts(machine: host.Machine, result: dict[str, Any], search: str,
           mode: str, generated: bool = False) -> Facts:
    measured = result["measured"]
    wall = float(measured["seconds"])
    cap = capacity(machine)
    threads = dict(result.get("threads") or {})
    intra_pool = int(threads.get("intra_op_pool") or 0)
    # Against the CPU time the process may use: 16 threads under a 1.5-CPU quota are 10.7x.
    threads["oversubscription"] = round(intra_pool / cap, 2) if cap > 0 else None
    threads["tf_settings"] = result.get("tf_threading")
    cores_busy = float(measured["cpu_seconds"]) / wall
    per_core = list(measured.get("per_core_busy") or [])
    pipeline_tp = float(measured["throughput"])
    cached = result.get("cached")
    cached_tp = float(cached["throughput"]) if cached else None
    # The median of the rounds' ratios: each round's pipeline against the cached batch measured
    # right after it, so a change in other processes' load between rounds cancels.
    round_ratios = (cached or {}).get("round_ratios") or []
    return Facts(
        machine=machine, search=search, mode=mode, cap=cap, threads=threads,
        intra_pool=intra_pool, inter_pool=int(threads.get("inter_op_pool") or 0),
        cores_busy=cores_busy, saturation=min(1.0, cores_busy / cap) if cap > 0 else 0.0,
        user=float(measured["user_seconds"]), system=float(measured["system_seconds"]),
        per_core=per_core, others=max(0.0, sum(per_core) - cores_busy) if per_core else None,
        throttling=_throttling(result, wall), pipeline_tp=pipeline_tp, cached_tp=cached_tp,
        round_ratios=round_ratios,
        ratio=(statistics.median(round_ratios) if round_ratios
               else pipeline_tp / cached_tp if cached_tp else None),
        wait=float(measured["input_wait"]),
        pipeline=result.get("pipeline") or {"inspected": False}, generated=generated)


def analyse(machine: host.Machine, result: dict[str, Any], config: Config | None = None,
            *, config_path: str | None = None) -> dict[str, Any]:
    """The report, from the machine and the diagnosis child's result."""
    path = config.path if config is not None else (config_path or "CONFIG.yaml")
    mode = (config.workload.mode if config is not None else result.get("mode")) or "predict"
    generated = (config.workload.generated if config is not None
                 else bool(result.get("generated_inputs")))
    f = _facts(machine, result, f"python -m tuner search --config {shlex.quote(str(path))}",
               mode, generated)
    measured, cached = result["measured"], result.get("cached")
    return {
        "format_version": FORMAT_VERSION,
        "config": str(path),
        "workload": {"model": config.workload.model if config else None,
                     "data": config.workload.data if config else None, "mode": mode,
                     "batch_size": result.get("batch_size")},
        "tf_version": result.get("tf_version"),
        "onednn_enabled": result.get("onednn_enabled"),
        "xla": result.get("xla"),
        "cpu_flags": [f for f in host.COMPUTE_FLAGS if f in machine.cpu_flags],
        "compute_levers": compute_levers(machine, mode),
        "visible_cpus": machine.visible_cpus,
        "usable_cpus": f.usable,
        "affinity": list(machine.affinity),
        "cpu_quota": machine.cpu_quota,
        "cpu_capacity": round(f.cap, 3),
        "threads": f.threads,
        "cpu_saturation": round(f.saturation, 4),
        "cores_busy": round(f.cores_busy, 3),
        "per_core_busy": f.per_core,
        "other_processes_cpus": round(f.others, 3) if f.others is not None else None,
        "user_seconds": round(f.user, 3),
        "system_seconds": round(f.system, 3),
        "system_share": round(f.system_share, 4),
        "throttling": f.throttling,
        "throughput": {"unit": "samples/s", "pipeline": round(f.pipeline_tp, 2),
                       "cached_batch": round(f.cached_tp, 2) if f.cached_tp else None,
                       "ratio": round(f.ratio, 4) if f.ratio is not None else None,
                       "pipeline_windows": measured.get("windows"),
                       "cached_windows": cached.get("windows") if cached else None,
                       "round_ratios": (cached or {}).get("round_ratios")},
        "input_wait": round(f.wait, 4),
        "input_bound": f.input_bound,
        "pipeline": f.pipeline,
        "step_latency_ms": measured.get("step_latency_ms"),
        "measured_seconds": {"pipeline": round(float(measured["seconds"]), 2),
                             "cached_batch": round(cached["seconds"], 2) if cached else None},
        "findings": _findings(f),
        "thresholds": {"input_bound_ratio": INPUT_BOUND_RATIO,
                       "input_bound_rounds": INPUT_BOUND_ROUNDS,
                       "input_wait_share": INPUT_WAIT_SHARE,
                       "low_saturation": LOW_SATURATION, "high_system_share": HIGH_SYSTEM_SHARE,
                       "throttled_periods": THROTTLED_PERIODS, "competing_load": COMPETING_LOAD},
    }


def compute_levers(machine: host.Machine, mode: str) -> list[dict[str, Any]]:
    """The registry's compute knobs this machine and mode offer (oneDNN's switch included):
    each with what it does and whether it needs an accuracy tolerance (reduced precision)."""
    out = []
    for k in knobs.KNOBS.values():
        if not (k.compute or k.name == "env.TF_ENABLE_ONEDNN_OPTS") or mode not in k.modes:
            continue
        if k.cpu_flags and not set(k.cpu_flags) & machine.cpu_flags:
            continue
        out.append({"knob": k.name, "what": k.help,
                    **({"cpu_flags": [f for f in k.cpu_flags if f in machine.cpu_flags]}
                       if k.cpu_flags else {}),
                    "needs_tolerance": bool(k.changes_numbers)})
    return out


def _compute_lines(r: dict[str, Any]) -> list[str]:
    flags = r.get("cpu_flags") or []
    xla = r.get("xla") or {}
    onednn = {True: "on", False: "off", None: "unknown"}[r.get("onednn_enabled")]
    if xla.get("active"):
        xla_text = f"on (TF_XLA_FLAGS={xla.get('flags')!r})"
    else:
        xla_text = ("off (TF_XLA_FLAGS " + (f"{xla['flags']!r}" if xla.get("flags") else "unset")
                    + ")")
    if xla.get("available") is False:
        xla_text += "; this build has no XLA JIT"
    lines = ["Compute",
             f"  CPU instructions: {' '.join(flags) or 'none of ' + ', '.join(host.COMPUTE_FLAGS)}",
             f"  in the child: oneDNN {onednn}, XLA {xla_text}"]
    levers = r.get("compute_levers") or []
    if levers:
        lines.append("  levers this machine offers (searched by python -m tuner search): "
                     + "; ".join(f"{lv['knob']} ({lv['what']}"
                                 + (", needs an accuracy tolerance" if lv["needs_tolerance"]
                                    else "") + ")" for lv in levers))
    return lines


# -- findings: one rule each, in report order ----------------------------------------------------

Finding = dict[str, Any]


def _finding(kind: str, title: str, evidence: str, meaning: str, advice: str,
             knobs: list[str] | None = None) -> Finding:
    return {"kind": kind, "title": title, "evidence": evidence, "meaning": meaning,
            "advice": advice, "knobs": list(knobs or [])}


def _plural(n: int) -> str:
    return "" if n == 1 else "s"


THREAD_KNOBS = ["intra_op_parallelism_threads", "inter_op_parallelism_threads"]
ALL_THREAD_KNOBS = [*THREAD_KNOBS, "tf_data.private_threadpool_size"]


def _restricted_cpus(f: Facts) -> Finding | None:
    """Fewer CPUs than the machine shows."""
    machine, usable = f.machine, f.usable
    if usable >= machine.visible_cpus:
        return None
    why = []
    if len(machine.affinity) < machine.visible_cpus:
        why.append(f"its CPU affinity allows {len(machine.affinity)} "
                   f"(CPU {host.format_cpus(machine.affinity)})")
    if f.quota_below_affinity:
        why.append(f"its cgroup CPU quota allows {_cpus(machine.cpu_quota or 0)}' worth of time")
    sized = (f"TensorFlow sized its pools from the affinity mask ({f.pools})"
             + (", not from the quota, which it does not read" if f.quota_below_affinity else ""))
    return _finding(
        "restricted_cpus",
        f"This process may use {usable} of the {machine.visible_cpus} CPUs the machine shows",
        f"os.cpu_count() = {machine.visible_cpus}; " + "; ".join(why)
        + f"; usable CPUs: {usable}. {sized}.",
        f"Anything sized from os.cpu_count() (thread pools in your code or libraries, "
        f"num_parallel_calls={machine.visible_cpus}, multiprocessing workers) starts "
        f"{machine.visible_cpus / usable:.3g}x too many threads for what this process gets.",
        f"If the limit is intended, size threads from the usable CPUs "
        f"(len(os.sched_getaffinity(0)), and the quota) and tune under the same limit: "
        f"`{f.search}` run the same way bounds its thread counts by the {usable} usable "
        f"CPU{_plural(usable)}. If it is not, widen it (taskset -c, docker --cpus "
        f"or --cpuset-cpus, the pod's CPU limit).", THREAD_KNOBS)


def _oversubscribed(f: Facts) -> Finding | None:
    """More threads in the intra-op pool than usable CPUs."""
    usable, machine = f.usable, f.machine
    if f.intra_pool <= usable:
        return None
    ratio = f.intra_pool / f.cap
    if machine.cpu_quota is not None and f.intra_pool == len(machine.affinity):
        title = (f"TensorFlow sized its pools for {f.intra_pool} CPUs but the cgroup quota "
                 f"allows {_num(machine.cpu_quota)} ({ratio:.3g}x oversubscribed)")
    else:
        title = (f"TensorFlow's intra-op pool has {f.intra_pool} threads for {usable} "
                 f"usable CPU{_plural(usable)} ({ratio:.3g}x oversubscribed)")
    evidence = f"{f.pools}; {f.threads.get('busy_threads', '?')} threads busy during the run"
    wait_ratio = f.threads.get("run_queue_wait_per_cpu_second")
    if wait_ratio is not None:
        evidence += f"; threads waited {wait_ratio:.2f} s for a CPU per second they ran"
    if f.throttling:
        t = f.throttling
        evidence += (f"; throttled in {t['nr_throttled']} of {t['nr_periods']} quota periods "
                     f"({t['throttled_seconds']:.2f} s)")
    return _finding(
        "oversubscribed", title, evidence + ".",
        "Each op is split into as many shards as the pool has threads; with more threads than "
        "CPUs they queue for the CPUs (and, under a quota, use it up early in each period and "
        "are stopped until the next), so steps get slower and less predictable.",
        f"Size the pools to the {usable} usable CPU{_plural(usable)}: "
        f"{knobs.INTRA_OP.by_hand(usable)}; inter-op 1-2; cap tf.data with "
        f"options.threading.private_threadpool_size. Or measure: `{f.search}`.",
        ALL_THREAD_KNOBS)


def _throttled(f: Facts) -> Finding | None:
    """The cgroup's quota stopped the job in many periods."""
    t = f.throttling
    if not (t and t["nr_periods"] > 0 and t["throttled_periods_share"] >= THROTTLED_PERIODS):
        return None
    return _finding(
        "throttled",
        f"Throttled by the cgroup CPU quota in {t['throttled_periods_share']:.0%} of periods",
        f"cgroup {t['cgroup']}: nr_throttled {t['nr_throttled']} of {t['nr_periods']} periods, "
        f"{t['throttled_seconds']:.2f} s throttled during {t['measured_seconds']:.1f} s "
        f"measured; quota {_cpus(f.machine.cpu_quota or 0)}.",
        "The job used up its quota before each period ended and was stopped until the next: "
        "bursts of more threads than the quota allows make steps stall.",
        f"Use at most as many threads as the quota (intra-op {f.usable}, inter-op 1-2), or raise "
        f"the quota. `{f.search}` measures the thread counts under this quota.", THREAD_KNOBS)


def _input_bound(f: Facts) -> Finding | None:
    """The model waits for the pipeline (in data mode the pipeline is all there is)."""
    if not f.input_bound or f.mode == "data":
        return None
    evidence = (f"{_num(f.pipeline_tp)} samples/s with the real pipeline vs "
                f"{_num(f.cached_tp or 0)} on one cached batch ({f.ratio:.2f}x); waiting for "
                f"data {f.wait:.0%} of the step loop's time")
    if f.generated:
        # the pipeline measured is tuner's own feed of generated batches: advice on it would be
        # advice on nothing the user runs
        return _finding(
            "generated_input_gap",
            f"Generated inputs: tuner's feed delivers {f.ratio:.2f}x what the model can process",
            evidence.replace("the real pipeline", "tuner's generated inputs") + ".",
            "The inputs are generated by tuner from the model's signature, so this gap is the "
            "cost of tuner's own feed (copying generated batches through tf.data), not of your "
            "pipeline; the model itself runs at the cached-batch rate.",
            "To diagnose your own input pipeline, give it: `--data FILE.py:FUNCTION`. A server "
            "that receives ready tensors sees the cached-batch rate.", [])
    by_group = f.threads.get("cpus_by_group") or {}
    if by_group:
        op_pools = by_group.get("intra_op_pool", 0) + by_group.get("inter_op_pool", 0)
        evidence += (f"; tf.data threads used {by_group.get('tf_data', 0):.2f} CPUs, the op "
                     f"pools {op_pools:.2f}")
    inspected = bool(f.pipeline.get("inspected"))
    has_prefetch = any(s["op"].startswith("Prefetch") for s in f.steps)
    if inspected and has_prefetch and not f.sequential and not f.python:
        advice = ("The pipeline is already parallel and prefetched, so its per-element work "
                  "is the cost: .cache() what does not change between epochs, batch before "
                  "a vectorisable map, or preprocess offline. ")
    else:
        advice = ("Make the pipeline parallel and overlapped: .map(..., "
                  "num_parallel_calls=tf.data.AUTOTUNE), .prefetch(tf.data.AUTOTUNE) as the "
                  "last step, .cache() after expensive steps whose output does not change. ")
    if inspected and not has_prefetch:
        advice = "The pipeline has no prefetch: add .prefetch(tf.data.AUTOTUNE) last. " + advice
    advice += (f"Then tune tf.data's threads against the model's: `{f.search}` "
               f"(tf_data.private_threadpool_size, tf_data.max_intra_op_parallelism, "
               f"intra-op).")
    return _finding(
        "input_bound",
        f"Input-bound: the pipeline delivers {f.ratio:.2f}x what the model can process",
        evidence + ".",
        "The model waits for data (or competes with the pipeline for the CPUs): more op "
        "threads will not help until the input pipeline is faster.",
        advice, ["tf_data.private_threadpool_size", "tf_data.max_intra_op_parallelism"])


def _sequential_map(f: Facts, step: dict[str, Any]) -> Finding | None:
    """A transformation that processes one element at a time (input-bound jobs only)."""
    name = _step_name(step)
    stateful_ops = ", ".join(step.get("python") or ["random or other stateful ops"])
    why = (f"its function is stateful ({stateful_ops}), so tf.data will not parallelise "
           f"it by itself" if step.get("stateful") else "map_parallelization is off")
    return _finding(
        "sequential_map", f"Sequential {name}: one element at a time",
        f"{step['op']} over {', '.join(step.get('functions') or ['?'])} without "
        f"num_parallel_calls; {why}.",
        "One thread runs this step for every element; it caps the pipeline at one CPU.",
        f"Pass num_parallel_calls=tf.data.AUTOTUNE (and deterministic=False if the order "
        f"does not matter) to {name.split('(')[0]}.", ["num_parallel_calls"])


def _python_in_pipeline(f: Facts, step: dict[str, Any]) -> Finding | None:
    """A transformation that runs Python for every element (input-bound jobs only)."""
    if step.get("from_generator"):
        return _finding(
            "python_in_pipeline",
            "Python in the pipeline: Dataset.from_generator runs a Python generator",
            f"{step['op']} pulls every element from a Python generator "
            f"({', '.join(step.get('python') or ['py_func'])}).",
            "One Python thread produces every element, one at a time, under the GIL; "
            "tf.data cannot parallelise a generator.",
            "Read the data with tf.data sources instead (from_tensor_slices over file "
            "names, then map(tf.io.read_file + decode, num_parallel_calls=AUTOTUNE), "
            "TFRecordDataset), or interleave several generators; preprocess once offline "
            "where you can.", ["num_parallel_calls"])
    calls = ", ".join(step.get("python") or ["Python"])
    return _finding(
        "python_in_pipeline", f"Python in the pipeline: {_step_name(step)} calls {calls}",
        f"{step['op']} runs Python ({calls}) for every element.",
        "Python code holds the GIL, so elements are processed largely one at a time "
        "whatever num_parallel_calls says, and every call crosses from C++ into Python.",
        "Rewrite it with TensorFlow ops (tf.image, tf.io, tf.strings, "
        "tf.experimental.numpy) so it runs in parallel in C++; or preprocess once "
        "offline (TFRecord, .cache() "
        "to a file) so the job does not run it every epoch.", ["num_parallel_calls"])


def _low_saturation(f: Facts) -> Finding | None:
    """Idle CPUs, not explained by the input or by other processes taking them."""
    idle_share = f.saturation
    if f.machine.cpu_quota is None and f.others is not None:
        idle_share = min(1.0, (f.cores_busy + f.others) / f.cap)
    if f.input_bound or idle_share >= LOW_SATURATION:
        return None
    return _finding(
        "low_saturation",
        f"CPUs idle: {f.cores_busy:.2f} of {_num(f.cap)} usable CPUs busy "
        f"({f.saturation:.0%})",
        f"This process used {f.cores_busy:.2f} CPUs on average over "
        f"{float(f.threads.get('busy_threads') or 0):.0f} busy threads; {f.pools}.",
        "The model's ops do not spread over the cores: ops too small to split, a sequential "
        "graph, or too few threads.",
        f"Inter-op threads let independent ops run together, intra-op threads split large "
        f"ops, a larger batch gives every op more work. `{f.search}` measures the thread "
        f"counts.", THREAD_KNOBS)


def _system_time(f: Facts) -> Finding | None:
    """Much of the CPU time spent in the kernel."""
    if f.system_share < HIGH_SYSTEM_SHARE or f.cores_busy < 0.1:
        return None
    return _finding(
        "system_time", f"High system time: {f.system_share:.0%} of CPU time in the kernel",
        f"user {f.cores_busy * (1 - f.system_share):.2f} CPUs, system "
        f"{f.cores_busy * f.system_share:.2f} CPUs; {f.pools}.",
        "Threads spend their time in the kernel, usually waking and sleeping each other "
        "(more threads than work) or allocating memory.",
        f"Fewer threads: `{f.search}` measures intra-op, inter-op and tf.data thread counts.",
        ALL_THREAD_KNOBS)


def _competing_load(f: Facts) -> Finding | None:
    """Other processes on this job's CPUs (measurable only without a quota)."""
    machine, others = f.machine, f.others
    if (machine.cpu_quota is not None or others is None
            or others < COMPETING_LOAD * len(machine.affinity)):
        return None
    return _finding(
        "competing_load",
        f"Other processes used {others:.2f} of this job's {len(machine.affinity)} CPUs",
        f"CPUs {host.format_cpus(machine.affinity)} were busy {others + f.cores_busy:.2f} CPUs' "
        f"worth on average; this process used {f.cores_busy:.2f}.",
        "The job gets less CPU than it could, and every measurement on this machine, this "
        "one and a search's, is noisier.",
        "Diagnose and tune on a quiet machine, or keep the other work off these CPUs "
        "(taskset, cpusets); then re-run this diagnosis.", [])


def _all_clear(f: Facts) -> Finding:
    """When no rule found anything: say so, with the numbers that show it."""
    ratio_text = (f"the real pipeline delivers {f.ratio:.2f}x the cached batch's throughput"
                  if f.ratio is not None else "the pipeline was measured alone (data mode)")
    return _finding(
        "ok", "Nothing holds this job back",
        f"{f.cores_busy:.2f} of {_num(f.cap)} usable CPUs busy ({f.saturation:.0%}); "
        f"{ratio_text}; waiting for data {f.wait:.0%}; pools sized for {f.usable} usable "
        f"CPU{_plural(f.usable)} ({f.pools}).",
        "TensorFlow's defaults keep the CPUs busy on compute.",
        f"A search may still find a few percent in the thread counts: `{f.search}`.",
        THREAD_KNOBS)


StepRule = Callable[[Facts, dict[str, Any]], "Finding | None"]


def _each(steps: Callable[[Facts], list[dict[str, Any]]],
          rule: StepRule) -> Callable[[Facts], list[Finding]]:
    """``rule`` applied to each of the pipeline's ``steps``, when the job is input-bound."""
    def apply(f: Facts) -> list[Finding]:
        found = [rule(f, step) for step in steps(f)] if f.input_bound else []
        return [x for x in found if x is not None]
    return apply


# The rules in report order; each returns a finding or None (the per-step ones, a list).
RULES: tuple[Callable[[Facts], Finding | list[Finding] | None], ...] = (
    _restricted_cpus, _oversubscribed, _throttled, _input_bound,
    _each(lambda f: f.sequential, _sequential_map),
    _each(lambda f: f.python, _python_in_pipeline),
    _low_saturation, _system_time, _competing_load,
)


def _findings(f: Facts) -> list[Finding]:
    """Every finding the rules make, or the one that says nothing was found."""
    out: list[Finding] = []
    for rule in RULES:
        found = rule(f)
        out.extend(found if isinstance(found, list) else [found] if found else [])
    return out or [_all_clear(f)]


# -- text ----------------------------------------------------------------------------------------

def format_text(report: dict[str, Any]) -> str:
    r = report
    lines: list[str] = []
    wl = r["workload"]
    lines.append(f"diagnose {r['config']}: {wl['mode']}, batch {wl.get('batch_size')}, "
                 f"TensorFlow {r.get('tf_version')}")
    m = r["measured_seconds"]
    tp = r["throughput"]
    if m.get("cached_batch"):
        lines.append(f"measured with TensorFlow's defaults: {m['pipeline']:.1f} s on the real "
                     f"pipeline and {m['cached_batch']:.1f} s on one cached batch, in "
                     f"{len(tp['round_ratios'] or tp['cached_windows'] or [])} alternating rounds")
    else:
        lines.append(f"measured with TensorFlow's defaults: {m['pipeline']:.1f} s on the pipeline")
    lines.append("")
    t = r["threads"]
    quota = _cpus(r["cpu_quota"]) if r["cpu_quota"] is not None else "none"
    lines.append("CPUs")
    lines.append(f"  visible (os.cpu_count): {r['visible_cpus']}   usable: {r['usable_cpus']}   "
                 f"affinity: {host.format_cpus(r['affinity'])}   cgroup quota: {quota}")
    over = t.get("oversubscription")
    lines.append(f"  TensorFlow threads: intra-op pool {t.get('intra_op_pool')}, inter-op pool "
                 f"{t.get('inter_op_pool')}, tf.data {t.get('tf_data')}, main {t.get('main')}, "
                 f"other {t.get('other')} (total {t.get('total')})"
                 + (f"; intra-op {over:.3g}x the usable CPUs" if over and over > 1 else ""))
    wait = t.get("run_queue_wait_per_cpu_second")
    lines.append(f"  busy threads: {t.get('busy_threads')}"
                 + (f"; run-queue wait {wait:.2f} s per CPU-second run" if wait is not None
                    else ""))
    lines.append("")
    lines.append("Saturation")
    lines.append(f"  cores busy {r['cores_busy']:.2f} of {_num(r['cpu_capacity'])} usable "
                 f"({r['cpu_saturation']:.0%}); user {r['user_seconds']:.1f} s, system "
                 f"{r['system_seconds']:.1f} s ({r['system_share']:.0%} system)")
    if r["per_core_busy"]:
        cores = ", ".join(f"cpu{c} {b:.0%}" for c, b in zip(r["affinity"], r["per_core_busy"]))
        lines.append(f"  per core (all processes): {cores}")
    groups = t.get("cpus_by_group") or {}
    if groups:
        lines.append("  CPUs used by: " + ", ".join(
            f"{name.replace('_', ' ')} {value:.2f}"
            for name, value in sorted(groups.items(), key=lambda kv: -kv[1]) if value >= 0.005))
    th = r["throttling"]
    if th:
        lines.append(f"  throttling: {th['nr_throttled']} of {th['nr_periods']} periods, "
                     f"{th['throttled_seconds']:.2f} s (cgroup {th['cgroup']})")
    else:
        lines.append("  throttling: no quota" if r["cpu_quota"] is None else
                     "  throttling: counters not readable")
    lines.append("")
    lines.append("Input or compute")
    ratios = tp.get("round_ratios") or []
    spread = (f" (median of {len(ratios)} rounds, {min(ratios):.2f}-{max(ratios):.2f})"
              if ratios else "")
    if tp["cached_batch"]:
        lines.append(f"  real pipeline {_num(tp['pipeline'])} samples/s, one cached batch "
                     f"{_num(tp['cached_batch'])} samples/s: {tp['ratio']:.2f}x{spread}; "
                     f"waiting for data {r['input_wait']:.0%} of the time")
    else:
        lines.append(f"  pipeline alone {_num(tp['pipeline'])} samples/s (data mode)")
    if wl["mode"] == "data":
        lines.append("  -> input-bound by definition: the pipeline is the whole workload")
    else:
        lines.append(f"  -> {'input-bound' if r['input_bound'] else 'not input-bound'} "
                     f"(input-bound below {INPUT_BOUND_RATIO}x or at {INPUT_WAIT_SHARE:.0%} "
                     f"waiting)")
    p = r["pipeline"]
    if p.get("inspected"):
        chain = " -> ".join(_step_label(s) for s in p.get("transformations") or [])
        lines.append(f"  pipeline: {chain}")
    else:
        lines.append(f"  pipeline: not inspected ({p.get('error', 'unknown reason')})")
    lines.append("")
    lines.extend(_compute_lines(r))
    lines.append("")
    lines.append("Findings")
    for index, finding in enumerate(r["findings"], 1):
        lines.append(f"  {index}. {finding['title']}")
        lines.append(f"     measured: {finding['evidence']}")
        lines.append(f"     means:    {finding['meaning']}")
        lines.append(f"     try:      {finding['advice']}")
    return "\n".join(lines) + "\n"


def _step_label(step: dict[str, Any]) -> str:
    op = step["op"].replace("Dataset", "").replace("V2", "")
    label = f"{op}({', '.join(step['functions'])})" if step.get("functions") else op
    notes = []
    if step.get("sequential"):
        notes.append("sequential")
    notes.extend(step.get("python") or [])
    return label + (f" [{', '.join(notes)}]" if notes else "")
