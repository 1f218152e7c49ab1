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
from pathlib import Path
from typing import Any, Callable

from . import host, knobs
from .config import Config
from .errors import TrialFailed, TunerError
from .lock import host_lock
from .trial import run_child

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


def plan(seconds: float) -> dict[str, Any]:
    """How ``seconds`` of measuring are spent: up to 10% warming up (less once the step rate
    settles), then 5 to 30 rounds of a chunk on the real pipeline (50% of the time in all), one
    on the cached batch (15%) and, before the next pipeline chunk, an uncounted drain (25%):
    at 60 s, 30 rounds of 1 s, 0.3 s and 0.5 s. Short chunks follow the load of a shared machine
    closely; many rounds let the median ratio ignore the few a burst of other work lands on."""
    rounds = max(5, min(30, round(seconds)))
    return {
        "seconds": seconds,
        "warmup_seconds": min(5.0, max(0.5, 0.1 * seconds)),
        "cached_warmup_seconds": min(1.0, 0.03 * seconds),
        "rounds": rounds,
        "pipeline_seconds": 0.50 * seconds / rounds,
        "cached_seconds": 0.15 * seconds / rounds,
        "drain_seconds": 0.25 * seconds / rounds,
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
    wl = config.workload
    task = {
        "kind": "diagnose",
        "workload": {"model": wl.model, "data": wl.data, "mode": wl.mode, "base_dir": wl.base_dir},
        "usable_cpus": machine.usable_cpus,
        "affinity": list(machine.affinity),
        "capacity": capacity(machine),
        "cgroup_root": str(root),
        "diagnose": plan(seconds),
    }
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


def _maps(pipeline: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(sequential transformations, transformations that call Python) in the pipeline."""
    steps = pipeline.get("transformations") or []
    sequential = [s for s in steps if s.get("sequential")]
    python = [s for s in steps if s.get("python") or s.get("from_generator")]
    return sequential, python


def _step_name(step: dict[str, Any]) -> str:
    kind = {"MapDataset": "map", "ParallelMapDatasetV2": "map", "ParallelMapDataset": "map",
            "InterleaveDataset": "interleave", "FlatMapDataset": "flat_map",
            "FilterDataset": "filter", "MapAndBatchDataset": "map"}.get(step["op"], step["op"])
    if step.get("from_generator"):
        return "Dataset.from_generator"
    functions = step.get("functions") or []
    return f"{kind}({', '.join(functions)})" if functions else kind


def analyse(machine: host.Machine, result: dict[str, Any], config: Config | None = None,
            *, config_path: str | None = None) -> dict[str, Any]:
    """The report, from the machine and the diagnosis child's result."""
    path = config.path if config is not None else (config_path or "CONFIG.yaml")
    search = f"python -m tuner search --config {shlex.quote(str(path))}"
    measured = result["measured"]
    wall = float(measured["seconds"])
    cap = capacity(machine)
    usable = machine.usable_cpus
    threads = dict(result.get("threads") or {})
    intra_pool = int(threads.get("intra_op_pool") or 0)
    inter_pool = int(threads.get("inter_op_pool") or 0)
    # Against the CPU time the process may use: 16 threads under a 1.5-CPU quota are 10.7x.
    oversubscription = round(intra_pool / cap, 2) if cap > 0 else None
    threads["oversubscription"] = oversubscription
    threads["tf_settings"] = result.get("tf_threading")

    cores_busy = float(measured["cpu_seconds"]) / wall
    saturation = min(1.0, cores_busy / cap) if cap > 0 else 0.0
    user, system = float(measured["user_seconds"]), float(measured["system_seconds"])
    system_share = system / (user + system) if user + system > 0 else 0.0
    per_core = list(measured.get("per_core_busy") or [])
    others = max(0.0, sum(per_core) - cores_busy) if per_core else None
    throttling = _throttling(result, wall)

    pipeline_tp = float(measured["throughput"])
    cached = result.get("cached")
    cached_tp = float(cached["throughput"]) if cached else None
    # The median of the rounds' ratios: each round's pipeline against the cached batch measured
    # right after it, so a change in other processes' load between rounds cancels.
    round_ratios = (cached or {}).get("round_ratios") or []
    ratio = (statistics.median(round_ratios) if round_ratios
             else pipeline_tp / cached_tp if cached_tp else None)
    wait = float(measured["input_wait"])
    mode = (config.workload.mode if config is not None else result.get("mode")) or "predict"
    if mode == "data":
        input_bound = True  # the pipeline is the whole workload
    else:
        below = ratio is not None and ratio < INPUT_BOUND_RATIO
        if below and round_ratios:
            # The gap must hold in most rounds, not just the median: bursts of other work on a
            # shared machine slowed half the rounds of a compute-bound model to 0.5-0.7x.
            share = sum(r < INPUT_BOUND_RATIO for r in round_ratios) / len(round_ratios)
            below = share >= INPUT_BOUND_ROUNDS
        input_bound = bool(below or wait >= INPUT_WAIT_SHARE)
    pipeline = result.get("pipeline") or {"inspected": False}
    sequential, python = _maps(pipeline)

    facts = {
        "path": path, "search": search, "machine": machine, "cap": cap, "usable": usable,
        "threads": threads, "intra_pool": intra_pool, "inter_pool": inter_pool,
        "cores_busy": cores_busy, "saturation": saturation, "system_share": system_share,
        "others": others, "throttling": throttling, "pipeline_tp": pipeline_tp,
        "cached_tp": cached_tp, "ratio": ratio, "wait": wait, "input_bound": input_bound,
        "mode": mode, "sequential": sequential, "python": python, "pipeline": pipeline,
    }
    findings = _findings(facts)

    return {
        "format_version": FORMAT_VERSION,
        "config": str(path),
        "workload": {"model": config.workload.model if config else None,
                     "data": config.workload.data if config else None, "mode": mode,
                     "batch_size": result.get("batch_size")},
        "tf_version": result.get("tf_version"),
        "onednn_enabled": result.get("onednn_enabled"),
        "visible_cpus": machine.visible_cpus,
        "usable_cpus": usable,
        "affinity": list(machine.affinity),
        "cpu_quota": machine.cpu_quota,
        "cpu_capacity": round(cap, 3),
        "threads": threads,
        "cpu_saturation": round(saturation, 4),
        "cores_busy": round(cores_busy, 3),
        "per_core_busy": per_core,
        "other_processes_cpus": round(others, 3) if others is not None else None,
        "user_seconds": round(user, 3),
        "system_seconds": round(system, 3),
        "system_share": round(system_share, 4),
        "throttling": throttling,
        "throughput": {"unit": "samples/s", "pipeline": round(pipeline_tp, 2),
                       "cached_batch": round(cached_tp, 2) if cached_tp else None,
                       "ratio": round(ratio, 4) if ratio is not None else None,
                       "pipeline_windows": measured.get("windows"),
                       "cached_windows": cached.get("windows") if cached else None,
                       "round_ratios": (cached or {}).get("round_ratios")},
        "input_wait": round(wait, 4),
        "input_bound": input_bound,
        "pipeline": pipeline,
        "step_latency_ms": measured.get("step_latency_ms"),
        "measured_seconds": {"pipeline": round(wall, 2),
                             "cached_batch": round(cached["seconds"], 2) if cached else None},
        "findings": findings,
        "thresholds": {"input_bound_ratio": INPUT_BOUND_RATIO,
                       "input_bound_rounds": INPUT_BOUND_ROUNDS,
                       "input_wait_share": INPUT_WAIT_SHARE,
                       "low_saturation": LOW_SATURATION, "high_system_share": HIGH_SYSTEM_SHARE,
                       "throttled_periods": THROTTLED_PERIODS, "competing_load": COMPETING_LOAD},
    }


def _finding(kind: str, title: str, evidence: str, meaning: str, advice: str,
             knobs: list[str] | None = None) -> dict[str, Any]:
    return {"kind": kind, "title": title, "evidence": evidence, "meaning": meaning,
            "advice": advice, "knobs": knobs or []}


def _findings(f: dict[str, Any]) -> list[dict[str, Any]]:
    machine: host.Machine = f["machine"]
    usable, cap, search = f["usable"], f["cap"], f["search"]
    threads = f["threads"]
    out: list[dict[str, Any]] = []
    intra_s = "" if f["intra_pool"] == 1 else "s"
    pools = (f"intra-op pool {f['intra_pool']} thread{intra_s}, inter-op pool {f['inter_pool']}, "
             f"tf.data {threads.get('tf_data', 0)}")

    # -- fewer CPUs than the machine shows
    if usable < machine.visible_cpus:
        why = []
        if len(machine.affinity) < machine.visible_cpus:
            why.append(f"its CPU affinity allows {len(machine.affinity)} "
                       f"(CPU {host.format_cpus(machine.affinity)})")
        if machine.cpu_quota is not None and machine.cpu_quota < len(machine.affinity):
            why.append(f"its cgroup CPU quota allows {_cpus(machine.cpu_quota)}' worth of time")
        sized = (f"TensorFlow sized its pools from the affinity mask ({pools})"
                 + (", not from the quota, which it does not read"
                    if machine.cpu_quota is not None and machine.cpu_quota < len(machine.affinity)
                    else ""))
        out.append(_finding(
            "restricted_cpus",
            f"This process may use {usable} of the {machine.visible_cpus} CPUs the machine shows",
            f"os.cpu_count() = {machine.visible_cpus}; " + "; ".join(why)
            + f"; usable CPUs: {usable}. {sized}.",
            f"Anything sized from os.cpu_count() (thread pools in your code or libraries, "
            f"num_parallel_calls={machine.visible_cpus}, multiprocessing workers) starts "
            f"{machine.visible_cpus / usable:.3g}x too many threads for what this process gets.",
            f"If the limit is intended, size threads from the usable CPUs "
            f"(len(os.sched_getaffinity(0)), and the quota) and tune under the same limit: "
            f"`{search}` run the same way bounds its thread counts by the {usable} usable "
            f"CPU{'s' if usable != 1 else ''}. If it is not, widen it (taskset -c, docker --cpus "
            f"or --cpuset-cpus, the pod's CPU limit).",
            ["intra_op_parallelism_threads", "inter_op_parallelism_threads"]))

    # -- more threads than CPUs
    if f["intra_pool"] > usable:
        ratio = f["intra_pool"] / cap
        quota_bound = machine.cpu_quota is not None and f["intra_pool"] == len(machine.affinity)
        if quota_bound:
            title = (f"TensorFlow sized its pools for {f['intra_pool']} CPUs but the cgroup quota "
                     f"allows {_num(machine.cpu_quota)} ({ratio:.3g}x oversubscribed)")
        else:
            title = (f"TensorFlow's intra-op pool has {f['intra_pool']} threads for {usable} "
                     f"usable CPU{'s' if usable != 1 else ''} ({ratio:.3g}x oversubscribed)")
        evidence = f"{pools}; {threads.get('busy_threads', '?')} threads busy during the run"
        wait_ratio = threads.get("run_queue_wait_per_cpu_second")
        if wait_ratio is not None:
            evidence += f"; threads waited {wait_ratio:.2f} s for a CPU per second they ran"
        if f["throttling"]:
            t = f["throttling"]
            evidence += (f"; throttled in {t['nr_throttled']} of {t['nr_periods']} quota periods "
                         f"({t['throttled_seconds']:.2f} s)")
        out.append(_finding(
            "oversubscribed", title, evidence + ".",
            "Each op is split into as many shards as the pool has threads; with more threads than "
            "CPUs they queue for the CPUs (and, under a quota, use it up early in each period and "
            "are stopped until the next), so steps get slower and less predictable.",
            f"Size the pools to the {usable} usable CPU{'s' if usable != 1 else ''}: "
            f"{knobs.INTRA_OP.by_hand(usable)}; inter-op 1-2; cap tf.data with "
            f"options.threading.private_threadpool_size. Or measure: `{search}`.",
            ["intra_op_parallelism_threads", "inter_op_parallelism_threads",
             "tf_data.private_threadpool_size"]))

    # -- throttling
    t = f["throttling"]
    if t and t["nr_periods"] > 0 and t["throttled_periods_share"] >= THROTTLED_PERIODS:
        out.append(_finding(
            "throttled",
            f"Throttled by the cgroup CPU quota in {t['throttled_periods_share']:.0%} of periods",
            f"cgroup {t['cgroup']}: nr_throttled {t['nr_throttled']} of {t['nr_periods']} periods, "
            f"{t['throttled_seconds']:.2f} s throttled during {t['measured_seconds']:.1f} s "
            f"measured; quota {_cpus(machine.cpu_quota or 0)}.",
            "The job used up its quota before each period ended and was stopped until the next: "
            "bursts of more threads than the quota allows make steps stall.",
            f"Use at most as many threads as the quota (intra-op {usable}, inter-op 1-2), or raise "
            f"the quota. `{search}` measures the thread counts under this quota.",
            ["intra_op_parallelism_threads", "inter_op_parallelism_threads"]))

    # -- input or compute
    if f["input_bound"] and f["mode"] != "data":
        ratio = f["ratio"]
        evidence = (f"{_num(f['pipeline_tp'])} samples/s with the real pipeline vs "
                    f"{_num(f['cached_tp'])} on one cached batch ({ratio:.2f}x); waiting for "
                    f"data {f['wait']:.0%} of the step loop's time")
        by_group = threads.get("cpus_by_group") or {}
        if by_group:
            op_pools = by_group.get("intra_op_pool", 0) + by_group.get("inter_op_pool", 0)
            evidence += (f"; tf.data threads used {by_group.get('tf_data', 0):.2f} CPUs, the op "
                         f"pools {op_pools:.2f}")
        steps = f["pipeline"].get("transformations") or []
        inspected = bool(f["pipeline"].get("inspected"))
        has_prefetch = any(s["op"].startswith("Prefetch") for s in steps)
        parallel = inspected and has_prefetch and not f["sequential"] and not f["python"]
        if parallel:
            advice = ("The pipeline is already parallel and prefetched, so its per-element work "
                      "is the cost: .cache() what does not change between epochs, batch before "
                      "a vectorisable map, or preprocess offline. ")
        else:
            advice = ("Make the pipeline parallel and overlapped: .map(..., "
                      "num_parallel_calls=tf.data.AUTOTUNE), .prefetch(tf.data.AUTOTUNE) as the "
                      "last step, .cache() after expensive steps whose output does not change. ")
        if inspected and not has_prefetch:
            advice = "The pipeline has no prefetch: add .prefetch(tf.data.AUTOTUNE) last. " + advice
        advice += (f"Then tune tf.data's threads against the model's: `{search}` "
                   f"(tf_data.private_threadpool_size, tf_data.max_intra_op_parallelism, "
                   f"intra-op).")
        out.append(_finding(
            "input_bound",
            f"Input-bound: the pipeline delivers {ratio:.2f}x what the model can process",
            evidence + ".",
            "The model waits for data (or competes with the pipeline for the CPUs): more op "
            "threads will not help until the input pipeline is faster.",
            advice, ["tf_data.private_threadpool_size", "tf_data.max_intra_op_parallelism"]))
    if f["input_bound"]:
        for step in f["sequential"]:
            name = _step_name(step)
            stateful_ops = ", ".join(step.get("python") or ["random or other stateful ops"])
            why = (f"its function is stateful ({stateful_ops}), so tf.data will not parallelise "
                   f"it by itself" if step.get("stateful") else "map_parallelization is off")
            out.append(_finding(
                "sequential_map", f"Sequential {name}: one element at a time",
                f"{step['op']} over {', '.join(step.get('functions') or ['?'])} without "
                f"num_parallel_calls; {why}.",
                "One thread runs this step for every element; it caps the pipeline at one CPU.",
                f"Pass num_parallel_calls=tf.data.AUTOTUNE (and deterministic=False if the order "
                f"does not matter) to {name.split('(')[0]}.",
                ["num_parallel_calls"]))
        for step in f["python"]:
            name = _step_name(step)
            if step.get("from_generator"):
                out.append(_finding(
                    "python_in_pipeline",
                    "Python in the pipeline: Dataset.from_generator runs a Python generator",
                    f"{step['op']} pulls every element from a Python generator "
                    f"({', '.join(step.get('python') or ['py_func'])}).",
                    "One Python thread produces every element, one at a time, under the GIL; "
                    "tf.data cannot parallelise a generator.",
                    "Read the data with tf.data sources instead (from_tensor_slices over file "
                    "names, then map(tf.io.read_file + decode, num_parallel_calls=AUTOTUNE), "
                    "TFRecordDataset), or interleave several generators; preprocess once offline "
                    "where you can.", ["num_parallel_calls"]))
                continue
            calls = ", ".join(step.get("python") or ["Python"])
            out.append(_finding(
                "python_in_pipeline", f"Python in the pipeline: {name} calls {calls}",
                f"{step['op']} runs Python ({calls}) for every element.",
                "Python code holds the GIL, so elements are processed largely one at a time "
                "whatever num_parallel_calls says, and every call crosses from C++ into Python.",
                "Rewrite it with TensorFlow ops (tf.image, tf.io, tf.strings, "
                "tf.experimental.numpy) so it runs in parallel in C++; or preprocess once "
                "offline (TFRecord, .cache() "
                "to a file) so the job does not run it every epoch.", ["num_parallel_calls"]))

    # -- idle CPUs, not explained by the input or by other processes taking them
    others = f["others"]
    idle_share = f["saturation"]
    if machine.cpu_quota is None and others is not None:
        idle_share = min(1.0, (f["cores_busy"] + others) / cap)
    if not f["input_bound"] and idle_share < LOW_SATURATION:
        out.append(_finding(
            "low_saturation",
            f"CPUs idle: {f['cores_busy']:.2f} of {_num(cap)} usable CPUs busy "
            f"({f['saturation']:.0%})",
            f"This process used {f['cores_busy']:.2f} CPUs on average over "
            f"{float(f['threads'].get('busy_threads') or 0):.0f} busy threads; {pools}.",
            "The model's ops do not spread over the cores: ops too small to split, a sequential "
            "graph, or too few threads.",
            f"Inter-op threads let independent ops run together, intra-op threads split large "
            f"ops, a larger batch gives every op more work. `{search}` measures the thread "
            f"counts.", ["intra_op_parallelism_threads", "inter_op_parallelism_threads"]))

    # -- kernel time
    if f["system_share"] >= HIGH_SYSTEM_SHARE and f["cores_busy"] >= 0.1:
        out.append(_finding(
            "system_time", f"High system time: {f['system_share']:.0%} of CPU time in the kernel",
            f"user {f['cores_busy'] * (1 - f['system_share']):.2f} CPUs, system "
            f"{f['cores_busy'] * f['system_share']:.2f} CPUs; {pools}.",
            "Threads spend their time in the kernel, usually waking and sleeping each other "
            "(more threads than work) or allocating memory.",
            f"Fewer threads: `{search}` measures intra-op, inter-op and tf.data thread counts.",
            ["intra_op_parallelism_threads", "inter_op_parallelism_threads",
             "tf_data.private_threadpool_size"]))

    # -- other processes on this job's CPUs
    if (machine.cpu_quota is None and others is not None
            and others >= COMPETING_LOAD * len(machine.affinity)):
        out.append(_finding(
            "competing_load",
            f"Other processes used {others:.2f} of this job's {len(machine.affinity)} CPUs",
            f"CPUs {host.format_cpus(machine.affinity)} were busy "
            f"{others + f['cores_busy']:.2f} CPUs' "
            f"worth on average; this process used {f['cores_busy']:.2f}.",
            "The job gets less CPU than it could, and every measurement on this machine, this "
            "one and a search's, is noisier.",
            "Diagnose and tune on a quiet machine, or keep the other work off these CPUs "
            "(taskset, cpusets); then re-run this diagnosis.", []))

    if not out:
        ratio_text = (f"the real pipeline delivers {f['ratio']:.2f}x the cached batch's throughput"
                      if f["ratio"] is not None else "the pipeline was measured alone (data mode)")
        out.append(_finding(
            "ok", "Nothing holds this job back",
            f"{f['cores_busy']:.2f} of {_num(cap)} usable CPUs busy ({f['saturation']:.0%}); "
            f"{ratio_text}; waiting for data {f['wait']:.0%}; pools sized for {usable} usable "
            f"CPU{'s' if usable != 1 else ''} ({pools}).",
            "TensorFlow's defaults keep the CPUs busy on compute.",
            f"A search may still find a few percent in the thread counts: `{search}`.",
            ["intra_op_parallelism_threads", "inter_op_parallelism_threads"]))
    return out


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
