"""Where the cloud sits on the lab LAN: `[cloud]` checked against the netboot inventory.

The configuration file alone cannot say whether the controller's address is
free or the provider pool overlaps the node's DHCP range: that needs the
inventory. Every such problem is reported at once, naming both files.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from workbench.core.config import Config
from workbench.core.errors import ConfigError
from workbench.netboot import inventory as wb_inventory
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

    if not inside(controller):
        problems.append(f"controller_address = {str(controller)!r}: outside the lab's subnet {subnet}")
    if str(controller) in taken:
        problems.append(f"controller_address = {str(controller)!r}: {taken[str(controller)]} in {inv.path}")
    if in_dhcp_range(controller):
        problems.append(f"controller_address = {str(controller)!r}: inside the node's dhcp_range {net.dhcp_range}")
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
    if first <= controller <= last:
        problems.append(f"provider_pool = {list(cloud.provider_pool)!r}: holds the controller's address")
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{where} does not fit the lab of {inv.path}: {len(problems)} problem(s):\n{listing}\n"
                          "  fix the [cloud] keys named (or the inventory), then run the command again")
    ports = {api: port + cloud.public_port_offset for api, port in APIS.items()}
    return CloudPlan(inv, str(controller), subnet.prefixlen, (str(first), str(last)), ports, cloud.region)
