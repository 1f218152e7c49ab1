"""Where and with what the process runs: the allocator preloaded, the CPUs it is pinned to, the
number of instances."""

from __future__ import annotations

import re
from typing import Any

from tuner.base import cpusets, host
from tuner.base.host import Machine
from tuner.errors import ConfigError
from tuner.knobs.base import Knob, _int


class ProcessKnob(Knob):
    """Where and with what the process runs; the tuned file keeps it at the top level."""

    how = "process"


class AllocatorKnob(ProcessKnob):
    """The memory allocator, preloaded before the process starts. The variable is not a plain
    setting: the library path is this machine's, and a user's own preloads are kept after it."""

    how = "process: LD_PRELOAD"
    variable = "LD_PRELOAD"

    def check_available(self, value: Any, machine: Machine, mode: str, pipeline: Any,
                        field: str) -> None:
        super().check_available(value, machine, mode, pipeline, field)
        if value != self.default and value not in machine.allocators:
            raise ConfigError(f"{field}: {value!r} is not installed on this machine (none of "
                              f"{', '.join(host.ALLOCATORS[value])} found); install it "
                              f"({host.INSTALL_HINT[value]}) or remove it")

    def nest(self, tree: dict[str, Any], flat: dict[str, Any], machine: Machine | None) -> None:
        tree[self.name] = flat.get(self.name) or self.default

    def read(self, tree: dict[str, Any]) -> Any:
        return tree.get(self.name) or self.default

    def library(self, value: Any, found: dict[str, str]) -> str | None:
        """The library that provides ``value`` among those ``found``; None for the system's own
        allocator or one that is not installed."""
        return None if value == self.default else found.get(value)

    def preloaded(self, env: dict[str, str], library: str | None) -> dict[str, str]:
        """``env`` with ``library`` preloaded first and whatever the user preloads kept after."""
        if not library:
            return env
        parts = [p for p in re.split(r"[:\s]+", env.get(self.variable) or "")
                 if p and p != library]
        return {**env, self.variable: ":".join([library, *parts])}


class CpusKnob(ProcessKnob):
    """How many CPUs the process is pinned to; the tuned file keeps the CPU set it means on the
    machine it was measured on (the pinning order of :mod:`tuner.base.host`)."""

    how = "process: CPU affinity"

    def check_available(self, value: Any, machine: Machine, mode: str, pipeline: Any,
                        field: str) -> None:
        super().check_available(value, machine, mode, pipeline, field)
        if value != self.default and value > len(machine.affinity):
            raise ConfigError(f"{field}: {value} CPUs asked for, but this process may run on "
                              f"{len(machine.affinity)}")

    def cpu_set(self, flat: dict[str, Any], machine: Machine | None) -> list[int] | None:
        count = flat.get(self.name)
        if count is None:
            return None
        if machine is None:
            raise ValueError("CPU sets need the machine")
        return cpusets.cpu_set(machine, count)

    def nest(self, tree: dict[str, Any], flat: dict[str, Any], machine: Machine | None) -> None:
        tree[self.name] = self.cpu_set(flat, machine)

    def read(self, tree: dict[str, Any]) -> Any:
        cpus = tree.get(self.name)
        return len(cpus) if isinstance(cpus, list) and cpus else None

    def note(self, tree: Any) -> str | None:
        cpus = tree.get(self.name)
        return f"pinned to CPUs {host.format_cpus(cpus)}" if isinstance(cpus, list) and cpus \
            else None


class InstancesKnob(ProcessKnob):
    """Independent processes sharing the CPUs (of the ``cpus`` knob when set), each pinned to its
    own disjoint set; the tuned file keeps the count and the sets."""

    how = "process: several pinned processes"

    def check_available(self, value: Any, machine: Machine, mode: str, pipeline: Any,
                        field: str) -> None:
        super().check_available(value, machine, mode, pipeline, field)
        if value != self.default and value > len(machine.affinity):
            raise ConfigError(f"{field}: {value} instances need {value} CPUs at least; this "
                              f"process may run on {len(machine.affinity)}")

    def cpu_sets(self, flat: dict[str, Any], machine: Machine | None) -> list[list[int]] | None:
        """One CPU set per instance; None for a single instance."""
        count = flat.get(self.name) or 1
        if count == 1:
            return None
        if machine is None:
            raise ValueError("CPU sets need the machine")
        return cpusets.instance_sets(machine, count, flat.get("cpus"))

    def nest(self, tree: dict[str, Any], flat: dict[str, Any], machine: Machine | None) -> None:
        tree[self.name] = {"count": flat.get(self.name) or 1,
                           "cpus": self.cpu_sets(flat, machine)}

    def read(self, tree: dict[str, Any]) -> Any:
        instances = tree.get(self.name)
        if isinstance(instances, dict):
            return instances.get("count") or 1
        if _int(instances):
            return instances
        return self.default

    def note(self, tree: Any) -> str | None:
        instances = tree.get(self.name)
        if isinstance(instances, dict) and (instances.get("count") or 1) > 1 \
                and instances.get("cpus"):
            return (f"{instances['count']} instances on CPUs "
                    + " | ".join(host.format_cpus(s) for s in instances["cpus"])
                    + " (python -m tuner run starts them)")
        return None
