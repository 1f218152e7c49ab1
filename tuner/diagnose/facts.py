"""What the probe child measured, reduced to the facts the rules read (``Facts``)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from tuner.base import host

# the thresholds the facts and the rules judge by
INPUT_BOUND_RATIO = 0.8
INPUT_BOUND_ROUNDS = 0.75
INPUT_WAIT_SHARE = 0.25
LOW_SATURATION = 0.6
HIGH_SYSTEM_SHARE = 0.25
THROTTLED_PERIODS = 0.10
COMPETING_LOAD = 0.25

Finding = dict[str, Any]

def capacity(machine: host.Machine) -> float:
    """CPUs' worth of time the process may use: its affinity, capped by the quota."""
    cpus = float(len(machine.affinity))
    return min(cpus, machine.cpu_quota) if machine.cpu_quota is not None else cpus



def num(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _cpus(value: float) -> str:
    """'1 CPU', '2 CPUs', '1.5 CPUs'."""
    return f"{num(value)} CPU" + ("" if value == 1 else "s")


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


def step_name(step: dict[str, Any]) -> str:
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
