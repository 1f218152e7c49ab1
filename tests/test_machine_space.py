"""Machine detection on simulated machines (affinity, cgroup quotas, topology) and the search
space bounded by it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tuner import host, settings, space
from tuner.errors import ConfigError


def fake_machine(root: Path, *, cpus: int, threads_per_core: int = 1, sockets: int = 1,
                 cgroup: str = "0::/\n", files: dict[str, str] | None = None) -> Path:
    """A /proc and /sys tree for a machine with ``cpus`` logical CPUs."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    (root / "proc/cpuinfo").write_text("".join(f"processor\t: {i}\nmodel name\t: Fake CPU 9000\n\n"
                                               for i in range(cpus)))
    (root / "sys/devices/system/cpu").mkdir(parents=True)
    (root / "sys/devices/system/cpu/online").write_text(f"0-{cpus - 1}\n")
    per_socket = cpus // sockets
    for cpu in range(cpus):
        topo = root / f"sys/devices/system/cpu/cpu{cpu}/topology"
        topo.mkdir(parents=True)
        socket = cpu // per_socket
        topo.joinpath("physical_package_id").write_text(f"{socket}\n")
        topo.joinpath("core_id").write_text(f"{(cpu % per_socket) // threads_per_core}\n")
    for node in range(sockets):
        d = root / f"sys/devices/system/node/node{node}"
        d.mkdir(parents=True)
        d.joinpath("cpulist").write_text(f"{node * per_socket}-{(node + 1) * per_socket - 1}\n")
    for rel, text in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


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


def test_expert_rule_follows_the_machine(tmp_path):
    root = fake_machine(tmp_path, cpus=16, threads_per_core=2, sockets=2)
    rule = space.expert_settings(host.detect(root, affinity=list(range(16))))
    assert rule["intra_op_parallelism_threads"] == 8
    assert rule["inter_op_parallelism_threads"] == 2
    single = space.expert_settings(host.detect(root, affinity=[0, 1, 2, 3]))
    assert single["inter_op_parallelism_threads"] == 2


@pytest.mark.parametrize("cpus,affinity,cgroup_files,usable", [
    (2, [0, 1], {}, 2),
    (64, list(range(64)), {"sys/fs/cgroup/cpu.max": "400000 100000\n"}, 4),
    (16, list(range(16)), {}, 16),
    (16, [3], {}, 1),
])
def test_space_is_bounded_by_usable_cpus_and_measures_oversubscription(tmp_path, cpus, affinity,
                                                                        cgroup_files, usable):
    root = fake_machine(tmp_path, cpus=cpus, files=cgroup_files)
    m = host.detect(root, affinity=affinity)
    assert m.usable_cpus == usable
    s = space.build_space(m, {})
    intra = s.searched["intra_op_parallelism_threads"]
    assert 0 in intra                       # TensorFlow's default is the baseline
    assert max(intra) == 2 * usable          # oversubscription is measured, not assumed
    assert usable in intra and 1 in intra
    assert max(s.searched["inter_op_parallelism_threads"]) <= 2 * usable
    assert max(v for v in s.searched["tf_data.private_threadpool_size"] if v) == 2 * usable
    assert None in s.searched["tf_data.private_threadpool_size"]


def test_space_overrides_fix_narrow_and_remove(tmp_path):
    m = host.detect(fake_machine(tmp_path, cpus=8), affinity=list(range(8)))
    s = space.build_space(m, {"intra_op_parallelism_threads": [4, 6],
                              "inter_op_parallelism_threads": 2,
                              "tf_data.private_threadpool_size": "default",
                              "env.TF_ENABLE_ONEDNN_OPTS": "0"})
    # narrowed, but the defaults (0) and the expert rule (8) stay reachable
    assert s.searched["intra_op_parallelism_threads"] == [0, 4, 6, 8]
    assert s.fixed["inter_op_parallelism_threads"] == 2
    assert s.fixed["tf_data.private_threadpool_size"] is None
    assert s.fixed["env.TF_ENABLE_ONEDNN_OPTS"] == "0"
    assert "inter_op_parallelism_threads" not in s.searched
    settings = s.settings({"intra_op_parallelism_threads": 4})
    assert settings["inter_op_parallelism_threads"] == 2
    assert settings["env.TF_ENABLE_ONEDNN_OPTS"] == "0"


def test_onednn_candidates_follow_the_builds_default(tmp_path):
    m = host.detect(fake_machine(tmp_path, cpus=2), affinity=[0, 1])
    assert space.build_space(m.with_tensorflow("2.21.0", True), {}).searched[
        "env.TF_ENABLE_ONEDNN_OPTS"] == [None, "0"]
    assert space.build_space(m.with_tensorflow("2.21.0", False), {}).searched[
        "env.TF_ENABLE_ONEDNN_OPTS"] == [None, "1"]


def test_unknown_knob_is_a_config_error(tmp_path):
    m = host.detect(fake_machine(tmp_path, cpus=2), affinity=[0, 1])
    with pytest.raises(ConfigError, match="space.threads: unknown knob"):
        space.build_space(m, {"threads": 3})


def test_settings_nest_and_flatten_round_trip():
    flat = space.default_settings()
    flat.update({"intra_op_parallelism_threads": 3, "tf_data.private_threadpool_size": 2,
                 "env.TF_ENABLE_ONEDNN_OPTS": "0"})
    nested = settings.nest(flat)
    assert nested == {"intra_op_parallelism_threads": 3, "inter_op_parallelism_threads": 0,
                      "tf_data": {"private_threadpool_size": 2, "max_intra_op_parallelism": None},
                      "env": {"TF_ENABLE_ONEDNN_OPTS": "0"}, "allocator": "system",
                      "cpus": None, "instances": {"count": 1, "cpus": None}}
    assert settings.flatten(nested) == flat


def _sixteen(tmp_path):
    """2 sockets (= NUMA nodes) x 4 cores x 2 hyperthreads; siblings are adjacent CPU numbers."""
    root = fake_machine(tmp_path, cpus=16, threads_per_core=2, sockets=2,
                        files={"usr/lib/x86_64-linux-gnu/libjemalloc.so.2": ""})
    return host.detect(root, affinity=list(range(16)))


def test_pinning_order_is_physical_cores_first_one_numa_node_first(tmp_path):
    m = _sixteen(tmp_path)
    assert m.physical_cores == 8 and m.numa_nodes == 2
    assert host.pinned_order(m) == [0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15]
    assert host.cpu_set(m, 4) == [0, 2, 4, 6]          # one thread of each node-0 core
    assert host.cpu_set(m, 8) == list(range(8))        # node 0, siblings included
    assert host.cpu_set(m, None) is None


def test_instances_get_disjoint_whole_cores(tmp_path):
    m = _sixteen(tmp_path)
    assert host.instance_sets(m, 2) == [list(range(8)), list(range(8, 16))]
    assert host.instance_sets(m, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11],
                                             [12, 13, 14, 15]]
    assert host.instance_sets(m, 2, cpus=8) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    sixteen = host.instance_sets(m, 16)
    assert sorted(c for s in sixteen for c in s) == list(range(16))
    assert all(len(s) == 1 for s in sixteen)
    nested = settings.nest(dict(space.default_settings(), instances=2), m)
    assert nested["instances"] == {"count": 2, "cpus": [list(range(8)), list(range(8, 16))]}
    assert settings.flatten(nested)["instances"] == 2


def test_process_knobs_offered_where_they_apply(tmp_path):
    m = _sixteen(tmp_path)
    assert m.allocators == {"jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}
    s = space.build_space(m, {}, mode="predict")
    assert s.searched["allocator"] == ["jemalloc", "system"]
    assert s.searched["cpus"] == [None, 8]      # one thread per core, or one node
    assert s.searched["instances"] == [1, 2, 4, 8, 16]
    assert not any(name.startswith(("env.OMP", "env.KMP")) for name in s.searched)
    train = space.build_space(m, {}, mode="train")
    assert "instances" not in train.searched and train.fixed["instances"] == 1


@pytest.mark.parametrize("override, mode, message", [
    ({"allocator": "tcmalloc"}, "predict", "'tcmalloc' is not installed on this machine"),
    ({"instances": [1, 2]}, "train", "applies to workload modes predict, data only"),
    ({"env.OMP_NUM_THREADS": "4"}, "predict", "does not use OpenMP"),
    ({"cpus": 32}, "predict", "32 CPUs asked for, but this process may run on 16"),
])
def test_unavailable_process_knobs_are_config_errors(tmp_path, override, mode, message):
    m = _sixteen(tmp_path).with_tensorflow("2.21.0", True, openmp=False)
    with pytest.raises(ConfigError, match=message):
        space.build_space(m, override, mode=mode)


def test_openmp_knobs_appear_on_openmp_builds(tmp_path):
    m = _sixteen(tmp_path).with_tensorflow("2.21.0", True, openmp=True)
    s = space.build_space(m, {}, mode="predict")
    assert {"env.OMP_NUM_THREADS", "env.KMP_BLOCKTIME", "env.KMP_AFFINITY"} <= set(s.searched)


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
    import subprocess

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
