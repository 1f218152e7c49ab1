"""Run a command with a tuned file's settings, and export them for other launchers.

``python -m tuner run --tuned tuned.yaml -- python train.py`` sets the environment (the file's
variables, ``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS``, and ``TUNER_TUNED_FILE`` so
``tuner.apply()`` in the job finds the same file), then *replaces itself* with the command
(``exec``): the command's exit code, output and signals (Ctrl-C, an orchestrator's SIGTERM) are
its own, with nothing in between to lose them.

``python -m tuner export tuned.yaml --format shell|dotenv|docker|k8s`` prints the same variables
for places that take environment variables. The tf.data settings live inside the job's pipeline,
so no environment variable can carry them; both say so.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

from .apply import TUNED_FILE_ENV, check_machine, environment, load_checked
from .errors import ConfigError

FORMATS = ("shell", "dotenv", "docker", "k8s")


def tf_data_note(doc: dict[str, Any]) -> str | None:
    data = {k: v for k, v in (doc["settings"].get("tf_data") or {}).items() if v is not None}
    if not data:
        return None
    settings = ", ".join(f"{k}={v}" for k, v in data.items())
    return (f"tf.data settings ({settings}) cannot be set from the environment: call "
            f"cfg = tuner.apply() in the job and use ds.with_options(cfg.dataset_options())")


def launch_env(doc: dict[str, Any], path: str, base: dict[str, str] | None = None,
               override: bool = False) -> tuple[dict[str, str], dict[str, str]]:
    """The command's environment and the user's own values kept over the file's.

    Same precedence as ``apply()``: a variable already set in the environment wins unless
    ``override``."""
    env = dict(os.environ if base is None else base)
    kept = {}
    for var, value in environment(doc).items():
        if var in env and env[var] != value and not override:
            kept[var] = env[var]
            continue
        env[var] = value
    env[TUNED_FILE_ENV] = str(Path(path).resolve())
    return env, kept


def run(path: str, command: Sequence[str], *, strict: bool = False, override: bool = False,
        quiet: bool = False) -> None:
    """Exec ``command`` with the tuned settings. Returns only if it raises."""
    if not command:
        raise ConfigError("run: no command given; usage: python -m tuner run --tuned FILE -- "
                          "COMMAND [ARGS...]")
    doc = load_checked(path)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_machine(doc, path, strict)
    env, kept = launch_env(doc, path, override=override)
    executable = shutil.which(command[0], path=env.get("PATH"))
    if executable is None:
        raise ConfigError(f"run: command not found: {command[0]!r}")
    if not quiet:
        for warning in caught:
            print(f"tuner: warning: {warning.message}", file=sys.stderr)
        if kept:
            print("tuner: warning: kept the environment's own values over the tuned file's: "
                  + ", ".join(f"{k}={v}" for k, v in kept.items()) + " (--override to use the "
                  "file's)", file=sys.stderr)
        note = tf_data_note(doc)
        if note:
            print(f"tuner: note: {note}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(executable, list(command), env)


def export(path: str, fmt: str) -> str:
    """The file's environment in ``fmt``; a comment (or, for docker, nothing) notes the rest."""
    if fmt not in FORMATS:
        raise ConfigError(f"export --format: {fmt!r} is not allowed; allowed: {', '.join(FORMATS)}")
    doc = load_checked(path)
    env = environment(doc)
    note = tf_data_note(doc)
    header = [f"tuned settings from {path} (verdict: {doc.get('verdict', 'unknown')})"]
    if note:
        header.append(note)
    if not env:
        header.append("nothing to set: TensorFlow's defaults are the tuned configuration")
    if fmt == "shell":
        lines = [f"# {h}" for h in header] + [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    elif fmt == "dotenv":
        lines = [f"# {h}" for h in header] + [f"{k}={_dotenv_quote(v)}" for k, v in env.items()]
    elif fmt == "docker":
        # One line of flags to paste into `docker run`; comments would break that.
        lines = [" ".join(f"-e {shlex.quote(f'{k}={v}')}" for k, v in env.items())]
    else:
        lines = [f"# {h}" for h in header] + ["env:"] + [
            f"  - name: {k}\n    value: {_yaml_str(v)}" for k, v in env.items()]
        if not env:
            lines[-1] = "env: []"
    return "\n".join(lines) + "\n"


def _dotenv_quote(value: str) -> str:
    if value and all(c.isalnum() or c in "._-/:" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _yaml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
