"""A throwaway local redis-server (Debian's `redis-server`) for tests and benchmarks.

Binds 127.0.0.1 on a free port, keeps nothing on disk, and is stopped by its own process id.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from recsys_assets.serving.ports import free_port


@contextmanager
def local_redis(timeout_s: float = 20.0) -> Iterator[str]:
    """Yields `127.0.0.1:<port>` of a running redis-server; stops it on exit."""
    import redis

    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed: `make setup` installs it (or: apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="redis-") as folder:
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                 "--dir", folder], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis(host="127.0.0.1", port=port)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            yield f"127.0.0.1:{port}"
        finally:
            client.close()
            proc.terminate()
            proc.wait(timeout=10)
