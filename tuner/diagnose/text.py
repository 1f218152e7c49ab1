"""``diagnose``'s report as text: the machine, what was measured, the findings in order."""

from __future__ import annotations

from typing import Any

from tuner.base import host
from tuner.diagnose.facts import INPUT_BOUND_RATIO, INPUT_WAIT_SHARE, _cpus, num
from tuner.diagnose.run import compute_lines


def format_text(report: dict[str, Any]) -> str:
    lines: list[str] = []
    for section in (_measured_lines, _cpu_lines, _saturation_lines, _input_lines,
                    _finding_lines):
        lines.extend(section(report))
    return "\n".join(lines) + "\n"


def _measured_lines(r: dict[str, Any]) -> list[str]:
    """What was run and measured."""
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
    return lines


def _cpu_lines(r: dict[str, Any]) -> list[str]:
    """The CPUs and TensorFlow's thread pools."""
    lines: list[str] = []
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
    return lines


def _saturation_lines(r: dict[str, Any]) -> list[str]:
    """How busy the CPUs were, and throttling."""
    lines: list[str] = []
    t = r["threads"]
    lines.append("Saturation")
    lines.append(f"  cores busy {r['cores_busy']:.2f} of {num(r['cpu_capacity'])} usable "
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
    return lines


def _input_lines(r: dict[str, Any]) -> list[str]:
    """Whether the input pipeline or the compute holds the job back."""
    lines: list[str] = []
    wl, tp = r["workload"], r["throughput"]
    lines.append("Input or compute")
    ratios = tp.get("round_ratios") or []
    spread = (f" (median of {len(ratios)} rounds, {min(ratios):.2f}-{max(ratios):.2f})"
              if ratios else "")
    if tp["cached_batch"]:
        lines.append(f"  real pipeline {num(tp['pipeline'])} samples/s, one cached batch "
                     f"{num(tp['cached_batch'])} samples/s: {tp['ratio']:.2f}x{spread}; "
                     f"waiting for data {r['input_wait']:.0%} of the time")
    else:
        lines.append(f"  pipeline alone {num(tp['pipeline'])} samples/s (data mode)")
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
    lines.extend(compute_lines(r))
    lines.append("")
    return lines


def _finding_lines(r: dict[str, Any]) -> list[str]:
    """The findings, in order."""
    lines: list[str] = []
    lines.append("Findings")
    for index, finding in enumerate(r["findings"], 1):
        lines.append(f"  {index}. {finding['title']}")
        lines.append(f"     measured: {finding['evidence']}")
        lines.append(f"     means:    {finding['meaning']}")
        lines.append(f"     try:      {finding['advice']}")
    return lines


def _step_label(step: dict[str, Any]) -> str:
    op = step["op"].replace("Dataset", "").replace("V2", "")
    label = f"{op}({', '.join(step['functions'])})" if step.get("functions") else op
    notes = []
    if step.get("sequential"):
        notes.append("sequential")
    notes.extend(step.get("python") or [])
    return label + (f" [{', '.join(notes)}]" if notes else "")
