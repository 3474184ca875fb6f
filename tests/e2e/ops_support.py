"""Helpers of the operations e2e tests (test_ops_*.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from tests.conftest import config_data


def free_low_port() -> int:
    """A free loopback port below 32768 for this run's package cache.

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


def ops_config_data(prefix: str, state: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """The session's configuration, with a package cache port of its own."""
    return config_data(prefix, state, cache={"port": free_low_port()}, **sections)
