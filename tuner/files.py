"""Output files: checked writable before any work, written atomically (a reader sees the old file
or the new one, never half of either)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import ConfigError


def write_text_atomic(path: str | Path, text: str, *, durable: bool = True) -> None:
    """Write via a temporary file and a rename. ``durable`` also fsyncs, so the file survives a
    power cut; a trial's result, read a moment later by the parent, does not need that, and an
    fsync can stall for seconds on a busy disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json_atomic(path: str | Path, data: Any, *, durable: bool = True) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True, default=str) + "\n",
                      durable=durable)


def check_writable(path: str | Path, flag: str, what: str, *, make_folders: bool) -> None:
    """Refuse an output ``path`` (given as ``flag``, to hold ``what``) that could not be written,
    naming it and why, before any work: a folder in its place, a missing folder (unless the
    write will make it: ``make_folders``), a file where a folder should be, a folder this user
    cannot write in. Nothing is created."""
    shown = str(path)
    where = Path(path)
    if where.is_dir():
        raise ConfigError(f"{flag}: {shown}: is a directory; expected a file name for {what}")
    parent = where.parent
    if not make_folders and not parent.exists():
        raise ConfigError(f"{flag}: {shown}: no such directory {str(parent)!r}; create it first")
    while not parent.exists():
        if parent.is_symlink():  # a dangling link: mkdir would fail on it
            raise ConfigError(f"{flag}: {shown}: {str(parent)!r} is a broken symbolic link")
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{flag}: {shown}: {str(parent)!r} is not a directory")
    # the file is replaced by a rename, and history and temporary files go beside it: what
    # counts is the folder, not the file's own mode
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag}: {shown}: cannot write in {str(parent)!r}: permission denied")
