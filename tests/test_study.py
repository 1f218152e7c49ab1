"""The study logic with a fake worker that speaks the real protocol: which trials run, what wins,
what failures become, resume, and what the tuned file holds."""

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
import yaml

from tuner import cli, config, search, tuned
from tuner.errors import StudyError, StudyMismatchError, WorkloadError
from tuner.urls import mask_url


def run_search(path, **overrides):
    cfg = config.with_overrides(config.load(path), **overrides)
    lines: list[str] = []
    outcome = search.run(cfg, lines.append)
    outcome.lines = lines
    return outcome


def load_study(name="study"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///results/{name}.db")


SMALL_SPACE = """\
space:
  intra_op_parallelism_threads: [1, 2, 3]
  inter_op_parallelism_threads: [1, 2]
  tf_data: {private_threadpool_size: default, max_intra_op_parallelism: default}
  env: {TF_ENABLE_ONEDNN_OPTS: default}
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
    assert doc["format_version"] == 1
    assert doc["verdict"] == "tuned"
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
    assert len(doc["validation"]["winner"]["throughput"]["per_process"]) == 5
    text = open(outcome.tuned_path).read()
    assert text.startswith("# Tuned TensorFlow CPU configuration")
    assert "&id" not in text  # plain YAML, no anchors


def test_first_trials_are_the_baseline_and_the_expert_rule(fake_worker, write_config):
    run_search(write_config())
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


def test_when_nothing_beats_the_defaults_the_file_says_so(fake_worker, write_config, monkeypatch):
    monkeypatch.setenv("FAKE_SHAPE", "flat")
    # no noise: with noise, 5% of runs would (rightly) find a "significant" difference by chance;
    # the false-positive rate itself is tested, seeded, in test_stats
    monkeypatch.setenv("FAKE_NOISE", "0")
    outcome = run_search(write_config())
    doc = outcome.tuned
    assert doc["verdict"] == "defaults"
    assert doc["settings"]["intra_op_parallelism_threads"] == 0
    assert doc["settings"]["inter_op_parallelism_threads"] == 0
    assert doc["settings"]["env"] == {}
    assert doc["result"]["speedup"] == 1.0
    assert "keeping the defaults" in doc["summary"]


def test_validation_stops_early_when_the_candidate_cannot_reach_the_minimum(
        fake_worker, write_config, monkeypatch):
    # every setting is equally fast: whichever candidate wins screening, three final rounds show
    # its whole interval below 1.05x, and the remaining rounds are skipped
    monkeypatch.setenv("FAKE_SHAPE", "flat")
    monkeypatch.setenv("FAKE_NOISE", "0.01")
    doc = run_search(write_config()).tuned
    assert doc["verdict"] == "defaults"
    validation = doc["validation"]
    assert validation["max_rounds"] == 5
    assert validation["rounds"] == 3
    assert "entirely below the minimum worth adopting" in validation["stopped_early"]
    assert len(validation["winner"]["throughput"]["per_process"]) == 3


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


def test_all_trials_failing_exits_non_zero_with_the_most_common_reason(fake_worker, write_config,
                                                                        monkeypatch, capsys):
    monkeypatch.setenv("FAKE_BEHAVIOUR", "crash-all")
    path = write_config()
    # the preflight crashes too: that is a workload error (exit 2) naming the signal
    code = cli.main(["search", "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and "preflight failed: killed by SIGABRT" in err
    assert len(err.strip().splitlines()) == 1


def test_every_trial_failing_exits_1_with_the_most_common_reason(fake_worker, write_config,
                                                                 monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("FAKE_BEHAVIOUR", "crash-measure")
    path = write_config()
    code = cli.main(["search", "--config", str(path), "--n-trials", "4"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip() == ("error: all 4 trials failed; most common reason (4x): killed by "
                           "SIGABRT")
    assert not (tmp_path / "results" / "study").exists()  # no tuned file from nothing


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


def test_a_trial_left_running_by_a_killed_search_is_marked_failed(fake_worker, write_config):
    path = write_config()
    run_search(path, n_trials=2)
    s = load_study()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    orphan = s.ask()
    orphan.set_user_attr("tuner.host", socket.gethostname())
    orphan.set_user_attr("tuner.pid", int(dead))
    run_search(path, n_trials=1)
    trials = load_study().trials
    frozen = trials[orphan.number]
    assert frozen.state == optuna.trial.TrialState.FAIL
    assert "search process" in frozen.user_attrs["fail_reason"]
    # its settings are queued again, and the next trial of this run measured them
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == orphan.number]
    # measured (a sampled point can be slow enough to be pruned, which is measured too)
    assert len(retried) == 1 and retried[0].state in (optuna.trial.TrialState.COMPLETE,
                                                      optuna.trial.TrialState.PRUNED)


def test_resuming_on_another_machine_or_workload_is_refused(fake_worker, write_config):
    path = write_config()
    run_search(path, n_trials=2)
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


def test_pruning_stops_clearly_bad_trials(fake_worker, write_config, monkeypatch):
    path = write_config()
    path.write_text(path.read_text().replace("n_trials: 8", "n_trials: 14\n  sampler: random"))
    run_search(path)
    pruned = [t for t in load_study().trials if t.state == optuna.trial.TrialState.PRUNED]
    # intra=1 runs at 0.6x and intra>4 at 0.7x of a 1.3x best: below 0.5 x best only with
    # inter=4 or 8 too; every pruned trial must really have been below the bar
    for t in pruned:
        assert max(t.intermediate_values.values()) < 0.5 * load_study().best_value * 1.1


def test_study_wide_cap_stops_the_search(fake_worker, write_config):
    path = write_config()
    path.write_text(path.read_text().replace("n_trials: 8", "n_trials: 8\n  max_trials: 3"))
    run_search(path)
    assert len(load_study().trials) == 3


def test_a_worker_finding_the_cap_reached_writes_the_tuned_file_from_the_stored_validation(
        fake_worker, write_config, tmp_path):
    path = write_config()
    path.write_text(path.read_text().replace("n_trials: 8", "n_trials: 4\n  max_trials: 4"))
    first = run_search(path)
    late = run_search(path, output=str(tmp_path / "late.yaml"))
    assert len(load_study().trials) == 4
    assert any("no trials to add" in line for line in late.lines)
    assert any("validation: reusing the validation stored by" in line for line in late.lines)
    assert not any("final round" in line for line in late.lines)
    assert late.tuned["validation"] == first.tuned["validation"]
    assert late.tuned["result"] == first.tuned["result"]


def test_timeout_too_small_for_validation_is_refused(fake_worker, write_config):
    with pytest.raises(StudyError, match="--timeout"):
        run_search(write_config(), timeout=0.001)


def test_preflight_failure_is_a_workload_error(fake_worker, write_config, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_BEHAVIOUR", "preflight-fail")
    with pytest.raises(WorkloadError, match="preflight failed: workload.model: fake raised"):
        run_search(write_config())
    assert not (tmp_path / "results").exists()


def test_password_is_masked():
    assert mask_url("postgresql://bob:s3cret@db/x") == "postgresql://bob:***@db/x"
    assert mask_url("sqlite:///results/x.db") == "sqlite:///results/x.db"


def test_unknown_format_version_is_refused(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("format_version: 99\nsettings: {}\n")
    with pytest.raises(Exception, match="format_version 99 is not supported"):
        tuned.load(path)


def test_two_searches_on_one_host_never_measure_at_the_same_time(fake_worker, write_config,
                                                                 monkeypatch, tmp_path):
    log = tmp_path / "intervals.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("FAKE_WINDOW_SLEEP", "0.05")
    path = write_config()
    procs = [subprocess.Popen([sys.executable, "-m", "tuner", "search", "--config", str(path),
                               "--study-name", f"s{i}", "--n-trials", "4", "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    measurements: dict[str, tuple[float, float]] = {}
    for line in log.read_text().splitlines():
        start, end, group = line.split()
        a, b = measurements.get(group, (float(start), float(end)))
        measurements[group] = (min(a, float(start)), max(b, float(end)))
    intervals = sorted(measurements.values())
    assert len(intervals) >= 2 * (4 + 1 + 2 + 5)  # preflight, trials and validation of both
    for (_, end_a), (start_b, _) in zip(intervals, intervals[1:]):
        assert end_a <= start_b, "two measurements overlapped"


def test_auto_sampler_is_exhaustive_when_the_space_fits(fake_worker, write_config):
    path = write_config()
    path.write_text(path.read_text() + "space:\n  intra_op_parallelism_threads: [1, 2, 3]\n"
                    "  inter_op_parallelism_threads: [1, 2]\n  tf_data:\n"
                    "    private_threadpool_size: default\n    max_intra_op_parallelism: default\n"
                    "  env:\n    TF_ENABLE_ONEDNN_OPTS: default\n  allocator: default\n"
                    "  instances: default\n")
    outcome = run_search(path, n_trials=20)
    assert outcome.tuned["search"]["sampler"] == "grid"
    space = outcome.tuned["search"]["space"]["searched"]
    assert space == {"intra_op_parallelism_threads": [0, 1, 2, 3],
                     "inter_op_parallelism_threads": [0, 1, 2]}
    seen = {(t.params["intra_op_parallelism_threads"], t.params["inter_op_parallelism_threads"])
            for t in load_study().trials}
    assert len(seen) == 12  # every grid point, and the grid stops the study when done
    assert len(load_study().trials) < 20


def test_tpe_searches_start_with_one_knob_at_a_time_thread_screening(fake_worker, write_config):
    path = write_config()
    path.write_text(path.read_text().replace("n_trials: 8", "n_trials: 12\n  sampler: tpe"))
    run_search(path)
    trials = load_study().trials
    screen = [t for t in trials if t.user_attrs.get("role") == "screen"]
    assert [t.number for t in screen] == list(range(2, 2 + len(screen)))
    points = {(t.params["intra_op_parallelism_threads"], t.params["inter_op_parallelism_threads"])
              for t in screen}
    assert (1, 0) in points and (0, 1) in points          # each knob alone, the other default
    assert all(0 in p for p in points)
    assert all(t.params["env.TF_ENABLE_ONEDNN_OPTS"] is None for t in screen)
    assert len(points) == len(screen)


def test_small_budgets_skip_the_screening(fake_worker, write_config):
    path = write_config()
    path.write_text(path.read_text().replace("n_trials: 8", "n_trials: 8\n  sampler: tpe"))
    run_search(path)
    assert not [t for t in load_study().trials if t.user_attrs.get("role") == "screen"]


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


# -- objectives and instances (fake worker: instances share the throughput, FAKE_INSTANCE_GAIN) --

INSTANCE_SPACE = """\
space:
  intra_op_parallelism_threads: [1, 2]
  inter_op_parallelism_threads: [1]
  tf_data: {private_threadpool_size: default, max_intra_op_parallelism: default}
  env: {TF_ENABLE_ONEDNN_OPTS: default}
  allocator: default
  instances: [1, 2]
"""
needs_two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")


def instance_search(write_config, monkeypatch, objective: str = ""):
    # two instances give 1.5x the throughput of one, but each step takes 1.33x as long
    monkeypatch.setenv("FAKE_INSTANCE_GAIN", "1.5")
    monkeypatch.setenv("FAKE_NOISE", "0.005")
    path = write_config()
    path.write_text(path.read_text().replace("n_trials: 8", "n_trials: 12") + INSTANCE_SPACE
                    + objective)
    return run_search(path).tuned


@needs_two_cpus
def test_throughput_objective_takes_more_instances_pinned_disjointly(fake_worker, write_config,
                                                                     monkeypatch):
    doc = instance_search(write_config, monkeypatch)
    assert doc["verdict"] == "tuned"
    assert doc["settings"]["instances"]["count"] == 2
    sets = doc["settings"]["instances"]["cpus"]
    assert len(sets) == 2 and not set(sets[0]) & set(sets[1])
    assert doc["result"]["speedup"] == pytest.approx(1.3 * 1.5, rel=0.05)
    two = [t for t in load_study().trials
           if t.user_attrs.get("settings", {}).get("instances") == 2 and t.state.name == "COMPLETE"]
    assert two and all(t.user_attrs["step_latency_ms"]["p95"] > 30 for t in two)


@needs_two_cpus
def test_latency_objective_prefers_one_instance(fake_worker, write_config, monkeypatch):
    doc = instance_search(write_config, monkeypatch, "objective: latency_p95\n")
    assert doc["verdict"] == "tuned"
    assert doc["settings"]["instances"]["count"] == 1
    assert doc["settings"]["intra_op_parallelism_threads"] == 2
    assert doc["objective"]["metric"] == "latency_p95"
    # speedup = baseline p95 / tuned p95
    lat = doc["result"]["step_latency_ms"]["p95"]
    base = doc["result"]["baseline_step_latency_ms"]["p95"]
    assert doc["result"]["speedup"] == pytest.approx(base / lat, rel=0.05)
    assert "p95 step latency" in doc["summary"] and "lower" in doc["summary"]


@needs_two_cpus
def test_latency_budget_rules_out_configurations_over_it(fake_worker, write_config, monkeypatch):
    # one instance at intra=2 inter=1: p95 ~25.8 ms; two instances: ~34.5 ms; baseline ~33.6 ms
    doc = instance_search(write_config, monkeypatch,
                          "objective: {metric: throughput, latency_budget_ms: 30}\n")
    assert doc["verdict"] == "tuned"
    assert doc["settings"]["instances"]["count"] == 1
    assert doc["result"]["step_latency_ms"]["p95"] <= 30
    over = [t for t in load_study().trials if t.user_attrs.get("latency_excess_ms", 0) > 0]
    assert over  # measured, recorded as infeasible, never chosen


@pytest.mark.parametrize("objective,needle", [
    ("objective: fastest\n", "objective: 'fastest' is not allowed; allowed: throughput, "
                             "latency_p50, latency_p95"),
    ("objective: {metric: latency_p95, latency_budget_ms: 20}\n",
     "a latency budget goes with metric 'throughput'"),
    ("objective: {metric: throughput, latency_budget_ms: -1}\n",
     "objective.latency_budget_ms: expected milliseconds (a number > 0), got -1"),
    ("objective: {metric: throughput, budget: 3}\n", "objective.budget: unknown key"),
])
def test_bad_objectives_are_one_line_config_errors(write_config, capsys, objective, needle):
    path = write_config()
    path.write_text(path.read_text() + objective)
    assert cli.main(["search", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err, err
