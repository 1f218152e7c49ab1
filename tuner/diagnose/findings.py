"""The findings: one rule each (restricted CPUs, oversubscription, throttling, an input-bound
pipeline, a sequential map, Python in the pipeline, low saturation, system time, competing
load), in report order, with the thresholds they use."""

from __future__ import annotations

from typing import Any, Callable

import tuner.knobs as knobs
from tuner.base import host
from tuner.diagnose.facts import (
    COMPETING_LOAD,
    HIGH_SYSTEM_SHARE,
    LOW_SATURATION,
    THROTTLED_PERIODS,
    Facts,
    Finding,
    _cpus,
    num,
    step_name,
)


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
                 f"allows {num(machine.cpu_quota)} ({ratio:.3g}x oversubscribed)")
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
    evidence = (f"{num(f.pipeline_tp)} samples/s with the real pipeline vs "
                f"{num(f.cached_tp or 0)} on one cached batch ({f.ratio:.2f}x); waiting for "
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
    name = step_name(step)
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
        "python_in_pipeline", f"Python in the pipeline: {step_name(step)} calls {calls}",
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
        f"CPUs idle: {f.cores_busy:.2f} of {num(f.cap)} usable CPUs busy "
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
        f"{f.cores_busy:.2f} of {num(f.cap)} usable CPUs busy ({f.saturation:.0%}); "
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
