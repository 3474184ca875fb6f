"""Where the cloud sits on the lab LAN: `[cloud]` checked against the netboot inventory.

The configuration file alone cannot say whether the controller's address is
free or the provider pool overlaps the node's DHCP range: that needs the
inventory. Every such problem is reported at once, naming both files.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from workbench.core import run
from workbench.core.config import Config
from workbench.core.errors import CloudError, ConfigError
from workbench.netboot import inventory as wb_inventory
from workbench.netboot import netns, node
from workbench.netboot.inventory import Inventory

# The APIs of the controller and the port each listens on inside its container.
APIS: dict[str, int] = {"identity": 5000, "image": 9292, "placement": 8778, "compute": 8774, "network": 9696}
# The service type's path after host:port in the catalogue.
API_PATHS: dict[str, str] = {"identity": "/v3", "compute": "/v2.1"}
# The flat provider network's physical name: the controller's and the hypervisors' agents map it.
PHYSNET = "provider"


@dataclass(frozen=True)
class CloudPlan:
    """The cloud's addresses, resolved and checked."""

    inventory: Inventory
    controller: str
    prefixlen: int
    pool: tuple[str, str]
    public_ports: dict[str, int]
    region: str

    def public_url(self, api: str) -> str:
        return f"http://127.0.0.1:{self.public_ports[api]}{API_PATHS.get(api, '')}"

    @property
    def auth_url(self) -> str:
        return self.public_url("identity")


def plan(config: Config, inventory: str = "") -> CloudPlan:
    """`[cloud]` and the inventory it names (or `inventory`), checked together."""
    inv = wb_inventory.load(config, inventory or config.cloud.inventory)
    cloud = config.cloud
    net = inv.network
    subnet = ipaddress.IPv4Network(net.subnet)
    where = f"{config.path} [cloud]"
    problems: list[str] = []
    lab = f"{subnet} of {inv.path}"
    controller = ipaddress.IPv4Address(cloud.controller_address)
    first, last = (ipaddress.IPv4Address(a) for a in cloud.provider_pool)
    taken = {net.gateway: "the gateway", net.server: "the networking node's address"}
    taken.update({n.address: f"reserved for {n.name}" for n in inv.nodes})

    def in_dhcp_range(address: ipaddress.IPv4Address) -> bool:
        if net.dhcp_range is None:
            return False
        low, high = (ipaddress.IPv4Address(a) for a in net.dhcp_range)
        return low <= address <= high

    def inside(address: ipaddress.IPv4Address) -> bool:
        return address in subnet and address not in (subnet.network_address, subnet.broadcast_address)

    problems += _address_problems("controller_address", controller, taken, in_dhcp_range, inside, lab)
    # The frontends of environments on the cloud have a leg on the lab LAN too.
    taken[str(controller)] = "the controller's address ([cloud] controller_address)"
    frontends: dict[str, str] = {}
    for env in config.environments.values():
        if env.target != "openstack" or not env.lab_address:
            continue
        address = ipaddress.IPv4Address(env.lab_address)
        key = f"[environments.{env.name}] lab_address"
        problems += _address_problems(key, address, {**taken, **frontends}, in_dhcp_range, inside, lab)
        if first <= address <= last:
            problems.append(f"{key} = {env.lab_address!r}: inside [cloud] provider_pool, which Neutron lends")
        frontends[env.lab_address] = f"the frontend of {env.name}"
    if first > last:
        problems.append(f"provider_pool = {list(cloud.provider_pool)!r}: the first address is after the last")
    for address in (first, last):
        if not inside(address):
            problems.append(f"provider_pool: {str(address)!r} is outside the lab's subnet {subnet}")
    if net.dhcp_range is not None:
        low, high = (ipaddress.IPv4Address(a) for a in net.dhcp_range)
        if first <= high and low <= last:
            problems.append(f"provider_pool = {list(cloud.provider_pool)!r}: overlaps the node's dhcp_range "
                            f"{list(net.dhcp_range)} ({inv.path}): Neutron and the node would lend the same addresses")
    for held, what in taken.items():
        if first <= ipaddress.IPv4Address(held) <= last:
            problems.append(f"provider_pool = {list(cloud.provider_pool)!r}: holds {held}, {what}")
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{where} does not fit the lab of {inv.path}: {len(problems)} problem(s):\n{listing}\n"
                          "  fix the keys named (or the inventory), then run the command again")
    ports = {api: port + cloud.public_port_offset for api, port in APIS.items()}
    return CloudPlan(inv, str(controller), subnet.prefixlen, (str(first), str(last)), ports, cloud.region)


def _address_problems(
    key: str,
    address: ipaddress.IPv4Address,
    taken: dict[str, str],
    in_dhcp_range: Callable[[ipaddress.IPv4Address], bool],
    inside: Callable[[ipaddress.IPv4Address], bool],
    where: str,
) -> list[str]:
    """Why a fixed address on the lab LAN (the controller's, a frontend's) cannot be used; [] if it can."""
    problems = []
    if not inside(address):
        problems.append(f"{key} = {str(address)!r}: outside the lab's subnet {where}")
    if str(address) in taken:
        problems.append(f"{key} = {str(address)!r}: {taken[str(address)]} in {where}")
    if in_dhcp_range(address):
        problems.append(f"{key} = {str(address)!r}: inside the node's dhcp_range ({where})")
    return problems


def lab_get(config: Config, url: str, timeout: float = 5) -> tuple[int, str]:
    """(HTTP status, body) of one GET from the lab LAN (the networking node's namespace), 0 when
    nothing answered: servers on the provider network are reachable from there only."""
    name = netns.namespace_name(config.prefix)
    got = run.capture(["ip", "netns", "exec", name, "curl", "-s", "--max-time", str(timeout), "-w", "\n%{http_code}",
                       url], check=False)
    body, _, code = got.stdout.rpartition("\n")
    return (int(code) if code.isdigit() else 0), body


def attach(config: Config, pid: int, port: str, interface: str, address: str, prefixlen: int) -> None:
    """Give the network namespace of process `pid` (a container's) a leg on the lab's bridge at
    `address`: `port` on the bridge, `interface` inside (again after the node restarted; nothing
    when it has one)."""
    name = netns.namespace_name(config.prefix)
    if not netns.exists(name):
        raise CloudError(f"the lab's namespace {name} is gone: the networking node stopped; run `fab cloud.up`")
    if netns.has_interface(pid, interface):
        return
    netns.connect_pid(netns.Lab(name, netns.BRIDGE), pid, port, interface, address, prefixlen)


def set_name(config: Config, name: str, address: str | None) -> None:
    """The lab's DNS (the networking node's) answers `name` with a server's `address`, or no longer."""
    node.set_name(config, name, address)
