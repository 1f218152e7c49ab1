"""Run a command with a tuned file's settings, and export them for other launchers.

``python -m tuner run --tuned tuned.yaml -- python train.py`` sets the environment (the file's
variables, the thread-count variables TensorFlow reads, and ``TUNER_TUNED_FILE`` so
``tuner.apply()`` in the job finds the same file), then *replaces itself* with the command
(``exec``): the command's exit code, output and signals (Ctrl-C, an orchestrator's SIGTERM) are
its own, with nothing in between to lose them.

``python -m tuner export tuned.yaml --format shell|dotenv|docker|k8s`` prints the same variables
for places that take environment variables; ``--format tf-serving`` a wrapper script that starts
``tensorflow_model_server`` with the thread counts as its own flags and the rest as variables.
The tf.data settings live inside the job's pipeline, so no environment variable can carry them;
every format says so.

Both read the file with :func:`tuner.tuned.reader.read` (untrusted input: every setting checked,
only tuner's own variables unless ``--allow-env NAME``, no ``unvalidated`` verdict unless
``--allow-unvalidated``), and ``export`` cannot inject: every name is a plain variable name, every
value is quoted for its format (or refused where the format cannot carry it literally), the k8s
fragment is built as data and dumped by PyYAML, and comments carry only values checked by their
knob's rule.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

import tuner.knobs as knobs
from tuner.base import cpusets, host
from tuner.base.render import did_you_mean, plain, quoted
from tuner.base.yamlsafe import shown
from tuner.errors import CommandError, ConfigError
from tuner.knobs import settings
from tuner.production.apply import (
    ALLOW_ENV_ENV,
    ALLOW_UNVALIDATED_ENV,
    SIZE_ENV,
    TUNED_FILE_ENV,
    check_machine,
    check_placement,
    pin,
    read,
)
from tuner.tuned import reader

FORMATS = ("shell", "dotenv", "docker", "k8s", "tf-serving")


def tf_data_note(doc: dict[str, Any]) -> str | None:
    """What the environment cannot carry: tf.data options and declared knobs live in the job.
    Values appear only where their knob's rule accepts them (a declared knob's free text is
    named, not shown), so the note is safe in a comment line."""
    flat = settings.flatten(doc["settings"])
    data = [f"{knob.target}={knobs.text(flat[knob.name])}" if knob.is_valid(flat[knob.name])
            else knob.target for knob in knobs.TF_DATA if flat.get(knob.name) is not None]
    declared = [f"{k}={knobs.text(v)}" if _plain_token(v) else str(k)
                for k, v in (doc["settings"].get("knobs") or {}).items()]
    precision = [f"{k.name}={knobs.text(flat[k.name])}" for k in knobs.PRECISION_IN_PROCESS
                 if flat.get(k.name) is not None and k.is_valid(flat[k.name])]
    notes = []
    if data:
        notes.append(f"tf.data settings ({', '.join(data)}) cannot be set from the environment: "
                     f"call cfg = tuner.apply() in the job and use "
                     f"ds.with_options(cfg.dataset_options())")
    if declared:
        notes.append(f"declared knobs ({', '.join(declared)}) are the job's own arguments: pass "
                     f"cfg.knobs[name] (cfg = tuner.apply()) where the pipeline takes them")
    if precision:
        notes.append(f"not carried: reduced precision set inside the process "
                     f"({', '.join(precision)}): call cfg = tuner.apply() in the job, before it "
                     f"builds the model")
    return _one_line("; ".join(notes)) or None


_TOKEN = re.compile(r"[A-Za-z0-9_.:+-]*")


def _plain_token(value: Any) -> bool:
    if isinstance(value, str):
        return bool(_TOKEN.fullmatch(value))
    return value is None or isinstance(value, (bool, int, float))


def _one_line(text: str) -> str:
    """``text`` with every line break and control character turned into a space: a comment or
    message line stays one line, whatever it quotes."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", " ", text)


def launch_env(doc: dict[str, Any], path: str, base: dict[str, str] | None = None,
               override: bool = False, allow_env: Iterable[str] = (),
               allow_unvalidated: bool = False, size: int | None = None
               ) -> tuple[dict[str, str], dict[str, str]]:
    """The command's environment and the user's own values kept over the file's.

    Same precedence as ``apply()``: a variable already set in the environment wins unless
    ``override``. What the user accepted (``allow_env``, ``allow_unvalidated``) goes along, so
    ``tuner.apply()`` in the job reads the same file the same way."""
    env = dict(os.environ if base is None else base)
    kept = {}
    for var, value in settings.environment(doc["settings"]).items():
        if var in env and env[var] != value and not override:
            kept[var] = env[var]
            continue
        env[var] = value
    env[TUNED_FILE_ENV] = str(Path(path).resolve())
    for var, value in ((ALLOW_ENV_ENV, ",".join(allow_env)),
                       (ALLOW_UNVALIDATED_ENV, "1" if allow_unvalidated else ""),
                       (SIZE_ENV, str(size) if size is not None else "")):
        if value:
            env[var] = value
        else:
            env.pop(var, None)
    env = knobs.ALLOCATOR.preloaded(env, settings.file_plan(doc["settings"]).preload)
    return env, kept


def _notes(doc: dict[str, Any], path: str) -> list[str]:
    notes = []
    plan = settings.file_plan(doc["settings"])
    if plan.allocator != knobs.ALLOCATOR.default and plan.preload is None:
        notes.append(f"warning: the file's allocator, {plan.allocator}, is not installed here "
                     f"({host.INSTALL_HINT[plan.allocator]}); running with the system allocator")
    return notes


def run(path: str, command: Sequence[str], *, strict: bool = False, override: bool = False,
        quiet: bool = False, instance: int | None = None, allow_env: Iterable[str] = (),
        allow_unvalidated: bool = False, size: int | None = None) -> int:
    """Run ``command`` with the tuned settings.

    One instance: pin this process, then *exec* the command (it inherits the CPU set and the
    environment; exit code and signals are its own); does not return. Several instances in the
    file (and no ``instance``): start one pinned process per instance, each told its index in
    ``TUNER_INSTANCE``, forward SIGINT/SIGTERM to them, and return the first non-zero exit code
    (0 when all succeed). ``instance``: exec just that one instance. ``allow_env`` and
    ``allow_unvalidated``: what the file may hold beyond the default (see :func:`read`).
    ``size``: with a sizes file, the row for that many CPUs (the job's ``tuner.apply()`` is
    told the same row)."""
    if not command:
        raise ConfigError("run: no command given; usage: python -m tuner run --tuned FILE -- "
                          "COMMAND [ARGS...]")
    tuned = read(path, allow_env, allow_unvalidated, size)
    doc = tuned.doc
    reader.check_cpu(doc, path, host.detect().cpu_flags)
    import warnings

    check_placement(doc, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_machine(doc, path, strict)
    env, kept = launch_env(doc, path, override=override, allow_env=tuned.allowed_env,
                           allow_unvalidated=allow_unvalidated, size=size)
    executable = find_command(command[0], env.get("PATH"))
    plan = settings.file_plan(doc["settings"])
    sets = plan.instances
    if instance is not None and sets is None:
        raise ConfigError(f"run --instance: {path} runs a single instance; drop --instance")
    messages = [f"warning: {w.message}" for w in caught] + _notes(doc, path)
    if kept:
        messages.append("warning: kept the environment's own values over the tuned file's: "
                        + ", ".join(f"{k}={v}" for k, v in kept.items())
                        + " (--override to use the file's)")
    note = tf_data_note(doc)
    if note:
        messages.append(f"note: {note}")
    if tuned.verdict == "unvalidated":
        messages.append(f"warning: {UNVALIDATED_NOTE}")
    problem = reader.evidence_problem(doc) if "size" not in doc else None
    if problem:   # accepted with --allow-unvalidated
        messages.append(f"warning: not validated: {problem}")
    if sets is not None and instance is None:
        return _run_instances(executable, list(command), env, sets, messages, quiet)
    if instance is not None:
        env[settings.INSTANCE_ENV] = str(instance)
        env[settings.INSTANCES_ENV] = str(len(sets))  # type: ignore[arg-type]
    why = pin(plan.cpus_of(instance))  # exec keeps the affinity
    if why:
        messages.append(f"warning: {why}")
    if not quiet:
        for line in messages:
            print(f"tuner: {plain(line)}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(executable, list(command), env)
    except OSError as exc:   # e.g. a script without a #! line, a binary for another machine
        raise CommandError(f"run: {command[0]!r}: cannot execute: {exc.strerror or exc}",
                           CommandError.NOT_FOUND if exc.errno == errno.ENOENT
                           else CommandError.NOT_EXECUTABLE) from None
    return 0  # not reached


def find_command(name: str, path: str | None) -> str:
    """The executable ``run`` starts for ``name``, looked up as a shell does: a name with a
    slash is a path, otherwise searched in ``path``. Not found: :class:`CommandError` with exit
    127; found but not executable (no permission, a directory): 126."""
    found = shutil.which(name, path=path)
    if found is not None:
        return found
    if "/" in name:
        candidates = [name]
    else:
        candidates = [os.path.join(d or ".", name)
                      for d in (path if path is not None else os.defpath).split(os.pathsep)]
    present = [c for c in candidates if os.path.exists(c)]
    if not present:
        raise CommandError(f"run: command not found: {name!r}", CommandError.NOT_FOUND)
    why = "is a directory" if os.path.isdir(present[0]) else "permission denied (not executable)"
    raise CommandError(f"run: {present[0]!r}: {why}", CommandError.NOT_EXECUTABLE)


def _run_instances(executable: str, command: list[str], base_env: dict[str, str],
                   sets: list[list[int]], messages: list[str], quiet: bool) -> int:
    import signal
    import subprocess

    if not quiet:
        for line in messages:
            print(f"tuner: {plain(line)}", file=sys.stderr)
        print(f"tuner: starting {len(sets)} instances on CPUs "
              + " | ".join(host.format_cpus(s) for s in sets), file=sys.stderr)
    procs: list[subprocess.Popen[bytes]] = []
    for index, cpus in enumerate(sets):
        env = dict(base_env, **{settings.INSTANCE_ENV: str(index),
                                settings.INSTANCES_ENV: str(len(sets))})
        note = cpusets.pin_check(cpus)
        if note and not quiet:
            print(f"tuner: warning: instance {index}: {plain(note)}", file=sys.stderr)
        procs.append(subprocess.Popen(
            command, executable=executable, env=env,
            preexec_fn=None if note else (lambda c=cpus: os.sched_setaffinity(0, c))))

    def forward(signum: int, _frame: Any) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [proc.wait() for proc in procs]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failed = [c for c in codes if c != 0]
    if failed and not quiet:
        print("tuner: instance exit codes: " + ", ".join(map(str, codes)), file=sys.stderr)
    if not failed:
        return 0
    code = failed[0]
    return 128 - code if code < 0 else code  # killed by a signal: the shell's 128+N


UNVALIDATED_NOTE = ("verdict unvalidated: these settings come from one search trial and were "
                    "never validated against TensorFlow's defaults (re-run the search to validate)")


def export(path: str, fmt: str, *, allow_env: Iterable[str] = (),
           allow_unvalidated: bool = False, size: int | None = None) -> str:
    """The file's environment in ``fmt``; a comment (or, for docker, nothing) notes the rest.
    ``size``: with a sizes file, its row for that many CPUs; k8s then also gets the container's
    CPU and memory resources and the recommended replica count."""
    if fmt not in FORMATS:
        raise ConfigError(f"export --format: {quoted(fmt)} is not allowed"
                          f"{did_you_mean(fmt, FORMATS)}; allowed: {', '.join(FORMATS)}")
    doc = read(path, allow_env, allow_unvalidated, size).doc
    env = settings.environment(doc["settings"])
    plan = settings.file_plan(doc["settings"])
    name, library = plan.allocator, plan.preload
    note = tf_data_note(doc)
    header = [f"tuned settings from {path}"
              + (f", size {doc['size']['cpus']} CPU(s)" if "size" in doc else "")
              + f" (verdict: {doc['verdict']})"]
    if doc["verdict"] == "unvalidated":
        header.append(UNVALIDATED_NOTE)
    problem = reader.evidence_problem(doc) if "size" not in doc else None
    if problem:   # accepted with --allow-unvalidated
        header.append(f"not validated: {problem}")
    if note:
        header.append(note)
    variable = knobs.ALLOCATOR.variable
    if name != knobs.ALLOCATOR.default:
        if library:
            env[variable] = library
            header.append(f"allocator {name}: {variable} is this machine's path; in an image, "
                          f"install it ({host.INSTALL_HINT[name]}) and check the path")
        else:
            header.append(f"allocator {name} is not installed here "
                          f"({host.INSTALL_HINT[name]}): no {variable} written")
    cpus = plan.cpus
    sets = plan.instances
    if cpus and "size" in doc and fmt == "k8s":
        header.append(f"measured pinned to CPU(s) {host.format_cpus(cpus)}; in a pod the CPU "
                      f"limit below stands in for the pinning")
    elif cpus:
        where = host.format_cpus(cpus)
        header.append(f"CPU set {where}: no variable pins a process; use `taskset -c {where}`, "
                      f"docker run --cpuset-cpus={where}, or `python -m tuner run`")
    if sets:
        header.append(f"{len(sets)} instances on CPUs "
                      + " | ".join(host.format_cpus(s) for s in sets)
                      + ": start them with `python -m tuner run --tuned FILE -- cmd` (or "
                      "--instance I for one of them)")
    if not env:
        header.append("nothing to set: TensorFlow's defaults are the tuned configuration")
    for var in env:
        if not reader.VARIABLE_NAME.fullmatch(var):
            raise ConfigError(f"export: {path}: {var!r} is not a variable name; nothing exported")
    if fmt == "tf-serving":
        return tf_serving(doc, path, env, header)
    comments = [f"# {_one_line(h)}" for h in header]
    if fmt == "shell":
        lines = comments + [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    elif fmt == "dotenv":
        values = {k: _dotenv_value(k, v, path) for k, v in env.items()}
        if any(values[k] != v for k, v in env.items()):
            comments.append("# quoted values: a shell and python-dotenv drop the quotes, docker "
                            "--env-file keeps them (use --format docker for docker run)")
        lines = comments + [f"{k}={v}" for k, v in values.items()]
    elif fmt == "docker":
        # One line of flags to paste into `docker run`; comments would break that.
        # nothing to set (a defaults file): no line at all, and a note on stderr says so
        lines = [" ".join(f"-e {shlex.quote(f'{k}={v}')}" for k, v in env.items())] if env else []
    else:
        resources = None
        if "size" in doc:
            resources, notes = k8s_resources(doc, path)
            comments += [f"# {_one_line(n)}" for n in notes]
        lines = comments + [_k8s_env(env, resources).rstrip("\n")]
    return "\n".join(lines) + "\n" if lines else ""


# Memory for a pod: the measured peak resident memory times this, rounded up to MEMORY_STEP_MB.
MEMORY_HEADROOM = 1.5
MEMORY_STEP_MB = 64


def k8s_resources(doc: dict[str, Any], path: str) -> tuple[dict[str, Any], list[str]]:
    """A sizes-file row's container resources (CPU request = limit = the row's CPUs; memory
    from its measured peak with headroom) and the comment lines that go with them."""
    from tuner.tuned import sizes as sizes_mod

    cpus = int(doc["size"]["cpus"])
    block: dict[str, Any] = {"cpu": _Quoted(str(cpus))}
    notes = [f"resources: {cpus} CPU(s) requested and as the limit: the size these settings "
             f"were measured at (pinned to {cpus} CPU(s); inside a pod a CPU quota throttles "
             f"instead, see docs/sizing.md)"]
    peak = (doc.get("result") or {}).get("peak_rss_mb")
    if isinstance(peak, (int, float)) and not isinstance(peak, bool) and peak > 0:
        memory = int(-(-peak * MEMORY_HEADROOM // MEMORY_STEP_MB) * MEMORY_STEP_MB)
        block["memory"] = _Quoted(f"{memory}Mi")
        notes.append(f"memory: {MEMORY_HEADROOM:g}x the measured peak resident memory "
                     f"({peak:.0f} MiB), rounded up to {MEMORY_STEP_MB} MiB")
    replicas = sizes_mod.replicas_for(sizes_mod.read(path), cpus)
    if replicas is not None:
        notes.append(f"replicas: {replicas[0]} ({replicas[1]})")
    return {"requests": dict(block), "limits": dict(block)}, notes


SERVER = "tensorflow_model_server"
# the server's session thread pools: its own flags (a session config it builds from them wins
# over the variables TensorFlow reads in a Python job)
SERVER_FLAGS = {"intra_op_parallelism_threads": "--tensorflow_intra_op_parallelism",
                "inter_op_parallelism_threads": "--tensorflow_inter_op_parallelism"}


def tf_serving(doc: dict[str, Any], path: str, env: dict[str, str], header: list[str]) -> str:
    """A POSIX shell wrapper for TensorFlow Serving: the variables (allocator, oneDNN, OpenMP,
    XLA) exported, then ``exec tensorflow_model_server`` with both thread flags (and
    ``--xla_cpu_compilation_enabled=true`` when XLA is on) and the caller's own arguments
    (``"$@"``: the model's name and path, ports). Comments say what the server cannot carry:
    tf.data options (a server has no input pipeline), declared knobs, instances and CPU sets
    (several servers, taskset), and where the batch size goes."""
    flat = settings.flatten(doc["settings"])
    threads = {k.variable for k in knobs.THREADS}
    env = {k: v for k, v in env.items() if k not in threads}
    notes = [h for h in header if not h.startswith(("tf.data settings", "declared knobs",
                                                      "nothing to set",
                                                      "not carried: reduced precision"))
             and " instances on CPUs " not in h]
    sets = settings.file_plan(doc["settings"]).instances
    if sets:
        notes.append(f"{len(sets)} instances measured: one server cannot carry them; start "
                     f"{len(sets)} servers (each its own --port and --rest_api_port), each under "
                     + ", ".join(f"`taskset -c {host.format_cpus(s)}`" for s in sets)
                     + ", behind one load balancer")
    data = [k.target for k in knobs.TF_DATA if flat.get(k.name) is not None]
    if data or doc["settings"].get("knobs"):
        notes.append("not carried: the tf.data settings and declared knobs belong to a Python "
                     "input pipeline, and the server has none (requests arrive as tensors)")
    precision = [k.name for k in knobs.PRECISION_IN_PROCESS if flat.get(k.name) is not None]
    if precision:
        notes.append(f"not carried: {', '.join(precision)} act inside a Python process "
                     f"(tuner.apply()); the server runs the graph as saved")
    batch = flat.get(knobs.BATCH_SIZE.name)
    if batch is not None:
        notes.append(f"batch size {batch} measured best: the clients' choice (send batches of "
                     f"{batch}), or let the server batch requests: --enable_batching=true "
                     f"--batching_parameters_file=FILE with max_batch_size {{ value: {batch} }}")
    notes.append("the thread flags set the server's session pools (0 = TensorFlow's default); "
                 "they are ignored when --platform_config_file is given, and do not combine "
                 "with --tensorflow_session_parallelism")
    notes.append("check what the running server got: /proc/PID/cmdline and /proc/PID/environ "
                 "(docs/production.md)")
    lines = ["#!/bin/sh", *(f"# {_one_line(n)}" for n in notes)]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    flags = [f"{flag}={int(flat[name] or 0)}" for name, flag in SERVER_FLAGS.items()]
    # without it the server refuses every XLA compilation with an error (not merely slower)
    flags += knobs.XLA.serving_flags(flat[knobs.XLA.name])
    if knobs.XLA.on(flat[knobs.XLA.name]):
        notes.append(f"XLA auto-clustering ({knobs.XLA.variable}) needs "
                     f"{knobs.XLA.SERVING_FLAG}, passed below; each server compiles on its first "
                     f"requests")
    lines.append(f"exec {SERVER} " + " ".join(shlex.quote(f) for f in flags) + ' "$@"')
    return "\n".join(lines) + "\n"


def notes_for_stderr(path: str, *, allow_env: Iterable[str] = (),
                     allow_unvalidated: bool = False, size: int | None = None) -> list[str]:
    """What the docker format cannot say in its one line of flags."""
    doc = read(path, allow_env, allow_unvalidated, size).doc
    notes = [UNVALIDATED_NOTE] if doc["verdict"] == "unvalidated" else []
    if not settings.environment(doc["settings"]):
        notes.append(f"{plain(path)}: no environment variable to set (verdict {doc['verdict']}): "
                     f"nothing to pass to docker run")
    note = tf_data_note(doc)
    return notes + ([note] if note else [])


# A dotenv value left bare: the same literal text for a shell (`set -a; . ./.env`), python-dotenv
# and docker --env-file (no quotes, spaces, #, $, `, \, ~ or anything a shell expands).
_DOTENV_BARE = re.compile(r"[A-Za-z0-9_./:,+@%=-]*")


def _dotenv_value(var: str, value: str, path: str) -> str:
    """``value`` as a dotenv line takes it literally: bare when plain, else in single quotes
    (which a shell and python-dotenv read alike); a value with ' or \\ reads differently in
    each, and one with a line break cannot be a dotenv line at all: refused."""
    if _DOTENV_BARE.fullmatch(value):
        return value
    if "'" in value or "\\" in value or re.search(r"[\x00-\x1f\x7f]", value):
        raise ConfigError(f"export --format dotenv: {path}: settings.env.{var}: {shown(value)} "
                          f"holds "
                          f"a quote, a backslash or a control character, which dotenv readers "
                          f"take differently; use --format shell, docker or k8s")
    return f"'{value}'"


class _K8sDumper(yaml.SafeDumper):
    """A container's ``env:`` list as kubectl prints it: the list indented under its key, every
    value a double-quoted string (a value like ``0`` or ``true`` stays a string)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


class _Quoted(str):
    pass


_K8sDumper.add_representer(
    _Quoted, lambda dumper, data: dumper.represent_scalar("tag:yaml.org,2002:str", str(data),
                                                          style='"'))


def _k8s_env(env: dict[str, str], resources: dict[str, Any] | None = None) -> str:
    data: dict[str, Any] = {"resources": resources} if resources else {}
    data["env"] = [{"name": k, "value": _Quoted(v)} for k, v in env.items()]
    return yaml.dump(data, Dumper=_K8sDumper, sort_keys=False, default_flow_style=False,
                     width=1 << 30)
