"""A throwaway local redis-server (Debian's `redis-server`) for tests and benchmarks.

Binds 127.0.0.1 on a free port and is stopped by its own process id. By default it keeps nothing on disk;
`persistent` runs it as a production Redis holding the event log runs: an append-only file fsynced on every
write, so a restart keeps every acknowledged write. The fault suite stops, restarts and freezes it.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recsys_assets.serving.ports import free_port


class RedisServer:
    def __init__(self, persistent: bool = False, port: int | None = None):
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed: `make setup` installs it "
                               "(or: apt-get install redis-server)")
        self.port = port or free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="redis-"))
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else ["--appendonly", "no"]
        self.command = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *durability,
                        "--dir", str(self.folder)]
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> None:
        import redis

        self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    client.ping()  # also false while loading the append-only file: LOADING is an error
                    return
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: Redis's own shutdown (the append-only file flushed); SIGKILL: a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen server cannot act on SIGTERM
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def freeze(self) -> None:
        """Unreachable the way a network partition is: connections open, nothing answers (clients time out)."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def local_redis(persistent: bool = False) -> Iterator[RedisServer]:
    """A running redis-server; `.url` is `127.0.0.1:<port>`. Stopped and its folder removed on exit."""
    server = RedisServer(persistent=persistent)
    try:
        server.start()
        yield server
    finally:
        server.close()
