"""Ports: free loopback ones, for the servers serving starts beside its own (HAProxy's stats and metrics, Ray's
proxy when a replica answers on the public port), and who holds the port `recsys serve` wants."""

from __future__ import annotations

import errno
import functools
import os
import random
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

LOOPBACK = ("127.0.0.1", "localhost", "::1")
HAPROXY_FOLDER_PREFIX, HOME_FILE = "recsys-haproxy-", "recsys-home"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now (the OS picks it); another process may take it before we bind it. Never one
    this process handed out before: a service picks several ports (HAProxy's stats and metrics, Ray's metrics
    export) before any is bound, and the OS may offer a free port twice (seen: HAProxy's metrics frontend and
    Ray's export on one port, the service failed to start)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def reserve(*ports: int | None) -> None:
    """Ports this process must never hand out (the service's own port: nothing binds it until HAProxy starts,
    after Ray, so a free-port pick in between could return it; seen: Ray's metrics export answered on the
    service's port)."""
    _HANDED_OUT.update(port for port in ports if port)


def free_port_block(size: int, low: int = 20_000, high: int = 30_000) -> int:
    """The first port of `size` consecutive ports nothing listens on now, below Linux's ephemeral range (32768 up,
    where the OS picks ports for clients, for Ray's own servers and for `free_port`), above Ray's worker ports
    (10002-19999) and below Ray Serve's own ranges (30000 and 40000 up, which a service started without a block
    of its own takes); starts are tried in a random order, and none this process handed out or reserved."""
    starts = list(range(low, high - size + 1, size))
    random.SystemRandom().shuffle(starts)
    for start in starts:
        block = range(start, start + size)
        # Every interface: taken if anything listens on the port, loopback included.
        if _HANDED_OUT.isdisjoint(block) and not any(port_taken("0.0.0.0", port) for port in block):
            _HANDED_OUT.update(block)
            return start
    raise RuntimeError(f"no {size} consecutive free ports between {low} and {high}")


def server_port() -> int:
    """A port for a server that binds it only later (a service, HAProxy's stats, Ray's metrics export): outside
    the ranges the OS and Ray pick from meanwhile (`free_port_block`), so only another such pick can take it."""
    return free_port_block(1)


@functools.lru_cache(maxsize=None)
def haproxy_folder(home) -> str:
    """This process's private folder for HAProxy's files (one per home), naming the home it serves in a file, so
    that a HAProxy a killed service left is recognised (`is_stale_haproxy`). Not in the folder's name: Ray Serve
    puts its admin socket two levels down, and a socket path may have 97 bytes at most. Folders no running
    HAProxy uses (a killed service's) are removed first."""
    _remove_unused_haproxy_folders()
    folder = tempfile.mkdtemp(prefix=HAPROXY_FOLDER_PREFIX)
    Path(folder, HOME_FILE).write_text(str(home))
    return folder


def _remove_unused_haproxy_folders() -> None:
    import psutil

    in_use = set()
    for process in psutil.process_iter(["name", "cmdline"]):
        if "haproxy" in (process.info["name"] or ""):
            in_use |= {str(parent) for arg in process.info["cmdline"] or [] for parent in Path(arg).parents}
    for folder in Path(tempfile.gettempdir()).glob(f"{HAPROXY_FOLDER_PREFIX}*"):
        # Half an hour of grace: a folder another `recsys serve` made, its HAProxy not started yet (Ray first).
        if str(folder) not in in_use and time.time() - folder.stat().st_mtime > 1800:
            shutil.rmtree(folder, ignore_errors=True)


def _haproxy_home(command: list[str]) -> str | None:
    """The home written in the private folder of a HAProxy's config file (its -f argument), if any."""
    for arg in command:
        for folder in Path(arg).parents:
            if folder.name.startswith(HAPROXY_FOLDER_PREFIX) and (folder / HOME_FILE).is_file():
                return (folder / HOME_FILE).read_text()
    return None


def port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def listeners(port: int) -> list:
    """The processes (psutil) listening on a TCP port, any address."""
    import psutil

    pids = {c.pid for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid}
    found = []
    for pid in pids:
        try:
            found.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return found


def is_stale_haproxy(process, home) -> bool:
    """A HAProxy left by an earlier `recsys serve` of this home: its folder names the home, and the Ray actor
    that ran it is gone (a live service's HAProxy is a child of a `ray::` process)."""
    import psutil

    try:
        parent = process.parent()
        orphan = parent is None or not parent.name().startswith("ray::")
        return "haproxy" in process.name() and orphan and _haproxy_home(process.cmdline()) == str(home)
    except (psutil.Error, OSError):
        return False


def claim_port(host: str, port: int, home) -> str | None:
    """Make `port` free for a new service: a stale HAProxy of this home is stopped. Returns None when the
    port is free, else who holds it (`pid <n> (<name>)`)."""
    import psutil

    if not port_taken(host, port):
        return None
    holders = listeners(port)
    stale = [p for p in holders if is_stale_haproxy(p, home)]
    for process in stale:
        try:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        except (ProcessLookupError, PermissionError, psutil.Error):  # gone, or not ours to stop
            pass
    if stale and not port_taken(host, port):
        return None
    others = [p for p in listeners(port) if p not in stale] or holders
    return ", ".join(f"pid {p.pid} ({_name(p)})" for p in others) or "another process"


def _name(process) -> str:
    try:
        return process.name()
    except Exception:
        return "?"
