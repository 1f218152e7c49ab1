"""Several workers sharing one study through a real PostgreSQL server that the tests start on
loopback (``postgres_server`` in conftest). Each worker is a real ``python -m tuner search``
process with the fake trial worker; ``TUNER_HOST_ID`` and its own host lock make two of them on
this machine behave as two hosts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import optuna
import pytest
import sqlalchemy.exc
import yaml
from helpers import PG_PASSWORD, assert_one_error_line
from optuna.trial import TrialState

from tuner import cli

pytestmark = pytest.mark.postgres

SHARED = """\
workload:
  model: wl.py:build_model
  data: wl.py:build_data
  mode: predict
search:
  n_trials: 3
  trial_timeout: 30
  heartbeat_interval: 1
  grace_period: 2
measure:
  warmup_seconds: 0
  window_seconds: 0.01
  windows: 3
validate:
  candidates: 2
  screen_rounds: 1
  rounds: 4
"""


@pytest.fixture
def shared_config(write_config, fake_worker, monkeypatch):
    # every setting equally fast: no trial is pruned, so each worker's 3 trials all complete
    monkeypatch.setenv("FAKE_SHAPE", "flat")
    return write_config(SHARED)


def start_worker(config, url, host, tmp_path, *args, **env):
    """One search process playing host ``host``: its own host lock, its own output."""
    full_env = dict(os.environ, TUNER_HOST_ID=host,
                    TUNER_LOCK_FILE=str(tmp_path / f"{host}.lock"), **env)
    cmd = [sys.executable, "-m", "tuner", "search", "--config", str(config), "--storage", url,
           "--study-name", "shared", "--output", f"{host}/tuned.yaml", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=full_env, cwd=tmp_path, start_new_session=True)


def finish(proc, timeout=120):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"worker hung\nstdout:\n{out}\nstderr:\n{err}")
    return proc.returncode, out, err


def everything_in_the_study(url):
    """Every attribute the workers wrote into the study, as text."""
    study = optuna.load_study(study_name="shared", storage=url)
    return json.dumps({"study": [study.user_attrs,
                                 study._storage.get_study_system_attrs(study._study_id)],
                       "trials": [[t.user_attrs, t.system_attrs, t.params]
                                  for t in study.get_trials(deepcopy=False)]}, default=str)


def test_two_workers_share_one_study_and_validate_once(shared_config, pg_url, tmp_path):
    workers = [start_worker(shared_config, pg_url, host, tmp_path, "--n-trials", "3")
               for host in ("host-a", "host-b")]
    results = [finish(w) for w in workers]
    for code, out, err in results:
        assert code == 0, f"stdout:\n{out}\nstderr:\n{err}"

    study = optuna.load_study(study_name="shared", storage=pg_url)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6
    by_host = [t.user_attrs["tuner.host"] for t in complete]
    assert by_host.count("host-a") == 3 and by_host.count("host-b") == 3
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    roles = [t.user_attrs.get("role") for t in trials]
    assert roles.count("baseline") == 1 and roles.count("expert") == 1  # enqueued once

    # one worker validated; the other waited and wrote its file from the stored result (the
    # progress lines that say so are on stderr, the summary on stdout)
    outs = [out + err for _, out, err in results]
    validated = [o for o in outs if "final round 1/" in o]
    reused = [o for o in outs if "validation: reusing the validation stored by" in o]
    assert len(validated) == 1 and len(reused) == 1, outs
    docs = [yaml.safe_load((tmp_path / host / "tuned.yaml").read_text())
            for host in ("host-a", "host-b")]
    assert docs[0]["verdict"] == docs[1]["verdict"]
    assert docs[0]["result"] == docs[1]["result"]
    assert docs[0]["validation"] == docs[1]["validation"]
    assert docs[0]["study"]["complete"] == 6
    assert docs[0]["study"]["hosts"] == ["host-a", "host-b"]
    assert docs[0]["study"]["storage"].startswith("postgresql://tuner:***@127.0.0.1:")

    # the password appears nowhere: outputs, tuned files, the study
    texts = [out + err for _, out, err in results]
    texts += [(tmp_path / host / "tuned.yaml").read_text() for host in ("host-a", "host-b")]
    texts.append(everything_in_the_study(pg_url))
    assert all(PG_PASSWORD not in text for text in texts)


def test_a_worker_killed_mid_trial_loses_only_that_trial_which_another_retries(
        shared_config, pg_url, tmp_path):
    # host-a's trials take ~3 s (three 1 s windows); it is killed -9 in the middle of one
    slow = start_worker(shared_config, pg_url, "host-a", tmp_path, "--n-trials", "5",
                        FAKE_WINDOW_SLEEP="1")
    deadline = time.monotonic() + 60
    victim = None
    while victim is None and time.monotonic() < deadline and slow.poll() is None:
        time.sleep(0.2)
        try:
            study = optuna.load_study(study_name="shared", storage=pg_url)
        except (KeyError, sqlalchemy.exc.SQLAlchemyError):  # not created yet, or being created
            continue
        running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if t.intermediate_values]
        victim = running[0] if running else None
    assert victim is not None, finish(slow)
    os.killpg(slow.pid, signal.SIGKILL)
    slow.wait()
    time.sleep(3)  # past the grace period (2 s): its heartbeat is stale now

    code, out, err = finish(start_worker(shared_config, pg_url, "host-b", tmp_path,
                                         "--n-trials", "2"))
    assert code == 0, f"stdout:\n{out}\nstderr:\n{err}"
    trials = optuna.load_study(study_name="shared", storage=pg_url).get_trials(deepcopy=False)
    dead = trials[victim.number]
    assert dead.state == TrialState.FAIL
    assert "stopped sending heartbeats" in dead.user_attrs["fail_reason"]
    assert "host-a" in dead.user_attrs["fail_reason"]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["tuner.host"] == "host-b"
    assert retry.params == dead.params
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_a_worker_on_another_machine_type_is_refused_unless_allowed(
        shared_config, pg_url, tmp_path, monkeypatch, capsys):
    code, _out, err = finish(start_worker(shared_config, pg_url, "host-a", tmp_path))
    assert code == 0, err
    argv = ["search", "--config", str(shared_config), "--storage", pg_url, "--study-name",
            "shared", "--n-trials", "3", "--output", "host-b/tuned.yaml"]
    monkeypatch.setenv("FAKE_TF_VERSION", "fake-2.0")  # another TensorFlow: another machine type
    monkeypatch.setenv("TUNER_HOST_ID", "host-b")
    assert cli.main(argv) == 2
    err = assert_one_error_line(2, capsys.readouterr().err)   # after the preflight's lines
    assert err.startswith("error: study 'shared' in postgresql://tuner:***@")
    assert "tf_version: 'fake-1.0' vs 'fake-2.0'" in err
    assert "--allow-other-machines" in err
    assert PG_PASSWORD not in err

    assert cli.main([*argv, "--allow-other-machines"]) == 0
    captured = capsys.readouterr()
    assert "joining" in captured.err and PG_PASSWORD not in captured.out + captured.err
    doc = yaml.safe_load((tmp_path / "host-b" / "tuned.yaml").read_text())
    study = optuna.load_study(study_name="shared", storage=pg_url)
    mine = [t for t in study.trials if t.user_attrs.get("tuner.host") == "host-b"]
    assert len(mine) == 3
    # the machine types are kept apart: host-b's file speaks of host-b's trials only
    assert doc["machine"]["tf_version"] == "fake-2.0"
    assert doc["study"]["n_trials"] == 3 and doc["study"]["other_machine_trials"] == 3
    assert doc["study"]["hosts"] == ["host-b"]
    numbers = {t.number for t in mine}
    assert {c["trial"] for c in doc["validation"]["candidates"]} <= numbers
    assert len([k for k in study.user_attrs if k.startswith("tuner.validation.")]) == 2


def test_a_wrong_password_is_a_clear_error_without_the_password(shared_config, pg_url, capsys):
    bad = "Wr0ng-pa55word"
    url = pg_url.replace(PG_PASSWORD, bad)
    code = cli.main(["search", "--config", str(shared_config), "--storage", url])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: --storage postgresql://tuner:***@127.0.0.1:")
    assert "cannot connect" in err and "password authentication failed" in err
    assert bad not in err and err.count("\n") == 1


def test_a_database_that_is_gone_is_a_clear_error_without_the_password(shared_config, capsys):
    pytest.importorskip("psycopg")
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://tuner:{PG_PASSWORD}@127.0.0.1:{port}/gone"
    code = cli.main(["search", "--config", str(shared_config), "--storage", url])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.startswith(
        f"error: --storage postgresql://tuner:***@127.0.0.1:{port}/gone: cannot connect: ")
    assert "refused" in captured.err and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err
    assert PG_PASSWORD not in captured.out + captured.err
