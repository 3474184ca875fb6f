"""Shared by the role tests (tests/roles/test_<role>.py).

The bake runs them against a fresh container of the candidate image, started
with its own command, as
`pytest --confcutdir=tests/roles --hosts=docker://<id> tests/roles/test_<role>.py`.
The container has only just started: monit is bringing the services up, so
checks of running things wait for them (up to WAIT_SECONDS) instead of racing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

WAIT_SECONDS = 30.0


def wait_until(check: Callable[[], Any], what: str, timeout: float = WAIT_SECONDS) -> Any:
    """Call `check` until it returns something true, and return that; fail after `timeout`.

    A check that raises counts as not yet: its last error is shown on failure.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = check()
        except Exception as exc:  # the service may still be starting: any error means "not yet"
            result, last = None, exc
        else:
            last = result
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still not true after {timeout:.0f} s (last: {last!r})")
        time.sleep(0.5)


def monit_summary(host: Any) -> dict[str, tuple[str, str]]:
    """`monit -B summary` as {service: (status, type)}.

    Batch-mode output looks like:

        Monit 5.33.0 uptime: 0m
         Service Name                     Status                      Type
         4f1c2d3e5a6b                     OK                          System
         nginx                            OK                          Process
    """
    out = host.check_output("monit -B summary")
    services: dict[str, tuple[str, str]] = {}
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 3 or fields[:2] == ["Service", "Name"]:
            continue
        services[fields[0]] = (" ".join(fields[1:-1]), fields[-1])
    return services


@pytest.fixture
def own_address(host: Any) -> str:
    """The host's first IPv4 address off loopback: what a load balancer or another host reaches.

    Not `hostname -i`: that resolves the host's name, which in a VM booted from a role's qcow2
    is `localhost` (::1).
    """
    addresses = [a for a in host.check_output("hostname -I").split() if "." in a]
    assert addresses, "no IPv4 address off loopback (hostname -I)"
    return str(addresses[0])


@pytest.fixture
def wait() -> Callable[..., Any]:
    """`wait(check, what)`: poll a check until it holds (see wait_until)."""
    return wait_until


@pytest.fixture(scope="module")
def monit_ready(host: Any, request: pytest.FixtureRequest) -> dict[str, tuple[str, str]]:
    """Wait until monit answers and reports every service it watches as OK.

    A role whose services need longer sets SERVICE_WAIT (seconds) in its test module.
    """

    def all_ok() -> dict[str, tuple[str, str]] | None:
        services = monit_summary(host)
        processes = {name: state for name, state in services.items() if state[1] != "System"}
        if services and all(status == "OK" for status, _ in processes.values()):
            return services
        raise AssertionError(f"monit reports {services}")

    return wait_until(all_ok, "monit reports every service OK", getattr(request.module, "SERVICE_WAIT", WAIT_SECONDS))


@pytest.fixture
def kill_and_wait_restart(host: Any) -> Callable[[str, str], int]:
    """`kill_and_wait_restart(service, pidfile)`: SIGKILL the service, wait for monit to
    start it again (a new live pid and monit's OK), return the new pid."""

    def restart(service: str, pidfile: str) -> int:
        old = int(host.file(pidfile).content_string)
        host.check_output(f"kill -KILL {old}")

        def restarted() -> int | None:
            new = int(host.file(pidfile).content_string)
            alive = new != old and host.run(f"kill -0 {new}").rc == 0
            return new if alive and monit_summary(host).get(service, ("",))[0] == "OK" else None

        return int(wait_until(restarted, f"monit restarts {service} after kill -9 of pid {old}"))

    return restart
