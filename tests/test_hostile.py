"""Hostile and malformed input, and a search killed in every way: the exact contract for each.

Every refused input gives its exit code, a single ``error:`` line naming the field or file, no
traceback and nothing written. Lock files cannot be turned against the user, waiting for one is
bounded and names its holder, URLs never show a secret, and no measuring process outlives its
search. Reading results (show, compare, report) never writes: not into a database, not a half
report.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest import mock

import pytest
import yaml
from helpers import evidence, fake_worker_command, fake_worker_env

from tuner import cli
from tuner.base import host, lock, urls
from tuner.errors import ConfigError, StudyError
from tuner.production import apply as production
from tuner.production import launch
from tuner.search import shared as coord
from tuner.search.trial import run_child
from tuner.tuned import store as tuned

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

VALID = """\
workload:
  model: wl.py:build_model
  data: wl.py:build_data
  mode: predict
search:
  n_trials: 2
  trial_timeout: 20
measure:
  warmup_seconds: 0
  window_seconds: 0.01
  windows: 3
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKE_", "TUNER_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["TUNER_LOCK_FILE"] = os.environ["TUNER_LOCK_FILE"]
    env.update(fake_worker_env())   # used only by the fake worker (TUNER_WORKER below)
    env.update(extra)
    return env


# Reading commands, and search and diagnose without extra environment (refused configs), run
# in-process: the same cli.main as `python -m tuner`, without paying an interpreter start per
# case. test_reading_commands_hold_the_contract_in_a_real_process runs each reading command in
# a real interpreter too; test_a_directory_as_config_says_so and
# test_diagnose_refuses_a_nan_timeout_too run search and diagnose in one.
IN_PROCESS = ("show", "compare", "export", "report", "search", "diagnose")


def _launched(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("run went on to launch its command")


def _in_process(args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as exc:  # argparse's own exit
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def _tuner(*args: str, timeout: float = 60, real: bool = False, refused: bool = False,
           **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m tuner ARGS``: in-process for the IN_PROCESS commands, and for a ``run`` that
    must be ``refused`` (pinning or launching its command then fails the test); in a real
    interpreter with ``real`` or extra environment variables."""
    if args and not env and not real:
        if args[0] in IN_PROCESS:
            return _in_process(args)
        if args[0] == "run" and refused:
            with mock.patch.object(launch, "pin", _launched), \
                    mock.patch.object(launch, "_run_instances", _launched), \
                    mock.patch.object(launch.os, "execve", _launched):
                return _in_process(args)
    return subprocess.run([sys.executable, "-m", "tuner", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(**env), check=False)


def _one_error(err: str, *needles: str) -> str:
    """stderr ends in one ``error:`` line naming each needle; before it, progress lines only."""
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), err
    assert sum(line.startswith("error: ") for line in lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[-1], (needle, err)
    return lines[-1]


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "wl.py").write_text("def build_model():\n    pass\n\ndef build_data():\n    pass\n")
    return tmp_path


# -- config values checked like flags ----------------------------------------------------------

NUMBER_FIELDS = [
    ("search", "timeout"), ("search", "trial_timeout"), ("search", "prune_ratio"),
    ("measure", "warmup_seconds"), ("measure", "window_seconds"),
    ("validate", "alpha"), ("validate", "min_speedup"),
]


def _with(section: str, key: str, value: str) -> str:
    header = f"{section}:\n"
    lines = [line for line in VALID.splitlines(keepends=True)
             if not line.startswith(f"  {key}:")]
    text = "".join(lines) + ("" if header in lines else header)
    return text.replace(header, f"{header}  {key}: {value}\n", 1)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
@pytest.mark.parametrize("section,key", NUMBER_FIELDS)
def test_non_finite_numbers_in_the_config_are_refused(workdir, section, key, value):
    config = workdir / "study.yaml"
    config.write_text(_with(section, key, value))
    before = _listing(workdir)
    started = time.monotonic()
    proc = _tuner("search", "--config", str(config), timeout=60)
    assert time.monotonic() - started < 30
    assert proc.returncode == 2, proc.stderr
    _one_error(proc.stderr, f"{section}.{key}")
    assert proc.stdout == ""
    assert _listing(workdir) == before


@pytest.mark.parametrize("body,field", [
    (VALID + "objective: {metric: throughput, latency_budget_ms: .nan}\n",
     "objective.latency_budget_ms"),
    (VALID + "knobs: {map_parallelism: [1, .nan]}\n", "knobs.map_parallelism"),
    (VALID + "space: {tf_data: {autotune: {cpu_budget: [.inf]}}}\n",
     "space.tf_data.autotune.cpu_budget"),
])
def test_non_finite_numbers_elsewhere_are_refused(workdir, body, field):
    config = workdir / "study.yaml"
    config.write_text(body)
    before = _listing(workdir)
    proc = _tuner("search", "--config", str(config))
    assert proc.returncode == 2, proc.stderr
    _one_error(proc.stderr, field)
    assert _listing(workdir) == before


def test_diagnose_refuses_a_nan_timeout_too(workdir):
    config = workdir / "study.yaml"
    config.write_text(_with("search", "trial_timeout", ".nan"))
    proc = _tuner("diagnose", "--config", str(config), real=True)
    assert proc.returncode == 2
    _one_error(proc.stderr, "search.trial_timeout")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_an_empty_config_says_so(workdir, text):
    config = workdir / "model.yaml"
    config.write_text(text)
    proc = _tuner("search", "--config", str(config))
    assert proc.returncode == 2
    line = _one_error(proc.stderr, str(config), "the file is empty", "workload:")
    assert "NoneType" not in line


def test_a_directory_as_config_says_so(workdir):
    proc = _tuner("search", "--config", str(workdir), real=True)
    assert proc.returncode == 2
    _one_error(proc.stderr, str(workdir), "is a directory")


@pytest.mark.parametrize("body,key,line", [
    (VALID + "search:\n  n_trials: 3\n", "'search'", "line 12, column 1"),
    (VALID.replace("  n_trials: 2\n", "  n_trials: 2\n  n_trials: 50\n"), "'n_trials'",
     "line 7, column 3"),
])
def test_duplicate_keys_are_refused(workdir, body, key, line):
    config = workdir / "study.yaml"
    config.write_text(body)
    proc = _tuner("search", "--config", str(config))
    assert proc.returncode == 2
    first = "first at line 5" if key == "'search'" else "first at line 6"
    _one_error(proc.stderr, "duplicate key", key, line, first)
    assert not (workdir / "results").exists()


def test_a_merge_key_is_not_a_duplicate(workdir):
    from tuner import config as config_mod

    path = workdir / "study.yaml"
    path.write_text(VALID.replace("measure:\n", "measure: &m\n")
                    + "validate:\n  <<: {rounds: 6}\n  rounds: 7\n")
    assert config_mod.load(path).validate.rounds == 7


def test_a_file_name_that_is_no_study_name_says_where_the_name_came_from(workdir):
    config = workdir / "my model.yaml"
    config.write_text(VALID)
    proc = _tuner("search", "--config", str(config))
    assert proc.returncode == 2
    line = _one_error(proc.stderr, "'my model'", "file name", "study: {name: ...}")
    assert "study.name" not in line
    assert not (workdir / "results").exists()


def test_a_bad_study_name_in_the_file_still_names_the_field(workdir):
    config = workdir / "study.yaml"
    config.write_text(VALID + "study: {name: 'a b'}\n")
    proc = _tuner("search", "--config", str(config))
    assert proc.returncode == 2
    _one_error(proc.stderr, "study.name", "'a b'")


# -- URLs never show a secret ------------------------------------------------------------------

@pytest.mark.parametrize("url,masked", [
    ("postgresql://bob:s3cret@db/x", "postgresql://bob:***@db/x"),
    ("postgresql://bob:s3c@ret@db/x", "postgresql://bob:***@db/x"),
    ("postgresql://bob:s3c%40ret@db:5432/x", "postgresql://bob:***@db:5432/x"),
    ("postgresql://:s3cret@db/x", "postgresql://:***@db/x"),
    ("postgresql://bob:s3/c?r@t@db/x", "postgresql://bob:***@db/x"),
    ("postgresql://db/x?password=s3cret&sslmode=require",
     "postgresql://db/x?password=***&sslmode=require"),
    ("postgresql://bob@db/x?sslmode=require&PassWord=s3cret",
     "postgresql://bob@db/x?sslmode=require&PassWord=***"),
    ("postgresql://bob:pw1@db/x?sslpassword=s3cret&sslkey=k.pem&token=t0k",
     "postgresql://bob:***@db/x?sslpassword=***&sslkey=***&token=***"),
    ("mysql+pymysql://u:s3cret@[::1]:3306/x?client_secret=abc",
     "mysql+pymysql://u:***@[::1]:3306/x?client_secret=***"),
    ("postgresql://bob:s3cret@h1:5432,h2:5433/x", "postgresql://bob:***@h1:5432,h2:5433/x"),
    ("postgresql://bob:s3cret@db/x?application_name=me@host",
     "postgresql://bob:***@db/x?application_name=me@host"),
    ("sqlite:///results/study.db", "sqlite:///results/study.db"),
    ("sqlite:///results/a@b:c.db", "sqlite:///results/a@b:c.db"),
    ("postgresql://bob@db/x", "postgresql://bob@db/x"),
])
def test_every_url_form_is_masked(url, masked):
    assert urls.mask_url(url) == masked
    for secret in ("s3cret", "s3c@ret", "s3c%40ret", "pw1", "t0k", "abc", "s3/c?r@t"):
        if secret in url:
            assert secret not in urls.mask_url(url)


def test_a_driver_message_loses_the_secret_in_any_spelling():
    url = "postgresql://bob:p%40ss@db/x?sslpassword=k3y"
    message = (f"could not connect to {url}: password authentication failed for p@ss "
               f"(p%40ss); sslpassword k3y")
    masked = urls.mask_secret(message, url)
    for secret in ("p@ss", "p%40ss", "k3y"):
        assert secret not in masked
    assert "postgresql://bob:***@db/x?sslpassword=***" in masked


@pytest.mark.parametrize("url", [
    "postgresql://bob:p@ss@127.0.0.1:1/x",
    "postgresql://bob@127.0.0.1:1/x?password=qs-s3cret",
])
def test_a_storage_that_cannot_be_reached_is_one_line_without_the_password(url):
    err = str(coord.cannot_connect(url, OSError(f"cannot reach {url}")))
    assert "\n" not in err
    assert "p@ss" not in err and "qs-s3cret" not in err


# -- lock files cannot be turned against the user ---------------------------------------------

@pytest.fixture
def default_lock(tmp_path, monkeypatch):
    """No TUNER_LOCK_FILE: the per-user directory under a private XDG_RUNTIME_DIR."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.delenv("TUNER_LOCK_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    return runtime / "tuner"


def test_the_lock_lives_in_a_private_directory(default_lock):
    with lock.host_lock():
        assert lock.lock_path() == default_lock / "measure.lock"
        assert stat.S_IMODE(os.stat(default_lock).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(default_lock / "measure.lock").st_mode) == 0o600
        assert (default_lock / "measure.lock").read_text() == f"{os.getpid()}\n"


def test_without_xdg_runtime_dir_the_directory_is_per_uid(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNER_LOCK_FILE", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    assert lock.lock_path() == tmp_path / f"tuner-{os.geteuid()}" / "measure.lock"


@pytest.mark.parametrize("where", ["default", "named"])
def test_a_symlink_at_the_lock_path_leaves_its_target_untouched(tmp_path, monkeypatch,
                                                                  default_lock, where):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    victim.chmod(0o640)
    if where == "default":
        default_lock.mkdir(mode=0o700)
        link = default_lock / "measure.lock"
    else:
        link = tmp_path / "shared.lock"
        monkeypatch.setenv("TUNER_LOCK_FILE", str(link))
    link.symlink_to(victim)
    with pytest.raises(lock.LockError, match="symlink"), lock.host_lock():
        pass
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o640


def test_a_search_with_a_symlink_at_the_lock_path_is_one_error_line(workdir, fake_worker):
    victim = workdir / "victim.txt"
    victim.write_text("precious\n")
    link = workdir / "measure.lock"
    link.symlink_to(victim)
    config = workdir / "study.yaml"
    config.write_text(VALID)
    proc = _tuner("search", "--config", str(config), TUNER_LOCK_FILE=str(link),
                  TUNER_WORKER=" ".join(fake_worker_command()))
    assert proc.returncode == 1, proc.stderr
    _one_error(proc.stderr.splitlines()[-1], str(link), "symlink")
    assert "Traceback" not in proc.stderr
    assert victim.read_text() == "precious\n"


def test_a_fifo_at_the_lock_path_is_refused_without_hanging(tmp_path, monkeypatch):
    fifo = tmp_path / "fifo.lock"
    os.mkfifo(fifo)
    monkeypatch.setenv("TUNER_LOCK_FILE", str(fifo))
    with pytest.raises(lock.LockError, match="not a regular file"), lock.host_lock():
        pass


def test_a_lock_directory_that_is_a_symlink_is_refused(tmp_path, default_lock):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    default_lock.symlink_to(elsewhere)
    with pytest.raises(lock.LockError, match="not a directory"):
        lock.lock_path()
    assert list(elsewhere.iterdir()) == []


def test_a_lock_directory_of_another_user_is_refused(default_lock, monkeypatch):
    default_lock.mkdir(mode=0o777)
    if os.geteuid() == 0:
        os.chown(default_lock, 65534, 65534)
    else:
        real = os.geteuid()
        monkeypatch.setattr(lock.os, "geteuid", lambda: real + 1)
    with pytest.raises(lock.LockError, match="belongs to uid"):
        lock.lock_path()
    assert list(default_lock.iterdir()) == []


def test_a_lock_file_of_another_user_is_neither_chmodded_nor_truncated(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file to another user")
    shared = tmp_path / "shared.lock"
    shared.write_text("4242\n")
    shared.chmod(0o604)
    os.chown(shared, 65534, 65534)
    monkeypatch.setenv("TUNER_LOCK_FILE", str(shared))
    with lock.host_lock():
        pass
    assert shared.read_text() == "4242\n"
    assert stat.S_IMODE(shared.stat().st_mode) == 0o604


def _hold(path: Path, pid_text: str | None = None) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.write(fd, (pid_text or f"{os.getpid()}\n").encode())
    return fd


def test_the_wait_for_the_lock_is_bounded_and_names_the_holder(tmp_path, monkeypatch):
    path = tmp_path / "measure.lock"
    monkeypatch.setenv("TUNER_LOCK_FILE", str(path))
    fd = _hold(path, "31337\n")
    told = []
    try:
        started = time.monotonic()
        with pytest.raises(lock.LockTimeout) as caught, \
                lock.host_lock(on_wait=lambda: told.append(1), timeout=0.5, poll=0.1):
            pass
        assert time.monotonic() - started < 5
        assert path.read_text() == "31337\n"  # a waiter writes nothing
    finally:
        os.close(fd)
    message = str(caught.value)
    assert "\n" not in message and "pid 31337" in message and str(path) in message
    assert told == [1]


def test_an_unbounded_wait_gets_the_lock_the_moment_it_is_released(tmp_path, monkeypatch):
    path = tmp_path / "measure.lock"
    monkeypatch.setenv("TUNER_LOCK_FILE", str(path))
    fd = _hold(path, "31337\n")
    released: list[float] = []

    def release() -> None:
        time.sleep(0.3)
        released.append(time.monotonic())
        os.close(fd)

    told = []
    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        with lock.host_lock(on_wait=lambda: told.append(1)) as waited:
            got = time.monotonic()
            assert path.read_text() == f"{os.getpid()}\n"
    finally:
        releaser.join()
    assert told == [1] and waited >= 0.25
    assert got - released[0] < 0.1  # blocked on the lock itself, not a poll interval


def test_the_pid_is_written_only_once_the_lock_is_held(tmp_path, monkeypatch):
    path = tmp_path / "measure.lock"
    monkeypatch.setenv("TUNER_LOCK_FILE", str(path))
    fd = _hold(path, "31337\n")
    try:
        with pytest.raises(lock.LockTimeout), lock.host_lock(timeout=0.2, poll=0.05):
            pass
    finally:
        os.close(fd)
    with lock.host_lock(timeout=1):
        assert path.read_text() == f"{os.getpid()}\n"


def test_a_search_waiting_for_the_lock_gives_up_at_its_timeout(workdir, fake_worker):
    path = workdir / "measure.lock"
    config = workdir / "study.yaml"
    config.write_text(VALID)
    fd = _hold(path)
    try:
        started = time.monotonic()
        proc = _tuner("search", "--config", str(config), "--timeout", "2",
                      TUNER_LOCK_FILE=str(path),
                      TUNER_WORKER=" ".join(fake_worker_command()))
        assert time.monotonic() - started < 40
    finally:
        os.close(fd)
    assert proc.returncode == 1, proc.stderr
    _one_error(proc.stderr.splitlines()[-1], f"pid {os.getpid()}", str(path))
    assert "Traceback" not in proc.stderr


def test_study_lock_files_are_private(tmp_path, default_lock):
    locks = coord.Locks(f"sqlite:///{tmp_path / 'study.db'}", "s")
    try:
        assert locks.try_acquire("setup")
        files = list(default_lock.glob("tuner-study-*.lock"))
        assert len(files) == 1
        assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    finally:
        locks.close()


def test_a_study_lock_file_another_user_keeps_to_himself_is_one_error_line(tmp_path,
                                                                              monkeypatch):
    monkeypatch.setenv("TUNER_LOCK_FILE", str(tmp_path / "measure.lock"))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    theirs = coord.Locks(url, "s")
    assert theirs.try_acquire("setup")
    theirs.close()
    (held,) = tmp_path.glob("tuner-study-*.lock")
    real_open = os.open

    def no_access(path, flags, *args):  # a 0600 file of another user, as a second user sees it
        if Path(path) == held:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(lock.os, "open", no_access)
    with pytest.raises(StudyError) as caught:
        coord.Locks(url, "s").try_acquire("setup")
    message = str(caught.value)
    assert "\n" not in message
    assert str(held) in message and "Permission denied" in message and "TUNER_LOCK_FILE" in message


# -- no orphan measurers -----------------------------------------------------------------------

WORKLOAD_CHILD = """\
import json, os, subprocess, sys, time
task_path, result_path = sys.argv[1:3]
task = json.load(open(task_path))
grandchild = subprocess.Popen(["sleep", "300"])  # the child's own process group
pids = os.environ["ORPHAN_PIDS"]
with open(pids + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {grandchild.pid}")
os.replace(pids + ".tmp", pids)
if os.environ.get("ORPHAN_MODE") == "hang":
    time.sleep(300)
with open(result_path, "w") as f:
    json.dump({"protocol": task["protocol"], "ok": True, "tf_version": "fake"}, f)
"""


def _gone(pid: int, within: float = 5.0) -> bool:
    """Whether ``pid`` is dead (a zombie waiting for init to reap it counts) within seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def _wait_for(path: Path, within: float = 30.0) -> list[int]:
    deadline = time.monotonic() + within
    while not path.exists():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    return [int(x) for x in path.read_text().split()]


@pytest.fixture
def workload_child(tmp_path, monkeypatch):
    script = tmp_path / "workload_child.py"
    script.write_text(WORKLOAD_CHILD)
    pids = tmp_path / "pids"
    monkeypatch.setenv("ORPHAN_PIDS", str(pids))
    return script, pids


def test_grandchildren_are_reaped_when_the_child_ends_normally(workload_child):
    script, pids = workload_child
    result = run_child({"kind": "preflight"}, timeout=60, settings={},
                       worker=[sys.executable, str(script)])
    assert result["ok"]
    child, grandchild = _wait_for(pids)
    assert _gone(child, 0.1)
    assert _gone(grandchild), "the workload's grandchild outlived its trial"


def test_grandchildren_are_reaped_on_a_timeout(workload_child, monkeypatch):
    from tuner.errors import TrialFailed

    script, pids = workload_child
    monkeypatch.setenv("ORPHAN_MODE", "hang")
    with pytest.raises(TrialFailed, match="timed out"):
        run_child({"kind": "preflight"}, timeout=3, settings={},
                  worker=[sys.executable, str(script)])
    child, grandchild = _wait_for(pids)
    assert _gone(child) and _gone(grandchild)


PARENT = """\
import sys
sys.path.insert(0, {root!r})
from tuner.search.trial import run_child
run_child({{"kind": "preflight"}}, timeout=300, settings={{}},
          worker=[sys.executable, {script!r}])
"""


def test_a_search_killed_outright_takes_its_child_and_grandchildren_along(workload_child,
                                                                          monkeypatch):
    script, pids = workload_child
    monkeypatch.setenv("ORPHAN_MODE", "hang")
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(root=str(ROOT),
                                                                    script=str(script))],
                              start_new_session=True)
    try:
        child, grandchild = _wait_for(pids)
    finally:
        parent.kill()
        parent.wait()
    assert _gone(child), "the child outlived its killed search (no parent-death signal)"
    assert _gone(grandchild), "the workload's grandchild outlived its killed search"


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM])
def test_a_search_stopped_by_a_signal_kills_its_child_group(workdir, workload_child, signum):
    script, pids = workload_child
    config = workdir / "study.yaml"
    config.write_text(VALID)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner", "search", "--config", str(config)],
        env=_env(TUNER_WORKER=f"{sys.executable} {script}", ORPHAN_PIDS=str(pids),
                 ORPHAN_MODE="hang"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        child, grandchild = _wait_for(pids)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert _gone(child) and _gone(grandchild)


def test_a_missing_xdg_runtime_dir_falls_back_to_the_per_uid_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNER_LOCK_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "gone"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    assert lock.lock_path() == tmp_path / f"tuner-{os.geteuid()}" / "measure.lock"


# -- malformed tuned files: show and compare ---------------------------------------------------

BRANCHY = HERE / "fixtures" / "branchy.yaml"
DELETE = object()


def _tuned_with(directory: Path, where: str, value: object, name: str = "bad.yaml") -> Path:
    """The branchy fixture with the field at dotted path ``where`` set to ``value`` (or removed)."""
    doc = yaml.safe_load(BRANCHY.read_text())
    *parents, last = where.split(".")
    node = doc
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    path = directory / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


MALFORMED = [
    # where, value, the field the error names, what it says is expected
    ("verdict", "great", "verdict", "one of tuned, defaults, unvalidated"),
    ("verdict", DELETE, "verdict", "one of tuned"),
    ("summary", {"a": 1}, "summary", "one line of text"),
    ("summary", "fine\n\x1b[2Jrm -rf ~", "summary", "one line of text"),
    ("created", 5, "created", "one line of text"),
    ("settings", [1, 2], "settings", "a mapping of settings"),
    ("settings", DELETE, "settings", "missing"),
    ("settings.intra_op_parallelism_threads", "many", "settings.intra_op_parallelism_threads",
     "an integer >= 0"),
    ("settings.inter_op_parallelism_threads", -1, "settings.inter_op_parallelism_threads",
     "an integer >= 0"),
    ("settings.tf_data", "x", "settings.tf_data", "a mapping"),
    ("settings.env", [1], "settings.env", "a mapping"),
    ("settings.env", {"TF_ENABLE_ONEDNN_OPTS": {"nested": 1}},
     "settings.env.TF_ENABLE_ONEDNN_OPTS", "expected a string"),
    ("settings.cpus", "0-3", "settings.cpus", "a list of CPU numbers"),
    ("settings.instances", {"count": 0}, "settings.instances", "{count: N >= 1"),
    ("result", 3, "result", "a mapping"),
    ("result", DELETE, "result", "missing"),
    ("result.throughput", DELETE, "result.throughput", "missing"),
    ("result.throughput", [1, 2], "result.throughput", "a mapping"),
    ("result.throughput.median", True, "result.throughput.median", "a positive number"),
    ("result.throughput.median", DELETE, "result.throughput.median", "missing"),
    ("result.throughput.ci95", [1], "result.throughput.ci95", "a list of two numbers"),
    ("result.baseline_throughput", 5, "result.baseline_throughput", "a mapping"),
    ("result.speedup", "fast", "result.speedup", "a positive number"),
    ("result.speedup", 0, "result.speedup", "a positive number"),
    ("result.speedup_ci95", [1.2], "result.speedup_ci95", "a list of two numbers"),
    ("result.speedup_ci95", ["a", "b"], "result.speedup_ci95", "a list of two numbers"),
    ("result.speedup_ci95", [1.4, 1.3], "result.speedup_ci95", "[low, high]"),
    ("result.p_value", "tiny", "result.p_value", "a number between 0 and 1"),
    ("result.p_value", float("nan"), "result.p_value", "a number between 0 and 1"),
    ("result.p_value", 1.5, "result.p_value", "a number between 0 and 1"),
    ("result.cpu_saturation", "hi", "result.cpu_saturation", "a number >= 0"),
    ("result.baseline_cpu_saturation", float("inf"), "result.baseline_cpu_saturation",
     "a number >= 0"),
    ("result.rejected", {"trial": 3, "speedup": 1.1, "speedup_ci95": [1.0, 1.2], "p_value": "q"},
     "result.rejected.p_value", "a number between 0 and 1"),
    ("machine", [1], "machine", "a mapping"),
    ("machine.usable_cpus", "two", "machine.usable_cpus", "an integer >= 1 or null"),
    ("machine.cpu_model", {"x": 1}, "machine.cpu_model", "a line of text or null"),
    ("workload", "w", "workload", "a mapping"),
    ("workload.batch_size", -1, "workload.batch_size", "an integer >= 0"),
    ("search", "s", "search", "a mapping"),
    ("search.expert_rule", "e", "search.expert_rule", "a mapping"),
    ("search.expert_rule.settings", 3, "search.expert_rule.settings", "a mapping of settings"),
    ("search.expert_rule.speedup_in_search", "x", "search.expert_rule.speedup_in_search",
     "a positive number"),
    ("study", "x", "study", "a mapping"),
    ("study.n_trials", "lots", "study.n_trials", "an integer >= 0"),
    ("study.name", ["a"], "study.name", "one line of text"),
]


@pytest.mark.parametrize("where,value,field,expected", MALFORMED,
                         ids=[f"{w}={'DELETE' if v is DELETE else v!r}"[:60]
                              for w, v, _, _ in MALFORMED])
def test_a_malformed_tuned_file_is_one_error_line_naming_the_field(tmp_path, where, value,
                                                                    field, expected):
    bad = _tuned_with(tmp_path, where, value)
    good = tmp_path / "good.yaml"
    good.write_text(BRANCHY.read_text())
    before = {p: p.read_bytes() for p in (bad, good)}
    for argv in (["show", str(bad)], ["show", str(bad), "--format", "json"],
                 ["compare", str(good), str(bad)], ["compare", str(bad), str(good)]):
        proc = _tuner(*argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        line = _one_error(proc.stderr, f"{bad}: {field}: ", expected)
        assert "\x1b" not in line and proc.stdout == ""
    assert {p: p.read_bytes() for p in (bad, good)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "good.yaml"]


def test_the_error_shows_the_bad_value(tmp_path):
    bad = _tuned_with(tmp_path, "result.p_value", "tiny")
    proc = _tuner("show", str(bad))
    assert proc.returncode == 2
    _one_error(proc.stderr, "result.p_value", "'tiny'")


def test_a_directory_as_tuned_file_says_so(tmp_path):
    proc = _tuner("show", str(tmp_path))
    assert proc.returncode == 2
    _one_error(proc.stderr, str(tmp_path), "is a directory")


@pytest.mark.parametrize("value,expected", [(DELETE, "missing"), (None, "an integer >= 0")])
def test_a_thread_count_the_file_does_not_set_is_refused_never_shown_as_0(tmp_path, value,
                                                                          expected):
    # tuner always writes both thread counts; a file without one is not a tuned file it wrote
    path = _tuned_with(tmp_path, "settings.intra_op_parallelism_threads", value)
    for argv in (["show", str(path)], ["show", str(path), "--format", "json"],
                 ["compare", str(path), str(BRANCHY)]):
        proc = _tuner(*argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        _one_error(proc.stderr, f"{path}: settings.intra_op_parallelism_threads: ", expected)
        assert proc.stdout == ""


# -- reading a storage never writes to it --------------------------------------------------------


def _fingerprint(path: Path) -> tuple[str, int, list[str]]:
    import sqlite3

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = sorted(r[0] for r in db.execute("select name from sqlite_master"))
    return digest, path.stat().st_mtime_ns, tables


@pytest.fixture
def unrelated_db(tmp_path: Path) -> Path:
    """An application's own SQLite database: one table of its own, nothing of Optuna's."""
    import sqlite3

    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("create table orders (id integer primary key, item text)")
        db.execute("insert into orders (item) values ('tea')")
    db.close()
    return path


@pytest.mark.parametrize("argv", [
    ["show", "--storage", "sqlite:///app.db"],
    ["show", "--storage", "sqlite:///app.db", "--study-name", "x"],
    ["report", "--storage", "sqlite:///app.db"],
    ["report", "--storage", "sqlite:///app.db", "--html", "out.html"],
    ["compare", str(BRANCHY), "--storage", "sqlite:///app.db", "--study-name", "x"],
])
def test_an_unrelated_database_is_left_exactly_as_it_was(unrelated_db, argv):
    root = unrelated_db.parent
    before = _fingerprint(unrelated_db)
    listing = _listing(root)
    time.sleep(0.01)  # an mtime that changes is visible
    assert Path.cwd() == root
    proc = _tuner(*argv)
    assert proc.returncode == 2, proc.stderr
    _one_error(proc.stderr, "sqlite:///app.db", "no tuner study here")
    assert _fingerprint(unrelated_db) == before
    assert before[2] == ["orders"]
    assert _listing(root) == listing  # no journal, no out.html


def test_the_absolute_path_form_is_left_alone_too(unrelated_db):
    before = _fingerprint(unrelated_db)
    proc = _tuner("report", "--storage", f"sqlite:///{unrelated_db}")
    assert proc.returncode == 2
    _one_error(proc.stderr, "no tuner study here")
    assert _fingerprint(unrelated_db) == before


@pytest.fixture
def optuna_study(tmp_path: Path) -> str:
    """A small study made by Optuna itself: enough for report to lay out its trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    study.optimize(lambda t: float(t.suggest_int("intra_op_parallelism_threads", 0, 2)),
                   n_trials=3)
    return url


def test_reading_a_tuner_study_changes_nothing_in_its_database(optuna_study, tmp_path):
    db = tmp_path / "study.db"
    before = _fingerprint(db)
    proc = _tuner("report", "--storage", optuna_study)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("study s in ")
    proc = _tuner("show", "--storage", optuna_study)  # no trial a search measured
    assert proc.returncode == 2
    _one_error(proc.stderr, "no complete trial to show")
    assert _fingerprint(db) == before
    import optuna

    from tuner.results import studies

    with pytest.raises(optuna.exceptions.StorageInternalError) as caught:
        optuna.create_study(study_name="t", storage=studies.open_read_only(optuna_study))
    assert "readonly database" in str(caught.value.__cause__)
    assert _fingerprint(db) == before


@pytest.mark.postgres
def test_an_unrelated_postgresql_database_gets_no_optuna_tables(pg_url):
    import sqlalchemy

    engine = sqlalchemy.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("create table orders (id serial primary key, item text)")
        for argv in (["show", "--storage", pg_url], ["report", "--storage", pg_url]):
            proc = _tuner(*argv)
            assert proc.returncode == 2, proc.stderr
            line = _one_error(proc.stderr, "no tuner study here")
            assert urls.mask_url(pg_url) in line and pg_url not in line
        assert sqlalchemy.inspect(engine).get_table_names() == ["orders"]
    finally:
        engine.dispose()


# -- report --html and every other OSError: one line naming the path --------------------------


@pytest.mark.parametrize("make,needle", [
    (lambda d: d / "sub", "is a directory"),
    (lambda d: d / "missing" / "r.html", "no such directory"),
    (lambda d: d / "file.txt" / "r.html", "is not a directory"),
])
def test_report_html_to_a_bad_path_is_one_line_and_writes_nothing(optuna_study, tmp_path, make,
                                                                  needle):
    (tmp_path / "sub").mkdir()
    (tmp_path / "file.txt").write_text("x\n")
    target = make(tmp_path)
    before = _listing(tmp_path)
    started = time.monotonic()
    proc = _tuner("report", "--storage", optuna_study, "--html", str(target))
    assert proc.returncode == 2, proc.stderr
    _one_error(proc.stderr, "--html", str(target), needle)
    assert proc.stdout == ""  # refused before the study was read
    assert time.monotonic() - started < 30
    assert _listing(tmp_path) == before


def test_report_html_into_an_unwritable_directory_is_one_line(optuna_study, tmp_path,
                                                              monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    target = locked / "r.html"
    if os.geteuid() != 0:
        proc = _tuner("report", "--storage", optuna_study, "--html", str(target))
        code, err = proc.returncode, proc.stderr
    else:  # root writes into any directory: the directory answers as it would to a user
        from tuner.base import files  # the one writability check (--html included)

        real_access = os.access
        monkeypatch.setattr(files.os, "access", lambda path, mode: real_access(path, mode)
                            and Path(path) != locked)
        code, err = cli.main(["report", "--storage", optuna_study, "--html", str(target)]), \
            capsys.readouterr().err
    assert code == 2, err
    _one_error(err, "--html", str(target), "permission denied")
    assert list(locked.iterdir()) == []


def test_a_disk_that_fills_up_while_writing_the_report_leaves_no_half_file(optuna_study,
                                                                          tmp_path, monkeypatch,
                                                                          capsys):
    pytest.importorskip("plotly")
    from tuner.base import files

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    out = tmp_path / "out"
    out.mkdir()
    code = cli.main(["report", "--storage", optuna_study, "--html", str(out / "r.html")])
    err = capsys.readouterr().err
    assert code == 1
    _one_error(err, "--html", str(out / "r.html"), "No space left on device")
    assert list(out.iterdir()) == []


def test_any_other_os_error_is_one_line_naming_the_path(monkeypatch, capsys):
    def broken(args):
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/models/tuned.yaml")

    monkeypatch.setattr(cli, "cmd_show", broken)
    code = cli.main(["show", "x.yaml"])
    assert code == 1
    assert capsys.readouterr().err == "error: /srv/models/tuned.yaml: Permission denied\n"


def test_an_os_error_without_a_path_is_one_line_too():
    assert cli.os_error_line(OSError(errno.ENOSPC, "No space left on device")) == \
        "No space left on device"
    assert cli.os_error_line(OSError("disk\ngone")) == "disk"
    assert cli.os_error_line(FileExistsError(errno.EEXIST, "File exists", "a\nb", None, "c")) == \
        "'a\\nb' -> c: File exists"


# -- a tuned file naming a storage with credentials stays private ------------------------------


@pytest.mark.parametrize("storage,mode", [
    ("postgresql://bob:s3cret@db/x", 0o600),
    ("postgresql://bob@db/x?password=s3cret", 0o600),
    ("postgresql://bob@db/x", 0o644),
    ("sqlite:///results/study.db", 0o644),
])
def test_a_tuned_file_naming_credentials_is_written_0600(tmp_path, storage, mode):
    doc = yaml.safe_load(BRANCHY.read_text())
    doc["study"]["storage"] = urls.mask_url(storage)
    path = tmp_path / "tuned.yaml"
    tuned.write(doc, path, study_name="branchy", storage=storage, force=False)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert "s3cret" not in path.read_text()


@pytest.mark.postgres
def test_a_postgresql_study_reads_through_read_only_sessions(pg_url):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name="s", storage=pg_url, direction="maximize")
    study.optimize(lambda t: float(t.suggest_int("intra_op_parallelism_threads", 0, 2)),
                   n_trials=3)
    proc = _tuner("report", "--storage", pg_url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("study s in postgresql://tuner:***@")
    assert len(optuna.load_study(study_name="s", storage=pg_url).trials) == 3
    from tuner.results import studies

    with pytest.raises(optuna.exceptions.StorageInternalError) as caught:
        optuna.create_study(study_name="t", storage=studies.open_read_only(pg_url))
    assert "read-only transaction" in str(caught.value.__cause__)
    assert optuna.get_all_study_names(pg_url) == ["s"]


@pytest.mark.parametrize("last,field", [
    ("x", "tuner.last_result"),
    ({"verdict": "tuned", "result": {"throughput": {"median": 5.0}, "speedup": 1.2,
                                     "speedup_ci95": [1.1], "p_value": 0.01}},
     "result.speedup_ci95"),
    ({"verdict": "tuned", "result": {"throughput": {"median": 5.0}}},
     "tuner.last_result.result.speedup"),
    ({"verdict": "defaults", "result": {"throughput": {"median": 5.0},
                                        "rejected": {"p_value": "q"}}},
     "result.rejected.p_value"),
])
def test_a_damaged_result_recorded_on_a_study_is_one_error_line(optuna_study, last, field):
    import optuna

    optuna.load_study(study_name="s", storage=optuna_study).set_user_attr("tuner.last_result",
                                                                           last)
    for command in ("report", "show"):
        proc = _tuner(command, "--storage", optuna_study)
        assert proc.returncode == 2, proc.stderr
        _one_error(proc.stderr, "study 's'", field)


# -- a tuned file is untrusted input ---------------------------------------------------------------

def _tuned_doc(**settings: object) -> dict:
    doc = {"format_version": 1, "verdict": "tuned", "summary": "1.2x faster",
           "settings": {"intra_op_parallelism_threads": 2, "inter_op_parallelism_threads": 1,
                        "tf_data": {"private_threadpool_size": 2,
                                    "max_intra_op_parallelism": None},
                        "env": {"TF_ENABLE_ONEDNN_OPTS": "0"}},
           "machine": dict(host.detect().as_dict(), tf_version=host.installed_tf_version()),
           **evidence()}
    doc["settings"].update(settings)
    return doc


def _write_tuned(workdir: Path, doc: dict | str | bytes, name: str = "hostile.yaml") -> Path:
    path = workdir / name
    if isinstance(doc, bytes):
        path.write_bytes(doc)
    else:
        path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def _refused_everywhere(workdir: Path, path: Path, *needles: str, flags: tuple = (),
                        real: bool = False) -> None:
    """``run`` and ``export`` in every format refuse ``path`` with exit code 2, one error line
    naming the file and every needle, nothing on stdout, nothing written, no payload run (the
    commands run in ``workdir``, where a payload's ``touch MARK`` would land). In-process
    unless ``real``."""
    assert Path.cwd() == workdir
    before = _listing(workdir)
    commands = [["run", *flags, "--tuned", str(path), "--", "true"],
                *[["export", str(path), "--format", fmt, *flags] for fmt in EXPORT_FORMATS]]
    for argv in commands:
        proc = _tuner(*argv, real=real, refused=True)
        assert proc.returncode == 2, (argv, proc.stderr)
        _one_error(proc.stderr, str(path), *needles)
        assert proc.stdout == "", argv
    assert _listing(workdir) == before
    assert not (workdir / "MARK").exists()


EXPORT_FORMATS = ("shell", "dotenv", "docker", "k8s", "tf-serving")
MARK_PAYLOADS = ["$(touch MARK)", "`touch MARK`", "; touch MARK", "x' ; touch MARK ; '",
                 "x\" ; touch MARK ; \"", "$HOME ${HOME} ~ * ? [a] # not a comment",
                 "back\\slash \\$(touch MARK)", "-Xmx4g -Dflag=a,b"]


@pytest.mark.parametrize("key", ["A=1\nexport EVIL", "$(touch MARK)", "A B", "1ABC", "",
                                 "A;touch MARK", "A\x00B"])
def test_an_env_key_that_is_no_variable_name_is_refused(workdir, key):
    path = _write_tuned(workdir, _tuned_doc(env={key: "1"}))
    _refused_everywhere(workdir, path, "settings.env:", repr(key), "is not a variable name")


@pytest.mark.parametrize("key", ["A=1\nexport EVIL", "$(touch MARK)"])
def test_allow_env_takes_only_variable_names(workdir, key):
    path = _write_tuned(workdir, _tuned_doc())
    proc = _tuner("export", str(path), "--allow-env", key)
    assert proc.returncode == 2
    _one_error(proc.stderr, "--allow-env", repr(key))


@pytest.mark.parametrize("var", ["LD_PRELOAD", "BASH_ENV", "PYTHONSTARTUP", "PYTHONPATH", "PATH",
                                 "MY_FLAGS"])
def test_a_variable_no_knob_sets_is_refused_and_named(workdir, var):
    path = _write_tuned(workdir, _tuned_doc(env={"TF_ENABLE_ONEDNN_OPTS": "0",
                                                 var: "/tmp/evil.so"}))
    _refused_everywhere(workdir, path, f"settings.env.{var}: not a variable tuner sets",
                        "allowed: TF_ENABLE_ONEDNN_OPTS, OMP_NUM_THREADS, KMP_BLOCKTIME, "
                        "KMP_AFFINITY", f"--allow-env {var}")
    # another name allowed does not let this one through
    _refused_everywhere(workdir, path, f"settings.env.{var}", flags=("--allow-env", "OTHER"))


def test_a_thread_count_variable_in_env_points_to_its_field(workdir):
    path = _write_tuned(workdir, _tuned_doc(env={"TF_NUM_INTRAOP_THREADS": "64"}))
    _refused_everywhere(workdir, path, "settings.env.TF_NUM_INTRAOP_THREADS",
                        "settings.intra_op_parallelism_threads sets it", real=True)


@pytest.mark.parametrize("var", ["LD_PRELOAD", "BASH_ENV", "PYTHONSTARTUP", "PYTHONPATH", "PATH"])
def test_allow_env_lets_a_variable_through_on_purpose(workdir, var):
    path = _write_tuned(workdir, _tuned_doc(env={var: "/opt/x y/lib.so"}))
    for fmt in EXPORT_FORMATS:
        proc = _tuner("export", str(path), "--format", fmt, "--allow-env", var)
        assert proc.returncode == 0, proc.stderr
        assert f"{var}=" in proc.stdout or f"name: {var}" in proc.stdout
    # --override: the file's value wins over the one this environment already has
    proc = _tuner("run", "--allow-env", var, "--override", "--tuned", str(path), "--",
                  sys.executable, "-c", f"import os; print(os.environ[{var!r}])")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "/opt/x y/lib.so\n"


@pytest.mark.parametrize("env,field", [
    ({"TF_ENABLE_ONEDNN_OPTS": "banana"}, "settings.env.TF_ENABLE_ONEDNN_OPTS: expected '0', "
                                          "'1', got 'banana'"),
    ({"TF_ENABLE_ONEDNN_OPTS": "0; touch MARK"}, "settings.env.TF_ENABLE_ONEDNN_OPTS"),
    ({"OMP_NUM_THREADS": "4 $(touch MARK)"}, "settings.env.OMP_NUM_THREADS"),
    ({"OMP_NUM_THREADS": "\u00b2"}, "settings.env.OMP_NUM_THREADS"),
    ({"KMP_BLOCKTIME": "-1"}, "settings.env.KMP_BLOCKTIME"),
    ({"KMP_AFFINITY": ""}, "settings.env.KMP_AFFINITY"),
    ({"KMP_AFFINITY": "compact\ntouch MARK"}, "settings.env.KMP_AFFINITY"),
    ({"KMP_AFFINITY": "compact\rtouch MARK"}, "settings.env.KMP_AFFINITY"),
    ({"KMP_AFFINITY": "compact\x00touch MARK"}, "settings.env.KMP_AFFINITY"),
    ({"KMP_AFFINITY": 1}, "settings.env.KMP_AFFINITY: expected a string"),
    ({"TF_ENABLE_ONEDNN_OPTS": None}, "settings.env.TF_ENABLE_ONEDNN_OPTS: expected a string"),
])
def test_an_env_value_is_checked_by_its_knob(workdir, env, field):
    _refused_everywhere(workdir, _write_tuned(workdir, _tuned_doc(env=env)), field)


@pytest.mark.parametrize("value", ["x\ntouch MARK", "x\x00y", "x\rtouch MARK"])
def test_a_value_of_an_allowed_variable_is_still_one_line(workdir, value):
    path = _write_tuned(workdir, _tuned_doc(env={"MY_FLAGS": value}))
    _refused_everywhere(workdir, path, "settings.env.MY_FLAGS", "NUL byte or a line break",
                        flags=("--allow-env", "MY_FLAGS"))


@pytest.mark.parametrize("settings,field", [
    ({"intra_op_parallelism_threads": "1; touch MARK"},
     "settings.intra_op_parallelism_threads: expected an integer >= 0, got '1; touch MARK'"),
    ({"inter_op_parallelism_threads": True}, "settings.inter_op_parallelism_threads"),
    ({"intra_op_parallelism_threads": -1}, "settings.intra_op_parallelism_threads"),
    ({"tf_data": {"private_threadpool_size": "2\n# touch MARK"}},
     "settings.tf_data.private_threadpool_size"),
    ({"tf_data": {"autotune": {"autotune_algorithm": "$(touch MARK)"}}},
     "settings.tf_data.autotune.autotune_algorithm"),
    ({"tf_data": {"x\ntouch MARK": 1}}, "settings.tf_data.'x\\ntouch MARK': unknown"),
    ({"knobs": {"prefetch": "2\ntouch MARK"}}, "settings.knobs.prefetch"),
    ({"knobs": {"prefetch": "2\u2028touch MARK"}}, "settings.knobs.prefetch"),
    ({"knobs": {"prefetch": float("nan")}}, "settings.knobs.prefetch"),
    ({"knobs": {"a\nb": 1}}, "settings.knobs: 'a\\nb' is not a valid knob name"),
    ({"allocator": "$(touch MARK)"}, "settings.allocator"),
    ({"cpus": [0, 0]}, "settings.cpus: CPU 0 appears twice"),
    ({"cpus": [-1]}, "settings.cpus: expected a list of CPU numbers or null"),
    ({"cpus": [0, "1; touch MARK"]}, "settings.cpus"),
    ({"cpus": []}, "settings.cpus"),
    ({"instances": {"count": 2, "cpus": [[0], [0]]}},
     "settings.instances.cpus: CPU 0 is in the sets of instances 0 and 1"),
    ({"instances": {"count": 2, "cpus": None}}, "settings.instances.cpus: expected 2 lists"),
    ({"instances": {"count": 2, "cpus": [[0], [1, 1]]}}, "settings.instances.cpus"),
    ({"instances": {"count": 1, "cpus": [[0]]}}, "settings.instances.cpus: expected null"),
    ({"instances": {"count": 2, "cpus": [[0], [1]], "preexec": "touch MARK"}},
     "settings.instances: unknown key 'preexec'"),
    ({"instances": "2"}, "settings.instances"),
    ({"preexec": "touch MARK"}, "settings: unknown key 'preexec'"),
    ({"env": ["TF_ENABLE_ONEDNN_OPTS=0"]}, "settings.env: expected a mapping"),
])
def test_a_knob_value_is_checked_by_its_knob(workdir, settings, field):
    _refused_everywhere(workdir, _write_tuned(workdir, _tuned_doc(**settings)), field)


@pytest.mark.parametrize("change,field", [
    ({"verdict": "tuned; touch MARK"}, "verdict: expected one of tuned, defaults, unvalidated"),
    ({"verdict": None}, "verdict"),
    ({"format_version": True}, "format_version"),
    ({"format_version": "1"}, "format_version"),
    ({"settings": "touch MARK"}, "settings: expected a mapping of settings"),
    ({"machine": "x"}, "machine: expected a mapping"),
    ({"machine": {"usable_cpus": "8"}}, "machine.usable_cpus"),
    ({"machine": {"cpu_model": "Xeon\nerror: forged line"}}, "machine.cpu_model"),
])
def test_the_document_around_the_settings_is_checked(workdir, change, field):
    doc = _tuned_doc()
    doc.update(change)
    _refused_everywhere(workdir, _write_tuned(workdir, doc), field)


def test_a_raw_nul_byte_is_one_line(workdir):
    text = yaml.safe_dump(_tuned_doc()).replace("'0'", "'0\x00'").encode()
    _refused_everywhere(workdir, _write_tuned(workdir, text), "not a readable tuned file")


def test_a_file_that_is_not_text_or_yaml_is_one_line(workdir):
    _refused_everywhere(workdir, _write_tuned(workdir, b"\xff\xfe\x00garbage"),
                        "not a readable tuned file")
    _refused_everywhere(workdir, _write_tuned(workdir, "[1, 2"), "not a readable tuned file")
    _refused_everywhere(workdir, _write_tuned(workdir, "- 1\n"), "not a tuned file")


def _source(workdir: Path, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], cwd=workdir, capture_output=True, text=True,
                          timeout=30, env={"PATH": os.environ["PATH"], "HOME": "/home/nobody"})


@pytest.mark.parametrize("payload", MARK_PAYLOADS)
def test_exported_values_are_literal_in_every_format(workdir, payload):
    # the variables tuner sets, a variable added on purpose, and the only knob whose rule takes
    # free text, all carrying the payload
    env = {"TF_ENABLE_ONEDNN_OPTS": "1", "MY_FLAGS": payload, "KMP_AFFINITY": payload}
    path = _write_tuned(workdir, _tuned_doc(env=env))
    expected = {**env, "TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1"}
    show = 'printf "%s\\0" "$TF_ENABLE_ONEDNN_OPTS" "$MY_FLAGS" "$KMP_AFFINITY" ' \
           '"$TF_NUM_INTRAOP_THREADS" "$TF_NUM_INTEROP_THREADS"'
    values = list(expected.values())

    def export(fmt: str) -> subprocess.CompletedProcess[str]:
        return _tuner("export", str(path), "--format", fmt, "--allow-env", "MY_FLAGS")

    shell = export("shell")
    assert shell.returncode == 0, shell.stderr
    (workdir / "out.sh").write_text(shell.stdout)
    sourced = _source(workdir, f". ./out.sh && {show}")
    assert sourced.returncode == 0, sourced.stderr
    assert sourced.stdout.split("\0")[:-1] == values
    assert not (workdir / "MARK").exists()

    dotenv = export("dotenv")
    if "'" in payload or "\\" in payload:
        # a quote or backslash reads differently in a shell, python-dotenv and docker: refused
        assert dotenv.returncode == 2
        _one_error(dotenv.stderr, "settings.env.", "use --format shell")
        assert dotenv.stdout == ""
    else:
        assert dotenv.returncode == 0, dotenv.stderr
        (workdir / "out.env").write_text(dotenv.stdout)
        sourced = _source(workdir, f"set -a; . ./out.env; set +a; {show}")
        assert sourced.returncode == 0, sourced.stderr
        assert sourced.stdout.split("\0")[:-1] == values
        assert not (workdir / "MARK").exists()

    docker = export("docker")
    assert docker.returncode == 0, docker.stderr
    assert len(docker.stdout.splitlines()) == 1
    (workdir / "out.flags").write_text(docker.stdout)
    # pasted into `docker run ... `: the shell splits it into exactly these arguments
    parsed = _source(workdir, 'eval "set -- $(cat out.flags)"; printf "%s\\0" "$@"')
    assert parsed.returncode == 0, parsed.stderr
    words = parsed.stdout.split("\0")[:-1]
    assert words[::2] == ["-e"] * len(expected)
    assert sorted(words[1::2]) == sorted(f"{k}={v}" for k, v in expected.items())
    assert not (workdir / "MARK").exists()

    k8s = export("k8s")
    assert k8s.returncode == 0, k8s.stderr
    parsed_k8s = yaml.safe_load(k8s.stdout)
    assert list(parsed_k8s) == ["env"]
    assert sorted(parsed_k8s["env"], key=lambda e: e["name"]) == [
        {"name": k, "value": expected[k]} for k in sorted(expected)]
    for line in k8s.stdout.splitlines():
        assert line.startswith(("#", "env:", "  - name: ", "    value: ")), line


@pytest.mark.parametrize("value", ["true", "null", "0", "1e3", "~", "- x", "a: b", "{x: 1}",
                                   "'", '"', "#x", "\u00e9\u2603"])
def test_k8s_values_that_look_like_other_yaml_stay_strings(workdir, value):
    path = _write_tuned(workdir, _tuned_doc(env={"MY_FLAGS": value}))
    proc = _tuner("export", str(path), "--format", "k8s", "--allow-env", "MY_FLAGS")
    assert proc.returncode == 0, proc.stderr
    env = yaml.safe_load(proc.stdout)["env"]
    assert env[0] == {"name": "MY_FLAGS", "value": value}


def test_the_launcher_passes_a_payload_value_through_literally(workdir):
    payload = "$(touch MARK); `touch MARK` ' \" \\"
    path = _write_tuned(workdir, _tuned_doc(env={"MY_FLAGS": payload}))
    proc = _tuner("run", "--allow-env", "MY_FLAGS", "--tuned", str(path), "--quiet", "--",
                  "sh", "-c", 'printf "%s" "$MY_FLAGS"')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == payload
    assert not (workdir / "MARK").exists()


def test_comments_carry_no_free_text_from_the_file(workdir):
    # a declared knob's string is free text: named in the note, never shown
    doc = _tuned_doc(knobs={"label": "$(touch MARK) #x", "prefetch": 2})
    doc["search"] = {"declared_knobs": {"label": ["a", "$(touch MARK) #x"], "prefetch": [1, 2]}}
    path = _write_tuned(workdir, doc)
    for fmt in ("shell", "dotenv", "k8s"):
        proc = _tuner("export", str(path), "--format", fmt)
        assert proc.returncode == 0, proc.stderr
        assert "declared knobs (label, prefetch=2)" in proc.stdout
        assert "touch MARK" not in proc.stdout
    proc = _tuner("export", str(path), "--format", "docker")
    assert "touch MARK" not in proc.stdout + proc.stderr


def test_a_path_with_a_line_break_stays_in_its_comment(workdir):
    path = _write_tuned(workdir, _tuned_doc(), name="x\ntouch MARK\n.yaml")
    for fmt in ("shell", "dotenv", "k8s"):
        proc = _tuner("export", str(path), "--format", fmt)
        assert proc.returncode == 0, proc.stderr
        assert all(line.startswith(("#", "export ", "TF_", "env:", " ")) for line in
                   proc.stdout.splitlines()), proc.stdout
        if fmt != "k8s":
            (workdir / "out").write_text(proc.stdout)
            sourced = _source(workdir, "set -a; . ./out")
            assert sourced.returncode == 0 and sourced.stderr == "", sourced.stderr
        assert not (workdir / "MARK").exists()


# -- an unvalidated verdict is refused unless accepted ---------------------------------------------

def test_run_and_export_refuse_an_unvalidated_file(workdir):
    doc = _tuned_doc()
    doc["verdict"] = "unvalidated"
    path = _write_tuned(workdir, doc)
    _refused_everywhere(workdir, path, "verdict: unvalidated", "one search trial",
                        "never validated against TensorFlow's defaults", "--allow-unvalidated")


def test_an_unvalidated_file_is_used_when_accepted_and_says_so(workdir):
    doc = _tuned_doc()
    doc["verdict"] = "unvalidated"
    path = _write_tuned(workdir, doc)
    proc = _tuner("run", "--allow-unvalidated", "--tuned", str(path), "--",
                  "sh", "-c", 'printf "%s" "$TF_NUM_INTRAOP_THREADS"')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "2"
    assert "verdict unvalidated" in proc.stderr
    proc = _tuner("export", str(path), "--allow-unvalidated")
    assert proc.returncode == 0, proc.stderr
    assert "# tuned settings from" in proc.stdout and "(verdict: unvalidated)" in proc.stdout
    assert "# verdict unvalidated: these settings come from one search trial" in proc.stdout
    proc = _tuner("export", str(path), "--format", "docker", "--allow-unvalidated")
    assert proc.returncode == 0 and "note: verdict unvalidated" in proc.stderr


def test_a_defaults_verdict_is_fine(workdir):
    doc = _tuned_doc(intra_op_parallelism_threads=0, inter_op_parallelism_threads=0, env={},
                     tf_data={"private_threadpool_size": None, "max_intra_op_parallelism": None})
    doc["verdict"] = "defaults"
    proc = _tuner("export", str(_write_tuned(workdir, doc)), "--format", "k8s")
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout) == {"env": []}


APPLY = """\
import json, os, sys, tuner
before = dict(os.environ)
try:
    tuner.apply(sys.argv[1], **json.loads(sys.argv[2]))
except tuner.ConfigError as exc:
    print("refused:", exc)
print(json.dumps(dict(os.environ) == before), "tensorflow" in sys.modules)
"""


@pytest.mark.parametrize("env,verdict,needles", [
    ({"LD_PRELOAD": "/tmp/evil.so"}, "tuned",
     ("settings.env.LD_PRELOAD: not a variable", "allow_env=['LD_PRELOAD'] (tuner.apply())")),
    ({"TF_ENABLE_ONEDNN_OPTS": "banana"}, "tuned",
     ("settings.env.TF_ENABLE_ONEDNN_OPTS: expected '0', '1', got 'banana'",)),
    ({"MY_FLAGS": "a\x00b"}, "tuned", ("settings.env.MY_FLAGS", "NUL byte")),
    ({}, "unvalidated", ("verdict: unvalidated", "allow_unvalidated=True (tuner.apply())")),
])
def test_apply_refuses_before_touching_anything(workdir, env, verdict, needles):
    doc = _tuned_doc(env=env)
    doc["verdict"] = verdict
    path = _write_tuned(workdir, doc)
    accept = {"allow_env": ["MY_FLAGS"]} if "MY_FLAGS" in env else {}
    proc = subprocess.run([sys.executable, "-c", APPLY, str(path), json.dumps(accept)],
                          capture_output=True, text=True, timeout=60, env=_env())
    assert proc.returncode == 0, proc.stderr
    first, last = proc.stdout.splitlines()
    assert first.startswith("refused: "), proc.stdout
    for needle in needles:
        assert needle in first, (needle, first)
    assert last == "true False"   # the environment untouched, TensorFlow never imported


@pytest.mark.tf
def test_apply_accepts_what_it_is_told_to_and_so_does_the_job_under_the_launcher(workdir):
    doc = _tuned_doc(env={"MY_FLAGS": "$(touch MARK)"})
    doc["verdict"] = "unvalidated"
    path = _write_tuned(workdir, doc)
    code = ("import os, sys, tuner; cfg = tuner.apply(*sys.argv[1:2], allow_env=sys.argv[2:], "
            "allow_unvalidated=len(sys.argv) > 2); print(cfg.verdict, os.environ['MY_FLAGS'])")
    proc = subprocess.run([sys.executable, "-c", code, str(path), "MY_FLAGS"],
                          capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "unvalidated $(touch MARK)"
    # the job's own apply() (no arguments) reads the launcher's file as the launcher accepted it
    proc = _tuner("run", "--allow-env", "MY_FLAGS", "--allow-unvalidated", "--tuned", str(path),
                  "--quiet", "--", sys.executable, "-c", code, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "unvalidated $(touch MARK)"
    assert not (workdir / "MARK").exists()


# -- results are never lost --------------------------------------------------------------------

SEARCHED = VALID + """\
validate:
  candidates: 2
  screen_rounds: 1
  rounds: 4
"""
FAKE = " ".join(fake_worker_command())


def _search_until(workdir: Path, line_starts: str, *args: str, **env: str
                  ) -> tuple[int, str, str]:
    """Start a search, SIGTERM it once a line of its progress (stderr) starts with
    ``line_starts`` (the orchestrator stopping a job), and return its exit code, stdout and
    stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner", "search", "--config", str(workdir / "study.yaml"), *args],
        env=_env(TUNER_WORKER=FAKE, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True)
    seen = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith(line_starts):
                proc.send_signal(signal.SIGTERM)
                break
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen and seen[-1].startswith(line_starts), "".join(seen) + err
    return proc.returncode, out, "".join(seen) + err


@pytest.fixture
def validated(workdir: Path, monkeypatch) -> Path:
    """A finished search of the study (in-process, the fake worker): its validated tuned file."""
    (workdir / "study.yaml").write_text(SEARCHED)
    with monkeypatch.context() as mp:
        mp.setenv("TUNER_WORKER", FAKE)
        proc = _tuner("search", "--config", str(workdir / "study.yaml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path = workdir / "results" / "study" / "tuned.yaml"
    assert yaml.safe_load(path.read_text())["verdict"] in ("tuned", "defaults")
    return path


def test_an_interrupted_rerun_never_replaces_the_validated_file(workdir, validated):
    before = validated.read_bytes()
    beside = validated.with_name("tuned.unvalidated.yaml")
    firsts = []
    for _ in range(2):  # twice: the second interruption loses the first one's result neither
        code, out, err = _search_until(workdir, "trial ", "--n-trials", "30",
                                       FAKE_WINDOW_SLEEP="0.05")
        assert code == 130, out + err
        assert "Traceback" not in err
        assert validated.read_bytes() == before
        assert yaml.safe_load(beside.read_text())["verdict"] == "unvalidated"
        lines = out.strip().splitlines()
        assert lines[-2].startswith(f"wrote {beside.relative_to(workdir)}")
        assert lines[-1].startswith(f"kept {validated.relative_to(workdir)} as it was")
        firsts.append(beside.read_bytes())
    (history,) = validated.parent.glob("tuned.unvalidated.yaml.*.bak")
    assert history.read_bytes() == firsts[0]
    assert sorted(p.name for p in validated.parent.iterdir()) == sorted(
        ["tuned.yaml", "tuned.unvalidated.yaml", history.name])


def _doc(n: int) -> dict:
    doc = yaml.safe_load(BRANCHY.read_text())
    doc["created"] = f"run {n}"
    return doc


@pytest.mark.parametrize("links", [True, False], ids=["hard-link", "copy"])
def test_every_replaced_file_is_kept_in_history(tmp_path, monkeypatch, links):
    if not links:  # a file system without hard links
        def no_links(*args, **kwargs):
            raise PermissionError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(tuned.os, "link", no_links)
    path = tmp_path / "tuned.yaml"
    texts = []
    for n in range(4):  # within a second or two: the history names must still differ
        tuned.write(_doc(n), path, study_name="branchy", storage="sqlite:///x.db", force=True)
        texts.append(path.read_text())
    history = sorted(tmp_path.glob("tuned.yaml.*.bak"))
    assert sorted(p.read_text() for p in history) == sorted(texts[:3])
    for p in history:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
        assert p.name.startswith("tuned.yaml.20")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("keep", [0, 2, 5])
def test_history_is_kept_to_the_newest_n_copies(tmp_path, keep):
    path = tmp_path / "tuned.yaml"
    texts = []
    for n in range(7):
        written = tuned.write(_doc(n), path, study_name="branchy", storage="sqlite:///x.db",
                              force=True, keep_backups=keep)
        texts.append(path.read_text())
    history = tuned.history_of(path)
    assert len(history) == min(keep, 6)
    # the newest copies stay, oldest first, and the last one replaced is the latest copy
    assert [p.read_text() for p in history] == texts[6 - len(history):6]
    assert written.backup == (history[-1] if history else None)
    # another file's history in the folder is not touched
    other = tmp_path / "other.yaml.2026-01-01T00-00-00.bak"
    other.write_text("x")
    tuned.write(_doc(7), path, study_name="branchy", storage="sqlite:///x.db", force=True,
                keep_backups=keep)
    assert other.exists()


def test_history_order_counts_copies_of_one_second_after_the_first(tmp_path):
    path = tmp_path / "tuned.yaml"
    path.write_text("now\n")
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(1_800_000_000))
    for suffix in (".10", ".2", ""):
        (tmp_path / f"tuned.yaml.{stamp}{suffix}.bak").write_text(suffix)
    (tmp_path / "tuned.yaml.2026-01-01T00-00-00.bak").write_text("oldest")
    assert [p.read_text() for p in tuned.history_of(path)] == ["oldest", "", ".2", ".10"]
    tuned.prune_history(path, 2)
    assert [p.read_text() for p in tuned.history_of(path)] == [".2", ".10"]


def test_history_never_overwrites_a_file_of_the_same_second(tmp_path):
    path = tmp_path / "tuned.yaml"
    path.write_text("new\n")
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(1_800_000_000))
    (tmp_path / f"tuned.yaml.{stamp}.bak").write_text("older\n")
    (tmp_path / f"tuned.yaml.{stamp}.2.bak").write_text("old\n")
    kept = tuned.keep_history(path, now=1_800_000_000)
    assert kept.name == f"tuned.yaml.{stamp}.3.bak" and kept.read_text() == "new\n"
    assert (tmp_path / f"tuned.yaml.{stamp}.bak").read_text() == "older\n"
    assert (tmp_path / f"tuned.yaml.{stamp}.2.bak").read_text() == "old\n"


@pytest.mark.parametrize("previous,goes_beside", [
    ("tuned", True), ("defaults", True), ("unvalidated", False), (None, False)])
def test_only_a_validated_file_sends_an_unvalidated_result_beside_it(tmp_path, previous,
                                                                     goes_beside):
    path = tmp_path / "tuned.yaml"
    if previous is not None:
        tuned.write({**_doc(0), "verdict": previous}, path, study_name="branchy",
                    storage="sqlite:///x.db", force=False)
    before = path.read_bytes() if previous else None
    written = tuned.write({**_doc(1), "verdict": "unvalidated"}, path, study_name="branchy",
                          storage="sqlite:///x.db", force=True)  # --force changes nothing here
    if goes_beside:
        assert written.path == tmp_path / "tuned.unvalidated.yaml" and written.kept == path
        assert path.read_bytes() == before and written.backup is None
    else:
        assert written.path == path and written.kept is None
        assert (written.backup is not None) == (previous is not None)
    assert yaml.safe_load(written.path.read_text())["verdict"] == "unvalidated"


@pytest.mark.parametrize("verdict", ["tuned", "defaults"])
def test_a_validated_result_moves_the_stale_unvalidated_file_into_history(tmp_path, capsys,
                                                                          verdict):
    path = tmp_path / "tuned.yaml"
    stale = tmp_path / "tuned.unvalidated.yaml"
    kw = {"study_name": "branchy", "storage": "sqlite:///results/branchy.db", "force": False}
    tuned.write({**_doc(0), "verdict": "tuned"}, path, **kw)
    beside = tuned.write({**_doc(1), "verdict": "unvalidated"}, path, **kw)
    assert beside.path == stale
    unvalidated_bytes = stale.read_bytes()
    first = tuned.write({**_doc(2), "verdict": verdict}, path, **kw)
    assert not stale.exists()   # no stale result left to be taken for the current one
    assert first.retired is not None and first.retired.read_bytes() == unvalidated_bytes
    assert first.retired.name.startswith("tuned.unvalidated.yaml.") \
        and first.retired.name.endswith(".bak")
    assert yaml.safe_load(path.read_text())["verdict"] == verdict
    assert first.backup is not None and yaml.safe_load(first.backup.read_text())["created"] \
        == "run 0"   # the replaced validated file is in the history too
    again = tuned.write({**_doc(3), "verdict": verdict}, path, **kw)
    assert again.retired is None and first.retired.read_bytes() == unvalidated_bytes
    cli.print_summary(yaml.safe_load(path.read_text()), str(path), str(again.backup),
                      retired=str(first.retired))
    assert f"moved the earlier unvalidated result beside it to {first.retired}: this " \
           f"validated result supersedes it" in capsys.readouterr().out


def test_an_unvalidated_result_leaves_an_earlier_unvalidated_file_to_its_history(tmp_path):
    path = tmp_path / "tuned.yaml"
    kw = {"study_name": "branchy", "storage": "sqlite:///results/branchy.db", "force": False}
    tuned.write({**_doc(0), "verdict": "tuned"}, path, **kw)
    tuned.write({**_doc(1), "verdict": "unvalidated"}, path, **kw)
    second = tuned.write({**_doc(2), "verdict": "unvalidated"}, path, **kw)
    assert second.path == tmp_path / "tuned.unvalidated.yaml" and second.retired is None
    assert yaml.safe_load(second.path.read_text())["created"] == "run 2"
    assert yaml.safe_load(second.backup.read_text())["created"] == "run 1"


def test_an_interrupt_during_the_baseline_trial_is_130_and_writes_nothing(workdir):
    (workdir / "study.yaml").write_text(SEARCHED)
    code, out, err = _search_until(workdir, "machine: ", FAKE_BEHAVIOUR="hang-intra-0")
    assert code == 130, out + err
    assert out == "" and err.endswith("\ninterrupted\n"), (out, err)
    assert "no trial of this machine type completed: nothing to write" in err, err
    assert not (workdir / "results" / "study").exists()


def test_an_interrupt_with_no_baseline_trial_writes_an_unvalidated_file(workdir):
    (workdir / "study.yaml").write_text(SEARCHED)
    # the baseline (intra=0) crashes: the study has no baseline measurement on this machine
    code, out, err = _search_until(workdir, "trial   3", "--n-trials", "30",
                                   FAKE_BEHAVIOUR="crash-intra-0")
    assert code == 130, out + err
    assert "Traceback" not in err
    path = workdir / "results" / "study" / "tuned.yaml"
    doc = yaml.safe_load(path.read_text())
    assert doc["verdict"] == "unvalidated"
    assert doc["result"]["baseline_throughput"] is None and doc["result"]["speedup"] is None
    assert out.strip().splitlines()[-1] == f"wrote {path.relative_to(workdir)}"
    proc = _tuner("show", str(path))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("make,needle", [
    (lambda d: d / "out.yaml", "is a directory"),
    (lambda d: d / "file.txt" / "tuned.yaml", "is not a directory"),
    (lambda d: d / "file.txt" / "deeper" / "tuned.yaml", "is not a directory"),
])
def test_an_unwritable_output_fails_in_seconds_before_any_child(workdir, make, needle,
                                                                monkeypatch):
    (workdir / "study.yaml").write_text(SEARCHED)
    (workdir / "out.yaml").mkdir()
    (workdir / "file.txt").write_text("x\n")
    target = make(workdir)
    before = _listing(workdir)
    monkeypatch.setenv("TUNER_WORKER", FAKE)
    monkeypatch.setenv("FAKE_LOG", str(workdir / "children.log"))
    started = time.monotonic()
    proc = _tuner("search", "--config", str(workdir / "study.yaml"), "--output", str(target))
    assert time.monotonic() - started < 30
    assert proc.returncode == 2, proc.stderr
    _one_error(proc.stderr, "--output", str(target), needle)
    assert proc.stdout == ""  # not even the preflight started
    assert _listing(workdir) == before  # no results/, no study, no child's log


def test_an_output_in_a_read_only_directory_fails_before_any_child(workdir, monkeypatch, capsys):
    (workdir / "study.yaml").write_text(SEARCHED)
    locked = workdir / "locked"
    locked.mkdir(mode=0o555)
    target = locked / "tuned.yaml"
    before = _listing(workdir)
    argv = ["search", "--config", str(workdir / "study.yaml"), "--output", str(target)]
    if os.geteuid() != 0:
        proc = _tuner(*argv, TUNER_WORKER=FAKE)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    else:  # root writes into any directory: the directory answers as it would to a user
        real_access = os.access
        monkeypatch.setattr(tuned.os, "access", lambda path, mode: real_access(path, mode)
                            and Path(path) != locked)
        monkeypatch.setenv("TUNER_WORKER", FAKE)
        code = cli.main(argv)
        out, err = capsys.readouterr()
    assert code == 2, err
    _one_error(err, "--output", str(target), "permission denied")
    assert out == ""
    assert _listing(workdir) == before


def test_a_full_disk_while_writing_the_tuned_file_is_one_line_and_keeps_the_old_one(
        workdir, validated, monkeypatch, capsys):
    from tuner.base import files

    before = validated.read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    monkeypatch.setenv("TUNER_WORKER", FAKE)
    code = cli.main(["search", "--config", str(workdir / "study.yaml"), "--n-trials", "1"])
    err = capsys.readouterr().err
    assert code == 1, err
    _one_error(err, "--output", "results/study/tuned.yaml", "No space left on device",
               "previous file is unchanged")
    assert validated.read_bytes() == before
    assert [p.name for p in validated.parent.iterdir()] == ["tuned.yaml"]  # no temp, no .bak


@pytest.mark.parametrize("argv", [["show"], ["show", "--format", "json"], ["compare", "GOOD"],
                                  ["export", "--format", "shell"], ["export", "--format", "k8s"]])
def test_reading_commands_hold_the_contract_in_a_real_process(tmp_path, argv):
    """The in-process runs above stand for real ones: the same malformed files in a real
    interpreter give the same single line, with no traceback."""
    good = tmp_path / "good.yaml"
    good.write_text(BRANCHY.read_text())
    # export reads what it exports (verdict, settings); show and compare every result field too
    cases = (MALFORMED[0],) if argv[0] == "export" else (MALFORMED[0], MALFORMED[-1])
    for where, value, field, expected in cases:
        bad = _tuned_with(tmp_path, where, value)
        command = [argv[0], str(bad), *[str(good) if a == "GOOD" else a for a in argv[1:]]]
        proc = _tuner(*command, real=True)
        assert proc.returncode == 2, (command, proc.stderr)
        _one_error(proc.stderr, f"{bad}: {field}: ", expected)
        assert proc.stdout == ""


@pytest.mark.parametrize("storage,mode", [
    ("postgresql://bob:s3cret@db/x", 0o600),
    ("sqlite+pysqlcipher://:s3cret@/x.db", 0o600),
    ("sqlite:///results/study.db", 0o600),
])
def test_a_tuned_file_honours_the_umask(tmp_path, storage, mode):
    doc = yaml.safe_load(BRANCHY.read_text())
    doc["study"]["storage"] = urls.mask_url(storage)
    path = tmp_path / "tuned.yaml"
    old = os.umask(0o077)
    try:
        tuned.write(doc, path, study_name="branchy", storage=storage, force=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert "s3cret" not in path.read_text()


def test_a_tuned_file_replaces_a_symlink_and_leaves_its_target_alone(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.chmod(victim, 0o600)
    path = tmp_path / "tuned.yaml"
    path.symlink_to(victim)
    doc = yaml.safe_load(BRANCHY.read_text())
    tuned.write(doc, path, study_name="branchy", storage="sqlite:///x.db", force=True)
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert not path.is_symlink() and "branchy" in path.read_text()


# -- round 2 (#24): every reader survives any file -------------------------------------------------

READERS = (("show",), ("show", "--format", "json"), ("show", "--format", "markdown"),
           ("compare", str(BRANCHY)), *(("export", "--format", f) for f in EXPORT_FORMATS))


def _every_reader_refuses(path: Path, *needles: str, seconds: float = 10.0) -> None:
    """show (three formats), compare, export (every format) and run: exit 2, one short error
    line naming the file and every needle, quickly."""
    for argv in (*((a[0], str(path), *a[1:]) for a in READERS),
                 ("run", "--tuned", str(path), "--", "true")):
        start = time.perf_counter()
        proc = _tuner(*argv, refused=True)
        assert time.perf_counter() - start < seconds, argv
        assert proc.returncode == 2, (argv, proc.stderr)
        line = _one_error(proc.stderr, str(path), *needles)
        assert len(line) < 300 and line.isprintable(), line
        assert proc.stdout == "", argv


def _alias_levels(levels: int, where: str) -> str:
    lines = ["format_version: 1", "verdict: tuned", "l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\n{where}: *l{levels}\n"


@pytest.mark.parametrize("text,needle", [
    (_alias_levels(6, "settings"), "anchors and aliases"),
    (_alias_levels(8, "summary"), "anchors and aliases"),
    ("format_version: 1\nverdict: tuned\nsettings: {intra_op_parallelism_threads: "
     + "9" * 5000 + "}\n", "an integer of 5000 characters"),
    ("format_version: 0x" + "f" * 5000 + "\n", "an integer of 5002 characters"),
    ("format_version: 1\nx: !!binary 'AAAA'\n", "the tag 'binary' is not allowed"),
    ("format_version: " + "[" * 3000 + "]" * 3000 + "\n", "nested more than"),
    ("format_version: 1\nsettings: &s {loop: *s}\n", "anchors and aliases"),
])
def test_hostile_yaml_is_one_short_line_in_every_reader(workdir, text, needle):
    path = workdir / "hostile.yaml"
    path.write_text(text)
    _every_reader_refuses(path, "not a readable tuned file", needle)


@pytest.mark.parametrize("where", ["machine", "workload", "study", "search"])
def test_dates_and_other_yaml_types_in_a_tuned_file_print_as_json(workdir, where):
    text = yaml.safe_dump(_tuned_doc()) + "created: 2026-13-45\n"
    doc = yaml.safe_load(text.replace("created: 2026-13-45\n", ""))
    doc.setdefault(where, {})["when"] = "DATE"
    path = _write_tuned(workdir, yaml.safe_dump(doc).replace("'DATE'", "2026-01-01")
                        + "created: 2026-13-45\n")
    for argv in (("show", str(path), "--format", "json"),
                 ("compare", str(path), str(path), "--format", "json"), ("show", str(path))):
        proc = _tuner(*argv)
        assert proc.returncode == 0, (argv, proc.stderr)
    assert json.loads(_tuner("show", str(path), "--format", "json").stdout)["created"] == \
        "2026-13-45"


@pytest.mark.parametrize("value", ["\x1b]0;owned\x07", "a\x1b[2Jb", "x\x9by", "a\u2028b"])
def test_an_environment_value_with_control_characters_is_refused(workdir, value):
    doc = _tuned_doc(env={"KMP_AFFINITY": value})
    _refused_everywhere(workdir, _write_tuned(workdir, doc), "settings.env.KMP_AFFINITY",
                        "control character")


def test_aliases_in_a_sizes_file_are_refused_by_report_and_show(workdir):
    text = yaml.safe_dump(_sizes()) + _alias_levels(8, "workload").split("\n", 2)[2]
    path = _write_tuned(workdir, text, "sizes.yaml")
    for argv in (("report", str(path)), ("show", str(path), "--format", "json"),
                 ("export", str(path), "--size", "1", "--format", "k8s")):
        start = time.perf_counter()
        proc = _tuner(*argv)
        assert time.perf_counter() - start < 5
        assert proc.returncode == 2, (argv, proc.stderr)
        _one_error(proc.stderr, "not a readable sizes file", "anchors and aliases")


def test_a_fifo_is_refused_at_once_by_every_reader(workdir):
    path = workdir / "fifo.yaml"
    os.mkfifo(path)
    _every_reader_refuses(path, "not a regular file", seconds=5.0)
    proc = _tuner("report", str(path))
    assert proc.returncode == 2 and "not a regular file" in proc.stderr


def test_a_long_per_process_list_is_refused_before_any_test_runs(workdir):
    doc = yaml.safe_load(BRANCHY.read_text())
    doc["result"]["throughput"]["per_process"] = [3000.0 + i for i in range(400)]
    path = _write_tuned(workdir, doc)
    start = time.perf_counter()
    proc = _tuner("compare", str(path), str(BRANCHY))
    assert time.perf_counter() - start < 3
    _one_error(proc.stderr, "result.throughput.per_process", "a list of 1 to 64")


# -- the evidence behind the verdict ---------------------------------------------------------------

def test_a_tuned_verdict_without_its_evidence_is_not_validated(workdir):
    doc = {"format_version": 1, "verdict": "tuned", **{
        k: v for k, v in _tuned_doc().items() if k == "settings"}}
    path = _write_tuned(workdir, doc)
    _refused_everywhere(workdir, path, "not validated", "no result")
    with pytest.raises(ConfigError, match="not validated"):
        production.prepare(str(path))
    # --allow-unvalidated still works, and says why the file is not validated
    proc = _tuner("export", str(path), "--format", "shell", "--allow-unvalidated")
    assert proc.returncode == 0 and "export TF_NUM_INTRAOP_THREADS=2" in proc.stdout
    assert "# not validated: the file carries no result" in proc.stdout


@pytest.mark.parametrize("change,needle", [
    ({"speedup": 0.5, "speedup_ci95": [0.4, 0.6]}, "not above 1"),
    ({"p_value": 0.2}, "is not below the level 0.05"),
    ({"speedup": 1.02, "speedup_ci95": [1.01, 1.03]}, "below the minimum speedup 1.05x"),
    ({"p_value": None}, "result.p_value"),
])
def test_evidence_that_contradicts_the_verdict_is_refused_and_shown(workdir, change, needle):
    doc = _tuned_doc()
    doc["result"].update(change)
    doc["summary"] = "1.415x faster than TensorFlow's defaults (95% CI 1.339-1.495, p=0.00397)"
    path = _write_tuned(workdir, doc)
    _refused_everywhere(workdir, path, "not validated", needle)
    proc = _tuner("show", str(path))
    assert proc.returncode == 0, proc.stderr
    verdict = next(line for line in proc.stdout.splitlines() if line.startswith("verdict"))
    assert "the evidence does not support the verdict" in verdict and needle in verdict
    assert "1.415x" not in proc.stdout


def test_a_sequential_validation_is_held_to_its_last_looks_level(workdir):
    doc = _tuned_doc()
    doc["validation"]["sequential"] = {"looks": [{"rounds": 5, "level": 0.0226, "p_value": 0.03}]}
    doc["result"]["p_value"] = 0.03
    _refused_everywhere(workdir, _write_tuned(workdir, doc), "not below the level 0.0226")


def test_settings_that_change_the_numbers_need_their_measured_deviation(workdir):
    doc = _tuned_doc(env={"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"})
    doc["format_version"] = 2
    path = _write_tuned(workdir, doc)
    _refused_everywhere(workdir, path, "the guard's measured deviation, is missing")
    doc["result"]["accuracy"] = {"metric": "rel_l2", "tolerance": 1e-3,
                                 "deviation": 5e-3, "limit": 1e-3, "samples": 16}
    _refused_everywhere(workdir, _write_tuned(workdir, doc), "is beyond the tolerance")
    doc["result"]["accuracy"]["deviation"] = 2e-4
    proc = _tuner("export", str(_write_tuned(workdir, doc)), "--format", "shell")
    assert proc.returncode == 0, proc.stderr
    assert "ONEDNN_DEFAULT_FPMATH_MODE=BF16" in proc.stdout


# -- one kind per file; declared knobs within the declared space -----------------------------------

def test_a_file_that_is_both_a_sizes_file_and_a_tuned_file_is_refused(workdir):
    doc = {**_tuned_doc(), "kind": "sizes", "sizes": [{"cpus": 1, "verdict": "failed"}]}
    path = _write_tuned(workdir, doc)
    for argv in (("show", str(path)), ("report", str(path)),
                 ("export", str(path), "--format", "shell"),
                 ("export", str(path), "--size", "1", "--format", "shell"),
                 ("run", "--tuned", str(path), "--", "true")):
        proc = _tuner(*argv, refused=True)
        assert proc.returncode == 2, (argv, proc.stderr)
        _one_error(proc.stderr, "a file is one or the other")
    del doc["kind"]   # a tuned file with a sizes block
    _refused_everywhere(workdir, _write_tuned(workdir, doc), "a file is one or the other")


@pytest.mark.parametrize("knobs_set,needle", [
    ({"data_dir": "/tmp/attacker"}, "settings.knobs.data_dir: not a knob the search declared"),
    ({"prefetch": 64}, "settings.knobs.prefetch: 64 is not one of the declared values"),
    ({"prefetch": "2"}, "settings.knobs.prefetch: '2' is not one of the declared values"),
])
def test_declared_knobs_stay_within_the_declared_space(workdir, knobs_set, needle):
    doc = _tuned_doc(knobs=knobs_set)
    doc["search"] = {"declared_knobs": {"prefetch": [1, 2, "autotune"]}}
    _refused_everywhere(workdir, _write_tuned(workdir, doc), needle)
    with pytest.raises(ConfigError, match="not"):
        production.prepare(str(workdir / "hostile.yaml"))
    del doc["search"]   # no record of the space: nothing to check the knobs against
    _refused_everywhere(workdir, _write_tuned(workdir, doc), "does not record the space")
    doc = _tuned_doc(knobs={"prefetch": 2})
    doc["search"] = {"declared_knobs": {"prefetch": [1, 2, "autotune"]}}
    assert _tuner("export", str(_write_tuned(workdir, doc)), "--format", "shell").returncode == 0


# -- sizes files -------------------------------------------------------------------------------

def _sizes(**changes: object) -> dict:
    row = {"cpus": 1, "verdict": "tuned",
           "settings": {"intra_op_parallelism_threads": 1, "inter_op_parallelism_threads": 1,
                        "tf_data": {"private_threadpool_size": None,
                                    "max_intra_op_parallelism": None},
                        "env": {}, "cpus": [0]},
           "throughput": {"median": 100.0, "ci95": [95.0, 105.0]}, "per_cpu": 100.0,
           "latency_ms": {"p50": 2.0, "p95": 3.0}, "peak_rss_mb": 512.0}
    doc = {"format_version": 1, "kind": "sizes", "sizes": [row],
           "machine": dict(host.detect().as_dict(), tf_version=host.installed_tf_version())}
    for where, value in changes.items():
        target = doc if where in ("sizes", "workload", "interrupted") else row
        target[where] = value
    return doc


@pytest.mark.parametrize("changes,needle", [
    ({"sizes": [{"cpus": [1], "verdict": "failed"}, {"cpus": [1], "verdict": "failed"}]},
     "sizes[0].cpus: expected an integer >= 1, got [1]"),
    ({"sizes": [{"cpus": {"a": 1}, "verdict": "failed"} for _ in range(2)]}, "sizes[0].cpus"),
    ({"workload": ["x"]}, "workload: expected a mapping"),
    ({"workload": {"model": "a\x1b[2Jb"}}, "workload.model: expected a line of text"),
    ({"interrupted": "stopped\n\x1b]0;owned\x07"}, "interrupted: expected a line of text"),
    ({"peak_rss_mb": 1.7e308}, "peak_rss_mb: expected a number >= 0 and <= 1e+12"),
])
def test_hostile_sizes_files_are_one_line_everywhere(workdir, changes, needle):
    path = _write_tuned(workdir, _sizes(**changes), "sizes.yaml")
    for argv in (("show", str(path)), ("report", str(path)),
                 ("export", str(path), "--size", "1", "--format", "k8s"),
                 ("run", "--tuned", str(path), "--size", "1", "--", "true")):
        proc = _tuner(*argv, refused=True)
        assert proc.returncode == 2, (argv, proc.stderr)
        line = _one_error(proc.stderr, needle)
        assert line.isprintable()


# -- study rows ------------------------------------------------------------------------------------

@pytest.mark.parametrize("attrs,value,needle", [
    ({"throughput": {"median": "fast"}}, 1.0, "throughput.median"),
    ({"throughput": {"median": 0.0}, "role": "baseline"}, 0.0, "throughput.median"),
    ({"throughput": {"median": 5.0}, "role": "baseline"}, -3.0, "value: expected a positive"),
    ({"throughput": {"median": 5.0, "rel_spread": "wide"}}, 5.0, "throughput.rel_spread"),
    ({"throughput": {"median": 5.0}, "settings": {"intra_op_parallelism_threads": "4",
                                                  "inter_op_parallelism_threads": 1}},
     5.0, "settings.intra_op_parallelism_threads"),
])
def test_a_damaged_trial_is_an_error_row(tmp_path, attrs, value, needle):
    import optuna
    from optuna.distributions import IntDistribution
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    dist = {"intra_op_parallelism_threads": IntDistribution(0, 4)}
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=value, user_attrs=attrs,
                                 params={"intra_op_parallelism_threads": 1}, distributions=dist))
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=9.0, distributions=dist,
                                 params={"intra_op_parallelism_threads": 2},
                                 user_attrs={"throughput": {"median": 9.0}}))
    html = tmp_path / "r.html"
    proc = _tuner("report", "--storage", url, "--html", str(html))
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.lstrip().startswith("0 "))
    assert "ERROR" in row and "unreadable record" in row and needle in row
    assert html.is_file()
    proc = _tuner("show", "--storage", url)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
