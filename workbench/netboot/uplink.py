"""The node's way onto a real LAN: a macvlan of a host interface, a port of the node's bridge.

`fab netboot.serve --interface IFACE` (or [network] interface) serves the PCs
behind IFACE while dnsmasq, HTTP and NFS stay in the node's namespace. The host
keeps IFACE and its addresses: the node gets a macvlan of it (bridge mode), made
straight inside the namespace, so it never shows in the host's namespace and
goes when the namespace goes. That is why a macvlan and not IFACE itself: the
node often shares the home LAN with its own host (proxy mode).

The macvlan is a port of nb0 rather than the holder of the server address, so
dnsmasq, the router advertisements and everything else keep listening on nb0
alone. A macvlan can be a bridge port (the kernel accepts it), but it only
receives unicast frames for its own MAC: the LAN's replies go to the MAC the
node answers ARP with, nb0's. So nb0 takes the macvlan's MAC, set explicitly,
which also pins it (a bridge otherwise takes its lowest port's MAC, and a port
added later could change it). Checked on this machine: with nb0's own MAC a PC
on the LAN resolves the server and its frames never arrive; with the macvlan's
MAC, DHCP, HTTP and the rest answer. Other ports of nb0 (a VM's tap) are not
reachable from the LAN by unicast for the same reason; serve has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workbench.core import run
from workbench.core.errors import CommandFailed, ConfigError, NetbootError
from workbench.netboot import netns
from workbench.netboot.inventory import IFNAME

# The macvlan's name inside the node's namespace.
LINK = "nbup0"
SYS_NET = Path("/sys/class/net")
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_ARPHRD_ETHER = 1
# The node's own links, inside its namespace: never the host's side of the LAN.
NODE_LINKS = (netns.BRIDGE, LINK, netns.HOST_PORT, "nbtap0")


@dataclass(frozen=True)
class Uplink:
    interface: str  # the host's interface facing the LAN
    link: str  # its macvlan, a port of the node's bridge
    mac: str  # the macvlan's MAC, which nb0 takes


def check_name(interface: str, where: str = "--interface") -> None:
    if not IFNAME.match(interface):
        raise ConfigError(f"{where} {interface!r}: not a network interface name (1-15 characters, no /, : or spaces)")


def check(interface: str, sys_net: Path | None = None) -> None:
    """IFACE can carry the node onto its LAN: exists, Ethernet, not loopback, not a port, up."""
    check_name(interface)
    if interface in NODE_LINKS:
        raise NetbootError(
            f"--interface {interface}: that is one of the node's own links inside its namespace; "
            "give the host's interface facing the LAN (`ip -br link` lists them, e.g. eth0)"
        )
    sys_net = sys_net or SYS_NET
    path = sys_net / interface
    if not path.exists():
        raise NetbootError(f"--interface {interface}: no such network interface on this host; `ip -br link` lists them")
    flags = _int(path / "flags")
    if flags & _IFF_LOOPBACK:
        raise NetbootError(
            f"--interface {interface}: the loopback interface reaches no LAN; give the interface the PCs are on"
        )
    kind = _int(path / "type")
    if kind != _ARPHRD_ETHER:
        raise NetbootError(
            f"--interface {interface}: not an Ethernet interface (type {kind}); PXE needs the wired LAN's interface"
        )
    master = path / "master"
    if master.exists():
        owner = master.resolve().name
        what = "bridge" if (sys_net / owner / "bridge").exists() else "device"
        # The kernel refuses a macvlan on a port: the bridge (or bond) already takes all its frames.
        raise NetbootError(
            f"--interface {interface}: a port of {what} {owner}, which takes all its traffic; "
            f"give --interface {owner} instead"
        )
    if not flags & _IFF_UP:
        raise NetbootError(f"--interface {interface} is down: `ip link set {interface} up`, then serve again")


def _int(path: Path) -> int:
    try:
        return int(path.read_text().strip(), 0)
    except (OSError, ValueError):
        return 0


def attach(lab: netns.Lab, interface: str) -> Uplink:
    """A macvlan of `interface` (bridge mode) inside the lab, a port of its bridge; nb0 takes its MAC."""
    where = ["ip", "netns", "exec", lab.name, "ip"]
    try:
        # Made inside the namespace at once: nothing of it ever sits in the host's.
        run.capture(
            ["ip", "link", "add", LINK, "link", interface, "netns", lab.name, "type", "macvlan", "mode", "bridge"]
        )
    except CommandFailed as exc:
        hint = ""
        if "Operation not permitted" in str(exc):
            hint = " (no permission: run as root or with CAP_NET_ADMIN)"
        elif "busy" in str(exc):
            hint = " (busy: a bridge, bond or ipvlan already holds it; give that device instead)"
        raise NetbootError(f"cannot make a macvlan of {interface} for the node{hint}: {exc}") from None
    run.capture([*where, "link", "set", LINK, "master", lab.bridge])
    mac = _mac(lab, LINK)
    run.capture([*where, "link", "set", lab.bridge, "address", mac])
    run.capture([*where, "link", "set", LINK, "up"])
    return Uplink(interface, LINK, mac)


def _mac(lab: netns.Lab, link: str) -> str:
    out = run.capture(["ip", "netns", "exec", lab.name, "cat", f"/sys/class/net/{link}/address"]).stdout
    return out.strip()


def detach(lab: netns.Lab) -> None:
    """Delete the macvlan now (removing the namespace would, but the kernel does that later)."""
    if netns.exists(lab.name):
        run.capture(["ip", "netns", "exec", lab.name, "ip", "link", "del", LINK], check=False)
