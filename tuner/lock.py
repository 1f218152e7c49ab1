"""One measurement at a time per host, across every tuner process.

Two children measuring at once share the CPUs and corrupt each other's numbers, so every child
(preflight, trial, validation run) runs under an exclusive ``flock`` on one host-wide file. The
kernel drops the lock when its holder dies, so a killed search never blocks the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

LOCK_ENV = "TUNER_LOCK_FILE"


def lock_path() -> Path:
    return Path(os.environ.get(LOCK_ENV) or Path(tempfile.gettempdir()) / "tuner-measure.lock")


@contextlib.contextmanager
def host_lock(on_wait: Callable[[], None] | None = None, poll: float = 0.5) -> Iterator[float]:
    """Hold the host-wide measurement lock; yields the seconds spent waiting for it."""
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            os.fchmod(fd, 0o666)  # another user's search must be able to take it too
        except OSError:
            pass
        start = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told and on_wait is not None:
                    on_wait()
                    told = True
                time.sleep(poll)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass
        try:
            yield time.monotonic() - start
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
