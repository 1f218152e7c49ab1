"""The study stage with the fake worker: the reference trials, what each trial records, failures,
resume, the study-wide cap, stale and interrupted trials."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import optuna
import pytest
import sqlalchemy.exc
from helpers import load_study, run_search, run_trials

from tuner.errors import StudyError, StudyMismatchError


def test_first_trials_are_the_baseline_and_the_expert_rule(fake_worker, write_config):
    path = write_config()   # TPE: its parameters are the knobs' own names
    path.write_text(path.read_text().replace("  n_trials: 8", "  n_trials: 8\n  sampler: tpe"))
    run_trials(path)
    trials = load_study().trials
    assert trials[0].user_attrs["role"] == "baseline"
    assert trials[0].user_attrs["settings"]["intra_op_parallelism_threads"] == 0
    assert trials[0].user_attrs["settings"]["inter_op_parallelism_threads"] == 0
    assert trials[1].user_attrs["role"] == "expert"
    assert trials[1].user_attrs["settings"]["intra_op_parallelism_threads"] >= 1
    # readable parameter names for optuna-dashboard, metrics as user attributes
    assert "intra_op_parallelism_threads" in trials[2].params
    assert {"throughput", "cpu_saturation", "step_latency_ms", "peak_rss_mb", "threads",
            "input_wait", "timings"} <= set(trials[0].user_attrs)


def test_trials_carry_plain_metrics_for_the_dashboard(small_study):
    import optuna

    trials = optuna.load_study(study_name="study", storage="sqlite:///results/study.db").trials
    first = trials[0]
    assert isinstance(first.user_attrs["throughput_median"], float)
    assert first.user_attrs["throughput_median"] == first.value
    assert isinstance(first.user_attrs["cpu_saturation"], float)
    assert "intra_op_parallelism_threads" in trials[2].params


def test_crashing_trials_fail_with_their_reason_and_the_study_goes_on(fake_worker, write_config,
                                                                       monkeypatch):
    monkeypatch.setenv("FAKE_BEHAVIOUR", "crash-intra-1")
    path = write_config()
    text = path.read_text().replace("  n_trials: 8", "  n_trials: 12\n  sampler: random")
    path.write_text(text)
    outcome = run_search(path)
    trials = load_study().trials
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed, "the random sampler over 12 trials should hit intra=1 at least once"
    assert all("SIGABRT" in t.user_attrs["fail_reason"] for t in failed)
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in trials[2:])
    assert outcome.tuned["study"]["fail"] == len(failed)
    # a crashed trial of several instances names the instance that died
    assert any(re.search(r"FAIL  (instance \d of \d: )?killed by SIGABRT", line)
               for line in outcome.lines)


@pytest.mark.parametrize("behaviour,reason", [
    ("hang-intra-0", "timed out after 2 s (phase: start)"),
    ("exit-intra-0", "exited with code 7 before writing a result; last output: fake: exiting"),
    ("garble-intra-0", "garbled result"),
    ("raise-intra-0", "workload.model: fake raised ValueError: boom"),
])
def test_every_kind_of_failure_becomes_a_readable_reason(fake_worker, write_config, monkeypatch,
                                                         behaviour, reason):
    # the baseline (intra=0) misbehaves; everything fails only if every trial does
    monkeypatch.setenv("FAKE_BEHAVIOUR", behaviour)
    path = write_config()
    path.write_text(path.read_text().replace("trial_timeout: 20", "trial_timeout: 2")
                    .replace("n_trials: 8", "n_trials: 3"))
    with pytest.raises(StudyError):  # the baseline cannot be validated if it always fails
        run_search(path)
    baseline = load_study().trials[0]
    assert baseline.state == optuna.trial.TrialState.FAIL
    assert reason in baseline.user_attrs["fail_reason"]


def test_resume_keeps_finished_trials_and_adds_n_trials(fake_worker, write_config):
    path = write_config()
    first = run_search(path, n_trials=4)
    assert any(": new; sampler" in line for line in first.lines)
    assert len(load_study().trials) == 4
    outcome = run_search(path, n_trials=3)
    trials = load_study().trials
    assert len(trials) == 7
    roles = [t.user_attrs.get("role") for t in trials]
    assert roles.count("baseline") == 1 and roles.count("expert") == 1
    assert outcome.backup and os.path.exists(outcome.backup)
    assert any("resuming with 4 trials" in line for line in outcome.lines)


def test_resuming_on_another_machine_or_workload_is_refused(fake_worker, write_config):
    path = write_config()
    run_trials(path, n_trials=2)
    s = load_study()
    fp = dict(s.user_attrs["tuner.machine"], usable_cpus=64)
    s.set_user_attr("tuner.machine", fp)
    with pytest.raises(StudyMismatchError, match="usable_cpus"):
        run_search(path, n_trials=1)
    other = write_config(path.read_text().replace("windows: 3", "windows: 4"))
    s.set_user_attr("tuner.machine", dict(fp, usable_cpus=s.user_attrs["tuner.machine_full"][
        "usable_cpus"]))
    with pytest.raises(StudyMismatchError, match="measure.windows"):
        run_search(other, n_trials=1)


def test_study_wide_cap_stops_the_search(fake_worker, write_config):
    path = write_config()
    path.write_text(path.read_text().replace("n_trials: 8", "n_trials: 8\n  max_trials: 3"))
    run_trials(path)
    assert len(load_study().trials) == 3


def test_a_trial_left_running_by_a_killed_search_is_marked_failed(fake_worker, write_config):
    path = write_config()
    run_trials(path, n_trials=2)
    s = load_study()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    orphan = s.ask()
    orphan.set_user_attr("tuner.host", socket.gethostname())
    orphan.set_user_attr("tuner.pid", int(dead))
    run_trials(path, n_trials=1)
    trials = load_study().trials
    frozen = trials[orphan.number]
    assert frozen.state == optuna.trial.TrialState.FAIL
    assert "search process" in frozen.user_attrs["fail_reason"]
    # its settings are queued again, and the next trial of this run measured them
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == orphan.number]
    # measured (a sampled point can be slow enough to be pruned, which is measured too)
    assert len(retried) == 1 and retried[0].state in (optuna.trial.TrialState.COMPLETE,
                                                      optuna.trial.TrialState.PRUNED)


def test_a_worker_stopped_by_sigterm_queues_its_trial_again(fake_worker, write_config,
                                                            monkeypatch):
    monkeypatch.setenv("FAKE_WINDOW_SLEEP", "0.5")
    path = write_config()
    proc = subprocess.Popen([sys.executable, "-m", "tuner", "search", "--config", str(path),
                             "--n-trials", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    running = []
    while not running and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if not os.path.exists("results/study.db"):
            continue
        try:
            trials = load_study().get_trials(deepcopy=False)
        except (KeyError, sqlalchemy.exc.SQLAlchemyError):
            # the study is not created yet, or its tables are being created right now
            continue
        if any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):  # one to write
            running = [t for t in trials
                       if t.state == optuna.trial.TrialState.RUNNING and t.intermediate_values]
    assert running, proc.communicate()
    proc.send_signal(signal.SIGTERM)  # what an orchestrator sends to stop a worker
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    trials = load_study().trials
    stopped = trials[running[0].number]
    assert stopped.state == optuna.trial.TrialState.FAIL
    assert stopped.user_attrs["fail_reason"] == "interrupted (Ctrl-C or SIGTERM)"
    again = [t for t in trials if t.system_attrs.get("failed_trial") == stopped.number]
    assert len(again) == 1 and again[0].state == optuna.trial.TrialState.WAITING
    assert again[0].params == stopped.params
