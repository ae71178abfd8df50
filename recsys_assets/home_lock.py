"""One holder at a time of a named lock under a RECSYS_HOME (RECSYS_HOME/locks/<name>.lock), e.g. one
`recsys pipeline` per home: two at once would both write the single-writer DuckDB warehouse, train and register
every model twice and publish two releases for the same day.

An OS file lock (flock), not a pid file: the kernel drops it when the last process holding the open file is
gone (exit, SIGTERM, kill -9), so a killed run never leaves a stale lock to remove by hand. The holder writes
its pid and start time into the file so that a waiter can say whom it waits for.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class Holder:
    pid: int | None  # None: the holder has not written itself yet (it took the lock a moment ago)
    started: str | None  # ISO local time

    def describe(self, what: str) -> str:
        if self.pid is None:
            return f"another {what}"
        at = f", started {datetime.fromisoformat(self.started):%H:%M}" if self.started else ""
        return f"another {what} (pid {self.pid}{at})"


class HomeLock:
    """An exclusive flock on `path`: `acquire` blocks until it is free, `release` (or the holder's exit) frees it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    @classmethod
    def for_home(cls, home: Path, name: str) -> HomeLock:
        return cls(Path(home) / "locks" / f"{name}.lock")

    @property
    def fileno(self) -> int:
        """The open lock file; a child process given it (subprocess pass_fds) holds the lock as long as it
        lives, so an orphaned child of a killed holder still keeps the next one waiting."""
        assert self._fd is not None, "not held"
        return self._fd

    def holder(self) -> Holder:
        try:
            data = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            data = {}
        return Holder(pid=data.get("pid"), started=data.get("started"))

    def acquire(self, on_wait: Callable[[Holder], None] | None = None) -> float:
        """Takes the lock; when another holds it, calls on_wait(holder) once, then blocks until it is free.
        Returns the seconds waited."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        started = time.monotonic()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait(self.holder())
                fcntl.flock(fd, fcntl.LOCK_EX)
            # Who holds it now: rewritten in place (the waiters have the same file open).
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "started": datetime.now().isoformat(timespec="seconds")})
                      .encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return time.monotonic() - started

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # the last close of the open file drops the flock
            self._fd = None
