"""Whether a TCP port is free to listen on: asked of the kernel by binding it, as the daemon will."""

from __future__ import annotations

import socket


def bindable(port: int, address: str = "127.0.0.1") -> bool:
    """True when nothing listens on `address:port` (a socket in TIME_WAIT does not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True
