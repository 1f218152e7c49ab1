"""One measurement at a time per host, across every tuner process.

Two children measuring at once share the CPUs and corrupt each other's numbers, so every child
(preflight, trial, validation run) runs under an exclusive ``flock`` on one host-wide file. The
kernel drops the lock when its holder dies, so a killed search never blocks the next one.

The file lives in a directory of this user's only (``$XDG_RUNTIME_DIR/tuner``, else
``$TMPDIR/tuner-<uid>``), mode 0700, the file 0600, and is opened without following a symlink:
a link planted at the lock path cannot make tuner write to another file. ``TUNER_LOCK_FILE``
names another file, e.g. one on a directory that containers sharing a host all mount, or one
that several users share (create it by hand with the mode they need; tuner never changes the
mode of a file, and writes its pid only into a file of its own).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

from tuner.errors import TunerError

LOCK_ENV = "TUNER_LOCK_FILE"


class LockError(TunerError):
    """The lock file or its directory cannot be used safely, or the wait for it ran out."""


class LockTimeout(LockError):
    """Another process held the lock for longer than we may wait."""


def lock_dir() -> Path:
    """This user's directory for tuner's lock files, created 0700 if missing.

    Refused when it is a symlink, not a directory or owned by someone else: whoever owns it
    could swap the lock files for links."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    # su and sudo keep the variable of a user whose directory this process may not use
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime) \
            and os.access(runtime, os.W_OK | os.X_OK):
        path = Path(runtime) / "tuner"
    else:
        path = Path(tempfile.gettempdir()) / f"tuner-{os.geteuid()}"
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise LockError(f"cannot create the lock directory {path}: {exc.strerror}; set "
                        f"{LOCK_ENV} to a lock file elsewhere") from None
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise LockError(f"lock directory {path} is not a directory (a symlink or a file); "
                        f"remove it, or set {LOCK_ENV} to a lock file elsewhere")
    if info.st_uid != os.geteuid():
        raise LockError(f"lock directory {path} belongs to uid {info.st_uid}, not to you "
                        f"(uid {os.geteuid()}); remove it, or set {LOCK_ENV} to a lock file "
                        f"elsewhere")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)  # ours: nobody else may add or replace files in it
    return path


def lock_path() -> Path:
    """The host-wide measurement lock file: ``TUNER_LOCK_FILE``, else ``measure.lock`` in
    :func:`lock_dir`."""
    named = os.environ.get(LOCK_ENV)
    if named:
        return Path(named)
    return lock_dir() / "measure.lock"


def open_lock_file(path: Path, mode: int = 0o600) -> int:
    """A descriptor on the regular file ``path`` (created with ``mode`` if missing), for flock.

    A symlink or anything but a regular file is refused. A file of another user that we may not
    write is opened read-only: flock needs no write access, and only the holder's pid is lost."""
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # O_NONBLOCK: a FIFO must not hang
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | flags, mode)
    except PermissionError:
        try:
            fd = os.open(path, os.O_RDONLY | flags)
        except OSError as exc:
            raise _unusable(path, exc) from None
    except OSError as exc:
        raise _unusable(path, exc) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise LockError(f"lock file {path} is not a regular file; remove it, or set {LOCK_ENV} "
                        f"to a lock file elsewhere")
    return fd


def _unusable(path: Path, exc: OSError) -> LockError:
    if exc.errno == errno.ELOOP:
        why = "is a symlink (refused: it could point at any file of yours)"
    else:
        why = f"cannot be opened: {exc.strerror}"
        with contextlib.suppress(OSError):
            owner = os.lstat(path).st_uid
            if owner != os.geteuid():
                why += f" (it belongs to uid {owner})"
    return LockError(f"lock file {path} {why}; remove it, or set {LOCK_ENV} to a lock file "
                     f"elsewhere")


def _ours(fd: int) -> bool:
    return os.fstat(fd).st_uid == os.geteuid()


def write_pid(fd: int) -> None:
    """Record our pid in the lock file we now hold, so a waiter can name us. Only a file of our
    own is truncated."""
    if not _ours(fd):
        return
    with contextlib.suppress(OSError):  # opened read-only, or the disk is full: only a name lost
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def holder(path: Path) -> str:
    """The pid recorded in the lock file, or '' when there is none to read."""
    with contextlib.suppress(OSError, ValueError):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            text = os.read(fd, 32).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
        if text.isdigit():
            return text
    return ""


@contextlib.contextmanager
def host_lock(on_wait: Callable[[], None] | None = None, poll: float = 0.05,
              timeout: float | None = None) -> Iterator[float]:
    """Hold the host-wide measurement lock; yields the seconds spent waiting for it.

    ``timeout`` bounds the wait (None: wait as long as it takes, blocked on the lock itself, so
    the lock is ours the moment it is released); past it, :class:`LockTimeout` names the process
    holding the lock. A bounded wait tries again every ``poll`` seconds: a trial waiting for
    another's loses at most that much."""
    path = lock_path()
    named = bool(os.environ.get(LOCK_ENV))
    if named:
        path.parent.mkdir(parents=True, exist_ok=True)
    # A file named by TUNER_LOCK_FILE may be shared with other users: readable, so they can
    # take the lock (flock needs only a read descriptor) and see whose it is.
    fd = open_lock_file(path, 0o644 if named else 0o600)
    try:
        start = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if timeout is not None and waited >= timeout:
                    pid = holder(path)
                    who = f"pid {pid}" if pid else "another process"
                    raise LockTimeout(f"gave up after {waited:.0f} s waiting for the host "
                                      f"measurement lock {path}: {who} holds it (another tuner "
                                      f"search or diagnose on this host)") from None
                if not told and on_wait is not None:
                    on_wait()
                    told = True
                if timeout is None:  # Ctrl-C and SIGTERM still end the wait (PEP 475)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    break
                time.sleep(max(0.0, min(poll, timeout - waited)))
        write_pid(fd)
        try:
            yield time.monotonic() - start
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
