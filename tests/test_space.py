"""The search space: bounded by the machine, narrowed by the config, shaped by what the
preflight learnt (tf.data options, the pipeline, declared knobs)."""

from __future__ import annotations

import pytest
from helpers import fake_machine, plain_machine, sixteen_cpus

from tuner import knobs
from tuner.base import host
from tuner.errors import ConfigError
from tuner.knobs import space

ALL_OPTIONS = space.Pipeline(options=tuple(k.name for k in knobs.TF_DATA if k.optional),
                             algorithms=knobs.AUTOTUNE_ALGORITHMS)



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


def test_process_knobs_offered_where_they_apply(tmp_path):
    m = sixteen_cpus(tmp_path)
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
    m = sixteen_cpus(tmp_path).with_tensorflow("2.21.0", True, openmp=False)
    with pytest.raises(ConfigError, match=message):
        space.build_space(m, override, mode=mode)


def test_openmp_knobs_appear_on_openmp_builds(tmp_path):
    m = sixteen_cpus(tmp_path).with_tensorflow("2.21.0", True, openmp=True)
    s = space.build_space(m, {}, mode="predict")
    assert {"env.OMP_NUM_THREADS", "env.KMP_BLOCKTIME", "env.KMP_AFFINITY"} <= set(s.searched)

# -- tf.data options and declared knobs ------------------------------------------------------------


def test_optional_tf_data_options_are_hidden_when_tensorflow_lacks_them():
    s = space.build_space(plain_machine(), {}, pipeline=space.Pipeline(options=()))
    assert not any(k.name in s.searched for k in knobs.TF_DATA if k.optional)
    unknown = space.build_space(plain_machine(), {})  # nothing reported: not searched either
    assert unknown.searched.keys() == s.searched.keys()


def test_default_candidates_follow_the_pipeline():
    m = plain_machine()
    every = space.build_space(m, {}, pipeline=ALL_OPTIONS)  # pipeline unknown: all may apply
    for name in ("tf_data.autotune.enabled", "tf_data.optimization.map_parallelization",
                 "tf_data.optimization.inject_prefetch", "tf_data.optimization.parallel_batch"):
        assert every.searched[name] == [None, False]
    for name in ("tf_data.autotune.cpu_budget", "tf_data.autotune.ram_budget",
                 "tf_data.autotune.autotune_algorithm", "tf_data.autotune.min_parallelism"):
        assert every.fixed[name] is None  # only when the config lists them
    ended = space.build_space(m, {}, pipeline=space.Pipeline(
        options=ALL_OPTIONS.options, ops=("TensorSlice", "ParallelMap", "Batch", "Prefetch")))
    assert "tf_data.autotune.enabled" in ended.searched
    assert "tf_data.optimization.parallel_batch" in ended.searched
    assert "tf_data.optimization.map_parallelization" not in ended.searched  # no sequential map
    assert "tf_data.optimization.inject_prefetch" not in ended.searched      # ends in a prefetch
    sequential = space.build_space(m, {}, pipeline=space.Pipeline(
        options=ALL_OPTIONS.options, ops=("Range", "Map")))
    assert "tf_data.optimization.map_parallelization" in sequential.searched
    assert "tf_data.optimization.inject_prefetch" in sequential.searched
    assert "tf_data.optimization.parallel_batch" not in sequential.searched


def test_listed_options_are_checked_against_the_installed_tensorflow():
    m = plain_machine()
    s = space.build_space(m, {"tf_data.autotune.cpu_budget": [1, 2],
                              "tf_data.autotune.autotune_algorithm": ["HILL_CLIMB"]},
                          pipeline=ALL_OPTIONS)
    assert s.searched["tf_data.autotune.cpu_budget"] == [None, 1, 2]
    assert s.searched["tf_data.autotune.autotune_algorithm"] == [None, "HILL_CLIMB"]
    with pytest.raises(ConfigError, match=r"space.tf_data.autotune.min_parallelism: the installed "
                                          r"TensorFlow \(2.21.0\) has no tf.data.Options\(\)"
                                          r".autotune.min_parallelism; remove it"):
        space.build_space(m, {"tf_data.autotune.min_parallelism": [2]},
                          pipeline=space.Pipeline(options=("tf_data.autotune.enabled",)))
    with pytest.raises(ConfigError, match="'STAGE_BASED' is not an autotune algorithm of the "
                                          "installed TensorFlow; allowed: DEFAULT, HILL_CLIMB"):
        space.build_space(m, {"tf_data.autotune.autotune_algorithm": "STAGE_BASED"},
                          pipeline=space.Pipeline(options=ALL_OPTIONS.options,
                                                  algorithms=("DEFAULT", "HILL_CLIMB")))


def test_declared_knobs_are_searched_with_their_baseline_in():
    knobs = {"map_parallelism": [2, 4, "autotune"], "prefetch": [1, "autotune"],
             "cycle_length": [3]}
    s = space.build_space(plain_machine(), {}, knobs=knobs, pipeline=space.Pipeline(
        knobs={"map_parallelism": 1, "prefetch": "autotune", "cycle_length": 3}))
    # the builder's default joins the listed values (the baseline is a point of the space)
    assert s.searched["knobs.map_parallelism"] == [2, 4, "autotune", 1]
    assert s.searched["knobs.prefetch"] == [1, "autotune"]
    assert s.fixed["knobs.cycle_length"] == 3
    assert s.baseline()["knobs.map_parallelism"] == 1
    assert s.expert(plain_machine())["knobs.prefetch"] == "autotune"
    assert s.expert(plain_machine())["intra_op_parallelism_threads"] == 2
    # no default reported: the first listed value is the baseline
    assert space.build_space(plain_machine(), {},
                             knobs=knobs).baseline()["knobs.map_parallelism"] == 2
    # 1 and True are different values for a builder
    flags = space.build_space(plain_machine(), {}, knobs={"flag": [1]},
                              pipeline=space.Pipeline(knobs={"flag": True}))
    assert flags.searched["knobs.flag"] == [1, True]
