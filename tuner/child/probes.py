"""What only ``diagnose`` measures in the child: which pool each thread belongs to, the CPU each
group of threads uses over the pipeline's rounds, and what the input pipeline is made of.

The run: TensorFlow's defaults on the real pipeline and, in alternating rounds, the same step on
one cached batch (compute alone), so the parent can tell input-bound from compute-bound.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from tuner.base import host
from tuner.child import meter
from tuner.child.protocol import Progress, describe
from tuner.child.workload import Workload, onednn_enabled, xla_state


def _thread_table() -> dict[int, dict[str, Any]]:
    """This process's threads: tid -> name, CPU ticks and, where the kernel keeps schedstats,
    nanoseconds run and nanoseconds waited on a run queue (wanting a CPU and not getting one)."""
    table: dict[int, dict[str, Any]] = {}
    for entry in os.listdir("/proc/self/task"):
        base = f"/proc/self/task/{entry}/"
        try:
            with open(base + "comm") as handle:
                name = handle.read().strip()
            with open(base + "stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended while we looked
            continue
        row: dict[str, Any] = {"name": name, "ticks": int(fields[11]) + int(fields[12])}
        try:
            with open(base + "schedstat") as handle:
                run_ns, wait_ns = handle.read().split()[:2]
            row["run_ns"], row["wait_ns"] = int(run_ns), int(wait_ns)
        except (OSError, ValueError):
            pass
        table[int(entry)] = row
    return table


# Thread groups, told apart by when each thread appeared (TensorFlow names its threads, but Linux
# keeps a name only when it fits 15 characters: the inter-op pool's "tf_Compute" survives, the
# intra-op pool's and tf.data's threads keep the name "python").
INTER_OP_NAME = "tf_Compute"


class ThreadCensus:
    """Which pool each thread belongs to, from the phase that started it: threads that appear
    when the runtime starts are the op pools, threads that appear once the input pipeline is
    built are counted as tf.data's (anything else started that late is rare, and lands there)."""

    def __init__(self) -> None:
        self.main = os.getpid()  # the main thread's id is the process id
        self.group: dict[int, str] = {}
        self.unnamed = _thread_table()[self.main]["name"]  # what a thread without a name shows

    def mark(self, group: str) -> None:
        """Threads not seen before belong to ``group``; for the intra-op pool, only those
        without a name of their own (TensorFlow's runtime also starts named helpers)."""
        for tid, row in _thread_table().items():
            if tid in self.group:
                continue
            if tid == self.main:
                self.group[tid] = "main"
            elif row["name"] == INTER_OP_NAME:
                self.group[tid] = "inter_op_pool"
            elif group == "intra_op_pool" and row["name"] != self.unnamed:
                self.group[tid] = "other"
            else:
                self.group[tid] = group

    def on_phase(self, phase: str) -> None:
        """The workload's phase hook: the threads each phase starts belong to its group."""
        if phase == "import":
            self.mark("other")
        elif phase == "build_model":
            # Start the runtime now (the thread counts were set just before): the threads it
            # starts are the op pools, told apart from whatever the model and data start later.
            self.mark("other")
            import tensorflow as tf

            tf.constant(1.0) + 1.0
            self.mark("intra_op_pool")
        elif phase == "build_data":
            self.mark("other")

    def counts(self, table: dict[int, dict[str, Any]]) -> dict[str, int]:
        counts = {"main": 0, "intra_op_pool": 0, "inter_op_pool": 0, "tf_data": 0, "other": 0}
        for tid in table:
            counts[self.group.get(tid, "tf_data")] += 1
        counts["total"] = len(table)
        return counts


class Accounts:
    """CPU accounting summed over the pipeline's chunks only (the cached batch's chunks between
    them are left out): this process's user and system time, per-core busy (all processes), each
    thread's CPU and run-queue wait, and the cgroup's throttling counters."""

    def __init__(self, census: ThreadCensus, affinity: list[int], cgroup_root: str) -> None:
        self.census = census
        self.affinity = affinity
        self.cgroup_root = cgroup_root
        self.wall = self.user = self.system = 0.0
        self.core_total = [0.0] * len(affinity)
        self.core_idle = [0.0] * len(affinity)
        self.ticks: dict[int, int] = {}
        self.run_ns = self.wait_ns = 0
        self.schedstat = True
        self.throttle: dict[str, Any] | None = None
        self._start: tuple[Any, ...] | None = None

    def _snapshot(self) -> tuple[Any, ...]:
        import psutil

        return (time.perf_counter(), os.times(), psutil.cpu_times(percpu=True), _thread_table(),
                host.cpu_throttling(self.cgroup_root))

    def start(self) -> None:
        self._start = self._snapshot()

    def stop(self) -> None:
        assert self._start is not None
        t0, times0, cores0, threads0, throttle0 = self._start
        t1, times1, cores1, threads1, throttle1 = self._snapshot()
        self.wall += t1 - t0
        self.user += times1.user - times0.user
        self.system += times1.system - times0.system
        for i, delta in enumerate(meter.core_times(cores0, cores1, self.affinity)):
            if delta is not None:
                self.core_total[i] += delta[0]
                self.core_idle[i] += delta[1]
        zero = {"ticks": 0, "run_ns": 0, "wait_ns": 0}
        for tid, row in threads1.items():
            old = threads0.get(tid, zero)
            self.ticks[tid] = self.ticks.get(tid, 0) + row["ticks"] - old["ticks"]
            if "run_ns" in row and "run_ns" in old:
                self.run_ns += row["run_ns"] - old["run_ns"]
                self.wait_ns += row["wait_ns"] - old["wait_ns"]
            else:
                self.schedstat = False
        if throttle0 and throttle1:
            total = self.throttle or {"cgroup": throttle1["cgroup"],
                                      "quota_cpus": throttle1["quota_cpus"], "nr_periods": 0,
                                      "nr_throttled": 0, "throttled_seconds": 0.0}
            for key in ("nr_periods", "nr_throttled", "throttled_seconds"):
                total[key] += throttle1[key] - throttle0[key]
            self.throttle = total
        self._start = None

    def threads(self) -> dict[str, Any]:
        """CPUs used per thread group, how many threads were busy, and the run-queue wait."""
        tick = os.sysconf("SC_CLK_TCK")
        cpus: dict[str, float] = {}
        busy = 0
        for tid, ticks in self.ticks.items():
            share = ticks / tick / self.wall
            group = self.census.group.get(tid, "tf_data")
            cpus[group] = cpus.get(group, 0.0) + share
            if share >= 0.1:
                busy += 1
        return {"cpus_by_group": {k: round(v, 3) for k, v in sorted(cpus.items())},
                "busy_threads": busy,
                "run_queue_wait_per_cpu_second": (round(self.wait_ns / self.run_ns, 4)
                                                  if self.schedstat and self.run_ns > 0 else None)}

    def per_core_busy(self) -> list[float]:
        return [meter.busy_share(total, idle)
                for total, idle in zip(self.core_total, self.core_idle)]


PYTHON_OPS = {"EagerPyFunc": "tf.py_function", "PyFunc": "tf.numpy_function",
              "PyFuncStateless": "tf.numpy_function"}
# Sequential transformations with a parallel form.
SEQUENTIAL = {"MapDataset": "map", "InterleaveDataset": "interleave"}
PARALLEL = {"ParallelMapDataset": "map", "ParallelMapDatasetV2": "map",
            "MapAndBatchDataset": "map", "ParallelInterleaveDatasetV2": "interleave",
            "ParallelInterleaveDatasetV3": "interleave",
            "ParallelInterleaveDatasetV4": "interleave",
            "ParallelBatchDataset": "batch"}
CALL_OPS = {"PartitionedCall", "StatefulPartitionedCall"}
# Ops TensorFlow's own statefulness check skips when deciding to parallelise a map.
_IGNORED_STATEFUL = {"Assert"}
_FUNCTION_NAME = re.compile(r"^__inference_Dataset_(?P<kind>from_generator|flat_map|map|filter|"
                            r"interleave|parallel_interleave|scan)_(?P<name>.+)_\d+$")


def _function_label(name: str) -> str:
    """'__inference_Dataset_map_decode_and_crop_35' -> 'decode_and_crop'."""
    match = _FUNCTION_NAME.match(name)
    if match:
        return match.group("name")
    return re.sub(r"_\d+$", "", name.removeprefix("__inference_"))


def _attr_functions(node: Any) -> list[str]:
    names = []
    for value in node.attr.values():
        if value.HasField("func"):
            names.append(value.func.name)
        names.extend(f.name for f in value.list.func)
    return names


def inspect_pipeline(tf: Any, dataset: Any) -> dict[str, Any]:
    """What the pipeline is made of, from its serialized graph: each transformation, and the maps
    that run one element at a time or call back into Python.

    TensorFlow parallelises a sequential ``map`` of a stateless function by itself
    (``map_parallelization``, on unless switched off), so a ``MapDataset`` counts as sequential
    only when its function is stateful (``py_function`` and random ops are) or that optimisation
    is off. The graph is the one before tf.data's optimisations, so this is a reading, not proof;
    the measurement decides whether the pipeline holds the job back."""
    from tensorflow.python.framework import op_def_registry

    serialized = tf.raw_ops.DatasetToGraphV2(input_dataset=dataset._variant_tensor)
    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(serialized.numpy())
    library = {f.signature.name: f for f in graph.library.function}

    def closure(names: list[str]) -> tuple[set[str], bool, set[str]]:
        """Python ops, statefulness and the functions reached, over functions and everything
        they call."""
        python: set[str] = set()
        stateful = False
        seen: set[str] = set()
        todo = list(names)
        while todo:
            name = todo.pop()
            if name in seen or name not in library:
                continue
            seen.add(name)
            for node in library[name].node_def:
                todo.extend(_attr_functions(node))
                if node.op in PYTHON_OPS:
                    python.add(PYTHON_OPS[node.op])
                if node.op in CALL_OPS or node.op in _IGNORED_STATEFUL or node.op in library:
                    continue
                op_def = op_def_registry.get(node.op)
                if op_def is not None and op_def.is_stateful:
                    stateful = True
        return python, stateful, seen

    options = dataset.options().experimental_optimization
    parallelize = options.map_parallelization
    if parallelize is None:
        parallelize = options.apply_default_optimizations is not False
    steps = []
    for node in graph.node:
        if "Dataset" not in node.op or node.op == "OptionsDataset":
            continue
        functions = _attr_functions(node)
        python, stateful, reached = closure(functions)
        generator = "__inference_Dataset_from_generator_"
        labels = [_function_label(f) for f in functions if not f.startswith(generator)]
        step = {"op": node.op, "functions": labels, "python": sorted(python)}
        if node.op == "GeneratorDataset" or any(f.startswith(generator) for f in reached):
            step["from_generator"] = True
            step["functions"] = []
        if node.op in SEQUENTIAL:
            step["sequential"] = not (node.op == "MapDataset" and parallelize and not stateful)
            step["stateful"] = stateful
        elif node.op in PARALLEL:
            step["sequential"] = False
        steps.append(step)
    return {"inspected": True, "transformations": steps[:40],
            "map_parallelization": bool(parallelize)}


def diagnose(task: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Run the workload with TensorFlow's defaults on its real pipeline and, in alternating
    rounds, on one cached batch (compute alone); report threads, CPU use and the pipeline's
    make-up."""
    cfg = task["diagnose"]
    affinity = list(task.get("affinity") or range(int(task["usable_cpus"])))
    census = ThreadCensus()
    timings: dict[str, float] = {}
    work = Workload(task, progress, timings, on_phase=census.on_phase)
    tf = work.tf
    try:
        pipeline = inspect_pipeline(tf, work.dataset)
    except (tf.errors.OpError, AttributeError, ImportError, TypeError, ValueError) as exc:
        # Private APIs and datasets TensorFlow cannot serialise: a reading we cannot take is
        # reported as missing, never guessed.
        pipeline = {"inspected": False, "error": describe(exc)}

    progress.emit(phase="warmup")
    t0 = time.perf_counter()
    work.run_step(work.first)
    warmup_steps, _ = meter.warm_up(work, cfg["warmup_seconds"], 3, t0)
    warmup_steps += 1
    timings["warmup"] = time.perf_counter() - t0

    progress.emit(phase="measure")
    accounts = Accounts(census, affinity, task.get("cgroup_root") or "/")
    t = time.perf_counter()
    runs, probes = _rounds(work, cfg, float(task["capacity"]), accounts, progress)
    timings["measure"] = time.perf_counter() - t
    table = _thread_table()

    result: dict[str, Any] = {
        "batch_size": work.batch_size,
        "tf_version": tf.__version__,
        "onednn_enabled": onednn_enabled(),
        "xla": xla_state(),
        "tf_threading": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        },
        "threads": {**census.counts(table), **accounts.threads()},
        "pipeline": pipeline,
        "measured": _measured(runs, accounts),
        "throttling": accounts.throttle,
        "warmup_steps": warmup_steps,
        "timings": timings,
    }
    if probes:
        result["cached"] = _cached(runs, probes)
    return result


def _rounds(work: Workload, cfg: dict[str, Any], usable: float, accounts: Accounts,
            progress: Progress) -> tuple[list[meter.Run], list[meter.Run]]:
    """The pipeline's chunks and, after each, the cached batch's (none in data mode).

    Rounds of the real pipeline, each followed by the same step on one cached batch, so both see
    the same load on a shared machine (measured one after the other, a change in other processes'
    load between them looked like a 0.7x gap). The iterator stays alive during the cached chunks,
    and a pipeline with background threads refills its buffers then: the next pipeline chunk would
    start with free batches (with 0.7 s chunks a parallel Python map read 0.88x instead of 0.28x),
    so pipeline steps run uncounted for a while first (the drain, up to ~1.7x the cached chunk:
    enough unless the pipeline is nearly as fast as the model). The refill also competes with the
    cached chunk, which favours "not input-bound": the side to err on."""
    cached = work.first
    compute = work.mode != "data"
    t = time.perf_counter()
    if compute:
        while time.perf_counter() - t < cfg["cached_warmup_seconds"]:
            work.run_step(cached)
    runs: list[meter.Run] = []
    probes: list[meter.Run] = []
    for index in range(cfg["rounds"]):
        if index and compute:
            drain = time.perf_counter()
            while time.perf_counter() - drain < cfg["drain_seconds"]:
                work.run_step(work.next_batch())
        accounts.start()
        runs.append(meter.run_windows(work, work.next_batch, 1, cfg["pipeline_seconds"], usable,
                                      progress))
        accounts.stop()
        if compute:
            probes.append(meter.run_windows(work, lambda: cached, 1, cfg["cached_seconds"],
                                            usable, progress))
    return runs, probes


def _measured(runs: list[meter.Run], accounts: Accounts) -> dict[str, Any]:
    """The pipeline's rounds together: throughput, input wait, CPU time and step latency."""
    wall = sum(r.wall for r in runs)
    latencies = [x for r in runs for x in r.latencies]
    return {
        "seconds": wall,
        "throughput": sum(r.windows[0]["samples"] for r in runs) / wall,
        "windows": [round(r.windows[0]["throughput"], 2) for r in runs],
        "input_wait": sum(r.wait for r in runs) / wall,
        "cpu_seconds": accounts.user + accounts.system,
        "user_seconds": accounts.user,
        "system_seconds": accounts.system,
        "per_core_busy": accounts.per_core_busy(),
        "step_latency_ms": meter.latency_ms(latencies, (50, 90)),
    }


def _cached(runs: list[meter.Run], probes: list[meter.Run]) -> dict[str, Any]:
    """The cached batch's chunks together, and each round's pipeline against the cached batch
    right after it."""
    seconds = sum(p.wall for p in probes)
    return {
        "seconds": seconds,
        "throughput": sum(p.windows[0]["samples"] for p in probes) / seconds,
        "windows": [round(p.windows[0]["throughput"], 2) for p in probes],
        "round_ratios": [round(r.windows[0]["throughput"] / p.windows[0]["throughput"], 4)
                         for r, p in zip(runs, probes)],
    }
