"""``python -m tuner diagnose``: the report's logic on simulated machines and a fake worker (fast),
then real TensorFlow on an input-bound and a compute-bound workload and under ``taskset``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import copy_workloads, fake_machine, fake_worker_command

from tuner import cli, config, knobs
from tuner.base import host
from tuner.child import protocol
from tuner.diagnose import run as diagnose
from tuner.diagnose import text as diagnose_text

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "configs"


# -- the report, from a fake child -------------------------------------------------------------

@pytest.fixture
def workload_config(tmp_path, write_config):
    return config.load(write_config())


def test_a_quota_read_from_cgroup_files_is_honoured(tmp_path, fake_worker, workload_config,
                                                     monkeypatch):
    """A 16-CPU machine whose cgroup allows 2 CPUs: TensorFlow sizes its pools from the affinity
    mask (16), the report uses the quota, names the oversubscription and the throttling."""
    root = fake_machine(tmp_path / "machine", cpus=16, cgroup="0::/kubepods/pod1\n", files={
        "sys/fs/cgroup/kubepods/pod1/cpu.max": "200000 100000\n",
        "sys/fs/cgroup/kubepods/pod1/cpu.stat": "nr_periods 100\nnr_throttled 5\n"
                                                "throttled_usec 100000\n"})
    monkeypatch.setenv("FAKE_THROTTLE", "40")
    report = diagnose.diagnose(workload_config, 1.0, root=root, affinity=list(range(16)),
                               worker=fake_worker_command())
    assert report["visible_cpus"] == 16
    assert report["usable_cpus"] == 2 and report["cpu_quota"] == 2.0
    assert report["threads"]["intra_op_pool"] == 16
    # 18 CPU-seconds over 10 s against a 2-CPU quota
    assert report["cpu_saturation"] == pytest.approx(0.9)
    assert report["throttling"]["nr_throttled"] == 40 and report["throttling"]["nr_periods"] == 80
    kinds = {f["kind"]: f for f in report["findings"]}
    assert set(kinds) >= {"restricted_cpus", "oversubscribed", "throttled"}
    assert kinds["oversubscribed"]["title"] == ("TensorFlow sized its pools for 16 CPUs but the "
                                                "cgroup quota allows 2 (8x oversubscribed)")
    assert "quota allows 2 CPUs' worth of time" in kinds["restricted_cpus"]["evidence"]
    assert "nr_throttled 40 of 80 periods" in kinds["throttled"]["evidence"]
    for finding in report["findings"]:
        assert finding["title"] and finding["evidence"] and finding["advice"]
    assert "python -m tuner search --config" in kinds["oversubscribed"]["advice"]
    assert report["input_bound"] is False


def _result(**overrides):
    """A diagnosis child's result on a quiet 2-CPU machine, compute-bound."""
    result = {
        "batch_size": 16, "tf_version": "2.21.0", "tf_threading": {"intra_op": 0, "inter_op": 0},
        "threads": {"main": 1, "intra_op_pool": 2, "inter_op_pool": 2, "tf_data": 3, "other": 2,
                    "total": 10, "busy_threads": 3, "cpus_by_group": {"intra_op_pool": 1.8}},
        "pipeline": {"inspected": True, "transformations": [
            {"op": "TensorSliceDataset", "functions": [], "python": []},
            {"op": "BatchDatasetV2", "functions": [], "python": []}]},
        "measured": {"seconds": 10.0, "throughput": 950.0, "windows": [950.0] * 5,
                     "input_wait": 0.02, "cpu_seconds": 19.0, "user_seconds": 18.5,
                     "system_seconds": 0.5, "per_core_busy": [0.96, 0.96]},
        "cached": {"seconds": 3.0, "throughput": 1000.0, "windows": [1000.0] * 3},
        "throttling": None,
    }
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if name:
            result[section] = {**result[section], name: value}
        else:
            result[section] = value
    return result


@pytest.fixture
def two_cpus(tmp_path):
    return host.detect(fake_machine(tmp_path / "m", cpus=2), affinity=[0, 1])


def test_nothing_wrong_is_said_in_one_finding(two_cpus):
    report = diagnose.analyse(two_cpus, _result(), config_path="my.yaml")
    assert report["input_bound"] is False
    assert [f["kind"] for f in report["findings"]] == ["ok"]
    assert "python -m tuner search --config my.yaml" in report["findings"][0]["advice"]
    assert report["usable_cpus"] == 2 and report["cpu_quota"] is None
    assert report["cpu_saturation"] == pytest.approx(0.95)


@pytest.mark.parametrize("throughput,wait,expected", [
    (790.0, 0.02, True),     # below 0.8x the cached batch
    (850.0, 0.02, False),    # a 15% gap is within this VM's process-to-process noise
    (900.0, 0.30, True),     # waiting for data 30% of the time
])
def test_input_bound_thresholds(two_cpus, throughput, wait, expected):
    report = diagnose.analyse(two_cpus, _result(measured__throughput=throughput,
                                                measured__input_wait=wait), config_path="c.yaml")
    assert report["input_bound"] is expected
    assert report["throughput"]["ratio"] == pytest.approx(throughput / 1000.0)
    assert ("input_bound" in [f["kind"] for f in report["findings"]]) is expected


def test_a_gap_in_generated_inputs_is_not_advice_on_the_users_pipeline(two_cpus):
    # a model file's inputs are tuner's own feed: the gap is named as such, with no advice to
    # cache or parallelise a pipeline the user does not have
    result = {**_result(measured__throughput=600.0), "generated_inputs": True}
    report = diagnose.analyse(two_cpus, result, config_path="c.yaml")
    kinds = {f["kind"]: f for f in report["findings"]}
    assert "input_bound" not in kinds
    gap = kinds["generated_input_gap"]
    assert "0.60x" in gap["title"] and "tuner's generated inputs" in gap["evidence"]
    assert "--data FILE.py:FUNCTION" in gap["advice"] and ".cache()" not in gap["advice"]


@pytest.mark.parametrize("rounds,expected", [
    ([0.3, 0.35, 0.32, 0.9, 0.31, 0.33], True),      # clearly below in most rounds
    ([0.94, 1.07, 0.69, 0.46, 0.47, 0.8], False),    # bursts of other work on half the rounds
])
def test_the_gap_must_hold_in_most_rounds(two_cpus, rounds, expected):
    result = _result()
    result["cached"] = {**result["cached"], "round_ratios": rounds}
    report = diagnose.analyse(two_cpus, result, config_path="c.yaml")
    assert report["throughput"]["ratio"] < 0.8
    assert report["input_bound"] is expected


def test_sequential_and_python_maps_are_named_when_input_bound(two_cpus):
    steps = [{"op": "RangeDataset", "functions": [], "python": []},
             {"op": "MapDataset", "functions": ["parse_jpeg"], "python": ["tf.numpy_function"],
              "sequential": True, "stateful": True},
             {"op": "BatchDatasetV2", "functions": [], "python": []}]
    report = diagnose.analyse(two_cpus, _result(
        measured__throughput=200.0, measured__input_wait=0.7,
        pipeline={"inspected": True, "transformations": steps}), config_path="c.yaml")
    findings = {f["kind"]: f for f in report["findings"]}
    assert report["input_bound"] is True
    assert findings["sequential_map"]["title"] == ("Sequential map(parse_jpeg): one element at "
                                                   "a time")
    assert "num_parallel_calls=tf.data.AUTOTUNE" in findings["sequential_map"]["advice"]
    assert findings["python_in_pipeline"]["title"] == ("Python in the pipeline: map(parse_jpeg) "
                                                       "calls tf.numpy_function")
    assert "no prefetch" in findings["input_bound"]["advice"]


def test_idle_cpus_and_competing_load(two_cpus):
    idle = diagnose.analyse(two_cpus, _result(measured__cpu_seconds=8.0,
                                              measured__per_core_busy=[0.45, 0.4]),
                            config_path="c.yaml")
    assert [f["kind"] for f in idle["findings"]] == ["low_saturation"]
    # the same use while other processes keep the CPUs busy: not idle, taken
    busy = diagnose.analyse(two_cpus, _result(measured__cpu_seconds=8.0,
                                              measured__per_core_busy=[0.95, 0.95]),
                            config_path="c.yaml")
    assert [f["kind"] for f in busy["findings"]] == ["competing_load"]
    assert "Other processes used 1.10 of this job's 2 CPUs" == busy["findings"][0]["title"]


def test_garbled_diagnosis_is_a_one_line_error(write_config, tmp_path, capsys, monkeypatch):
    worker = tmp_path / "garbled.py"
    worker.write_text("import json, sys\n"
                      f"json.dump({{'protocol': {protocol.PROTOCOL}, 'ok': True, "
                      "'measured': {'seconds': 0}}, open(sys.argv[2], 'w'))\n")
    monkeypatch.setenv("TUNER_WORKER", f"{sys.executable} {worker}")
    assert cli.main(["diagnose", "--config", str(write_config()), "--format", "json"]) == 1
    assert "garbled result: measured throughput None" in capsys.readouterr().err


def test_data_mode_is_the_pipeline_alone(tmp_path, two_cpus):
    path = tmp_path / "data.yaml"
    (tmp_path / "wl.py").write_text("def build_data():\n    pass\n")
    path.write_text("workload:\n  data: wl.py:build_data\n  mode: data\n")
    result = _result(cached=None)
    report = diagnose.analyse(two_cpus, result, config.load(path))
    assert report["input_bound"] is True and report["throughput"]["cached_batch"] is None
    assert [f["kind"] for f in report["findings"]] == ["ok"]
    assert "input-bound by definition" in diagnose_text.format_text(report)


def test_a_fractional_quota_is_the_capacity(tmp_path):
    m = host.detect(fake_machine(tmp_path / "m", cpus=16, cgroup="0::/a\n", files={
        "sys/fs/cgroup/a/cpu.max": "150000 100000\n"}), affinity=list(range(16)))
    report = diagnose.analyse(m, _result(threads__intra_op_pool=16, measured__cpu_seconds=15.0),
                              config_path="c.yaml")
    assert report["usable_cpus"] == 2 and report["cpu_capacity"] == 1.5
    assert report["cpu_saturation"] == pytest.approx(1.0)
    titles = [f["title"] for f in report["findings"]]
    assert ("TensorFlow sized its pools for 16 CPUs but the cgroup quota allows 1.5 "
            "(10.7x oversubscribed)") in titles


def test_affinity_restriction_is_a_finding(tmp_path):
    one = host.detect(fake_machine(tmp_path / "m", cpus=4), affinity=[2])
    result = _result(threads__intra_op_pool=1, threads__inter_op_pool=1,
                     measured__cpu_seconds=9.5, measured__per_core_busy=[0.96])
    report = diagnose.analyse(one, result, config_path="c.yaml")
    assert report["visible_cpus"] == 4 and report["usable_cpus"] == 1
    finding = report["findings"][0]
    assert finding["kind"] == "restricted_cpus"
    assert finding["title"] == "This process may use 1 of the 4 CPUs the machine shows"
    assert "affinity allows 1 (CPU 2)" in finding["evidence"]


# -- the command ---------------------------------------------------------------------------------

def test_cli_json_prints_only_json_with_the_required_keys(write_config, fake_worker, capsys):
    path = write_config()
    assert cli.main(["diagnose", "--config", str(path), "--format", "json", "--seconds", "1"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    for key in ("visible_cpus", "usable_cpus", "cpu_quota", "threads", "cpu_saturation",
                "input_bound", "findings"):
        assert key in report
    assert isinstance(report["input_bound"], bool) and 0 <= report["cpu_saturation"] <= 1
    for finding in report["findings"]:
        assert {"title", "evidence", "advice"} <= set(finding)


def test_cli_text_report(write_config, fake_worker, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_DIAG", "input")
    path = write_config()
    assert cli.main(["diagnose", "--config", str(path), "--seconds", "1"]) == 0
    out = capsys.readouterr().out
    for needle in ("CPUs", "Saturation", "Input or compute", "-> input-bound", "Findings",
                   "Sequential map(decode)",
                   "Python in the pipeline: map(decode) calls tf.py_function",
                   f"python -m tuner search --config {path}"):
        assert needle in out


@pytest.mark.parametrize("argv,needle", [
    (["--format", "yaml"], "argument --format: 'yaml' is not allowed; allowed: text, json"),
    (["--seconds", "0"], "expected seconds (a number > 0), got '0'"),
])
def test_cli_bad_flags_are_one_line_errors(write_config, capsys, argv, needle):
    code = cli.main(["diagnose", "--config", str(write_config()), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert needle in err


def test_cli_bad_config_is_a_one_line_error(write_config, capsys):
    path = write_config("workload:\n  model: wl.py:build_model\n  data: wl.py:build_data\n"
                        "  mode: fit\n")
    assert cli.main(["diagnose", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"error: {path}: workload.mode: 'fit' is not allowed; allowed: "
                           f"predict, train, data")


def test_a_crashing_child_is_a_one_line_error_exit_1(write_config, fake_worker, capsys,
                                                      monkeypatch):
    monkeypatch.setenv("FAKE_BEHAVIOUR", "crash-all")
    assert cli.main(["diagnose", "--config", str(write_config()), "--seconds", "1",
                     "--format", "json"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert "the diagnose run failed: killed by SIGABRT" in err


# -- real TensorFlow -----------------------------------------------------------------------------

def real_config(tmp_path: Path, model: str, data: str, mode: str = "predict") -> Path:
    copy_workloads(tmp_path, "tiny.py", "slow_input.py")
    path = tmp_path / "real.yaml"
    path.write_text(f"workload:\n  model: {model}\n  data: {data}\n  mode: {mode}\n")
    return path


@pytest.mark.tf
def test_real_input_bound_workload_is_diagnosed_input_bound(tmp_path):
    path = real_config(tmp_path, "slow_input.py:build_model", "slow_input.py:build_data")
    report = diagnose.diagnose(config.load(path), 3.0)
    assert report["input_bound"] is True, report["throughput"]
    assert report["throughput"]["ratio"] < 0.5 and report["input_wait"] > 0.5
    kinds = {f["kind"]: f for f in report["findings"]}
    assert "slow_preprocess" in kinds["sequential_map"]["title"]
    assert "tf.py_function" in kinds["python_in_pipeline"]["title"]
    assert report["threads"]["inter_op_pool"] >= 1 and report["threads"]["intra_op_pool"] >= 1


@pytest.mark.tf
def test_real_compute_bound_workload_is_not_input_bound(tmp_path):
    # 6 s: six rounds, so a burst of other work on a shared machine cannot swing the median
    report = diagnose.diagnose(config.load(CONFIGS / "branchy.yaml"), 6.0)
    assert report["input_bound"] is False, report["throughput"]
    assert report["throughput"]["ratio"] > 0.8
    assert "input_bound" not in [f["kind"] for f in report["findings"]]
    assert [s["op"] for s in report["pipeline"]["transformations"]] == ["TensorSliceDataset",
                                                                         "BatchDatasetV2"]


@pytest.mark.tf
@pytest.mark.skipif(not shutil.which("taskset") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs taskset and at least two CPUs")
def test_real_taskset_one_cpu_is_reported_with_a_finding(tmp_path):
    path = real_config(tmp_path, "tiny.py:build_model", "tiny.py:build_data")
    proc = subprocess.run(["taskset", "-c", "0", sys.executable, "-m", "tuner", "diagnose",
                           "--config", str(path), "--format", "json", "--seconds", "2"],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["usable_cpus"] == 1 and report["visible_cpus"] == os.cpu_count()
    assert report["affinity"] == [0]
    finding = next(f for f in report["findings"] if f["kind"] == "restricted_cpus")
    assert f"1 of the {os.cpu_count()} CPUs" in finding["title"]
    # TensorFlow follows the affinity mask: one thread in each op pool
    assert report["threads"]["intra_op_pool"] == 1 and report["threads"]["inter_op_pool"] == 1


@pytest.mark.tf
def test_real_pipeline_inspection_names_sequential_python_and_parallel_steps():
    code = textwrap.dedent("""
        import json, numpy as np, tensorflow as tf
        from tuner.child.probes import inspect_pipeline
        def stateless(x): return x * 2
        def noisy(x): return tf.cast(x, tf.float32) + tf.random.uniform(())
        def py(x): return tf.numpy_function(lambda v: v, [x], tf.int64)
        def gen():
            yield np.zeros(3, np.float32)
        off = tf.data.Options(); off.experimental_optimization.map_parallelization = False
        cases = {
            "stateless": tf.data.Dataset.range(8).map(stateless),
            "stateless_off": tf.data.Dataset.range(8).map(stateless).with_options(off),
            "random": tf.data.Dataset.range(8).map(noisy),
            "parallel_py": tf.data.Dataset.range(8).map(py, num_parallel_calls=2),
            "generator": tf.data.Dataset.from_generator(
                gen, output_signature=tf.TensorSpec((3,), tf.float32)),
        }
        print(json.dumps({k: inspect_pipeline(tf, ds)["transformations"]
                          for k, ds in cases.items()}))
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    step = {name: steps[1] if len(steps) > 1 else steps[0] for name, steps in out.items()}
    assert step["stateless"]["sequential"] is False          # TensorFlow parallelises it
    assert step["stateless_off"]["sequential"] is True
    assert step["random"]["sequential"] is True and step["random"]["functions"] == ["noisy"]
    assert step["parallel_py"]["op"] == "ParallelMapDatasetV2"
    assert step["parallel_py"]["sequential"] is False
    assert step["parallel_py"]["python"] == ["tf.numpy_function"]
    assert any(s.get("from_generator") for s in out["generator"])


@pytest.mark.parametrize("flags,mode,levers", [
    ("fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16 amx_int8", "predict",
     ["env.TF_ENABLE_ONEDNN_OPTS", "env.TF_XLA_FLAGS", "env.ONEDNN_DEFAULT_FPMATH_MODE",
      "precision.auto_mixed_precision_onednn_bfloat16", "precision.keras_policy"]),
    ("fpu sse avx2", "train", ["env.TF_ENABLE_ONEDNN_OPTS", "env.TF_XLA_FLAGS"]),
    ("fpu sse avx2", "data", []),   # nothing is computed in data mode but the pipeline
])
def test_the_compute_section_names_the_instructions_xla_onednn_and_the_levers(
        tmp_path, flags, mode, levers):
    root = fake_machine(tmp_path / "m", cpus=2)
    (root / "proc/cpuinfo").write_text(f"processor\t: 0\nmodel name\t: Fake\n"
                                       f"flags\t\t: {flags}\n\n")
    machine = host.detect(root, affinity=[0, 1])
    xla = {"flags": None, "auto_jit": None, "active": False, "available": True}
    result = _result(onednn_enabled=True, xla=xla, mode=mode)
    report = diagnose.analyse(machine, result, config_path="c.yaml")
    have = [f for f in host.COMPUTE_FLAGS if f in flags.split()]
    assert report["cpu_flags"] == have and report["xla"] == xla
    # TF_ENABLE_ONEDNN_OPTS applies in every mode, XLA only where a model computes
    assert [lv["knob"] for lv in report["compute_levers"]] == (
        levers or ["env.TF_ENABLE_ONEDNN_OPTS"])
    # the reduced-precision ones (only on a CPU with bf16) need the user's tolerance
    assert [lv["knob"] for lv in report["compute_levers"] if lv["needs_tolerance"]] == [
        k for k in levers if k.startswith(("precision.", "env.ONEDNN_DEFAULT"))]
    text = diagnose_text.format_text(report)
    assert f"CPU instructions: {' '.join(have)}" in text
    assert "in the child: oneDNN on, XLA off (TF_XLA_FLAGS unset)" in text
    assert ("env.TF_XLA_FLAGS (XLA auto-clustering" in text) == ("env.TF_XLA_FLAGS" in levers)
    on = dict(xla, flags=knobs.XLA_VALUES[1], auto_jit=2, active=True)
    assert f"XLA on (TF_XLA_FLAGS={knobs.XLA_VALUES[1]!r})" in diagnose_text.format_text(
        diagnose.analyse(machine, _result(onednn_enabled=False, xla=on), config_path="c.yaml"))
