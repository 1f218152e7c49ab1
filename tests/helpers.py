"""Plain helpers shared by the test modules (fixtures live in conftest.py).

The fake worker (``fake_worker.py``) speaks the real protocol; the helpers here run a search or
one stage of it with it, read the study back, run the CLI in-process and build simulated
machines.
"""

from __future__ import annotations

import functools
import importlib.util
import json
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
from typing import Any

import optuna
import pytest

from tuner import cli, config
from tuner.base import host
from tuner.base.host import Machine
from tuner.search import measuring, study
from tuner.search import pipeline as search
from tuner.search import shared as coord

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
GOLDEN = HERE / "golden"
WORKLOADS = HERE / "workloads"

# The variables the fake worker and the test-only hooks read; every test starts without them.
TEST_ENV = ("FAKE_BEHAVIOUR", "FAKE_SHAPE", "FAKE_NOISE", "FAKE_WINDOW_SLEEP", "FAKE_TF_VERSION",
            "FAKE_TF_DATA", "FAKE_PIPELINE", "FAKE_KNOB_DEFAULTS", "FAKE_INSTANCE_GAIN",
            "FAKE_OPENMP", "FAKE_LOG", "FAKE_SCALING", "FAKE_KNEE", "FAKE_NO_PIN", "FAKE_DIAG",
            "FAKE_THROTTLE", "FAKE_FACTS", "KNOB_RECORD", "FAKE_DEVIATION", "FAKE_BF16_GAIN",
            "TUNER_WORKER", "TUNER_HOST_ID", "TUNER_STORAGE")


def skip_without_tensorflow() -> None:
    """Skip the calling test module when TensorFlow is not installed. It is looked for, not
    imported: importing it costs seconds of CPU in every test process that collects the module,
    also when ``-m "not tf"`` then deselects all of its tests."""
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed", allow_module_level=True)


def fake_worker_command() -> list[str]:
    """The command that replaces ``python -m tuner.child.worker`` (``TUNER_WORKER``: it joined)."""
    return [sys.executable, "-S", str(HERE / "fake_worker.py")]  # -S: see fake_worker.py


@functools.cache
def fake_worker_env() -> dict[str, str]:
    """The environment of a fake child that spares it importing tuner: ``FAKE_FACTS``, what a
    measurement needs from the registry, taken from this process's."""
    import fake_worker

    return {"FAKE_FACTS": json.dumps(fake_worker.tuner_facts())}


# -- configs ---------------------------------------------------------------------------------------

# The least a config needs (the builders are never called by the fake worker).
GOOD = """\
workload:
  model: wl.py:build_model
  data: wl.py:build_data
  mode: predict
"""

# A search that takes seconds with the fake worker: 8 trials of 3 short windows, 2 candidates
# screened once, 4 final rounds (the fewest in which a win can be significant: each round is two
# children, and a test about the rounds themselves sets its own).
FAST = GOOD + """\
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
  rounds: 4
"""

# The fast search with every knob at its default candidates and two declared knobs; format with
# ``n`` (trials) and ``sampler``.
KNOB_STUDY = """\
workload:
  model: wl.py:build_model
  data: wl.py:build_data
  mode: predict
search:
  n_trials: {n}
  trial_timeout: 20
  sampler: {sampler}
measure:
  warmup_seconds: 0
  window_seconds: 0.01
  windows: 3
validate:
  candidates: 2
  screen_rounds: 1
  rounds: 5
space:
  intra_op_parallelism_threads: default
  inter_op_parallelism_threads: default
  tf_data: {{private_threadpool_size: default, max_intra_op_parallelism: default}}
  env: {{TF_ENABLE_ONEDNN_OPTS: default, TF_XLA_FLAGS: default}}
  allocator: default
  instances: default
  cpus: default
knobs:
  map_parallelism: [1, 2, 4, autotune]
  prefetch: [1, autotune]
"""

DUMMY_WORKLOAD = "def build_model():\n    pass\n\ndef build_data():\n    pass\n"


def write_text(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def edit(path: Path, *replacements: tuple[str, str], append: str = "") -> Path:
    """Rewrite the config at ``path``: each ``(old, new)`` replaced, ``append`` added."""
    text = path.read_text()
    for old, new in replacements:
        assert old in text, (old, text)
        text = text.replace(old, new)
    path.write_text(text + append)
    return path


def copy_workloads(directory: Path, *names: str) -> Path:
    """Copy workload modules from tests/workloads into ``directory``."""
    for name in names:
        shutil.copy(WORKLOADS / name, directory / name)
    return directory


# -- the search and its stages, with the fake worker -----------------------------------------------

def run_search(path: Path | str, **overrides: Any) -> search.SearchOutcome:
    """``tuner search`` in-process on the config at ``path`` (with flag ``overrides``); the
    lines it printed are in the outcome's ``lines``."""
    cfg = config.with_overrides(config.load(path), **overrides)
    lines: list[str] = []
    outcome = search.run(cfg, lines.append)
    outcome.lines = lines  # type: ignore[attr-defined]
    return outcome


def run_trials(path: Path | str, **overrides: Any) -> list[str]:
    """The study stage alone, as ``search`` runs it (preflight, open the study, run this worker's
    trials), without the validation: for tests about which trials run. Returns its lines."""
    cfg = config.with_overrides(config.load(path), **overrides)
    lines: list[str] = []
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    locks = coord.Locks(cfg.storage, cfg.study_name)
    try:
        pre = measuring.Measurer(cfg, host.detect(), lines.append).preflight()
        st = study.open_study(measuring.Measurer(cfg, pre.machine, lines.append), pre, locks)
        st.announce()
        st.run_trials(None)
    finally:
        locks.close()
        optuna.logging.set_verbosity(verbosity)
    return lines


def load_study(name: str = "study", storage: str | None = None) -> optuna.Study:
    """A study of ``results/`` in the current directory (the search's default storage)."""
    return optuna.load_study(study_name=name, storage=storage or f"sqlite:///results/{name}.db")


def trials(name: str = "study") -> list[optuna.trial.FrozenTrial]:
    return load_study(name).trials


# -- the command line ------------------------------------------------------------------------------

def run_cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """``python -m tuner ARGV`` in-process: exit code, stdout, stderr."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, err: str, *needles: str, exit_code: int = 2) -> str:
    """Exit ``exit_code``, and stderr ends in one ``error:`` line, no traceback, naming each
    needle. Before it, stderr may hold only progress lines (a search's, which go to stderr so
    that stdout pipes cleanly), never another error."""
    assert code == exit_code, err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), err
    assert sum(line.startswith("error: ") for line in lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    return lines[-1]


def settings_doc(**settings: Any) -> dict[str, Any]:
    """A tuned file's ``settings`` section (under ``"settings"``): TensorFlow's defaults, with
    ``settings`` replacing whole entries."""
    base = {"intra_op_parallelism_threads": 0, "inter_op_parallelism_threads": 0,
            "tf_data": {"private_threadpool_size": None, "max_intra_op_parallelism": None},
            "env": {}}
    base.update(settings)
    return {"settings": base}


def evidence(**result: Any) -> dict[str, Any]:
    """The ``result`` and ``validation`` blocks of a ``tuned`` verdict that its evidence supports
    (the adoption rule: p below alpha, the interval above 1, at least min_speedup); ``result``
    replaces entries of the result block."""
    return {"result": {"throughput": {"median": 120.0, "ci95": [116.0, 124.0],
                                      "per_process": [116.0, 120.0, 124.0, 119.0, 121.0]},
                       "baseline_throughput": {"median": 100.0, "ci95": [98.0, 102.0],
                                               "per_process": [98.0, 100.0, 102.0, 99.0, 101.0]},
                       "speedup": 1.2, "speedup_ci95": [1.14, 1.26], "p_value": 0.004,
                       "significant": True, **result},
            "validation": {"done": True, "alpha": 0.05, "min_speedup": 1.05}}


# -- machines --------------------------------------------------------------------------------------

def fake_machine(root: Path, *, cpus: int, threads_per_core: int = 1, sockets: int = 1,
                 cgroup: str = "0::/\n", files: dict[str, str] | None = None,
                 flags: str = "") -> Path:
    """A /proc and /sys tree under ``root`` for a machine with ``cpus`` logical CPUs; pass it
    as ``host.detect(root, ...)``'s root. ``files`` adds files (cgroup limits, libraries);
    ``flags`` the CPU's instruction flags in /proc/cpuinfo ("avx512_bf16 amx_bf16")."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    (root / "proc/cpuinfo").write_text("".join(f"processor\t: {i}\nmodel name\t: Fake CPU 9000\n"
                                               f"flags\t\t: fpu sse2 {flags}\n\n"
                                               for i in range(cpus)))
    (root / "sys/devices/system/cpu").mkdir(parents=True)
    (root / "sys/devices/system/cpu/online").write_text(f"0-{cpus - 1}\n")
    per_socket = cpus // sockets
    for cpu in range(cpus):
        topo = root / f"sys/devices/system/cpu/cpu{cpu}/topology"
        topo.mkdir(parents=True)
        socket_id = cpu // per_socket
        topo.joinpath("physical_package_id").write_text(f"{socket_id}\n")
        topo.joinpath("core_id").write_text(f"{(cpu % per_socket) // threads_per_core}\n")
    for node in range(sockets):
        d = root / f"sys/devices/system/node/node{node}"
        d.mkdir(parents=True)
        d.joinpath("cpulist").write_text(f"{node * per_socket}-{(node + 1) * per_socket - 1}\n")
    for rel, text in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def sixteen_cpus(root: Path) -> Machine:
    """2 sockets (= NUMA nodes) x 4 cores x 2 hyperthreads, siblings on adjacent CPU numbers,
    jemalloc installed."""
    fake_machine(root, cpus=16, threads_per_core=2, sockets=2,
                 files={"usr/lib/x86_64-linux-gnu/libjemalloc.so.2": ""})
    return host.detect(root, affinity=list(range(16)))


def plain_machine(cpus: int = 2, cpu_flags: tuple[str, ...] = ()) -> Machine:
    """A machine as a value, no files behind it: ``cpus`` CPUs, TensorFlow 2.21.0 with oneDNN;
    ``cpu_flags`` the CPU's compute instructions (host.COMPUTE_FLAGS)."""
    return Machine(visible_cpus=cpus, affinity=tuple(range(cpus)), cpu_quota=None,
                   usable_cpus=cpus, physical_cores=cpus, sockets=1, numa_nodes=1,
                   cpu_model="test", arch="x86_64", hostname="h", python="3", memory_bytes=None,
                   tf_version="2.21.0", onednn_default=True,
                   extra={"cpu_flags": list(cpu_flags)} if cpu_flags else {})


# -- a real PostgreSQL server on loopback, for the tests of workers sharing one study ----------

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
