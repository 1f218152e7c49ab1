"""Output files: checked writable before any work, written atomically (a reader sees the old file
or the new one, never half of either)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tuner.errors import ConfigError


def umask() -> int:
    """The process's umask, read without changing it where Linux says it (``/proc``), else
    set and restored at once."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str, *, durable: bool = True,
                      private: bool | None = False) -> None:
    """Write via a temporary file and a rename. ``durable`` also fsyncs, so the file survives a
    power cut; a trial's result, read a moment later by the parent, does not need that, and an
    fsync can stall for seconds on a busy disk.

    The file gets the mode a plain ``open()`` would give it (0666 less the umask), or 0600 when
    ``private`` (a tuned file naming a storage with credentials); ``None`` keeps mkstemp's 0600.
    The mode is set on the temporary file before the rename, and the rename replaces a symbolic
    link at ``path`` rather than writing through it: nothing follows a link at the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if private is not None:
            os.fchmod(fd, 0o600 if private else 0o666 & ~umask())
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
                      durable=durable, private=None)


def check_writable(path: str | Path, flag: str, what: str, *, make_folders: bool) -> None:
    """Refuse an output ``path`` (given as ``flag``, to hold ``what``) that could not be written,
    naming it and why, before any work: a folder in its place, a missing folder (unless the
    write will make it: ``make_folders``), a file where a folder should be, a folder this user
    cannot write in, and anything else that keeps a file from being created there (``os.access``
    says yes under ``/proc``): the folder is made and a temporary file created in it, then both
    are removed again. Nothing is left behind."""
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
    _probe(where, flag, shown)


def _probe(where: Path, flag: str, shown: str) -> None:
    """Make ``where``'s folder and a temporary file in it, then remove both: the write at the
    end will succeed as far as this user and file system can tell now."""
    made = [p for p in [where.parent, *where.parent.parents] if not p.exists()]
    try:
        try:
            where.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{where.name}.", suffix=".probe",
                                       dir=where.parent)
        except OSError as exc:
            raise ConfigError(f"{flag}: {shown}: cannot create a file in "
                              f"{str(where.parent)!r}: {exc.strerror or exc}") from None
        os.close(fd)
        os.unlink(tmp)
    finally:
        for folder in made:   # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
