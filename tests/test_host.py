"""Host facts on simulated machines (affinity, cgroup quotas and throttling, topology, the
pinning order) and on this one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import fake_machine, sixteen_cpus

from tuner.base import cpusets, host
from tuner.knobs import settings, space


def test_affinity_limits_usable_cpus(tmp_path):
    root = fake_machine(tmp_path, cpus=16)
    m = host.detect(root, affinity=[0])
    assert m.visible_cpus == 16
    assert m.usable_cpus == 1
    assert m.physical_cores == 1
    assert m.cpu_model == "Fake CPU 9000"


@pytest.mark.parametrize("cpus,cgroup,files,quota,usable", [
    pytest.param(64, "0::/kubepods/pod1\n", {
        "sys/fs/cgroup/kubepods/pod1/cpu.max": "200000 100000\n",
        "sys/fs/cgroup/kubepods/cpu.max": "max 100000\n"}, 2.0, 2, id="v2"),
    # a limit on an ancestor applies; a fractional quota still lets two threads run part-time
    pytest.param(8, "0::/a/b\n", {
        "sys/fs/cgroup/a/cpu.max": "150000 100000\n",
        "sys/fs/cgroup/a/b/cpu.max": "max 100000\n"}, 1.5, 2, id="v2-ancestor"),
    pytest.param(8, "4:cpu,cpuacct:/docker/abc\n", {
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000\n",
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"}, 3.0, 3, id="v1"),
    pytest.param(4, "4:cpu,cpuacct:/\n", {
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, None, 4, id="v1-unlimited"),
])
def test_cgroup_quota_limits_usable_cpus(tmp_path, cpus, cgroup, files, quota, usable):
    root = fake_machine(tmp_path, cpus=cpus, cgroup=cgroup, files=files)
    m = host.detect(root, affinity=list(range(cpus)))
    assert m.cpu_quota == quota
    assert m.usable_cpus == usable
    assert m.visible_cpus == cpus


def test_hyperthreads_and_sockets(tmp_path):
    root = fake_machine(tmp_path, cpus=16, threads_per_core=2, sockets=2)
    m = host.detect(root, affinity=list(range(16)))
    assert m.physical_cores == 8
    assert m.sockets == 2
    assert m.numa_nodes == 2
    one_socket = host.detect(root, affinity=list(range(8)))
    assert one_socket.sockets == 1 and one_socket.numa_nodes == 1 and one_socket.physical_cores == 4


def test_pinning_order_is_physical_cores_first_one_numa_node_first(tmp_path):
    m = sixteen_cpus(tmp_path)
    assert m.physical_cores == 8 and m.numa_nodes == 2
    assert cpusets.pinned_order(m) == [0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15]
    assert cpusets.cpu_set(m, 4) == [0, 2, 4, 6]          # one thread of each node-0 core
    assert cpusets.cpu_set(m, 8) == list(range(8))        # node 0, siblings included
    assert cpusets.cpu_set(m, None) is None


def test_instances_get_disjoint_whole_cores(tmp_path):
    m = sixteen_cpus(tmp_path)
    assert cpusets.instance_sets(m, 2) == [list(range(8)), list(range(8, 16))]
    assert cpusets.instance_sets(m, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11],
                                             [12, 13, 14, 15]]
    assert cpusets.instance_sets(m, 2, cpus=8) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    sixteen = cpusets.instance_sets(m, 16)
    assert sorted(c for s in sixteen for c in s) == list(range(16))
    assert all(len(s) == 1 for s in sixteen)
    nested = settings.nest(dict(space.default_settings(), instances=2), m)
    assert nested["instances"] == {"count": 2, "cpus": [list(range(8)), list(range(8, 16))]}
    assert settings.flatten(nested)["instances"] == 2


def test_fingerprint_differences_name_each_field():
    a = {"arch": "x86_64", "cpu_model": "A", "usable_cpus": 2, "physical_cores": 2, "sockets": 1,
         "tf_version": "2.20.0"}
    b = dict(a, usable_cpus=4, tf_version="2.21.0")
    diffs = host.fingerprint_differences(a, b)
    assert diffs == ["usable_cpus: 2 vs 4", "tf_version: '2.20.0' vs '2.21.0'"]


def test_real_machine_detection_is_consistent():
    m = host.detect()
    assert 1 <= m.usable_cpus <= m.visible_cpus
    assert 1 <= m.physical_cores <= m.usable_cpus
    assert m.affinity == tuple(sorted(os.sched_getaffinity(0)))
    assert len(m.affinity) <= m.visible_cpus
    online = Path("/sys/devices/system/cpu/online")
    if online.exists():  # the CPUs this process may run on are online ones
        assert set(m.affinity) <= set(host.parse_cpus(online.read_text()))


def test_openmp_is_read_from_what_tensorflow_links(tmp_path):
    import shutil

    if shutil.which("gcc") is None or shutil.which("ldd") is None:
        pytest.skip("needs gcc and ldd")
    (tmp_path / "x.c").write_text("int f(void) { return 1; }\n")
    for name, flags in (("omp", ["-fopenmp"]), ("plain", [])):
        (tmp_path / name).mkdir()
        subprocess.run(["gcc", "-shared", "-fPIC", *flags, "-o",
                        str(tmp_path / name / "libtensorflow_framework.so.2"),
                        str(tmp_path / "x.c"),
                        *(["-Wl,--no-as-needed", "-lgomp"] if flags else [])], check=True)
    assert host.tf_uses_openmp(tmp_path / "omp") is True
    assert host.tf_uses_openmp(tmp_path / "plain") is False
    assert host.tf_uses_openmp(tmp_path / "nothing-here") is None

# -- cgroup throttling counters --------------------------------------------------------------------


def test_throttling_counters_v2_come_from_the_cgroup_with_the_quota(tmp_path):
    root = fake_machine(tmp_path, cpus=8, cgroup="0::/pod/ctr\n", files={
        "sys/fs/cgroup/pod/cpu.max": "200000 100000\n",
        "sys/fs/cgroup/pod/cpu.stat": "usage_usec 9\nnr_periods 40\nnr_throttled 12\n"
                                      "throttled_usec 1500000\n",
        "sys/fs/cgroup/pod/ctr/cpu.max": "max 100000\n",
        "sys/fs/cgroup/pod/ctr/cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n"})
    stats = host.cpu_throttling(root)
    assert stats == {"cgroup": "/sys/fs/cgroup/pod", "quota_cpus": 2.0, "nr_periods": 40,
                     "nr_throttled": 12, "throttled_seconds": 1.5}


def test_throttling_counters_v1_are_in_nanoseconds(tmp_path):
    root = fake_machine(tmp_path, cpus=4, cgroup="4:cpu,cpuacct:/docker/abc\n", files={
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "150000\n",
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.stat": "nr_periods 10\nnr_throttled 3\n"
                                                         "throttled_time 250000000\n"})
    stats = host.cpu_throttling(root)
    assert stats["nr_throttled"] == 3 and stats["throttled_seconds"] == 0.25
    assert stats["quota_cpus"] == 1.5


def test_no_quota_no_throttling_counters(tmp_path):
    root = fake_machine(tmp_path, cpus=4, files={
        "sys/fs/cgroup/cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n"})
    assert host.cpu_throttling(root) is None
