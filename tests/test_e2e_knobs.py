"""Tuning the input pipeline with real TensorFlow: tf.data options reach the dataset (in the trial
child and through ``dataset_options()``), declared knobs reach the builders with each trial's
values and come back from the tuned file, and a builder that cannot take a knob stops the search
in the preflight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import copy_workloads, evidence, skip_without_tensorflow

from tuner import cli
from tuner.base import host
from tuner.knobs import settings, space
from tuner.search.trial import run_child

skip_without_tensorflow()
pytestmark = pytest.mark.tf

OPTIONS = {"tf_data.private_threadpool_size": 2, "tf_data.autotune.enabled": False,
           "tf_data.autotune.cpu_budget": 3, "tf_data.autotune.autotune_algorithm": "HILL_CLIMB",
           "tf_data.optimization.map_parallelization": False,
           "tf_data.optimization.inject_prefetch": False,
           "tf_data.optimization.parallel_batch": True}


@pytest.fixture
def workloads(tmp_path):
    return copy_workloads(tmp_path, "knobbed.py")


def test_options_reach_the_dataset_in_the_child_and_through_dataset_options(workloads, tmp_path):
    task = {"kind": "measure", "usable_cpus": 2, "affinity": [0, 1],
            "workload": {"model": "knobbed.py:build_model", "data": "knobbed.py:build_data",
                         "mode": "predict", "base_dir": str(workloads)},
            "measure": {"warmup_seconds": 0.1, "min_warmup_steps": 2, "window_seconds": 0.2,
                        "windows": 2}}
    result = run_child(task, timeout=60, settings={**space.default_settings(), **OPTIONS})
    in_child = result["tf_data_options"]  # read back from the dataset's own options()
    assert {k: in_child[k] for k in OPTIONS} == OPTIONS
    assert in_child["tf_data.autotune.min_parallelism"] is None  # unset stays TF's default

    tuned = tmp_path / "tuned.yaml"
    tuned.write_text(yaml.safe_dump({
        "format_version": 1, "verdict": "tuned",
        "machine": dict(host.detect().as_dict(), tf_version=host.installed_tf_version()),
        "settings": settings.nest({**space.default_settings(), **OPTIONS,
                                         "knobs.map_parallelism": "autotune",
                                         "knobs.prefetch": 2}),
        "search": {"declared_knobs": {"map_parallelism": [1, "autotune"], "prefetch": [1, 2]}},
        **evidence(), "study": {"name": "t"}}))
    code = textwrap.dedent(f"""
        import json, tuner
        cfg = tuner.apply({str(tuned)!r})
        import tensorflow as tf
        ds = tf.data.Dataset.range(4).with_options(cfg.dataset_options())
        o = ds.options()
        print(json.dumps({{"pool": o.threading.private_threadpool_size,
                           "enabled": o.autotune.enabled, "cpu": o.autotune.cpu_budget,
                           "algo": o.autotune.autotune_algorithm.name,
                           "map_par": o.experimental_optimization.map_parallelization,
                           "inject": o.experimental_optimization.inject_prefetch,
                           "batch": o.experimental_optimization.parallel_batch,
                           "knobs": cfg.knobs, "autotune": tf.data.AUTOTUNE}}))
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"pool": 2, "enabled": False, "cpu": 3, "algo": "HILL_CLIMB", "map_par": False,
                   "inject": False, "batch": True,
                   "knobs": {"map_parallelism": got["autotune"], "prefetch": 2},
                   "autotune": -1}


SEARCH = """\
workload:
  model: knobbed.py:build_model
  data: {data}
  mode: predict
search:
  n_trials: 6
  trial_timeout: 60
  sampler: tpe   # its screening of the declared knobs comes first
measure:
  warmup_seconds: 0.3
  window_seconds: 0.3
  windows: 2
validate:
  candidates: 1
  rounds: 4
  max_rounds: 4
space:
  intra_op_parallelism_threads: default
  inter_op_parallelism_threads: default
  tf_data:
    private_threadpool_size: default
    max_intra_op_parallelism: default
    autotune: {{enabled: default}}
    optimization: {{map_parallelization: default, inject_prefetch: default,
                    parallel_batch: default}}
  env: {{TF_ENABLE_ONEDNN_OPTS: default, TF_XLA_FLAGS: default}}
  allocator: default
  instances: default
  cpus: default
knobs:
{knobs}
"""


def write(workloads, data="knobbed.py:build_data",
          knobs="  map_parallelism: [2, autotune]\n  prefetch: [1]\n") -> Path:
    path = workloads / "real.yaml"
    path.write_text(SEARCH.format(data=data, knobs=knobs))
    return path


def test_declared_knobs_reach_the_builders_and_round_trip(workloads, capsys, monkeypatch):
    record = workloads / "record.jsonl"
    monkeypatch.setenv("KNOB_RECORD", str(record))
    code = cli.main(["search", "--config", str(write(workloads))])
    err = capsys.readouterr().err   # the preflight's progress lines
    assert code == 0, err
    assert "knob map_parallelism: to build_data and build_model; baseline 1 (builder default)" \
        in err
    assert "pipeline: TensorSlice -> ParallelMap -> Batch" in err
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    data_calls = [(c["map_parallelism"], c["prefetch"]) for c in calls if c["builder"] == "data"]
    # preflight and baseline: the pipeline as written (its defaults, 1 and None) ...
    assert data_calls[0] == (1, None) and data_calls[1] == (1, None)
    # ... then each listed value once (the declared knobs are screened first), autotune
    # arriving as tf.data.AUTOTUNE
    assert data_calls[3:6] == [(2, None), (-1, None), (1, 1)]
    model_calls = [c for c in calls if c["builder"] == "model"]  # **kwargs: it gets them too
    assert len(model_calls) == len(data_calls)
    trials = optuna.load_study(study_name="real", storage="sqlite:///results/real.db").trials
    assert [t.params["knobs.map_parallelism"] for t in trials[:5]] == [1, 1, 2, "autotune", 1]
    for t in trials:  # what the child says its builders got (pruned trials have no result)
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.user_attrs["knobs"] == {"map_parallelism": t.params["knobs.map_parallelism"],
                                             "prefetch": t.params["knobs.prefetch"]}
    doc = yaml.safe_load(open("results/real/tuned.yaml"))
    chosen = doc["settings"]["knobs"]
    if doc["verdict"] == "tuned":  # the validated winner's values, as its trial searched them
        winner = next(t for t in trials if t.number == doc["validation"]["winner"]["trial"])
        assert chosen == {"map_parallelism": winner.params["knobs.map_parallelism"],
                          "prefetch": winner.params["knobs.prefetch"]}
    else:
        assert doc["verdict"] == "defaults"
        assert chosen == {"map_parallelism": 1, "prefetch": None}  # the pipeline as written
    assert doc["search"]["space"]["searched"] == {"knobs.map_parallelism": [2, "autotune", 1],
                                                  "knobs.prefetch": [1, None]}


@pytest.mark.parametrize("data,knobs,needles", [
    ("knobbed.py:build_data_fixed", "  cycle_length: [1, 2]\n",
     ["knobs.cycle_length: declared, but", ("knobbed.py:build_data_fixed nor "
      "knobbed.py:build_model accepts no argument 'cycle_length'")]),
    ("knobbed.py:build_data_needs", "  map_parallelism: [2]\n",
     [("workload.data: knobbed.py:build_data_needs has a required argument 'cycle_length' that "
      "is not a declared knob")]),
])
def test_a_builder_that_cannot_take_the_knobs_is_one_line_exit_2(
        workloads, search_fails_in_preflight, data, knobs, needles):
    # build_model takes **kwargs, so only the data builder can be at fault
    path = write(workloads, data=data, knobs=knobs)
    if "cycle_length" in knobs:
        path.write_text(path.read_text().replace("knobbed.py:build_model",
                                                 "knobbed.py:build_model_plain"))
        needles = [n.replace("build_model", "build_model_plain") for n in needles]
    search_fails_in_preflight(path, needles)
