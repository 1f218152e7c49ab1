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
from pathlib import Path
from typing import Any, Callable

import tuner.knobs as knobs
from tuner.base import host
from tuner.base.lock import host_lock
from tuner.child import protocol
from tuner.config import Config
from tuner.diagnose.facts import (
    COMPETING_LOAD,
    HIGH_SYSTEM_SHARE,
    INPUT_BOUND_RATIO,
    INPUT_BOUND_ROUNDS,
    INPUT_WAIT_SHARE,
    LOW_SATURATION,
    THROTTLED_PERIODS,
    _facts,
    capacity,
)
from tuner.diagnose.findings import _findings
from tuner.errors import TrialFailed, TunerError
from tuner.search.trial import run_child

FORMAT_VERSION = 1

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


def compute_lines(r: dict[str, Any]) -> list[str]:
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



# -- text ----------------------------------------------------------------------------------------
