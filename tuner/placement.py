"""Where a job runs: memory allocator, CPU set, and how many instances share the CPUs.

These settings act on the process, not on TensorFlow: an allocator is preloaded
(``LD_PRELOAD``) before the process starts, a CPU set is the process's affinity, and several
instances are several processes, each pinned to its own CPUs. The trial parent, ``tuner.apply()``
and the launcher all use the functions here, so a setting means the same thing everywhere.

CPU order follows the common advice for CPU inference (Intel's and PyTorch's launchers): one NUMA
node before the next, and within a node one hardware thread of every physical core before any
hyperthread sibling. A CPU set of *n* CPUs is the first *n* of that order; instances get whole
cores, disjoint, in that order.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Allocator name -> the shared libraries that provide it, most specific first. The Debian/Ubuntu
# packages are libtcmalloc-minimal4 (gperftools) and libjemalloc2.
ALLOCATORS: dict[str, tuple[str, ...]] = {
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"),
    "jemalloc": ("libjemalloc.so.2", "libjemalloc.so.1"),
}
ALLOCATOR_NAMES = ("system", *ALLOCATORS)
INSTALL_HINT = {"tcmalloc": "apt-get install libtcmalloc-minimal4",
                "jemalloc": "apt-get install libjemalloc2"}
_LIB_DIRS = ("usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "lib/x86_64-linux-gnu",
             "lib/aarch64-linux-gnu", "usr/lib64", "lib64", "usr/lib", "lib", "usr/local/lib")

INSTANCE_ENV = "TUNER_INSTANCE"      # index of this instance, 0-based
INSTANCES_ENV = "TUNER_INSTANCES"    # how many instances the job runs


def find_allocators(root: Path | str = Path("/")) -> dict[str, str]:
    """Allocators whose library exists on this machine: name -> absolute path."""
    root = Path(root)
    found: dict[str, str] = {}
    for name, libs in ALLOCATORS.items():
        for lib in libs:
            for folder in _LIB_DIRS:
                path = root / folder / lib
                if path.exists():
                    found[name] = str(Path("/") / folder / lib) if root != Path("/") \
                        else str(path)
                    break
            if name in found:
                break
    return found


def preload_value(library: str, current: str | None) -> str:
    """``LD_PRELOAD`` with ``library`` first and whatever the user preloads kept after it."""
    parts = [p for p in re.split(r"[:\s]+", current or "") if p and p != library]
    return ":".join([library, *parts])


def loaded_libraries() -> set[str]:
    """Base names of the shared libraries mapped into this process."""
    names: set[str] = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if line.count(" ") >= 5 else ""
                if path.startswith("/"):
                    names.add(os.path.basename(path))
    except OSError:
        pass
    return names


def allocator_in_process() -> str:
    """Which allocator this process runs with, read from its memory maps."""
    libs = loaded_libraries()
    for name, candidates in ALLOCATORS.items():
        if any(lib in libs or any(n.startswith(lib.split(".so")[0] + ".so") for n in libs)
               for lib in candidates):
            return name
    return "system"


def tf_uses_openmp(tf_dir: str | Path) -> bool | None:
    """Whether TensorFlow's own libraries link an OpenMP runtime (libgomp, libiomp5, libomp), from
    ``ldd`` on them; None when that cannot be told. Stock builds use Eigen's thread pool and do not,
    so OMP_NUM_THREADS, KMP_BLOCKTIME and KMP_AFFINITY do nothing there. (Whether OpenMP is mapped
    into the process says nothing: NumPy, or anything else imported, may bring it.)"""
    import shutil
    import subprocess

    tf_dir = Path(tf_dir)
    libs = [p for p in (*sorted(tf_dir.glob("lib*.so*")),
                        tf_dir / "python" / "_pywrap_tensorflow_internal.so") if p.is_file()]
    ldd = shutil.which("ldd")
    if not libs or ldd is None:
        return None
    try:
        out = subprocess.run([ldd, *map(str, libs)], capture_output=True, text=True, timeout=60,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return re.search(r"\blib(gomp|iomp5|omp)\.so", out) is not None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _node_of(root: Path) -> dict[int, int]:
    nodes: dict[int, int] = {}
    from .machine import parse_cpulist

    for node in sorted((root / "sys/devices/system/node").glob("node[0-9]*")):
        listed = _read(node / "cpulist")
        if listed:
            for cpu in parse_cpulist(listed):
                nodes[cpu] = int(node.name[4:])
    return nodes


def cores(root: Path | str, cpus: Sequence[int]) -> list[dict[str, Any]]:
    """``cpus`` grouped by physical core (hyperthread siblings together), ordered by NUMA node,
    then package, then core id: ``[{"node": 0, "cpus": [0, 8]}, ...]``. Without topology files
    every CPU is its own core."""
    root = Path(root)
    node_of = _node_of(root)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for cpu in sorted(cpus):
        topo = root / f"sys/devices/system/cpu/cpu{cpu}/topology"
        package, core = _read(topo / "physical_package_id"), _read(topo / "core_id")
        if package is None or core is None or not package.isdigit() or not core.isdigit():
            key = (node_of.get(cpu, 0), 0, 1_000_000 + cpu)
        else:
            key = (node_of.get(cpu, 0), int(package), int(core))
        groups.setdefault(key, []).append(cpu)
    return [{"node": k[0], "cpus": groups[k]} for k in sorted(groups)]


def _core_groups(machine: Any) -> list[dict[str, Any]]:
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


def pinned_order(machine: Any) -> list[int]:
    """The machine's CPUs in pinning order."""
    return cpu_order(_core_groups(machine))


def cpu_set(machine: Any, count: int | None) -> list[int] | None:
    """The first ``count`` CPUs of the pinning order; None (no pinning) for None."""
    if count is None:
        return None
    order = pinned_order(machine)
    return sorted(order[:max(1, min(count, len(order)))])


def instance_sets(machine: Any, count: int, cpus: int | None = None) -> list[list[int]]:
    """Disjoint CPU sets for ``count`` instances out of the first ``cpus`` CPUs (all usable when
    None): whole physical cores per instance where there are enough cores, else single CPUs."""
    if count < 1:
        raise ValueError("instance count must be >= 1")
    total = machine.usable_cpus if cpus is None else min(cpus, machine.usable_cpus)
    order = pinned_order(machine)
    usable = set(order[:total])
    groups = [list(g["cpus"]) for g in _core_groups(machine)]
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


def format_cpus(cpus: Sequence[int]) -> str:
    """The kernel's list format: ``0-3,8``."""
    cpus = sorted(set(cpus))
    parts: list[str] = []
    start = prev = None
    for cpu in cpus:
        if start is None:
            start = prev = cpu
        elif cpu == prev + 1:
            prev = cpu
        else:
            parts.append(f"{start}-{prev}" if start != prev else str(start))
            start = prev = cpu
    if start is not None:
        parts.append(f"{start}-{prev}" if start != prev else str(start))
    return ",".join(parts)
