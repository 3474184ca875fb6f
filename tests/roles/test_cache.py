"""The cache role: memcached on port 11211 of every interface, under monit."""

from __future__ import annotations

from typing import Any

import pytest
from basesystem import *  # noqa: F403 -- every role image carries the basesystem

pytestmark = pytest.mark.usefixtures("monit_ready")


def memcached(host: Any, address: str, *commands: str) -> list[str]:
    """Send memcached text-protocol commands from inside the container; the reply lines."""
    payload = "".join(f"{command}\\r\\n" for command in (*commands, "quit"))
    out = host.check_output(f"bash -c 'exec 3<>/dev/tcp/{address}/11211; printf \"{payload}\" >&3; timeout 5 cat <&3'")
    return [line.rstrip("\r") for line in out.splitlines()]


def test_memcached_installed(host: Any) -> None:
    assert host.package("memcached").is_installed


def test_listens_on_every_interface(host: Any) -> None:
    assert host.socket("tcp://0.0.0.0:11211").is_listening


def test_runs_unprivileged(host: Any) -> None:
    processes = host.process.filter(comm="memcached")
    assert len(processes) == 1
    assert processes[0].user == "memcache"


def test_configuration(host: Any) -> None:
    conf = host.file("/etc/memcached.conf")
    assert conf.contains("^-l 0.0.0.0$")
    assert conf.contains("^-p 11211$")
    assert conf.contains("^-u memcache$")


def test_stores_and_returns_a_value(host: Any, wait: Any) -> None:
    wait(lambda: memcached(host, "127.0.0.1", "version")[0].startswith("VERSION "), "memcached answers")
    reply = memcached(host, "127.0.0.1", "set workbench 0 60 5", "hello", "get workbench")
    assert reply == ["STORED", "VALUE workbench 0 5", "hello", "END"]


def test_answers_on_the_container_address(host: Any, own_address: str) -> None:
    # What another container sees, not only loopback.
    assert memcached(host, own_address, "version")[0].startswith("VERSION ")


def test_monit_supervises_memcached(monit_ready: dict[str, tuple[str, str]]) -> None:
    assert monit_ready["memcached"] == ("OK", "Process")


def test_monit_restarts_killed_memcached(host: Any, wait: Any, kill_and_wait_restart: Any) -> None:
    # Last in the file: it kills what the checks above use.
    kill_and_wait_restart("memcached", "/run/memcached.pid")
    wait(lambda: memcached(host, "127.0.0.1", "version")[0].startswith("VERSION "), "memcached answers again")
