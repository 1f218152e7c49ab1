"""What CPUs this process can really use, and the machine fingerprint results carry.

``os.cpu_count()`` is the wrong answer in a container or under ``taskset``: the process may run on
fewer CPUs (affinity) or get less CPU time (a cgroup quota) than the host shows. TensorFlow sizes
its thread pools from the affinity mask alone, so a container limited to 2 CPUs on a 64-core host
starts 64 threads. Everything here reads plain files so tests can point ``root`` at a simulated
machine.
"""

from __future__ import annotations

import math
import os
import platform
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import placement

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


def parse_cpulist(text: str) -> list[int]:
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


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


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


def _cpu_model(root: Path) -> str:
    text = _read(root / "proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model", "uarch"):
            return value.strip()
    return platform.processor() or "unknown"


def _topology(root: Path, cpus: list[int]) -> tuple[int, int]:
    """(physical cores, sockets) among ``cpus``, from sysfs; falls back to one core per CPU."""
    cores: set[tuple[str, str]] = set()
    packages: set[str] = set()
    for cpu in cpus:
        topo = root / f"sys/devices/system/cpu/cpu{cpu}/topology"
        package = (_read(topo / "physical_package_id") or "").strip()
        core = (_read(topo / "core_id") or "").strip()
        if not package or not core:
            return len(cpus), 1
        cores.add((package, core))
        packages.add(package)
    return max(1, len(cores)), max(1, len(packages))


def _numa_nodes(root: Path, cpus: list[int]) -> int:
    nodes = 0
    wanted = set(cpus)
    for node in sorted((root / "sys/devices/system/node").glob("node[0-9]*")):
        listed = _read(node / "cpulist")
        if listed and wanted & set(parse_cpulist(listed)):
            nodes += 1
    return max(1, nodes)


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
    physical, sockets = _topology(root, affinity)
    return Machine(
        visible_cpus=_visible(root, affinity),
        affinity=tuple(affinity),
        cpu_quota=round(quota, 3) if quota is not None else None,
        usable_cpus=usable,
        physical_cores=min(physical, usable),
        sockets=sockets,
        numa_nodes=_numa_nodes(root, affinity),
        cpu_model=_cpu_model(root),
        arch=platform.machine(),
        hostname=socket.gethostname(),
        python=platform.python_version(),
        memory_bytes=_memory_bytes(),
        extra={"cpu_cores": placement.cores(root, affinity),
               "allocators": placement.find_allocators(root)},
    )


def _visible(root: Path, affinity: list[int]) -> int:
    """What ``os.cpu_count()`` reports: the online CPUs, whatever this process may use."""
    if root == Path("/") and os.cpu_count():
        return int(os.cpu_count())  # type: ignore[arg-type]
    online = _read(root / "sys/devices/system/cpu/online")
    return len(parse_cpulist(online)) if online else len(affinity)


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
