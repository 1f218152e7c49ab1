"""Run one child measurement: build its environment, start it, watch it, read its result.

The parent owns the child's whole life. The child runs in its own process group; on a timeout, a
prune, Ctrl-C or any exception here, the whole group is killed, so no TensorFlow process outlives
its trial, and so is whatever the workload started and left running when the child ends. Should
the parent itself be killed outright (SIGKILL, out of memory), the child gets SIGKILL from the
kernel (Linux's parent-death signal) and a small reaper process kills the rest of its group.
Whatever goes wrong (a signal, an exit code, a hang, a garbled result) comes back as
:class:`~tuner.errors.TrialFailed` with a one-line reason and the tail of the child's output.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from tuner.child.protocol import PROTOCOL, result_problem
from tuner.errors import TrialFailed, check_stop
from tuner.knobs import settings as settings_mod

_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)

# Every child gets these, so a CPU tuner measures the CPU and TensorFlow's INFO lines do not bury
# the stderr tail that explains a failure. A user's own value wins where it is not a knob.
_CHILD_DEFAULTS = {"CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2",
                   "PYTHONUNBUFFERED": "1"}


def child_env(settings: dict[str, Any], base: dict[str, str] | None = None,
              preload: str | None = None) -> dict[str, str]:
    """The child's environment: the user's, minus every variable a knob controls, plus the trial's
    environment knobs, with the allocator library ``preload`` preloaded (see
    :func:`tuner.knobs.settings.child_environment`). A copy, not an allowlist: user code may need
    its own variables."""
    env = settings_mod.child_environment(settings, dict(os.environ if base is None else base),
                                         preload)
    for key, value in _CHILD_DEFAULTS.items():
        env.setdefault(key, value)
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
    """Kill the child's process group: the child if it still runs, and every process its workload
    started there (a data loader's workers, a server) even after the child itself exited.
    A child already reaped had its group killed just before (see :meth:`_Child.ended`); its pid may
    name another process by now."""
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the child and everything in its group are gone
    except PermissionError:
        if proc.poll() is None:
            proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - a zombie we cannot reap
        pass


_PR_SET_PDEATHSIG = 1
_prctl: Any = None


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when this process dies (Linux).

    The signal follows the thread that forks, so children are started from the thread that
    waits for them. ``prctl`` is looked up here, in the parent: the child, forked from a process
    with threads, calls it and nothing else."""
    global _prctl
    if not sys.platform.startswith("linux"):
        return None
    if _prctl is None:
        import ctypes

        try:
            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
            _prctl = False
    if not _prctl:
        return None
    prctl, parent = _prctl, os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above: nobody will tell us
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


class _Reaper:
    """A shell waiting on a pipe that only this process writes to. If this process dies without
    cleaning up, the pipe closes and the shell kills the child's process group: the parent-death
    signal reaches the child only, not what its workload started."""

    def __init__(self, pgid: int) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.fd = -1
        shell = "/bin/sh"
        if not os.path.exists(shell):  # pragma: no cover - not a POSIX system
            return
        read_end, self.fd = os.pipe()
        try:
            # its own session: Ctrl-C or a hang-up on the terminal must not stop it first
            self.proc = subprocess.Popen(
                [shell, "-c", 'read _; kill -s KILL -- "-$0" 2>/dev/null', str(pgid)],
                stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
        except OSError:  # pragma: no cover - out of processes: the child still dies with us
            os.close(self.fd)
            self.fd = -1
        finally:
            os.close(read_end)

    def stop(self) -> None:
        """Stop the reaper without it firing (the parent kills the group itself)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


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


class _Child:
    """One started child: its files, its process, and the progress lines read so far."""

    def __init__(self, task: dict[str, Any], settings: dict[str, Any], worker: list[str] | None,
                 env: dict[str, str], label: str = "") -> None:
        self.label = label
        self.workdir = Path(tempfile.mkdtemp(prefix="tuner-child-"))
        self.task_path = self.workdir / "task.json"
        self.result_path = self.workdir / "result.json"
        self.progress_path = self.workdir / "progress.jsonl"
        self.log_path = self.workdir / "output.log"
        self.task = {**task, "protocol": PROTOCOL, "settings": settings,
                     "progress": str(self.progress_path)}
        self.task_path.write_text(json.dumps(self.task))
        self.progress_path.touch()
        self.pending = ""
        self.spawned = time.time()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = open(self.log_path, "wb")
        self.progress = open(self.progress_path)
        self.reaper: _Reaper | None = None
        self.proc = subprocess.Popen(
            [*(worker or [sys.executable, "-m", "tuner.child.worker"]), str(self.task_path),
             str(self.result_path)],
            env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent())
        self.reaper = _Reaper(self.proc.pid)

    def ended(self) -> int | None:
        """The child's exit code once it has ended, else None. The rest of its group is killed
        before the child is reaped: until then its pid cannot name another process group."""
        proc = self.proc
        assert proc is not None
        if proc.returncode is None:
            try:
                info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except (AttributeError, ChildProcessError):  # no waitid here, or reaped already
                info = None
            if info is not None:
                if self.reaper is not None:
                    self.reaper.stop()
                _kill_group(proc)
        return proc.poll()

    def lines(self) -> list[str]:
        chunk = self.progress.read()
        if not chunk:
            return []
        self.pending += chunk
        *complete, self.pending = self.pending.split("\n")
        return complete

    def close(self) -> None:
        if self.reaper is not None:
            self.reaper.stop()
        if self.proc is not None:
            _kill_group(self.proc)
        for handle in (self.log, self.progress):
            handle.close()
        shutil.rmtree(self.workdir, ignore_errors=True)  # its four files and the folder


def run_child(task: dict[str, Any], *, timeout: float, settings: dict[str, Any],
              watch: Watch | None = None, poll: float = 0.1,
              worker: list[str] | None = None, preload: str | None = None,
              cpus: list[int] | None = None,
              instances: list[list[int]] | None = None) -> dict[str, Any]:
    """Run one task in a fresh child and return its result dict, or raise TrialFailed.

    ``worker`` replaces ``python -m tuner.child.worker`` (a fake worker speaking the same protocol).
    ``preload`` is an allocator library to preload; ``cpus`` pins the child to those
    CPUs. ``instances`` runs one child per CPU set instead, all at once (they warm up, wait for
    each other, then measure the same seconds); the result is their sum (see
    :func:`combine_instances`), and pruning sees instance 0's windows times the count."""
    watch = watch or Watch()
    env = child_env(settings, preload=preload)
    sets = instances if instances and len(instances) > 1 else None
    children: list[_Child] = []
    barrier_dir: str | None = None
    started = time.perf_counter()
    try:
        if sets is None:
            child_task = dict(task)
            if cpus:
                child_task.update(cpus=list(cpus), affinity=list(cpus), usable_cpus=len(cpus))
            children.append(_Child(child_task, settings, worker, env))
        else:
            barrier_dir = tempfile.mkdtemp(prefix="tuner-barrier-")
            for index, cpu_set in enumerate(sets):
                child_task = {**task, "cpus": list(cpu_set), "affinity": list(cpu_set),
                              "usable_cpus": len(cpu_set),
                              "barrier": {"dir": barrier_dir, "index": index, "count": len(sets),
                                          "timeout": timeout}}
                children.append(_Child(child_task, settings, worker, env,
                                       f"instance {index} of {len(sets)}"))
        scale = len(children)
        first = children[0]
        while True:
            codes = [c.ended() for c in children]
            for line in first.lines():
                if scale > 1:
                    line = _scaled(line, scale)
                watch.feed(line)
            for other in children[1:]:
                other.lines()
            if all(code is not None for code in codes):
                break
            failed = [c for c, code in zip(children, codes) if code not in (None, 0)]
            if failed:  # one instance died: the others would wait at the barrier for nothing
                break
            if time.perf_counter() - started > timeout:
                for c in children:
                    _kill_group(c.proc)  # type: ignore[arg-type]
                raise TrialFailed(f"timed out after {timeout:g} s (phase: {watch.phase}); "
                                  f"the child was killed")
            # a stop whose KeyboardInterrupt Python swallowed (raised inside a callback such as
            # SQLAlchemy's connection cleanup) ends the wait here, not at the child's timeout
            check_stop()
            time.sleep(poll)
        wall = time.perf_counter() - started
        results = _read_results(children, codes, task["kind"], wall)
        results = [r for _, r in sorted(results, key=lambda pair: pair[0])]
        if len(results) == 1:
            return results[0]
        return combine_instances(results, sets)  # type: ignore[arg-type]
    finally:
        for child in children:
            child.close()
        if barrier_dir is not None:
            shutil.rmtree(barrier_dir, ignore_errors=True)


def _read_results(children: list[_Child], codes: list[int | None], kind: str,
                  wall: float) -> list[tuple[int, dict[str, Any]]]:
    """Each child's result (by its index), its group killed first if it still runs."""
    results = []
    # A failed instance's own reason first, not "killed" for the others stopped because of it.
    ended = {id(c): code for c, code in zip(children, codes)}
    for child in sorted(children, key=lambda c: ended[id(c)] in (None, 0)):
        if child.proc.poll() is None:  # type: ignore[union-attr]
            _kill_group(child.proc)  # type: ignore[arg-type]
        try:
            result = _read_result(child.proc, child.result_path, child.log_path,  # type: ignore[arg-type]
                                  kind)
        except TrialFailed as exc:
            if child.label:
                raise TrialFailed(f"{child.label}: {exc.reason}") from None
            raise
        result["wall_seconds"] = wall
        # Interpreter start and imports before the worker's main() ran.
        result["startup_seconds"] = max(0.0, float(result.get("child_started", child.spawned))
                                        - child.spawned)
        results.append((children.index(child), result))
    return results


def _scaled(line: str, factor: int) -> str:
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return line
    if isinstance(event, dict) and "throughput" in event:
        event["throughput"] = float(event["throughput"]) * factor
    return json.dumps(event)


def combine_instances(results: list[dict[str, Any]], sets: list[list[int]]) -> dict[str, Any]:
    """N concurrent instances as one measurement: throughput is the sum per window, step
    latency the worst instance's, CPU saturation weighted by each instance's CPUs."""
    sizes = [len(s) for s in sets]
    total_cpus = sum(sizes)
    n_windows = min(len(r["windows"]) for r in results)
    windows = []
    for i in range(n_windows):
        parts = [r["windows"][i] for r in results]
        windows.append({
            "index": i,
            "seconds": max(w["seconds"] for w in parts),
            "steps": sum(w.get("steps", 0) for w in parts),
            "samples": sum(w.get("samples", 0) for w in parts),
            "throughput": sum(w["throughput"] for w in parts),
            "cpu_saturation": sum(w.get("cpu_saturation", 0.0) * n
                                  for w, n in zip(parts, sizes)) / total_cpus,
            "input_wait": sum(w.get("input_wait", 0.0) for w in parts) / len(parts),
        })
    first = results[0]
    latency = {key: max(r["step_latency_ms"].get(key, 0.0) for r in results)
               for key in first.get("step_latency_ms", {}) if key != "steps"}
    latency["steps"] = sum(r["step_latency_ms"].get("steps", 0) for r in results)
    combined = dict(first)
    combined.update({
        "windows": windows,
        "step_latency_ms": latency,
        "cpu_saturation": sum(r["cpu_saturation"] * n for r, n in zip(results, sizes)) / total_cpus,
        "per_core_busy": [b for r in results for b in (r.get("per_core_busy") or [])],
        "input_wait": sum(r.get("input_wait", 0.0) for r in results) / len(results),
        "peak_rss_bytes": sum(r.get("peak_rss_bytes", 0) for r in results),
        "threads": sum(r.get("threads", 0) for r in results),
        "affinity": sorted(c for r in results for c in (r.get("affinity") or [])),
        "instances": [{"cpus": list(s), "affinity": r.get("affinity"),
                       "throughput": sorted(w["throughput"] for w in r["windows"])[
                           len(r["windows"]) // 2],
                       "step_latency_ms": r.get("step_latency_ms")}
                      for r, s in zip(results, sets)],
        "startup_seconds": max(r.get("startup_seconds", 0.0) for r in results),
    })
    firsts = [r["first_steps"] for r in results if r.get("first_steps")]
    if firsts:   # the slowest instance's first steps: the job waits for it
        combined["first_steps"] = max(firsts, key=lambda f: f["seconds"])
    return combined


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
    problem = result_problem(kind, result)
    if problem:
        raise TrialFailed(f"garbled result: {problem}")
    return result
