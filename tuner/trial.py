"""Run one child measurement: build its environment, start it, watch it, read its result.

The parent owns the child's whole life. The child runs in its own process group; on a timeout, a
prune, Ctrl-C or any exception here, the whole group is killed, so no TensorFlow process outlives
its trial. Whatever goes wrong (a signal, an exit code, a hang, a garbled result) comes back as
:class:`~tuner.errors.TrialFailed` with a one-line reason and the tail of the child's output.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from . import space
from .errors import TrialFailed
from .worker import PROTOCOL

_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)

# Every child gets these, so a CPU tuner measures the CPU and TensorFlow's INFO lines do not bury
# the stderr tail that explains a failure. A user's own value wins where it is not a knob.
_CHILD_DEFAULTS = {"CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2",
                   "PYTHONUNBUFFERED": "1"}


def child_env(settings: dict[str, Any], base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: the user's, minus every variable a knob controls, plus the
    trial's environment knobs. A copy, not an allowlist: user code may need its own variables."""
    env = dict(os.environ if base is None else base)
    for name in space.CONTROLLED_ENV:
        env.pop(name, None)
    for key, value in _CHILD_DEFAULTS.items():
        env.setdefault(key, value)
    for name, knob in space.KNOBS.items():
        if knob.applied == space.ENV and settings.get(name) is not None:
            env[knob.target] = str(settings[name])
    # The child must run this very tuner, installed or not.
    paths = [_PACKAGE_PARENT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def worker_command() -> list[str] | None:
    """TUNER_WORKER replaces the real worker (tests use a fake one that speaks the protocol)."""
    value = os.environ.get("TUNER_WORKER")
    return shlex.split(value) if value else None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# Start-up chatter from TensorFlow/absl that explains nothing about a failure.
_NOISE = re.compile(r"^([IW]\d{4} |WARNING: All log messages before absl|To enable the following "
                    r"instructions|oneDNN custom operations are on|This TensorFlow binary is "
                    r"optimized|\s*$)")


def _tail(path: Path, lines: int = 3, limit: int = 400) -> str:
    """The last meaningful lines of the child's output, joined into one line."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.splitlines() if not _NOISE.match(line)][-lines:]
    joined = " | ".join(kept)
    return joined if len(joined) <= limit else "..." + joined[-limit:]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - a zombie we cannot reap
        pass


def _check_measure_result(result: dict[str, Any]) -> None:
    windows = result.get("windows")
    if not isinstance(windows, list) or not windows:
        raise TrialFailed("garbled result: no measurement windows")
    for window in windows:
        value = window.get("throughput") if isinstance(window, dict) else None
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise TrialFailed(f"garbled result: window throughput {value!r}")


def _check_diagnose_result(result: dict[str, Any]) -> None:
    measured = result.get("measured")
    if not isinstance(measured, dict):
        raise TrialFailed("garbled result: no measurement")
    for key in ("seconds", "throughput", "cpu_seconds", "user_seconds", "system_seconds",
                "input_wait"):
        value = measured.get(key)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise TrialFailed(f"garbled result: measured {key} {value!r}")
    if not measured["seconds"] > 0 or not measured["throughput"] > 0:
        raise TrialFailed("garbled result: nothing measured")
    if not isinstance(result.get("threads"), dict):
        raise TrialFailed("garbled result: no thread counts")


class Watch:
    """What the parent learns while the child runs; ``on_window`` may raise to stop it early."""

    def __init__(self, on_window: Callable[[int, float], None] | None = None) -> None:
        self.on_window = on_window
        self.phase = "start"

    def feed(self, line: str) -> None:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            return
        if not isinstance(event, dict):
            return
        if "phase" in event:
            self.phase = str(event["phase"])
        if "window" in event and self.on_window is not None:
            self.on_window(int(event["window"]), float(event["throughput"]))


def run_child(task: dict[str, Any], *, timeout: float, settings: dict[str, Any],
              watch: Watch | None = None, poll: float = 0.1,
              worker: list[str] | None = None) -> dict[str, Any]:
    """Run one task in a fresh child and return its result dict, or raise TrialFailed.

    ``worker`` replaces ``python -m tuner.worker`` (a fake worker speaking the same protocol)."""
    watch = watch or Watch()
    workdir = Path(tempfile.mkdtemp(prefix="tuner-child-"))
    task_path, result_path = workdir / "task.json", workdir / "result.json"
    progress_path, log_path = workdir / "progress.jsonl", workdir / "output.log"
    task = {**task, "protocol": PROTOCOL, "settings": settings, "progress": str(progress_path)}
    task_path.write_text(json.dumps(task))
    progress_path.touch()
    started = time.perf_counter()
    spawned = time.time()
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(log_path, "wb") as log, open(progress_path) as progress:
            proc = subprocess.Popen(
                [*(worker or [sys.executable, "-m", "tuner.worker"]), str(task_path),
                 str(result_path)],
                env=child_env(settings), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
            pending = ""
            while True:
                code = proc.poll()
                chunk = progress.read()
                if chunk:
                    pending += chunk
                    *complete, pending = pending.split("\n")
                    for line in complete:
                        watch.feed(line)
                if code is not None:
                    break
                if time.perf_counter() - started > timeout:
                    _kill_group(proc)
                    raise TrialFailed(f"timed out after {timeout:g} s (phase: {watch.phase}); "
                                      f"the child was killed")
                time.sleep(poll)
        wall = time.perf_counter() - started
        result = _read_result(proc, result_path, log_path, task["kind"])
        result["wall_seconds"] = wall
        # Interpreter start and imports before the worker's main() ran.
        result["startup_seconds"] = max(0.0, float(result.get("child_started", spawned)) - spawned)
        return result
    finally:
        if proc is not None:
            _kill_group(proc)
        for path in (task_path, result_path, progress_path, log_path):
            try:
                path.unlink()
            except OSError:
                pass
        try:
            workdir.rmdir()
        except OSError:
            pass


def _read_result(proc: subprocess.Popen[bytes], result_path: Path, log_path: Path,
                 kind: str) -> dict[str, Any]:
    code = proc.returncode
    tail = _tail(log_path)
    if not result_path.exists():
        if code is not None and code < 0:
            why = f"killed by {_signal_name(-code)}"
            if -code == signal.SIGKILL:
                why += " (out of memory?)"
        else:
            why = f"exited with code {code} before writing a result"
        raise TrialFailed(why + (f"; last output: {tail}" if tail else ""))
    try:
        result = json.loads(result_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TrialFailed(f"garbled result ({exc}); exit code {code}") from None
    if not isinstance(result, dict) or result.get("protocol") != PROTOCOL:
        raise TrialFailed(f"garbled result: not a protocol {PROTOCOL} result")
    if not result.get("ok"):
        raise TrialFailed(str(result.get("error") or "the child reported an unnamed error"))
    if code != 0:
        raise TrialFailed(f"exited with code {code} after writing its result")
    if kind == "measure":
        _check_measure_result(result)
    elif kind == "diagnose":
        _check_diagnose_result(result)
    return result
