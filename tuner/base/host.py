"""Host facts: what CPUs this process can really use, how they are laid out, which allocators are
installed, the order CPUs are handed out in, and the machine fingerprint results carry.

``os.cpu_count()`` is the wrong answer in a container or under ``taskset``: the process may run on
fewer CPUs (affinity) or get less CPU time (a cgroup quota) than the host shows. TensorFlow sizes
its thread pools from the affinity mask alone, so a container limited to 2 CPUs on a 64-core host
starts 64 threads. Everything here reads plain files so tests can point ``root`` at a simulated
machine.

CPU order follows the common advice for CPU inference (Intel's and PyTorch's launchers): one NUMA
node before the next, and within a node one hardware thread of every physical core before any
hyperthread sibling. A CPU set of *n* CPUs is the first *n* of that order; instances get whole
cores, disjoint, in that order.
"""

from __future__ import annotations

import math
import os
import platform
import re
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Fields that must match for two measurements to be comparable. Host name, memory and the Python
# patch level travel as metadata but do not make measurements incomparable.
FINGERPRINT_KEYS = ("arch", "cpu_model", "usable_cpus", "physical_cores", "sockets", "tf_version")


@dataclass(frozen=True)
class Machine:
    visible_cpus: int                 # os.cpu_count(): what the host shows
    affinity: tuple[int, ...]         # CPUs this process may run on
    cpu_quota: float | None           # cgroup CPU quota in CPUs, None when unlimited
    usable_cpus: int                  # min(affinity, ceil(quota)): what thread counts should follow
    physical_cores: int               # distinct cores among the affinity CPUs
    sockets: int
    numa_nodes: int
    cpu_model: str
    arch: str
    hostname: str
    python: str
    memory_bytes: int | None
    tf_version: str | None = None     # filled from the preflight child, which really imports it
    onednn_default: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def with_tensorflow(self, tf_version: str, onednn_default: bool | None,
                        openmp: bool | None = None) -> Machine:
        return Machine(**{**asdict(self), "tf_version": tf_version,
                          "onednn_default": onednn_default,
                          "extra": {**self.extra, "openmp": openmp}})

    @property
    def allocators(self) -> dict[str, str]:
        """Allocator libraries found on this machine: name -> path."""
        return dict(self.extra.get("allocators") or {})

    @property
    def cpu_flags(self) -> frozenset[str]:
        """The compute instructions this CPU has (:data:`COMPUTE_FLAGS`; empty when unknown)."""
        return frozenset(self.extra.get("cpu_flags") or ())

    @property
    def openmp(self) -> bool:
        """Whether the installed TensorFlow links an OpenMP runtime (stock builds do not); False
        when unknown, so OpenMP knobs are not offered unless the config asks for them."""
        return bool(self.extra.get("openmp"))

    def fingerprint(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in FINGERPRINT_KEYS}

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["affinity"] = list(self.affinity)
        data.pop("extra")
        data.update(self.extra)
        return data


def fingerprint_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Human-readable list of fingerprint fields that differ between two machine dicts."""
    return [f"{key}: {a.get(key)!r} vs {b.get(key)!r}" for key in FINGERPRINT_KEYS
            if a.get(key) != b.get(key)]


# -- CPU lists ------------------------------------------------------------------------------------

def parse_cpus(text: str) -> list[int]:
    """Parse the kernel's CPU list format: ``0-3,8,10-11``."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(part))
    return cpus


def format_cpus(cpus: Sequence[int]) -> str:
    """The kernel's list format: ``[0, 1, 2, 3, 8]`` -> ``0-3,8``."""
    parts: list[str] = []
    start = prev = None
    for cpu in sorted(set(cpus)):
        if start is None:
            start = prev = cpu
        elif cpu == prev + 1:  # type: ignore[operator]
            prev = cpu
        else:
            parts.append(f"{start}-{prev}" if start != prev else str(start))
            start = prev = cpu
    if start is not None:
        parts.append(f"{start}-{prev}" if start != prev else str(start))
    return ",".join(parts)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


# -- cgroups --------------------------------------------------------------------------------------

def _cgroup_paths(root: Path) -> dict[str, str]:
    """Map controller (or '' for cgroup v2) to this process's cgroup path."""
    paths: dict[str, str] = {}
    text = _read(root / "proc/self/cgroup") or ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


def _ancestors(path: str) -> list[str]:
    """'/a/b' -> ['/a/b', '/a', '/']: a limit set on any ancestor cgroup applies too."""
    parts = [p for p in path.split("/") if p]
    return ["/" + "/".join(parts[:i]) for i in range(len(parts), -1, -1)]


def _quota_cgroups(root: Path) -> list[tuple[float, Path]]:
    """(quota in CPUs, cgroup directory) for every CPU quota over this process's cgroup and its
    ancestors, cgroup v2 and v1 alike."""
    paths = _cgroup_paths(root)
    found: list[tuple[float, Path]] = []
    # cgroup v2: cpu.max holds "max 100000" or "<quota> <period>".
    if "" in paths:
        for rel in _ancestors(paths[""]):
            directory = root / "sys/fs/cgroup" / rel.lstrip("/")
            text = _read(directory / "cpu.max")
            if text:
                fields = text.split()
                if len(fields) == 2 and fields[0] != "max":
                    found.append((int(fields[0]) / int(fields[1]), directory))
    # cgroup v1: cpu.cfs_quota_us is -1 when unlimited.
    for controller in ("cpu", "cpuacct"):
        if controller not in paths:
            continue
        for mount in ("cpu,cpuacct", "cpu", "cpuacct,cpu"):
            base = root / "sys/fs/cgroup" / mount
            if not base.is_dir():
                continue
            for rel in _ancestors(paths[controller]):
                directory = base / rel.lstrip("/")
                quota = _read(directory / "cpu.cfs_quota_us")
                period = _read(directory / "cpu.cfs_period_us")
                if quota and period and int(quota) > 0 and int(period) > 0:
                    found.append((int(quota) / int(period), directory))
            break
        break
    return found


def cgroup_cpu_quota(root: Path = Path("/")) -> float | None:
    """The tightest CPU quota (in CPUs) over this process's cgroup and its ancestors, or None."""
    quotas = [quota for quota, _ in _quota_cgroups(root)]
    return min(quotas) if quotas else None


def cpu_throttling(root: Path | str = Path("/")) -> dict[str, Any] | None:
    """Throttling counters of the cgroup whose quota is the tightest, or None without a quota.

    The kernel counts throttling where the quota is set (a child cgroup's own ``cpu.stat`` stays
    at zero when an ancestor's limit bites), so this reads that cgroup's ``cpu.stat``: v2 reports
    ``throttled_usec``, v1 ``throttled_time`` in nanoseconds. The counters are cumulative and
    cover every process in that cgroup; callers take a difference over their run."""
    root = Path(root)
    limits = _quota_cgroups(root)
    if not limits:
        return None
    quota, directory = min(limits, key=lambda item: item[0])
    stats: dict[str, int] = {}
    for line in (_read(directory / "cpu.stat") or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            stats[key] = int(value)
    if "throttled_usec" in stats:
        throttled = stats["throttled_usec"] / 1e6
    elif "throttled_time" in stats:
        throttled = stats["throttled_time"] / 1e9
    else:
        return None
    return {"cgroup": "/" + str(directory.relative_to(root)), "quota_cpus": round(quota, 3),
            "nr_periods": stats.get("nr_periods", 0), "nr_throttled": stats.get("nr_throttled", 0),
            "throttled_seconds": throttled}


# -- topology -------------------------------------------------------------------------------------

def _cpu_model(root: Path) -> str:
    text = _read(root / "proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model", "uarch"):
            return value.strip()
    return platform.processor() or "unknown"


# The CPU's vector and matrix instructions that decide which compute levers exist: oneDNN's
# reduced-precision math (bf16 on AVX512-BF16 / AMX-BF16, f16 on AVX512-FP16 / AMX-FP16).
COMPUTE_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
                 "amx_bf16", "amx_fp16", "amx_int8")


def _cpu_flags(root: Path) -> list[str]:
    """The :data:`COMPUTE_FLAGS` the first CPU of /proc/cpuinfo lists (x86 ``flags``)."""
    text = _read(root / "proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            have = set(value.split())
            return [flag for flag in COMPUTE_FLAGS if flag in have]
    return []


def _core_ids(root: Path, cpus: Sequence[int]) -> dict[int, tuple[str, str]]:
    """(package id, core id) of each of ``cpus`` that sysfs describes."""
    ids: dict[int, tuple[str, str]] = {}
    for cpu in cpus:
        topo = root / f"sys/devices/system/cpu/cpu{cpu}/topology"
        package, core = _read(topo / "physical_package_id"), _read(topo / "core_id")
        if package and core:
            ids[cpu] = (package, core)
    return ids


def _node_of(root: Path) -> dict[int, int]:
    """NUMA node of every CPU that a node lists."""
    nodes: dict[int, int] = {}
    for node in sorted((root / "sys/devices/system/node").glob("node[0-9]*")):
        listed = _read(node / "cpulist")
        if listed:
            for cpu in parse_cpus(listed):
                nodes[cpu] = int(node.name[4:])
    return nodes


def _core_groups(cpus: Sequence[int], ids: dict[int, tuple[str, str]],
                 node_of: dict[int, int]) -> list[dict[str, Any]]:
    groups: dict[tuple[int, int, int], list[int]] = {}
    for cpu in sorted(cpus):
        package, core = ids.get(cpu, ("", ""))
        if package.isdigit() and core.isdigit():
            key = (node_of.get(cpu, 0), int(package), int(core))
        else:
            key = (node_of.get(cpu, 0), 0, 1_000_000 + cpu)
        groups.setdefault(key, []).append(cpu)
    return [{"node": k[0], "cpus": groups[k]} for k in sorted(groups)]


def cores(root: Path | str, cpus: Sequence[int]) -> list[dict[str, Any]]:
    """``cpus`` grouped by physical core (hyperthread siblings together), ordered by NUMA node,
    then package, then core id: ``[{"node": 0, "cpus": [0, 8]}, ...]``. Without topology files
    every CPU is its own core."""
    root = Path(root)
    return _core_groups(cpus, _core_ids(root, cpus), _node_of(root))


def _memory_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # psutil is a dependency, but metadata must never break a search
        return None


def detect(root: Path | str = Path("/"), affinity: list[int] | None = None) -> Machine:
    """Detect the machine. ``root`` and ``affinity`` exist so tests can simulate one."""
    root = Path(root)
    if affinity is None:
        affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            list(range(os.cpu_count() or 1))
    affinity = sorted(affinity)
    quota = cgroup_cpu_quota(root)
    usable = len(affinity)
    if quota is not None:
        usable = max(1, min(usable, math.ceil(quota - 1e-9)))
    ids = _core_ids(root, affinity)
    node_of = _node_of(root)
    if len(ids) == len(affinity):
        physical = max(1, len(set(ids.values())))
        sockets = max(1, len({package for package, _ in ids.values()}))
    else:  # without topology files, one core per CPU
        physical, sockets = len(affinity), 1
    return Machine(
        visible_cpus=_visible(root, affinity),
        affinity=tuple(affinity),
        cpu_quota=round(quota, 3) if quota is not None else None,
        usable_cpus=usable,
        physical_cores=min(physical, usable),
        sockets=sockets,
        numa_nodes=max(1, len({node_of[c] for c in affinity if c in node_of})),
        cpu_model=_cpu_model(root),
        arch=platform.machine(),
        hostname=socket.gethostname(),
        python=platform.python_version(),
        memory_bytes=_memory_bytes(),
        extra={"cpu_cores": _core_groups(affinity, ids, node_of),
               "allocators": find_allocators(root),
               "cpu_flags": _cpu_flags(root)},
    )


def _visible(root: Path, affinity: list[int]) -> int:
    """What ``os.cpu_count()`` reports: the online CPUs, whatever this process may use."""
    if root == Path("/") and os.cpu_count():
        return int(os.cpu_count())  # type: ignore[arg-type]
    online = _read(root / "sys/devices/system/cpu/online")
    return len(parse_cpus(online)) if online else len(affinity)


# -- the installed TensorFlow ---------------------------------------------------------------------

TF_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-aarch64",
                    "intel-tensorflow", "tf-nightly", "tf-nightly-cpu", "tensorflow-macos")


def installed_tf_version() -> str | None:
    """TensorFlow's version from package metadata, without importing it (that takes seconds)."""
    from importlib import metadata

    for name in TF_DISTRIBUTIONS:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


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


# -- allocators -----------------------------------------------------------------------------------

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


# -- pinning --------------------------------------------------------------------------------------

def type_id(fingerprint: dict[str, Any]) -> str:
    """A machine type's short name: a hash of its fingerprint (:meth:`Machine.fingerprint`)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
