"""Free loopback ports, for the servers serving starts beside its own (HAProxy's stats and metrics, Ray's
proxy when a replica answers on the public port)."""

import socket


def free_port() -> int:
    """A port nothing listens on now (the OS picks it); another process may take it before we bind it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
