"""Free loopback ports for the daemons a test starts."""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A port nothing listens on right now (the kernel's choice, above 32767)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_low_port() -> int:
    """A free loopback port below 32768, for a package cache.

    apt-cacher-ng cannot bind ports above 32767 (it says "Error resolving
    address for binding"), and 3142 may be held by another run's cache.
    """
    for port in range(21000 + os.getpid() % 1000, 32000, 7):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32000")
