"""The redis role: the community redis formula, unmodified, configured by salt/pillar/redis.sls.

The formula ends with `service.running: redis-server` (enabled, restarted when
its configuration changes); in the image that is a monit check generated at
start, which runs the package's systemd unit's command line.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from basesystem import *  # noqa: F403 -- every role image carries the basesystem

pytestmark = pytest.mark.usefixtures("monit_ready")


def redis(host: Any, address: str, *command: str) -> str:
    return str(host.check_output(f"redis-cli -h {address} -p 6379 {' '.join(command)}"))


def test_package_installed(host: Any) -> None:
    assert host.package("redis-server").is_installed


def test_configuration_from_the_pillar(host: Any) -> None:
    conf = host.file("/etc/redis/redis.conf")
    for line in ("bind 0.0.0.0", "port 6379", "protected-mode no", "maxmemory 64mb", "maxmemory-policy allkeys-lru"):
        assert conf.contains(f"^{line}$"), line
    # What the running server read.
    assert redis(host, "127.0.0.1", "config", "get", "maxmemory").split() == ["maxmemory", str(64 * 1024 * 1024)]
    assert redis(host, "127.0.0.1", "config", "get", "maxmemory-policy").split()[1] == "allkeys-lru"


def test_no_kernel_parameter_in_the_image(host: Any) -> None:
    # The pillar turns the formula's vm.overcommit_memory off: a container cannot set it.
    assert host.run("grep -rs overcommit_memory /etc/sysctl.conf /etc/sysctl.d").stdout == ""


def test_service_state_recorded(host: Any) -> None:
    record = json.loads(host.file("/etc/workbench/services.json").content_string)["services"]
    assert record["redis-server"] == {"running": True, "enabled": True, "masked": False}
    check = host.file("/run/workbench/monit.d/redis-server").content_string
    assert "/lib/systemd/system/redis-server.service" in check


def test_answers_and_stores(host: Any, wait: Any) -> None:
    wait(lambda: redis(host, "127.0.0.1", "ping") == "PONG", "redis answers PING")
    assert redis(host, "127.0.0.1", "set", "workbench", "hello") == "OK"
    assert redis(host, "127.0.0.1", "get", "workbench") == "hello"


def test_answers_on_the_container_address(host: Any, own_address: str) -> None:
    # What another container sees, not only loopback.
    assert redis(host, own_address, "ping") == "PONG"


def test_runs_as_redis_from_the_unit(host: Any) -> None:
    servers = host.process.filter(comm="redis-server")
    assert len(servers) == 1
    assert servers[0].user == "redis"
    # As systemd runs it on a VM: its unit's command line (`--daemonize no`, so
    # the process monit watches is the server itself) and runtime directory.
    assert "--daemonize no" in host.check_output("workbench-services check redis-server")
    assert int(host.file("/run/workbench/services/redis-server.pid").content_string) == servers[0].pid
    assert host.file("/run/redis").user == "redis"


def test_monit_supervises_redis(monit_ready: dict[str, tuple[str, str]]) -> None:
    assert monit_ready["redis-server"] == ("OK", "Process")


def test_monit_restarts_killed_redis(host: Any, wait: Any, kill_and_wait_restart: Any) -> None:
    # Last in the file: it kills what the checks above use.
    kill_and_wait_restart("redis-server", "/run/workbench/services/redis-server.pid")
    wait(lambda: redis(host, "127.0.0.1", "ping") == "PONG", "redis answers again")
