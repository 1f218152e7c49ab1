"""The trial child: ``python -m tuner.worker TASK.json RESULT.json``.

One fresh process per measurement. The parent has already built this process's environment (the
environment-variable knobs are in it); here we apply the ``tf.config.threading`` knobs before the
runtime initialises, build the user's model and data, warm up (tracing included), measure several
time-based windows, and write the result as JSON to RESULT.json, a path user code knows nothing
about, so nothing the workload prints can corrupt it. Progress (the phase, each window) goes to a
side file the parent polls, for timeout messages and pruning; it is advisory only.

Tasks: ``preflight`` (build once, two steps), ``measure`` (one trial's windows) and ``diagnose``
(the defaults on the real pipeline, then on one cached batch, with thread and CPU accounting).

Declared knobs: every builder that accepts a knob (by name or ``**kwargs``) is called with the
trial's value (``autotune`` as ``tf.data.AUTOTUNE``); the preflight checks the signatures before
anything is built and reports each knob's baseline (the builder's own default).

Protocol history (``PROTOCOL``):
  1: first version (``diagnose`` added later; an old worker answers it "unknown task kind").
  2: tasks carry the declared ``knobs`` and settings ``knobs.<name>``; results report the tf.data
     options the dataset carried and the knob values the builders got; the preflight reports the
     optional tf.data options and autotune algorithms this TensorFlow has, the pipeline's
     transformations and each knob's builders and baseline. (A version-1 child would ignore the
     knobs and measure something else, hence the bump.)
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import re
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from . import host, knobs
from . import settings as settings_mod
from .files import write_json_atomic

PROTOCOL = 2


class WorkloadProblem(Exception):
    """The user's workload is unusable; the message is shown to the user as it is."""


class _Progress:
    def __init__(self, path: str | None) -> None:
        self._handle = open(path, "a", buffering=1) if path else None

    def emit(self, **event: Any) -> None:
        if self._handle:
            self._handle.write(json.dumps(event) + "\n")


def _load_callable(spec: str, base_dir: str, role: str) -> Callable[..., Any]:
    target, func_name = spec.rsplit(":", 1)
    try:
        if target.endswith(".py"):
            file = Path(target) if Path(target).is_absolute() else Path(base_dir) / target
            module_name = "tuner_workload_" + str(abs(hash(str(file.resolve()))))
            module = sys.modules.get(module_name)
            if module is None:
                sys.path.insert(0, str(file.parent))  # so the workload can import its neighbours
                module_spec = importlib.util.spec_from_file_location(module_name, file)
                if module_spec is None or module_spec.loader is None:
                    raise WorkloadProblem(f"workload.{role}: cannot load {str(file)!r} as Python")
                module = importlib.util.module_from_spec(module_spec)
                sys.modules[module_name] = module
                module_spec.loader.exec_module(module)
        else:
            sys.path.insert(0, base_dir)
            module = importlib.import_module(target)
    except WorkloadProblem:
        raise
    except BaseException as exc:  # SystemExit and KeyboardInterrupt from user code too
        raise WorkloadProblem(f"workload.{role}: importing {target!r} raised "
                              f"{_describe(exc)}") from exc
    func = getattr(module, func_name, None)
    if func is None:
        raise WorkloadProblem(f"workload.{role}: {target!r} has no function {func_name!r}")
    if not callable(func):
        raise WorkloadProblem(f"workload.{role}: {spec!r} is a {type(func).__name__}, "
                              f"not a function")
    return func


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _call_builder(func: Callable[..., Any], role: str, spec: str,
                  kwargs: dict[str, Any] | None = None) -> Any:
    try:
        return func(**(kwargs or {}))
    except BaseException as exc:
        raise WorkloadProblem(f"workload.{role}: {spec} raised {_describe(exc)}") from exc


_NO_DEFAULT = object()


def _parameters(func: Callable[..., Any], role: str, spec: str) -> tuple[dict[str, Any], bool]:
    """A builder's keyword parameters (name -> default, or _NO_DEFAULT) and whether it takes
    ``**kwargs``."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise WorkloadProblem(f"workload.{role}: cannot read the signature of {spec}: "
                              f"{_describe(exc)}") from exc
    named: dict[str, Any] = {}
    var_keyword = False
    for p in signature.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_keyword = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            named[p.name] = _NO_DEFAULT if p.default is p.empty else p.default
    return named, var_keyword


def _json_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


class _KnobPlan:
    """Which builder receives which declared knob: every builder that accepts it, by name or
    through ``**kwargs``. Checked before any builder runs, so a knob no builder takes, or a
    builder argument that is no declared knob and has no default, fails the preflight at once."""

    def __init__(self, builders: dict[str, tuple[Callable[..., Any], str]],
                 declared: list[str]) -> None:
        self.accepts: dict[str, list[str]] = {name: [] for name in declared}
        self.defaults: dict[str, dict[str, Any]] = {}
        for role, (func, spec) in builders.items():
            named, var_keyword = _parameters(func, role, spec)
            self.defaults[role] = named
            for name, default in named.items():
                if default is _NO_DEFAULT and name not in self.accepts:
                    hint = ("declare it under knobs: with its candidate values, or give it a "
                            "default" if name.isidentifier() else "give it a default")
                    raise WorkloadProblem(f"workload.{role}: {spec} has a required argument "
                                          f"{name!r} that is not a declared knob; {hint}")
            for name in declared:
                if name in named or var_keyword:
                    self.accepts[name].append(role)
        for name, roles in self.accepts.items():
            if not roles:
                specs = " nor ".join(spec for _, spec in builders.values())
                raise WorkloadProblem(f"knobs.{name}: declared, but {specs} accepts no argument "
                                      f"{name!r} (nor **kwargs); add a keyword argument "
                                      f"{name}=... to the builder that should receive it, or "
                                      f"remove the knob")

    def baseline(self, candidates: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
        """Each knob's baseline: the pipeline as written, i.e. the default of the first builder
        that names it (data before model); the first listed candidate when none gives one."""
        info: dict[str, dict[str, Any]] = {}
        for name, roles in self.accepts.items():
            default = next((self.defaults[r][name] for r in roles
                            if self.defaults[r].get(name, _NO_DEFAULT) is not _NO_DEFAULT),
                           _NO_DEFAULT)
            if default is _NO_DEFAULT or not _json_scalar(default):
                base, source = candidates[name][0], "first candidate"
            else:
                base, source = default, "builder default"
                # tf.data.AUTOTUNE written as a default is the listed "autotune"
                if base == -1 and not isinstance(base, bool) and knobs.AUTOTUNE in candidates[name]:
                    base = knobs.AUTOTUNE
            info[name] = {"builders": roles, "baseline": base, "source": source}
        return info

    def kwargs(self, role: str, values: dict[str, Any], tf: Any) -> dict[str, Any]:
        return {name: knobs.DeclaredKnob.to_tf(value, tf)
                for name, value in values.items() if role in self.accepts.get(name, ())}


def _first_leaf(x: Any, tf: Any) -> Any:
    leaves = tf.nest.flatten(x)
    return leaves[0] if leaves else None


def _inputs(element: Any) -> Any:
    """The model input of a batch: ``x`` or the first item of ``(x, ...)``."""
    return element[0] if isinstance(element, (tuple, list)) else element


def _batch_size(element: Any, tf: Any) -> int:
    leaf = _first_leaf(_inputs(element), tf)
    shape = getattr(leaf, "shape", None)
    if shape is None or len(shape) == 0:
        raise WorkloadProblem("workload.data: the first element's inputs are scalars; build_data "
                              "must return batches (call .batch(n) on the dataset)")
    size = shape[0]
    if size is None:
        size = int(tf.shape(leaf)[0])
    return int(size)


def _check_element(element: Any, mode: str, spec: str) -> None:
    if mode == "train" and not (isinstance(element, (tuple, list)) and len(element) in (2, 3)):
        kind = type(element).__name__
        raise WorkloadProblem(f"workload.data: mode train needs batches of (x, y) or "
                              f"(x, y, sample_weight); {spec} yields {kind} elements")


def _tf_data_options(tf: Any, settings: dict[str, Any]) -> Any:
    options, missing = settings_mod.dataset_options(tf, settings)
    if missing:
        raise WorkloadProblem(f"this TensorFlow ({tf.__version__}) has no tf.data option "
                              f"{', '.join(missing)}")
    return options


def _options_in_effect(dataset: Any) -> dict[str, Any]:
    """The tf.data knobs as the dataset really carries them (None: TensorFlow's default)."""
    return settings_mod.options_in_effect(dataset)


def _pipeline_ops(dataset: Any) -> list[str] | None:
    """The dataset's transformations, source first (``["Range", "Map", "Batch"]``), from the
    Python dataset objects (nothing is serialised); None when this TensorFlow's classes cannot
    be walked."""
    ops: list[str] = []

    def walk(node: Any, depth: int) -> None:
        if depth > 200:
            raise RecursionError
        for parent in node._inputs():
            walk(parent, depth + 1)
        name = type(node).__name__.lstrip("_").removesuffix("Dataset")
        if name != "Options":
            ops.append(name)

    try:
        walk(dataset, 0)
    except Exception:  # private attributes: unknown means every rewrite may apply
        return None
    return ops


def _onednn_enabled() -> bool | None:
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except Exception:  # a private module: vendor builds may lack it, and that is not an error
        return None


# Every workload a worker builds stays referenced until os._exit: dropping the last reference to a
# tf.data iterator cancels its pipeline and joins its threads, which took about 5 s in most trials
# of the benchmark examples (measured as "other" time after the last window). Nothing needs that
# clean-up, since the process ends right after the result is written.
_KEEP_ALIVE: list[Any] = []


class _Workload:
    """The user's model, data and the step function one measurement repeats."""

    def __init__(self, task: dict[str, Any], progress: _Progress, timings: dict[str, float],
                 on_phase: Callable[[str], None] | None = None) -> None:
        """``on_phase(name)`` runs as each phase begins (diagnose counts the threads each
        phase starts)."""
        on_phase = on_phase or (lambda phase: None)
        wl = task["workload"]
        settings = task["settings"]
        self.mode = wl["mode"]

        t = time.perf_counter()
        progress.emit(phase="import")
        on_phase("import")
        import tensorflow as tf

        self.tf = tf
        # Must happen before the first op initialises the runtime, as tuner.apply() does it.
        settings_mod.apply_threading(tf, settings)
        timings["import"] = time.perf_counter() - t

        t = time.perf_counter()
        progress.emit(phase="build_model")
        on_phase("build_model")
        builders = {"data": (_load_callable(wl["data"], wl["base_dir"], "data"), wl["data"])}
        if self.mode != "data":
            builders["model"] = (_load_callable(wl["model"], wl["base_dir"], "model"), wl["model"])
        declared: dict[str, list[Any]] = task.get("knobs") or {}
        values = knobs.declared(settings)
        self.plan = _KnobPlan(builders, sorted(set(declared) | set(values)))
        self.knob_info = self.plan.baseline(declared) if declared else {}
        # the preflight builds the baseline: the pipeline as written
        for name, info in self.knob_info.items():
            values.setdefault(name, info["baseline"])
        self.knobs = values
        self.model = None
        if self.mode != "data":
            func, spec = builders["model"]
            self.model = _call_builder(func, "model", spec, self.plan.kwargs("model", values, tf))
            self._check_model(wl["model"])
        timings["build_model"] = time.perf_counter() - t

        t = time.perf_counter()
        progress.emit(phase="build_data")
        on_phase("build_data")
        func, spec = builders["data"]
        dataset = _call_builder(func, "data", spec, self.plan.kwargs("data", values, tf))
        if not isinstance(dataset, tf.data.Dataset):
            raise WorkloadProblem(f"workload.data: {wl['data']} returned {type(dataset).__name__}, "
                                  f"expected a tf.data.Dataset")
        self.pipeline = _pipeline_ops(dataset)
        dataset = dataset.with_options(_tf_data_options(tf, settings))
        self.options_in_effect = _options_in_effect(dataset)
        self.dataset = dataset
        self.iterator = iter(dataset.repeat())
        try:
            first = next(self.iterator)
        except StopIteration:
            raise WorkloadProblem(f"workload.data: {wl['data']} returned an empty "
                                  f"dataset") from None
        except Exception as exc:
            raise WorkloadProblem(f"workload.data: reading the first batch raised "
                                  f"{_describe(exc)}") from exc
        _check_element(first, self.mode, wl["data"])
        self.batch_size = _batch_size(first, tf)
        self.element_spec = str(dataset.element_spec)[:500]
        self.first = first
        timings["build_data"] = time.perf_counter() - t
        self.step = self._make_step()
        _KEEP_ALIVE.append(self)

    def _check_model(self, spec: str) -> None:
        tf = self.tf
        model = self.model
        classes = [tf.keras.Model]
        try:
            import keras

            classes.append(keras.Model)
        except ImportError:
            pass
        if not isinstance(model, tuple(classes)):
            raise WorkloadProblem(f"workload.model: {spec} returned {type(model).__name__}, "
                                  f"expected a Keras model")
        if self.mode == "train" and getattr(model, "optimizer", None) is None:
            raise WorkloadProblem(f"workload.model: mode train needs a compiled model; {spec} "
                                  f"returned one without an optimizer (call model.compile(...))")

    def _make_step(self) -> Callable[[Any], Any]:
        tf = self.tf
        if self.mode == "data":
            return lambda batch: None
        model = self.model
        if self.mode == "predict":
            forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
            return lambda batch: forward(_inputs(batch))
        train = tf.function(model.train_step, reduce_retracing=True)
        return lambda batch: train(tuple(batch))

    def run_step(self, batch: Any) -> None:
        try:
            self.step(batch)
        except Exception as exc:
            raise WorkloadProblem(f"the {self.mode} step raised {_describe(exc)}") from exc

    def next_batch(self) -> Any:
        try:
            return next(self.iterator)
        except Exception as exc:
            raise WorkloadProblem(f"workload.data: reading a batch raised "
                                  f"{_describe(exc)}") from exc


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _core_times(before: Any, after: Any, cpus: list[int]) -> list[tuple[float, float] | None]:
    """For each CPU in ``cpus``, (all time, idle time with iowait) between two
    ``psutil.cpu_times(percpu=True)`` snapshots; None where a snapshot lacks that CPU."""
    deltas: list[tuple[float, float] | None] = []
    for cpu in cpus:
        if cpu >= len(before) or cpu >= len(after):
            deltas.append(None)
            continue
        a, b = before[cpu], after[cpu]
        idle = (b.idle - a.idle) + (getattr(b, "iowait", 0.0) - getattr(a, "iowait", 0.0))
        deltas.append((sum(b) - sum(a), idle))
    return deltas


def _busy_share(total: float, idle: float) -> float:
    return round(1.0 - idle / total, 4) if total > 0 else 0.0


def _core_busy(before: Any, after: Any, cpus: list[int]) -> list[float]:
    return [_busy_share(*delta) for delta in _core_times(before, after, cpus) if delta is not None]


WARMUP_CHUNK_SECONDS = 0.3
WARMUP_STABLE = 0.05


def _warm_up(work: _Workload, cfg: dict[str, Any], start: float) -> tuple[int, list[float]]:
    """Run steps until the step rate settles, at most ``warmup_seconds``; returns the steps taken
    and the rate of each ~0.3 s chunk.

    Settled: two consecutive chunks agree within 5%. On the benchmark workloads the rate right
    after tracing is already within noise of the steady state, except for one chunk that drains a
    prefetch buffer filled during tracing (up to 1.25x fast); a stricter test (three chunks within
    3%) almost never passed on a noisy VM and so always ran to the limit. The measurement windows
    that follow are the real check: their spread is reported. ``start`` is when warm-up began
    (tracing counts against the limit)."""
    steps = 0
    rates: list[float] = []
    while True:
        chunk_start = time.perf_counter()
        samples = 0
        while True:
            batch = work.next_batch()
            work.run_step(batch)
            samples += _batch_size(batch, work.tf)
            steps += 1
            now = time.perf_counter()
            if now - chunk_start >= WARMUP_CHUNK_SECONDS or now - start >= cfg["warmup_seconds"]:
                break
        rates.append(samples / (now - chunk_start))
        if steps >= cfg["min_warmup_steps"]:
            if now - start >= cfg["warmup_seconds"]:
                return steps, rates
            if len(rates) >= 2 and abs(rates[-1] - rates[-2]) <= WARMUP_STABLE * max(rates[-2:]):
                return steps, rates


class _Run:
    """Time-based windows of steps: what one measurement loop saw."""

    def __init__(self) -> None:
        self.windows: list[dict[str, Any]] = []
        self.latencies: list[float] = []
        self.wait = 0.0       # seconds spent getting batches
        self.wall = 0.0
        self.cpu = 0.0        # this process's CPU seconds, user + system

    def throughput(self) -> float:
        return sum(w["samples"] for w in self.windows) / self.wall if self.wall > 0 else 0.0


def _run_windows(work: _Workload, next_batch: Callable[[], Any], count: int, seconds: float,
                 usable: float, progress: _Progress) -> _Run:
    """Run ``count`` windows of at least ``seconds`` each, timing ``next_batch`` (input wait) and
    the step separately."""
    run = _Run()
    cpu0 = _cpu_seconds()
    start = time.perf_counter()
    tc = start
    for index in range(count):
        w_start = time.perf_counter()
        w_cpu = _cpu_seconds()
        samples = steps_in_window = 0
        w_wait = 0.0
        while True:
            ta = time.perf_counter()
            batch = next_batch()
            tb = time.perf_counter()
            work.run_step(batch)
            tc = time.perf_counter()
            w_wait += tb - ta
            run.latencies.append(tc - ta)
            samples += _batch_size(batch, work.tf)
            steps_in_window += 1
            if tc - w_start >= seconds:
                break
        elapsed = tc - w_start
        window = {
            "index": index,
            "seconds": elapsed,
            "steps": steps_in_window,
            "samples": samples,
            "throughput": samples / elapsed,
            "cpu_saturation": (_cpu_seconds() - w_cpu) / (elapsed * usable),
            "input_wait": w_wait / elapsed,
        }
        run.wait += w_wait
        run.windows.append(window)
        progress.emit(window=index, throughput=window["throughput"])
    run.wall = time.perf_counter() - start
    run.cpu = _cpu_seconds() - cpu0
    return run


def measure(task: dict[str, Any], progress: _Progress) -> dict[str, Any]:
    import psutil

    timings: dict[str, float] = {}
    work = _Workload(task, progress, timings)
    cfg = task["measure"]
    usable = int(task["usable_cpus"])
    affinity = list(task.get("affinity") or range(usable))

    progress.emit(phase="warmup")
    t0 = time.perf_counter()
    work.run_step(work.first)  # traces the step function
    warmup_steps, warmup_rates = _warm_up(work, cfg, t0)
    warmup_steps += 1
    timings["warmup"] = time.perf_counter() - t0

    barrier = task.get("barrier")
    if barrier:
        _wait_for_instances(barrier, progress)
    progress.emit(phase="measure")
    process = psutil.Process()
    cores_before = psutil.cpu_times(percpu=True)
    run = _run_windows(work, work.next_batch, cfg["windows"], cfg["window_seconds"], usable,
                       progress)
    cores_after = psutil.cpu_times(percpu=True)
    timings["measure"] = run.wall
    windows, latencies, wall = run.windows, run.latencies, run.wall

    return {
        "batch_size": work.batch_size,
        "windows": windows,
        "warmup_steps": warmup_steps,
        "warmup_rates": warmup_rates,
        "step_latency_ms": {
            "p50": _percentile(latencies, 0.50) * 1e3,
            "p90": _percentile(latencies, 0.90) * 1e3,
            "p95": _percentile(latencies, 0.95) * 1e3,
            "p99": _percentile(latencies, 0.99) * 1e3,
            "steps": len(latencies),
        },
        "cpu_saturation": run.cpu / (wall * usable),
        "per_core_busy": _core_busy(cores_before, cores_after, affinity),
        "input_wait": run.wait / wall,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "threads": process.num_threads(),
        "tf_threading": {
            "intra_op": work.tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": work.tf.config.threading.get_inter_op_parallelism_threads(),
        },
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "allocator": host.allocator_in_process(),
        "tf_data_options": work.options_in_effect,
        "knobs": work.knobs,
        "timings": timings,
    }


def _wait_for_instances(barrier: dict[str, Any], progress: _Progress) -> None:
    """Instances start measuring together: each marks itself ready after warm-up, then waits
    until all are (they run concurrently, so throughput is their sum over the same seconds)."""
    folder = Path(barrier["dir"])
    (folder / f"ready-{barrier['index']}").touch()
    progress.emit(phase="waiting for the other instances")
    deadline = time.monotonic() + float(barrier.get("timeout", 120))
    while len(list(folder.glob("ready-*"))) < int(barrier["count"]):
        if time.monotonic() > deadline:
            raise WorkloadProblem(f"instance {barrier['index']}: the other instances did not "
                                  f"finish warming up within {barrier.get('timeout', 120)} s")
        time.sleep(0.005)


# -- diagnose ------------------------------------------------------------------------------------

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


class _ThreadCensus:
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

    def counts(self, table: dict[int, dict[str, Any]]) -> dict[str, int]:
        counts = {"main": 0, "intra_op_pool": 0, "inter_op_pool": 0, "tf_data": 0, "other": 0}
        for tid in table:
            counts[self.group.get(tid, "tf_data")] += 1
        counts["total"] = len(table)
        return counts


class _Accounts:
    """CPU accounting summed over the pipeline's chunks only (the cached batch's chunks between
    them are left out): this process's user and system time, per-core busy (all processes), each
    thread's CPU and run-queue wait, and the cgroup's throttling counters."""

    def __init__(self, census: _ThreadCensus, affinity: list[int], cgroup_root: str) -> None:
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
        for i, delta in enumerate(_core_times(cores0, cores1, self.affinity)):
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
        return [_busy_share(total, idle) for total, idle in zip(self.core_total, self.core_idle)]


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


def _inspect_pipeline(tf: Any, dataset: Any) -> dict[str, Any]:
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


def diagnose(task: dict[str, Any], progress: _Progress) -> dict[str, Any]:
    """Run the workload with TensorFlow's defaults on its real pipeline and, in alternating
    rounds, on one cached batch (compute alone); report threads, CPU use and the pipeline's
    make-up."""
    cfg = task["diagnose"]
    usable = float(task["capacity"])
    affinity = list(task.get("affinity") or range(int(task["usable_cpus"])))
    cgroup_root = task.get("cgroup_root") or "/"
    census = _ThreadCensus()
    timings: dict[str, float] = {}

    def on_phase(phase: str) -> None:
        if phase == "import":
            census.mark("other")
        elif phase == "build_model":
            # Start the runtime now (the thread counts were set just before): the threads it
            # starts are the op pools, told apart from whatever the model and data start later.
            census.mark("other")
            import tensorflow as tf

            tf.constant(1.0) + 1.0
            census.mark("intra_op_pool")
        elif phase == "build_data":
            census.mark("other")

    work = _Workload(task, progress, timings, on_phase=on_phase)
    tf = work.tf
    try:
        pipeline = _inspect_pipeline(tf, work.dataset)
    except (tf.errors.OpError, AttributeError, ImportError, TypeError, ValueError) as exc:
        # Private APIs and datasets TensorFlow cannot serialise: a reading we cannot take is
        # reported as missing, never guessed.
        pipeline = {"inspected": False, "error": _describe(exc)}

    progress.emit(phase="warmup")
    t0 = time.perf_counter()
    work.run_step(work.first)
    warmup_steps, _ = _warm_up(work, {"warmup_seconds": cfg["warmup_seconds"],
                                      "min_warmup_steps": 3}, t0)
    warmup_steps += 1
    timings["warmup"] = time.perf_counter() - t0

    # Rounds of the real pipeline, each followed by the same step on one cached batch, so both
    # see the same load on a shared machine (measured one after the other, a change in other
    # processes' load between them looked like a 0.7x gap). The iterator stays alive during the
    # cached chunks, and a pipeline with background threads refills its buffers then: the next
    # pipeline chunk would start with free batches (with 0.7 s chunks a parallel Python map read
    # 0.88x instead of 0.28x), so pipeline steps run uncounted for a while first (the drain, up
    # to ~1.7x the cached chunk: enough unless the pipeline is nearly as fast as the model).
    # The refill also competes with the cached chunk, which favours "not input-bound": the side
    # to err on.
    progress.emit(phase="measure")
    accounts = _Accounts(census, affinity, cgroup_root)
    cached = work.first
    t = time.perf_counter()
    if work.mode != "data":
        while time.perf_counter() - t < cfg["cached_warmup_seconds"]:
            work.run_step(cached)
    runs: list[_Run] = []
    probes: list[_Run] = []
    for index in range(cfg["rounds"]):
        if index and work.mode != "data":
            drain = time.perf_counter()
            while time.perf_counter() - drain < cfg["drain_seconds"]:
                work.run_step(work.next_batch())
        accounts.start()
        runs.append(_run_windows(work, work.next_batch, 1, cfg["pipeline_seconds"], usable,
                                 progress))
        accounts.stop()
        if work.mode != "data":
            probes.append(_run_windows(work, lambda: cached, 1, cfg["cached_seconds"], usable,
                                       progress))
    timings["measure"] = time.perf_counter() - t
    table = _thread_table()

    wall = sum(r.wall for r in runs)
    latencies = [x for r in runs for x in r.latencies]
    result: dict[str, Any] = {
        "batch_size": work.batch_size,
        "tf_version": tf.__version__,
        "onednn_enabled": _onednn_enabled(),
        "tf_threading": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        },
        "threads": {**census.counts(table), **accounts.threads()},
        "pipeline": pipeline,
        "measured": {
            "seconds": wall,
            "throughput": sum(r.windows[0]["samples"] for r in runs) / wall,
            "windows": [round(r.windows[0]["throughput"], 2) for r in runs],
            "input_wait": sum(r.wait for r in runs) / wall,
            "cpu_seconds": accounts.user + accounts.system,
            "user_seconds": accounts.user,
            "system_seconds": accounts.system,
            "per_core_busy": accounts.per_core_busy(),
            "step_latency_ms": {"p50": _percentile(latencies, 0.5) * 1e3,
                                "p90": _percentile(latencies, 0.9) * 1e3},
        },
        "throttling": accounts.throttle,
        "warmup_steps": warmup_steps,
        "timings": timings,
    }
    if probes:
        seconds = sum(p.wall for p in probes)
        result["cached"] = {
            "seconds": seconds,
            "throughput": sum(p.windows[0]["samples"] for p in probes) / seconds,
            "windows": [round(p.windows[0]["throughput"], 2) for p in probes],
            # each round's pipeline against the cached batch right after it
            "round_ratios": [round(r.windows[0]["throughput"] / p.windows[0]["throughput"], 4)
                             for r, p in zip(runs, probes)],
        }
    return result


def preflight(task: dict[str, Any], progress: _Progress) -> dict[str, Any]:
    """Build model and data once and run one step, so a typo costs seconds, not a study."""
    timings: dict[str, float] = {}
    work = _Workload(task, progress, timings)
    progress.emit(phase="first_step")
    t = time.perf_counter()
    work.run_step(work.first)
    timings["first_step"] = time.perf_counter() - t
    t = time.perf_counter()
    work.run_step(work.next_batch())
    timings["second_step"] = time.perf_counter() - t
    tf = work.tf
    available, algorithms = settings_mod.tf_data_available(tf)
    return {
        "batch_size": work.batch_size,
        "element_spec": work.element_spec,
        "tf_version": tf.__version__,
        "onednn_enabled": _onednn_enabled(),
        "openmp": host.tf_uses_openmp(os.path.dirname(tf.__file__)),
        "model_params": int(work.model.count_params()) if work.model is not None else None,
        "tf_data_options": available,
        "autotune_algorithms": algorithms,
        "pipeline": work.pipeline,
        "knobs": work.knob_info,
        "options_in_effect": work.options_in_effect,
        "timings": timings,
    }


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    if task.get("protocol") != PROTOCOL:
        raise WorkloadProblem(f"worker protocol {task.get('protocol')!r} is not {PROTOCOL}; the "
                              f"parent and child are different tuner versions")
    progress = _Progress(task.get("progress"))
    kind = task["kind"]
    if kind == "preflight":
        return preflight(task, progress)
    if kind == "measure":
        return measure(task, progress)
    if kind == "diagnose":
        return diagnose(task, progress)
    raise WorkloadProblem(f"unknown task kind {kind!r}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m tuner.worker TASK.json RESULT.json", file=sys.stderr)
        return 2
    task_path, result_path = args
    started = time.time()
    try:
        task = json.loads(Path(task_path).read_text())
        # Pin before TensorFlow starts any thread: threads inherit the affinity they start with.
        why = host.set_affinity(task.get("cpus"))
        if why:
            raise WorkloadProblem(why)
        payload = {"protocol": PROTOCOL, "ok": True, **run_task(task)}
        code = 0
    except WorkloadProblem as exc:
        payload = {"protocol": PROTOCOL, "ok": False, "error": str(exc),
                   "traceback": traceback.format_exc()[-4000:]}
        code = 3
    except BaseException as exc:  # anything else is a bug or a user-code exit: report it all
        payload = {"protocol": PROTOCOL, "ok": False, "error": _describe(exc),
                   "traceback": traceback.format_exc()[-4000:]}
        code = 4
    payload["child_started"] = started
    write_json_atomic(result_path, payload, durable=False)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: TensorFlow's thread pools can take seconds to wind down, and
    # everything that matters is already on disk.
    os._exit(code)


if __name__ == "__main__":
    main()
