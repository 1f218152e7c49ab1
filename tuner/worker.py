"""The trial child: ``python -m tuner.worker TASK.json RESULT.json``.

One fresh process per measurement. The parent has already built this process's environment (the
environment-variable knobs are in it); here we apply the ``tf.config.threading`` knobs before the
runtime initialises, build the user's model and data, warm up (tracing included), measure several
time-based windows, and write the result as JSON to RESULT.json, a path user code knows nothing
about, so nothing the workload prints can corrupt it. Progress (the phase, each window) goes to a
side file the parent polls, for timeout messages and pruning; it is advisory only.

Declared knobs: every builder that accepts a knob (by name or ``**kwargs``) is called with the
trial's value (``autotune`` as ``tf.data.AUTOTUNE``); the preflight checks the signatures before
anything is built and reports each knob's baseline (the builder's own default).

Protocol history (``PROTOCOL``):
  1: first version.
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
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from . import placement, space
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
                if base == -1 and not isinstance(base, bool) and space.AUTOTUNE in candidates[name]:
                    base = space.AUTOTUNE
            info[name] = {"builders": roles, "baseline": base, "source": source}
        return info

    def kwargs(self, role: str, values: dict[str, Any], tf: Any) -> dict[str, Any]:
        return {name: (tf.data.AUTOTUNE if value == space.AUTOTUNE else value)
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
    options, missing = space.tf_data_options(tf, settings)
    if missing:
        raise WorkloadProblem(f"this TensorFlow ({tf.__version__}) has no tf.data option "
                              f"{', '.join(missing)}")
    return options


def _options_in_effect(dataset: Any) -> dict[str, Any]:
    """The tf.data knobs as the dataset really carries them (None: TensorFlow's default)."""
    options = dataset.options()
    found: dict[str, Any] = {}
    for name, knob in space.KNOBS.items():
        if knob.applied != space.TF_DATA:
            continue
        value: Any = options
        for attr in knob.option.split("."):
            value = getattr(value, attr, None)
        found[name] = getattr(value, "name", value)  # an enum by its member name
    return found


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


class _Workload:
    """The user's model, data and the step function one measurement repeats."""

    def __init__(self, task: dict[str, Any], progress: _Progress, timings: dict[str, float]) -> None:
        wl = task["workload"]
        settings = task["settings"]
        self.mode = wl["mode"]

        t = time.perf_counter()
        progress.emit(phase="import")
        import tensorflow as tf

        self.tf = tf
        # Must happen before the first op initialises the runtime; 0 leaves TensorFlow's default.
        intra = settings.get("intra_op_parallelism_threads") or 0
        inter = settings.get("inter_op_parallelism_threads") or 0
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(int(intra))
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(int(inter))
        timings["import"] = time.perf_counter() - t

        t = time.perf_counter()
        progress.emit(phase="build_model")
        builders = {"data": (_load_callable(wl["data"], wl["base_dir"], "data"), wl["data"])}
        if self.mode != "data":
            builders["model"] = (_load_callable(wl["model"], wl["base_dir"], "model"), wl["model"])
        declared: dict[str, list[Any]] = task.get("knobs") or {}
        values = {name[len(space.KNOB_PREFIX):]: value for name, value in settings.items()
                  if name.startswith(space.KNOB_PREFIX)}
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
            raise WorkloadProblem(f"workload.data: {wl['data']} returned an empty dataset") from None
        except Exception as exc:
            raise WorkloadProblem(f"workload.data: reading the first batch raised "
                                  f"{_describe(exc)}") from exc
        _check_element(first, self.mode, wl["data"])
        self.batch_size = _batch_size(first, tf)
        self.element_spec = str(dataset.element_spec)[:500]
        self.first = first
        timings["build_data"] = time.perf_counter() - t
        self.step = self._make_step()

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
            raise WorkloadProblem(f"workload.data: reading a batch raised {_describe(exc)}") from exc


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


def _core_busy(before: Any, after: Any, cpus: list[int]) -> list[float]:
    busy = []
    for cpu in cpus:
        if cpu >= len(before) or cpu >= len(after):
            continue
        a, b = before[cpu], after[cpu]
        total = sum(b) - sum(a)
        idle = (b.idle - a.idle) + (getattr(b, "iowait", 0.0) - getattr(a, "iowait", 0.0))
        busy.append(round(1.0 - idle / total, 4) if total > 0 else 0.0)
    return busy


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
    cpu0 = _cpu_seconds()
    start = time.perf_counter()
    windows: list[dict[str, Any]] = []
    latencies: list[float] = []
    wait_total = 0.0
    for index in range(cfg["windows"]):
        w_start = time.perf_counter()
        w_cpu = _cpu_seconds()
        samples = steps_in_window = 0
        w_wait = 0.0
        while True:
            ta = time.perf_counter()
            batch = work.next_batch()
            tb = time.perf_counter()
            work.run_step(batch)
            tc = time.perf_counter()
            w_wait += tb - ta
            latencies.append(tc - ta)
            samples += _batch_size(batch, work.tf)
            steps_in_window += 1
            if tc - w_start >= cfg["window_seconds"]:
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
        wait_total += w_wait
        windows.append(window)
        progress.emit(window=index, throughput=window["throughput"])
    wall = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu0
    cores_after = psutil.cpu_times(percpu=True)
    timings["measure"] = wall

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
        "cpu_saturation": cpu / (wall * usable),
        "per_core_busy": _core_busy(cores_before, cores_after, affinity),
        "input_wait": wait_total / wall,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "threads": process.num_threads(),
        "tf_threading": {
            "intra_op": work.tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": work.tf.config.threading.get_inter_op_parallelism_threads(),
        },
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "allocator": placement.allocator_in_process(),
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
    available, algorithms = space.tf_data_available(tf)
    return {
        "batch_size": work.batch_size,
        "element_spec": work.element_spec,
        "tf_version": tf.__version__,
        "onednn_enabled": _onednn_enabled(),
        "openmp": placement.uses_openmp(),
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
        why = placement.set_affinity(task.get("cpus"))
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
