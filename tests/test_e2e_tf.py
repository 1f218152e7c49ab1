"""End to end with real TensorFlow in real child processes, on a tiny model. Slower (each child
imports TensorFlow, ~2.5 s), so kept to what only the real thing can show."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import copy_workloads, skip_without_tensorflow

from tuner import cli
from tuner.knobs import space
from tuner.search.trial import run_child

skip_without_tensorflow()
pytestmark = pytest.mark.tf

@pytest.fixture
def workloads(tmp_path):
    return copy_workloads(tmp_path, "tiny.py", "broken.py")


def write(tmp_path, body: str, name: str = "real.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


QUICK = """\
search:
  n_trials: {n}
  trial_timeout: {timeout}
measure:
  warmup_seconds: 0.3
  window_seconds: 0.3
  windows: 2
validate:
  candidates: 1
  rounds: 4
  max_rounds: 4
"""


def config(tmp_path, model, data, mode="predict", n=3, timeout=60, extra=""):
    return write(tmp_path, f"workload:\n  model: {model}\n  data: {data}\n  mode: {mode}\n"
                 + QUICK.format(n=n, timeout=timeout) + extra)


def test_real_search_predict_writes_a_valid_tuned_file(workloads, capsys):
    path = config(workloads, "tiny.py:build_model", "tiny.py:build_data",
                  extra="space:\n  tf_data:\n    max_intra_op_parallelism: default\n"
                        "  env:\n    TF_ENABLE_ONEDNN_OPTS: default\n    TF_XLA_FLAGS: default\n")
    code = cli.main(["search", "--config", str(path)])
    out = capsys.readouterr().out
    assert code == 0, out
    doc = yaml.safe_load(open("results/real/tuned.yaml"))
    assert doc["verdict"] in ("tuned", "defaults")
    assert doc["machine"]["tf_version"].startswith("2.")
    assert doc["workload"]["batch_size"] == 16
    assert doc["result"]["throughput"]["median"] > 0
    # all 4 final rounds, unless the futility rule stopped them after 3 (the file says so)
    rounds = doc["validation"]["rounds"]
    assert rounds == 4 or (rounds == 3 and "stopped_early" in doc["validation"]), rounds
    assert len(doc["result"]["baseline_throughput"]["per_process"]) == rounds
    assert 0 < doc["result"]["cpu_saturation"] <= 1.05
    trials = optuna.load_study(study_name="real", storage="sqlite:///results/real.db").trials
    assert trials[0].user_attrs["tf_threading"] == {"intra_op": 0, "inter_op": 0}
    expert = trials[1].user_attrs
    assert expert["tf_threading"]["intra_op"] == expert["settings"]["intra_op_parallelism_threads"]
    assert "verdict:" in out and "wrote results/real/tuned.yaml" in out


def test_real_search_train_mode(workloads, capsys):
    path = config(workloads, "tiny.py:build_trainable", "tiny.py:build_train_data", mode="train",
                  n=2)
    assert cli.main(["search", "--config", str(path)]) == 0, capsys.readouterr()
    assert yaml.safe_load(open("results/real/tuned.yaml"))["workload"]["mode"] == "train"


def test_settings_reach_the_child(workloads):
    settings = space.default_settings()
    settings.update({"intra_op_parallelism_threads": 3, "inter_op_parallelism_threads": 1,
                     "tf_data.private_threadpool_size": 2, "env.TF_ENABLE_ONEDNN_OPTS": "0"})
    task = {"kind": "measure", "usable_cpus": 2, "affinity": [0, 1],
            "workload": {"model": "tiny.py:build_model", "data": "tiny.py:build_data",
                         "mode": "predict", "base_dir": str(workloads)},
            "measure": {"warmup_seconds": 0.1, "min_warmup_steps": 2, "window_seconds": 0.2,
                        "windows": 2}}
    result = run_child(task, timeout=60, settings=settings)
    assert result["tf_threading"] == {"intra_op": 3, "inter_op": 1}
    assert len(result["windows"]) == 2 and result["step_latency_ms"]["steps"] >= 2
    assert result["threads"] > 1 and result["peak_rss_bytes"] > 10 * 2 ** 20
    for key in ("import", "build_model", "build_data", "warmup", "measure"):
        assert result["timings"][key] >= 0


def _task(workloads):
    return {"kind": "measure", "usable_cpus": 2, "affinity": [0, 1],
            "workload": {"model": "tiny.py:build_model", "data": "tiny.py:build_data",
                         "mode": "predict", "base_dir": str(workloads)},
            "measure": {"warmup_seconds": 0.1, "min_warmup_steps": 2, "window_seconds": 0.3,
                        "windows": 2}}


@pytest.mark.skipif(len(__import__("os").sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_instances_run_together_on_disjoint_cpus_with_the_preloaded_allocator(workloads):
    from tuner.base import host

    found = host.detect().allocators
    name = "tcmalloc" if "tcmalloc" in found else next(iter(found), None)
    result = run_child(_task(workloads), timeout=90, settings=space.default_settings(),
                       preload=found.get(name), instances=[[0], [1]])
    parts = result["instances"]
    assert [p["affinity"] for p in parts] == [[0], [1]]      # each pinned, disjoint
    assert result["allocator"] == (name or "system")         # the library is in the maps
    total = sum(p["throughput"] for p in parts)
    assert result["windows"][0]["throughput"] == pytest.approx(total, rel=0.5)
    assert result["step_latency_ms"]["p95"] == max(p["step_latency_ms"]["p95"] for p in parts)
    assert host.allocator_in_process() == "system"      # the parent is untouched


def test_a_cpu_set_pins_the_child(workloads):
    result = run_child(_task(workloads), timeout=60, settings=space.default_settings(), cpus=[0])
    assert result["affinity"] == [0]
    assert result["allocator"] == "system"


def test_data_mode_measures_the_pipeline_alone(workloads, capsys):
    path = write(workloads, "workload:\n  data: tiny.py:build_data\n  mode: data\n"
                 + QUICK.format(n=2, timeout=60))
    assert cli.main(["search", "--config", str(path)]) == 0, capsys.readouterr()
    doc = yaml.safe_load(open("results/real/tuned.yaml"))
    assert doc["workload"]["model"] is None and doc["result"]["throughput"]["median"] > 0


@pytest.mark.parametrize("model,data,mode,needles", [
    ("broken.py:build_raises", "tiny.py:build_data", "predict",
     ["workload.model", "broken.py:build_raises raised ValueError: no such layer: Conv9D"]),
    ("broken.py:build_aborts", "tiny.py:build_data", "predict", ["killed by SIGABRT"]),
    ("broken.py:build_list", "tiny.py:build_data", "predict",
     ["returned list, expected a Keras model"]),
    ("broken.py:build_nothing", "tiny.py:build_data", "predict",
     ["'broken.py' has no function 'build_nothing'"]),
    ("tiny.py:build_model", "broken.py:build_list", "predict",
     ["returned list, expected a tf.data.Dataset"]),
    ("broken.py:build_uncompiled", "tiny.py:build_train_data", "train",
     ["mode train needs a compiled model"]),
    ("tiny.py:build_trainable", "tiny.py:build_data", "train",
     ["mode train needs batches of (x, y)"]),
    ("tiny.py:build_model", "broken.py:build_scalars", "predict", ["must return batches"]),
])
def test_preflight_errors_are_one_line_exit_2(workloads, search_fails_in_preflight, model, data,
                                           mode, needles):
    path = config(workloads, model, data, mode=mode)
    search_fails_in_preflight(path, needles)


def test_preflight_hang_is_a_timeout_not_a_hang(workloads, capsys):
    path = config(workloads, "broken.py:build_hangs", "tiny.py:build_data", timeout=8)
    code = cli.main(["search", "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "timed out after 8 s (phase: build_model)" in err


@pytest.mark.parametrize("builder,reason", [
    ("build_model_that_crashes_when_threads_are_1", "killed by SIGABRT"),
    ("build_model_that_hangs_when_threads_are_1", "timed out after 15 s (phase: build_model)"),
    ("build_model_that_raises_when_threads_are_1",
     "RuntimeError: this workload refuses one thread"),
])
def test_trial_failures_are_recorded_and_the_study_goes_on(workloads, capsys, builder, reason):
    path = config(workloads, f"broken.py:{builder}", "tiny.py:build_data", n=3, timeout=15,
                  extra="space:\n  intra_op_parallelism_threads: 1\n"
                        "  tf_data:\n    max_intra_op_parallelism: default\n"
                        "    private_threadpool_size: default\n"
                        "  env:\n    TF_ENABLE_ONEDNN_OPTS: default\n    TF_XLA_FLAGS: default\n")
    # intra is fixed at 1 for search trials; the baseline (0) and expert (2) still work
    code = cli.main(["search", "--config", str(path)])
    assert code == 0, capsys.readouterr()
    trials = optuna.load_study(study_name="real", storage="sqlite:///results/real.db").trials
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1
    assert reason in failed[0].user_attrs["fail_reason"]
    assert trials[0].state == optuna.trial.TrialState.COMPLETE


def test_import_tuner_is_light_and_leaves_the_environment_alone():
    code = ("import os, sys; before = dict(os.environ); import tuner, tuner.cli, tuner.config; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; "
            "assert 'optuna' not in sys.modules, 'optuna imported'; "
            "assert dict(os.environ) == before, 'environment changed'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_interrupt_marks_the_trial_failed_and_writes_the_best_so_far(workloads):
    """Ctrl-C (SIGINT to the foreground group) mid-study: the running trial becomes FAIL, the
    child is gone, and a tuned file (unvalidated) is still written; the next run resumes."""
    import os
    import signal
    import time

    path = config(workloads, "tiny.py:build_model", "tiny.py:build_data", n=20)
    proc = subprocess.Popen([sys.executable, "-m", "tuner", "search", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True,
                            # as from a terminal, even when the tests run as a background job
                            # (which starts with SIGINT ignored, and Python keeps it ignored)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    seen = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if line.startswith("trial   2"):  # two finished; the third is running now
            break
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, "".join(seen) + out
    assert "interrupted" in out
    doc = yaml.safe_load(open("results/real/tuned.yaml"))
    assert doc["verdict"] == "unvalidated"
    trials = optuna.load_study(study_name="real", storage="sqlite:///results/real.db").trials
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials)
    assert any(t.user_attrs.get("fail_reason", "").startswith("interrupted") for t in trials)
    leftover = subprocess.run(["pgrep", "-f", "tuner.child.worker"], capture_output=True, text=True)
    assert str(path.parent) not in leftover.stdout
