"""Fixtures only; the plain helpers they use are in helpers.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    DUMMY_WORKLOAD,
    FAST,
    PG_BIN_DIRS,
    TEST_ENV,
    PostgresServer,
    assert_one_error_line,
    fake_worker_command,
    fake_worker_env,
    run_search,
    write_text,
)

from tuner import cli
from tuner.search import trial

# Every search commits to SQLite many times per trial, and on a disk each commit waits for its
# fsync: on an ext4 /tmp that waiting was a quarter of the lane's wall time. Unless TMPDIR says
# otherwise, the tests' temporary directories (pytest's tmp_path, the trial children's task
# files) live in RAM, on /dev/shm, when it is there and has room (a container's is often 64 MB).
_RAM = "/dev/shm"
if "TMPDIR" not in os.environ and os.path.isdir(_RAM) and os.access(_RAM, os.W_OK | os.X_OK):
    _free = os.statvfs(_RAM)
    if _free.f_bavail * _free.f_frsize >= 2 * 2 ** 30:
        os.environ["TMPDIR"] = _RAM   # pytest-xdist's workers and the children inherit it
        tempfile.tempdir = None       # gettempdir() may have cached /tmp already


def pytest_addoption(parser, pluginmanager):
    """pyproject.toml's addopts ask pytest-xdist for one process per core; without xdist
    (``-p no:xdist``, or not installed) those two flags are accepted and the tests run here."""
    if not pluginmanager.has_plugin("xdist"):
        parser.addoption("--numprocesses", dest="numprocesses", default=None,
                         help="ignored: pytest-xdist is not loaded")
        parser.addoption("--dist", dest="dist", default="no",
                         help="ignored: pytest-xdist is not loaded")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Each test gets its own working directory (results/ lands there) and its own host lock, so
    tests never wait on, or disturb, a real search running on the same machine."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNER_LOCK_FILE", str(tmp_path / "measure.lock"))
    for name in TEST_ENV:
        monkeypatch.delenv(name, raising=False)
    # a fake child started by a test that sets TUNER_WORKER itself starts light too
    for name, value in fake_worker_env().items():
        monkeypatch.setenv(name, value)


def _use_fake_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNER_WORKER", " ".join(fake_worker_command()))
    for name, value in fake_worker_env().items():
        monkeypatch.setenv(name, value)
    # A fake child is done in ~50 ms: at the default 0.1 s, waiting for it would be most of
    # each trial. What a child reports is the same either way.
    monkeypatch.setitem(trial.run_child.__kwdefaults__, "poll", 0.01)


@pytest.fixture
def fake_worker(monkeypatch):
    """Trials in this process run the fake worker instead of ``python -m tuner.child.worker``; so do
    ``python -m tuner`` processes the test starts (they inherit ``TUNER_WORKER``)."""
    _use_fake_worker(monkeypatch)


@pytest.fixture
def search_fails_in_preflight(capsys):
    """``check(path, needles)`` runs ``tuner search`` on a config whose preflight must fail, and
    checks what the user gets: exit 2, one ``error:`` line naming the preflight and every needle,
    and no results folder."""

    def check(path: Path, needles: list[str]) -> None:
        code = cli.main(["search", "--config", str(path)])
        err = capsys.readouterr().err
        assert_one_error_line(code, err, "preflight failed")
        for needle in needles:
            assert needle in err
        assert not Path("results").exists()

    return check


@pytest.fixture
def write_config(tmp_path):
    """``write(body=FAST, name="study.yaml")`` writes a config next to a dummy workload module
    (``wl.py``) and returns its path."""
    (tmp_path / "wl.py").write_text(DUMMY_WORKLOAD)

    def write(body: str | None = None, name: str = "study.yaml", **_: object) -> Path:
        return write_text(tmp_path / name, FAST if body is None else body)

    return write


@contextlib.contextmanager
def _fake_search_in(directory: Path) -> Iterator[pytest.MonkeyPatch]:
    """What ``_isolated`` and ``fake_worker`` set up for one test, for a search shared by several
    (a module or session fixture): ``directory`` as the working directory with a dummy workload
    (``wl.py``) and its own host lock, the fake worker; undone on exit."""
    (directory / "wl.py").write_text(DUMMY_WORKLOAD)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(directory)
        mp.setenv("TUNER_LOCK_FILE", str(directory / "measure.lock"))
        for name in TEST_ENV:
            mp.delenv(name, raising=False)
        _use_fake_worker(mp)
        yield mp


@pytest.fixture(scope="session")
def fake_search_in():
    """``with fake_search_in(directory) as monkeypatch:`` sets up a fake-worker search in
    ``directory`` for a fixture that shares one search among tests that only read it."""
    return _fake_search_in


@pytest.fixture(scope="session")
def _searched_once(tmp_path_factory):
    """One fake-worker study, searched and validated once per test run: 10 random trials."""
    directory = tmp_path_factory.mktemp("study")
    config = write_text(directory / "study.yaml",
                        FAST.replace("n_trials: 8", "n_trials: 10\n  sampler: random"))
    with _fake_search_in(directory):
        outcome = run_search(config)
    return directory, outcome


@pytest.fixture
def small_study(_searched_once, tmp_path):
    """A copy of the session's searched study in this test's directory (``results/study.db``,
    ``results/study/tuned.yaml``), so tests may read or change it independently; returns the
    search's outcome."""
    directory, outcome = _searched_once
    shutil.copytree(directory / "results", tmp_path / "results")
    return outcome


# -- a real PostgreSQL server on loopback, for the tests of workers sharing one study ----------

@pytest.fixture(scope="session")
def postgres_server():
    if not PG_BIN_DIRS:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin): apt-get install "
                    "postgresql; .ci/run installs it")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 is not installed: pip install -e '.[postgres]'")
    server = PostgresServer(PG_BIN_DIRS[0])
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres_server):
    """The URL of a fresh PostgreSQL database on the test server (the password is in it)."""
    return postgres_server.new_database()
