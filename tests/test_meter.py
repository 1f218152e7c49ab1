"""The measuring loop in-process, with a fake workload and a fake clock: warm-up, windows,
throughput, input wait, CPU saturation and latency percentiles, to the exact number (no
TensorFlow, no child process, no real time)."""

from __future__ import annotations

import math
from collections import namedtuple

import pytest

from tuner.child import meter
from tuner.child.protocol import WorkloadProblem

# psutil.cpu_times(percpu=True) gives one of these per CPU; the meter sums all fields
CoreTimes = namedtuple("CoreTimes", "user system idle iowait")


class FakeClock(meter.Clock):
    """Time moves only when the fake workload says so; ``cores`` replays snapshots."""

    def __init__(self, cores=None) -> None:
        self.t = 0.0
        self.cpu_seconds = 0.0
        self.snapshots = list(cores or [])

    def now(self) -> float:
        return self.t

    def cpu(self) -> float:
        return self.cpu_seconds

    def cores(self):
        return self.snapshots.pop(0) if self.snapshots else []


class FakeWork:
    """Getting a batch takes ``wait`` seconds, a step ``step(n)`` seconds (n counts steps from 0)
    on ``threads`` busy threads; batches hold ``sizes[n % len(sizes)]`` samples."""

    def __init__(self, clock: FakeClock, step=0.125, wait=0.0, threads=1.0, sizes=(32,)):
        self.clock = clock
        self.step = step if callable(step) else (lambda n: step)
        self.wait = wait
        self.threads = threads
        self.sizes = sizes
        self.batches = 0
        self.steps = 0
        self.first = sizes[0]

    def next_batch(self):
        self.clock.t += self.wait
        size = self.sizes[self.batches % len(self.sizes)]
        self.batches += 1
        return size

    def run_step(self, batch):
        seconds = self.step(self.steps)
        self.steps += 1
        self.clock.t += seconds
        self.clock.cpu_seconds += seconds * self.threads

    def samples(self, batch):
        return batch


class Events:
    def __init__(self) -> None:
        self.events: list[dict] = []

    def emit(self, **event) -> None:
        self.events.append(event)


# -- warm-up -------------------------------------------------------------------------------------

def test_warm_up_ends_once_two_chunks_agree():
    clock = FakeClock()
    work = FakeWork(clock, step=0.125)   # 3 steps (0.375 s) fill a 0.3 s chunk
    steps, rates = meter.warm_up(work, seconds=10.0, min_steps=3, start=0.0, clock=clock)
    assert steps == 6
    assert rates == [256.0, 256.0]       # 96 samples / 0.375 s
    assert clock.t == 0.75


def test_warm_up_runs_at_least_the_minimum_steps():
    clock = FakeClock()
    work = FakeWork(clock, step=0.125)
    steps, rates = meter.warm_up(work, seconds=10.0, min_steps=10, start=0.0, clock=clock)
    assert steps == 12 and len(rates) == 4


def test_warm_up_that_never_settles_stops_at_its_limit_counted_from_the_start():
    clock = FakeClock()
    work = FakeWork(clock, step=lambda n: 0.05 * 1.1 ** n)   # each step 10% slower
    steps, rates = meter.warm_up(work, seconds=2.0, min_steps=3, start=0.0, clock=clock)
    assert 2.0 <= clock.t < 2.0 + 0.05 * 1.1 ** steps       # the step that crossed the limit
    assert all(abs(a - b) > meter.WARMUP_STABLE * max(a, b) for a, b in zip(rates, rates[1:]))

    clock = FakeClock()
    clock.t = 1.5                        # tracing took 1.5 s of the 2 s already
    work = FakeWork(clock, step=lambda n: 0.05 * 1.1 ** n)
    steps, _ = meter.warm_up(work, seconds=2.0, min_steps=3, start=0.0, clock=clock)
    assert 2.0 <= clock.t < 2.3 and steps < 10


def test_warm_up_stops_at_its_limit_even_mid_chunk():
    clock = FakeClock()
    work = FakeWork(clock, step=0.125)
    steps, rates = meter.warm_up(work, seconds=0.25, min_steps=1, start=0.0, clock=clock)
    assert steps == 2 and clock.t == 0.25
    assert rates == [256.0]


# -- windows ---------------------------------------------------------------------------------------

def test_windows_count_duration_throughput_input_wait_and_cpu():
    clock = FakeClock()
    work = FakeWork(clock, step=0.125, wait=0.125, threads=2.0)
    events = Events()
    run = meter.run_windows(work, work.next_batch, count=3, seconds=1.0, usable=4,
                            progress=events, clock=clock)
    assert len(run.windows) == 3
    for index, window in enumerate(run.windows):
        assert window == {"index": index, "seconds": 1.0, "steps": 4, "samples": 128,
                          "throughput": 128.0, "cpu_saturation": 0.25, "input_wait": 0.5}
    assert run.wall == 3.0 and run.wait == 1.5 and run.cpu == 3.0
    assert run.latencies == [0.25] * 12   # a step's latency includes getting its batch
    assert events.events == [{"window": i, "throughput": 128.0} for i in range(3)]


def test_a_window_runs_whole_steps_until_its_seconds_are_up():
    clock = FakeClock()
    work = FakeWork(clock, step=0.375, sizes=(32, 16))
    run = meter.run_windows(work, work.next_batch, count=2, seconds=1.0, usable=1,
                            progress=Events(), clock=clock)
    first, second = run.windows
    assert first["steps"] == 3 and first["seconds"] == 1.125   # never cut short
    assert first["samples"] == 32 + 16 + 32
    assert first["throughput"] == pytest.approx(80 / 1.125)
    assert second["samples"] == 16 + 32 + 16
    assert run.wall == 2.25


def test_latency_percentiles_interpolate_between_steps():
    assert meter.percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert meter.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.9) == pytest.approx(4.6)
    assert meter.percentile([7.0], 0.99) == 7.0
    assert math.isnan(meter.percentile([], 0.5))
    assert meter.latency_ms([0.001 * n for n in range(1, 102)], (50, 90, 99)) == pytest.approx(
        {"p50": 51.0, "p90": 91.0, "p99": 100.0})


# -- one trial's measurement ----------------------------------------------------------------------

def test_measure_warms_up_then_measures_its_windows():
    before = [CoreTimes(10.0, 0.0, 10.0, 0.0), CoreTimes(10.0, 0.0, 10.0, 0.0)]
    after = [CoreTimes(13.0, 0.0, 10.5, 0.5), CoreTimes(11.0, 0.0, 13.0, 0.0)]
    clock = FakeClock(cores=[before, after])
    steps = [1.0] + [0.125] * 1000       # the first step traces: slow
    work = FakeWork(clock, step=lambda n: steps[n], wait=0.0, threads=1.5)
    events = Events()
    timings: dict[str, float] = {}
    cfg = {"warmup_seconds": 3.0, "min_warmup_steps": 3, "window_seconds": 0.5, "windows": 4}
    result = meter.measure(work, cfg, usable=2, affinity=[0, 1], progress=events,
                           timings=timings, clock=clock)

    assert result["warmup_steps"] == 1 + 6      # the traced first step, then two chunks of 3
    assert result["warmup_rates"] == [256.0, 256.0]
    assert timings["warmup"] == 1.75
    assert [w["seconds"] for w in result["windows"]] == [0.5] * 4
    assert [w["throughput"] for w in result["windows"]] == [256.0] * 4
    assert timings["measure"] == 2.0
    assert result["step_latency_ms"] == {"p50": 125.0, "p90": 125.0, "p95": 125.0,
                                         "p99": 125.0, "steps": 16}
    assert result["cpu_saturation"] == 0.75      # 1.5 busy threads of 2 usable CPUs
    assert result["input_wait"] == 0.0
    assert result["per_core_busy"] == [0.75, 0.25]
    phases = [e["phase"] for e in events.events if "phase" in e]
    assert phases == ["warmup", "measure"]


def test_measure_waits_for_the_other_instances_after_warming_up(tmp_path):
    clock = FakeClock()
    work = FakeWork(clock, step=0.125)
    events = Events()
    cfg = {"warmup_seconds": 1.0, "min_warmup_steps": 1, "window_seconds": 0.25, "windows": 1}
    barrier = {"dir": str(tmp_path), "index": 0, "count": 1, "timeout": 5}
    meter.measure(work, cfg, usable=1, affinity=[0], progress=events, timings={},
                  barrier=barrier, clock=clock)
    assert (tmp_path / "ready-0").exists()
    phases = [e["phase"] for e in events.events if "phase" in e]
    assert phases == ["warmup", "waiting for the other instances", "measure"]

    late = {"dir": str(tmp_path), "index": 1, "count": 3, "timeout": 0.05}
    with pytest.raises(WorkloadProblem, match="instance 1: the other instances did not finish "
                                              "warming up within 0.05 s"):
        meter.wait_for_instances(late, Events())
