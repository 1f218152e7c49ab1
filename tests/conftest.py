from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
WORKLOADS = HERE / "workloads"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Each test gets its own working directory (results/ lands there) and its own host lock, so
    tests never wait on, or disturb, a real search running on the same machine."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNER_LOCK_FILE", str(tmp_path / "measure.lock"))
    for name in ("FAKE_BEHAVIOUR", "FAKE_SHAPE", "FAKE_NOISE", "FAKE_WINDOW_SLEEP",
                 "FAKE_TF_VERSION",
                 "TUNER_WORKER", "TUNER_HOST_ID", "TUNER_STORAGE", "FAKE_TF_DATA", "FAKE_PIPELINE",
                 "FAKE_KNOB_DEFAULTS", "KNOB_RECORD"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_worker(monkeypatch):
    monkeypatch.setenv("TUNER_WORKER", f"{sys.executable} {HERE / 'fake_worker.py'}")


@pytest.fixture
def search_fails_in_preflight(capsys):
    """``check(path, needles)`` runs ``tuner search`` on a config whose preflight must fail, and
    checks what the user gets: exit 2, one ``error:`` line naming the preflight and every needle,
    and no results folder."""
    from tuner import cli

    def check(path: Path, needles: list[str]) -> None:
        code = cli.main(["search", "--config", str(path)])
        err = capsys.readouterr().err
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
        assert "preflight failed" in err
        for needle in needles:
            assert needle in err
        assert not Path("results").exists()

    return check


@pytest.fixture
def write_config(tmp_path):
    """Write a config next to a dummy workload module; returns the config path."""
    module = tmp_path / "wl.py"
    module.write_text("def build_model():\n    pass\n\ndef build_data():\n    pass\n")

    def write(body: str | None = None, name: str = "study.yaml", **_: object) -> Path:
        path = tmp_path / name
        text = body if body is not None else FAST
        path.write_text(textwrap.dedent(text))
        return path

    return write


FAST = """\
workload:
  model: wl.py:build_model
  data: wl.py:build_data
  mode: predict
search:
  n_trials: 8
  trial_timeout: 20
measure:
  warmup_seconds: 0
  window_seconds: 0.01
  windows: 3
validate:
  candidates: 2
  screen_rounds: 1
  rounds: 5
"""


# -- a real PostgreSQL server on loopback, for the tests of workers sharing one study --------------

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
PG_PASSWORD = "Pw-9f3Kq-s3cr3t"  # the tests grep every output for it


class PostgresServer:
    """``initdb`` into a temporary directory and ``pg_ctl start`` on a free loopback port. initdb
    refuses to run as root, so as root the server runs as the ``postgres`` OS user."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="tuner-pg-"))
        self.data = self.root / "data"
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            runuser = shutil.which("runuser")
            self.prefix = [runuser, "-u", "postgres", "--"] if runuser else \
                ["su", "postgres", "-s", "/bin/sh", "-c"]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        pwfile = self.root / "pw"
        pwfile.write_text("superuser-unused\n")
        if self.prefix:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                  "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                  "--no-sync")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w",
                  "-o", f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                        f"-c unix_socket_directories={self.root} -c fsync=off "
                        f"-c max_connections=200", "start")
        self.psql("CREATE USER tuner PASSWORD '" + PG_PASSWORD + "'")
        self._n = 0

    def _run(self, tool: str, *args: str) -> str:

        cmd = [str(self.bindir / tool), *args]
        if self.prefix and self.prefix[0] == "su":
            cmd = [*self.prefix, shlex.join(cmd)]
        else:
            cmd = [*self.prefix, *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return proc.stdout

    def psql(self, sql: str) -> str:
        return self._run("psql", "-h", str(self.root), "-p", str(self.port), "-U", "postgres",
                         "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql)

    def new_database(self) -> str:
        """A fresh database owned by the test user; returns its URL (with the password)."""
        self._n += 1
        name = f"t{os.getpid()}_{self._n}"
        self.psql(f"CREATE DATABASE {name} OWNER tuner")
        return f"postgresql://tuner:{PG_PASSWORD}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:

        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


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
