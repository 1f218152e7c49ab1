"""The measuring loop: warm up until the step rate settles, then time-based windows of steps.

It drives any object with ``first``, ``next_batch()``, ``run_step(batch)`` and ``samples(batch)``
(:class:`~tuner.child.workload.Workload` in the child) and reads time from a :class:`Clock`, so
tests run it in-process with a fake workload and a fake clock.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Protocol

from tuner.child.protocol import Progress, WorkloadProblem


class Steps(Protocol):
    """What the meter needs of a workload."""

    first: Any

    def next_batch(self) -> Any: ...

    def run_step(self, batch: Any) -> None: ...

    def samples(self, batch: Any) -> int: ...


def process_cpu_seconds() -> float:
    """This process's CPU time, user + system, all threads."""
    times = os.times()
    return times.user + times.system


class Clock:
    """Where the meter reads the time: wall seconds, this process's CPU seconds, and every core's
    times (``psutil.cpu_times(percpu=True)``)."""

    def now(self) -> float:
        return time.perf_counter()

    def cpu(self) -> float:
        return process_cpu_seconds()

    def cores(self) -> Any:
        import psutil

        return psutil.cpu_times(percpu=True)


SYSTEM_CLOCK = Clock()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def latency_ms(latencies: list[float], percentiles: Sequence[int]) -> dict[str, float]:
    """Step latency percentiles in milliseconds: ``{"p50": ..., "p90": ...}``."""
    return {f"p{p}": percentile(latencies, p / 100) * 1e3 for p in percentiles}


def core_times(before: Any, after: Any, cpus: list[int]) -> list[tuple[float, float] | None]:
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


def busy_share(total: float, idle: float) -> float:
    return round(1.0 - idle / total, 4) if total > 0 else 0.0


def core_busy(before: Any, after: Any, cpus: list[int]) -> list[float]:
    return [busy_share(*delta) for delta in core_times(before, after, cpus) if delta is not None]


WARMUP_CHUNK_SECONDS = 0.3
WARMUP_STABLE = 0.05
# With XLA on, TensorFlow compiles a cluster on one of its first executions (not the first: it
# compiles lazily, once a cluster has run before), so such a step takes many times a steady one.
# A step this many times the fastest so far counts as a compilation: the warm-up limit starts
# again after it, and the warm-up runs at least XLA_MIN_STEPS steps.
COMPILE_STEP_RATIO = 3.0
XLA_MIN_STEPS = 6
# ...but never longer than this in all (the trial's own timeout is the last resort)
COMPILE_LIMIT_SECONDS = 120.0


def warm_up(work: Steps, seconds: float, min_steps: int, start: float,
            clock: Clock = SYSTEM_CLOCK, *, compiles: bool = False) -> tuple[int, list[float]]:
    """Run steps until the step rate settles, at most ``seconds`` after ``start``; returns the
    steps taken and the rate of each ~0.3 s chunk.

    Settled: two consecutive chunks agree within 5%. On the benchmark workloads the rate right
    after tracing is already within noise of the steady state, except for one chunk that drains a
    prefetch buffer filled during tracing (up to 1.25x fast); a stricter test (three chunks within
    3%) almost never passed on a noisy VM and so always ran to the limit. The measurement windows
    that follow are the real check: their spread is reported. ``start`` is when warm-up began
    (tracing counts against the limit).

    ``compiles`` (XLA on): the limit counts from the end of the last compiling step (one
    :data:`COMPILE_STEP_RATIO` times the fastest so far), at least :data:`XLA_MIN_STEPS` are run,
    and the chunks that agree must both come after it, so the rate has settled after
    compilation; never past :data:`COMPILE_LIMIT_SECONDS` after ``start``."""
    steps = 0
    rates: list[float] = []
    limit = start + seconds
    hard_limit = start + max(seconds, COMPILE_LIMIT_SECONDS)
    if compiles:
        min_steps = max(min_steps, XLA_MIN_STEPS)
    fastest = math.inf
    slowest = slowest_end = 0.0
    slowest_chunk = compiled_end = -1.0
    settled_from = 0    # the first chunk after the last compilation
    while True:
        chunk_start = clock.now()
        samples = 0
        while True:
            batch = work.next_batch()
            before = clock.now()
            work.run_step(batch)
            samples += work.samples(batch)
            steps += 1
            now = clock.now()
            if compiles:
                # a compilation: a step far slower than the fastest before it, or, seen once
                # faster steps follow, the slowest so far (the first step has nothing before it)
                took = now - before
                found = None
                if took >= COMPILE_STEP_RATIO * fastest:
                    found = (now, len(rates))
                fastest = min(fastest, took)
                if took > slowest:
                    slowest, slowest_end, slowest_chunk = took, now, len(rates)
                elif slowest >= COMPILE_STEP_RATIO * fastest and slowest_end > compiled_end:
                    found = (slowest_end, slowest_chunk)
                if found is not None:
                    compiled_end = found[0]
                    limit = min(hard_limit, max(limit, found[0] + seconds))
                    settled_from = max(settled_from, int(found[1]) + 1)
            if now - chunk_start >= WARMUP_CHUNK_SECONDS or now >= limit:
                break
        rates.append(samples / (now - chunk_start))
        if steps >= min_steps:
            if now >= limit:
                return steps, rates
            if len(rates) - settled_from >= 2 and \
                    abs(rates[-1] - rates[-2]) <= WARMUP_STABLE * max(rates[-2:]):
                return steps, rates


class Run:
    """Time-based windows of steps: what one measurement loop saw."""

    def __init__(self) -> None:
        self.windows: list[dict[str, Any]] = []
        self.latencies: list[float] = []
        self.wait = 0.0       # seconds spent getting batches
        self.wall = 0.0
        self.cpu = 0.0        # this process's CPU seconds, user + system


def run_windows(work: Steps, next_batch: Callable[[], Any], count: int, seconds: float,
                usable: float, progress: Progress, clock: Clock = SYSTEM_CLOCK) -> Run:
    """Run ``count`` windows of at least ``seconds`` each, timing ``next_batch`` (input wait) and
    the step separately."""
    run = Run()
    cpu0 = clock.cpu()
    start = clock.now()
    tc = start
    for index in range(count):
        w_start = clock.now()
        w_cpu = clock.cpu()
        samples = steps_in_window = 0
        w_wait = 0.0
        while True:
            ta = clock.now()
            batch = next_batch()
            tb = clock.now()
            work.run_step(batch)
            tc = clock.now()
            w_wait += tb - ta
            run.latencies.append(tc - ta)
            samples += work.samples(batch)
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
            "cpu_saturation": (clock.cpu() - w_cpu) / (elapsed * usable),
            "input_wait": w_wait / elapsed,
        }
        run.wait += w_wait
        run.windows.append(window)
        progress.emit(window=index, throughput=window["throughput"])
    run.wall = clock.now() - start
    run.cpu = clock.cpu() - cpu0
    return run


def measure(work: Steps, cfg: dict[str, Any], *, usable: int, affinity: list[int],
            progress: Progress, timings: dict[str, float], barrier: dict[str, Any] | None = None,
            clock: Clock = SYSTEM_CLOCK, compiles: bool = False) -> dict[str, Any]:
    """One trial's measurement (``cfg`` is the task's ``measure``): warm-up, then the windows;
    the measuring fields of a measure result. ``timings`` gets ``warmup`` and ``measure``.
    ``compiles``: XLA is on, so the warm-up waits until the rate settles after compilation."""
    progress.emit(phase="warmup")
    t0 = clock.now()
    work.run_step(work.first)  # traces the step function
    warmup_steps, warmup_rates = warm_up(work, cfg["warmup_seconds"], cfg["min_warmup_steps"],
                                         t0, clock, compiles=compiles)
    warmup_steps += 1
    timings["warmup"] = clock.now() - t0

    if barrier:
        wait_for_instances(barrier, progress)
    progress.emit(phase="measure")
    cores_before = clock.cores()
    run = run_windows(work, work.next_batch, cfg["windows"], cfg["window_seconds"], usable,
                      progress, clock)
    cores_after = clock.cores()
    timings["measure"] = run.wall
    return {
        "windows": run.windows,
        "warmup_steps": warmup_steps,
        "warmup_rates": warmup_rates,
        "step_latency_ms": {**latency_ms(run.latencies, (50, 90, 95, 99)),
                            "steps": len(run.latencies)},
        "cpu_saturation": run.cpu / (run.wall * usable),
        "per_core_busy": core_busy(cores_before, cores_after, affinity),
        "input_wait": run.wait / run.wall,
        "first_steps": first_steps(warmup_steps, timings["warmup"], run),
    }


def first_steps(steps: int, seconds: float, run: Run) -> dict[str, Any]:
    """What the first ``steps`` (tracing, XLA's compilation, warm-up) cost: their wall time, and
    how much longer they took than as many steady steps (the windows' mean step): the one-time
    cost each process pays, which a short job feels."""
    steady = run.wall / len(run.latencies) if run.latencies else 0.0
    return {"steps": steps, "seconds": round(seconds, 4),
            "extra_seconds": round(max(0.0, seconds - steps * steady), 4)}


def wait_for_instances(barrier: dict[str, Any], progress: Progress) -> None:
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
