"""The lab's isolated network: a namespace with a bridge the node and the VMs share.

The node's address sits on the bridge; each VM gets a tap device enslaved to
it. Nothing leaves the namespace unless the node is uplinked: with
`--interface` (inventory `[network] interface`) a macvlan on that host
interface becomes a port of the bridge, and the lab is the LAN behind it
(workbench.netboot.uplink). Even then there is no route out of the namespace.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from workbench.core import run
from workbench.core.errors import CommandFailed, NetbootError

BRIDGE = "nb0"
# Unique local addresses, never routed anywhere.
IPV6_PREFIX = "fd77:6e62::"
# A host's veth pair: the port on the lab's bridge, and its own end.
HOST_PORT = "nbhost0"
HOST_INTERFACE = "lan0"


@dataclass(frozen=True)
class Lab:
    name: str
    bridge: str

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]


@dataclass(frozen=True)
class Host:
    """Another machine on the lab's bridge: its own namespace, one interface."""

    name: str
    interface: str

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]


def namespace_name(prefix: str) -> str:
    return f"{prefix}-nb"


def router_namespace_name(prefix: str) -> str:
    """The stand-in home router of a proxy-mode lab test."""
    return f"{prefix}-nbr"


def exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def _ip(*args: str, netns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    run.capture([*prefix, "ip", *args])


def _check_permission() -> None:
    if os.geteuid() != 0:
        raise NetbootError(
            "the netboot lab needs network namespaces, bridges and tap devices, which need root "
            "(CAP_NET_ADMIN): run as root or with sudo"
        )


def check_free(name: str) -> None:
    """Root, and no namespace of that name yet (a running node, or a killed one's leftovers)."""
    _check_permission()
    if exists(name):
        raise NetbootError(
            f"network namespace {name} already exists: a node is running or was killed; `fab netboot.stop` removes it"
        )


@contextmanager
def lab(name: str, address: str, prefixlen: int) -> Iterator[Lab]:
    """Create namespace `name` with bridge nb0 holding `address`; always removed after."""
    check_free(name)
    try:
        run.capture(["ip", "netns", "add", name])
    except CommandFailed as exc:
        raise NetbootError(f"cannot create network namespace {name}: {exc}") from None
    try:
        _ip("link", "set", "lo", "up", netns=name)
        _ip("link", "add", BRIDGE, "type", "bridge", netns=name)
        # A bridge with no forwarding delay: the VM's first DHCP packet must not be dropped.
        _ip("link", "set", BRIDGE, "type", "bridge", "forward_delay", "0", "stp_state", "0", netns=name)
        _ip("addr", "add", f"{address}/{prefixlen}", "dev", BRIDGE, netns=name)
        # A local IPv6 prefix with router advertisements: iPXE waits for IPv6 autoconfiguration
        # as well as DHCP, and with no router on the link that wait is most of its boot time.
        _ip("addr", "add", f"{IPV6_PREFIX}1/64", "dev", BRIDGE, "nodad", netns=name)
        _ip("link", "set", BRIDGE, "up", netns=name)
        yield Lab(name, BRIDGE)
    finally:
        remove(name)


def add_tap(lab: Lab, tap: str) -> None:
    """A tap on the lab's bridge for a VM about to start. One left by a VM that was powered off
    (the tap outlives its qemu) is replaced: only one VM uses a tap name at a time."""
    if run.capture(["ip", "-n", lab.name, "link", "show", tap], check=False).returncode == 0:
        _ip("link", "delete", tap, netns=lab.name)
    _ip("tuntap", "add", "dev", tap, "mode", "tap", netns=lab.name)
    _ip("link", "set", tap, "master", lab.bridge, netns=lab.name)
    _ip("link", "set", tap, "up", netns=lab.name)


@contextmanager
def host(lab: Lab, name: str, address: str, prefixlen: int) -> Iterator[Host]:
    """Namespace `name` wired to the lab's bridge by a veth pair, holding `address`; always removed after."""
    check_free(name)
    try:
        run.capture(["ip", "netns", "add", name])
    except CommandFailed as exc:
        raise NetbootError(f"cannot create network namespace {name}: {exc}") from None
    try:
        _ip("link", "set", "lo", "up", netns=name)
        # Created in the lab, its peer straight in the new namespace.
        _ip("link", "add", HOST_PORT, "type", "veth", "peer", "name", HOST_INTERFACE, "netns", name, netns=lab.name)
        _ip("link", "set", HOST_PORT, "master", lab.bridge, netns=lab.name)
        _ip("link", "set", HOST_PORT, "up", netns=lab.name)
        _ip("addr", "add", f"{address}/{prefixlen}", "dev", HOST_INTERFACE, netns=name)
        _ip("link", "set", HOST_INTERFACE, "up", netns=name)
        yield Host(name, HOST_INTERFACE)
    finally:
        remove(name)


def connect_pid(lab: Lab, pid: int, port: str, interface: str, address: str, prefixlen: int) -> None:
    """Wire the network namespace of process `pid` (a container's) to the lab's bridge.

    A veth pair: `port` on the bridge, `interface` holding `address` in the
    process's namespace. Replaces a `port` left by an earlier container.
    """
    if run.capture(["ip", "-n", lab.name, "link", "show", port], check=False).returncode == 0:
        _ip("link", "delete", port, netns=lab.name)
    _ip("link", "add", port, "type", "veth", "peer", "name", interface, "netns", str(pid), netns=lab.name)
    _ip("link", "set", port, "master", lab.bridge, netns=lab.name)
    _ip("link", "set", port, "up", netns=lab.name)
    inside = ["nsenter", "-t", str(pid), "-n", "ip"]
    run.capture([*inside, "addr", "replace", f"{address}/{prefixlen}", "dev", interface])
    run.capture([*inside, "link", "set", interface, "up"])


def has_interface(pid: int, interface: str) -> bool:
    """Does process `pid`'s network namespace hold `interface`?"""
    found = run.capture(["nsenter", "-t", str(pid), "-n", "ip", "link", "show", interface], check=False)
    return found.returncode == 0


def remove(name: str) -> bool:
    """Delete the namespace (its bridge, taps and veths go with it); False if there was none.

    A process left inside (of a node or router that was killed) would keep the
    namespace alive unnamed: it is killed first.
    """
    if not exists(name):
        return False
    for pid in run.capture(["ip", "netns", "pids", name], check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    run.capture(["ip", "netns", "delete", name])
    return True
