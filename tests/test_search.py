"""The whole ``search`` with the fake worker: preflight -> study -> validation -> verdict -> tuned
file, its exit codes, and what reaches the trials and the file."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import KNOB_STUDY, assert_one_error_line, run_search

from tuner import cli
from tuner.errors import StudyError, StudyMismatchError
from tuner.tuned.reader import check_settings, read

SMALL_SPACE = """\
space:
  intra_op_parallelism_threads: [1, 2, 3]
  inter_op_parallelism_threads: [1, 2]
  tf_data: {private_threadpool_size: default, max_intra_op_parallelism: default}
  env: {TF_ENABLE_ONEDNN_OPTS: default, TF_XLA_FLAGS: default}
  allocator: default
  instances: default
"""


def test_search_finds_the_known_optimum_and_validates_it(fake_worker, write_config, tmp_path):
    # 4 x 3 points (TF's default 0 joins each list) and the two reference trials fit 14 trials:
    # the grid sampler sees them all, so the optimum is found whatever the noise does
    path = write_config()
    path.write_text(path.read_text().replace("n_trials: 8", "n_trials: 14") + SMALL_SPACE)
    outcome = run_search(path)
    doc = yaml.safe_load(open(outcome.tuned_path))
    assert doc["format_version"] == 2
    assert doc["verdict"] == "tuned"
    # the accuracy guard ran in every process: without a tolerance, float noise is the limit
    assert doc["result"]["accuracy"]["tolerance"] is None
    assert doc["result"]["accuracy"]["metric"] == "rel_l2"
    assert doc["result"]["accuracy"]["deviation"] == 0.0
    # the fake peaks at intra=2, inter=1: 1.3x the defaults
    assert doc["settings"]["intra_op_parallelism_threads"] == 2
    assert doc["settings"]["inter_op_parallelism_threads"] == 1
    assert set(doc["settings"]["tf_data"]) == {"private_threadpool_size",
                                               "max_intra_op_parallelism"}
    assert isinstance(doc["settings"]["env"], dict)
    result = doc["result"]
    assert result["speedup"] == pytest.approx(1.3, rel=0.05)
    lo, hi = result["speedup_ci95"]
    assert lo <= result["speedup"] <= hi and lo > 1
    assert result["significant"] and result["p_value"] < 0.05
    assert result["throughput"]["unit"] == "samples/s"
    assert len(result["throughput"]["ci95"]) == 2
    assert result["baseline_throughput"]["median"] == pytest.approx(1000, rel=0.05)
    assert 0 <= result["cpu_saturation"] <= 1
    assert doc["machine"]["tf_version"] == "fake-1.0"
    assert doc["search"]["sampler"] == "grid"
    assert doc["study"] == {"name": "study", "storage": "sqlite:///results/study.db",
                            "n_trials": 14, "complete": doc["study"]["complete"],
                            "pruned": doc["study"]["pruned"], "fail": 0,
                            "hosts": [socket.gethostname()]}
    assert len(doc["validation"]["winner"]["throughput"]["per_process"]) == 4  # FAST's rounds
    text = open(outcome.tuned_path).read()
    assert text.startswith("# Tuned TensorFlow CPU configuration")
    assert "&id" not in text  # plain YAML, no anchors


def test_all_trials_failing_exits_non_zero_with_the_most_common_reason(fake_worker, write_config,
                                                                        monkeypatch, capsys):
    monkeypatch.setenv("FAKE_BEHAVIOUR", "crash-all")
    path = write_config()
    # the preflight crashes too: that is a workload error (exit 2) naming the signal
    code = cli.main(["search", "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and "preflight failed: killed by SIGABRT" in err
    assert_one_error_line(code, err, "preflight failed: killed by SIGABRT")


def test_every_trial_failing_exits_1_with_the_most_common_reason(fake_worker, write_config,
                                                                 monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("FAKE_BEHAVIOUR", "crash-measure")
    path = write_config()
    code = cli.main(["search", "--config", str(path), "--n-trials", "4"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines()[-1] == ("error: all 4 trials failed; most common reason "
                                            "(4x): killed by SIGABRT")
    assert_one_error_line(code, err, exit_code=1)
    assert not (tmp_path / "results" / "study").exists()  # no tuned file from nothing


def test_timeout_too_small_for_validation_is_refused(fake_worker, write_config):
    with pytest.raises(StudyError, match="--timeout"):
        run_search(write_config(), timeout=0.001)


def test_another_studys_tuned_file_is_not_overwritten_without_force(fake_worker, write_config,
                                                                    tmp_path):
    path = write_config()
    first = run_search(path, n_trials=3)
    before = open(first.tuned_path).read()
    with pytest.raises(StudyMismatchError, match="--force"):
        run_search(path, n_trials=3, study_name="other", output=first.tuned_path)
    assert open(first.tuned_path).read() == before
    assert not (tmp_path / "results" / "other.db").exists()  # refused before any work
    forced = run_search(path, n_trials=3, study_name="other", output=first.tuned_path, force=True)
    assert open(forced.backup).read() == before
    assert yaml.safe_load(open(first.tuned_path))["study"]["name"] == "other"

def test_keep_backups_bounds_the_tuned_files_history(fake_worker, write_config, capsys,
                                                     tmp_path):
    path = write_config()
    for _ in range(3):
        code = cli.main(["search", "--config", str(path), "--n-trials", "1",
                         "--keep-backups", "1", "--quiet"])
        assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    history = sorted(Path("results/study").glob("tuned.yaml.*.bak"))
    assert len(history) == 1
    assert out.strip().splitlines()[-1].endswith(f"(previous file kept as {history[0]})")


# -- tf.data options and declared knobs ------------------------------------------------------------



def test_declared_knobs_reach_the_trials_and_the_tuned_file(fake_worker, write_config,
                                                            monkeypatch):
    monkeypatch.setenv("FAKE_KNOB_DEFAULTS", json.dumps({"map_parallelism": 1}))
    path = write_config(KNOB_STUDY.format(n=10, sampler="auto"))
    outcome = run_search(path)
    trials = optuna.load_study(study_name="study", storage="sqlite:///results/study.db").trials
    # the baseline is the pipeline as written: the builder's default, or the first candidate
    assert trials[0].user_attrs["role"] == "baseline"
    assert trials[0].user_attrs["knobs"] == {"map_parallelism": 1, "prefetch": 1}
    assert trials[1].user_attrs["knobs"] == {"map_parallelism": 1, "prefetch": 1}  # expert
    # every trial's child received the values Optuna chose for it
    for t in trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.user_attrs["knobs"] == {"map_parallelism": t.params["knobs.map_parallelism"],
                                             "prefetch": t.params["knobs.prefetch"]}
    assert {t.params["knobs.map_parallelism"] for t in trials} == {1, 2, 4, "autotune"}
    doc = yaml.safe_load(open(outcome.tuned_path))
    assert doc["verdict"] == "tuned"
    assert doc["settings"]["knobs"]["map_parallelism"] == "autotune"   # 1.7x in the fake
    assert doc["result"]["speedup"] == pytest.approx(1.7, rel=0.05)
    assert "  knob map_parallelism: to build_data; baseline 1 (builder default)" in outcome.lines
    winner = next(t for t in trials if t.number == doc["validation"]["winner"]["trial"])
    assert winner.params["knobs.map_parallelism"] == "autotune"
    assert read(outcome.tuned_path).doc["settings"]["knobs"] == {
        "map_parallelism": "autotune", "prefetch": winner.params["knobs.prefetch"]}
    shown = cli.main(["show", outcome.tuned_path])
    assert shown == 0


def test_tf_data_options_are_searched_and_written_nested(fake_worker, write_config, monkeypatch):
    monkeypatch.setenv("FAKE_TF_DATA", "all")
    monkeypatch.setenv("FAKE_PIPELINE", "Range,Map,Batch,Prefetch")
    path = write_config(KNOB_STUDY.format(n=6, sampler="auto").split("knobs:")[0].replace(
        "max_intra_op_parallelism: default}",
        "max_intra_op_parallelism: default, autotune: {cpu_budget: [1], enabled: [false]},"
        " optimization: {parallel_batch: default}}"))
    outcome = run_search(path)
    searched = outcome.tuned["search"]["space"]["searched"]
    assert searched == {"tf_data.autotune.enabled": [None, False],
                        "tf_data.autotune.cpu_budget": [None, 1],
                        "tf_data.optimization.map_parallelization": [None, False]}
    trials = optuna.load_study(study_name="study", storage="sqlite:///results/study.db").trials
    for t in trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            received = t.user_attrs["tf_data_options"]
            budget = "tf_data.autotune.cpu_budget"
            assert received[budget] == t.params[budget]
    best = outcome.tuned["search"]["best_trial"]["settings"]["tf_data"]
    assert set(best) >= {"private_threadpool_size", "max_intra_op_parallelism"}
    check_settings(outcome.tuned["settings"], "t.yaml")
