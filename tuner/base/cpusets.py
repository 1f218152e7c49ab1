"""CPU sets: the pinning order (whole cores first, one NUMA node before the next), the CPU set of
*n* CPUs, the sets of several instances, and pinning a process to one."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from tuner.base.host import Machine, format_cpus


def _groups_of(machine: Machine) -> list[dict[str, Any]]:
    groups = machine.extra.get("cpu_cores")
    return list(groups) if groups else [{"node": 0, "cpus": [c]} for c in machine.affinity]


def cpu_order(core_groups: Sequence[dict[str, Any]]) -> list[int]:
    """Node by node: one hardware thread of each core (in core order), then the second threads,
    and so on. A prefix of the order stays on one node, on distinct cores, as long as it can."""
    order: list[int] = []
    nodes = sorted({g["node"] for g in core_groups})
    for node in nodes:
        run = [g["cpus"] for g in core_groups if g["node"] == node]
        for level in range(max(len(c) for c in run)):
            order.extend(c[level] for c in run if level < len(c))
    return order


def pinned_order(machine: Machine) -> list[int]:
    """The machine's CPUs in pinning order."""
    return cpu_order(_groups_of(machine))


def cpus_per_node(machine: Machine) -> dict[int, list[int]]:
    """The machine's CPUs grouped by NUMA node."""
    nodes: dict[int, list[int]] = {}
    for group in machine.extra.get("cpu_cores") or []:
        nodes.setdefault(group["node"], []).extend(group["cpus"])
    return nodes


def cpu_set(machine: Machine, count: int | None) -> list[int] | None:
    """The first ``count`` CPUs of the pinning order; None (no pinning) for None."""
    if count is None:
        return None
    order = pinned_order(machine)
    return sorted(order[:max(1, min(count, len(order)))])


def instance_sets(machine: Machine, count: int, cpus: int | None = None) -> list[list[int]]:
    """Disjoint CPU sets for ``count`` instances out of the first ``cpus`` CPUs (all usable when
    None): whole physical cores per instance where there are enough cores, else single CPUs."""
    if count < 1:
        raise ValueError("instance count must be >= 1")
    total = machine.usable_cpus if cpus is None else min(cpus, machine.usable_cpus)
    order = pinned_order(machine)
    usable = set(order[:total])
    groups = [list(g["cpus"]) for g in _groups_of(machine)]
    groups = [[c for c in g if c in usable] for g in groups]
    groups = [g for g in groups if g]
    if len(groups) >= count:
        per = len(groups) // count
        return [sorted(c for g in groups[i * per:(i + 1) * per] for c in g) for i in range(count)]
    flat = [c for c in order if c in usable]
    if len(flat) < count:
        raise ValueError(f"{count} instances need at least {count} CPUs; {len(flat)} usable")
    per = len(flat) // count
    return [sorted(flat[i * per:(i + 1) * per]) for i in range(count)]


def pin_check(cpus: Sequence[int]) -> str | None:
    """Why this process (or a child it starts) cannot be pinned to ``cpus``, or None: some of
    them are outside the CPUs it may use. The job then runs on the CPUs it has."""
    current = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()
    if current and not set(cpus) <= current:
        return (f"CPUs {format_cpus(sorted(set(cpus) - current))} of the tuned CPU set "
                f"{format_cpus(cpus)} are not available to this process (it may use "
                f"{format_cpus(sorted(current))}); running unpinned")
    return None


def set_affinity(cpus: Sequence[int] | None) -> str | None:
    """Pin this process (and the threads it starts later) to ``cpus``. Returns None on success,
    else why it could not (the process then runs unpinned)."""
    if not cpus:
        return None
    if not hasattr(os, "sched_setaffinity"):
        return "this platform has no CPU affinity (os.sched_setaffinity)"
    try:
        os.sched_setaffinity(0, set(cpus))
    except OSError as exc:
        return f"cannot pin to CPUs {format_cpus(cpus)}: {exc.strerror or exc}"
    return None
