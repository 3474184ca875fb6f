"""The netboot inventory: the lab network, its storage export, and its nodes by MAC.

    [network]
    subnet = "10.77.0.0/24"
    server = "10.77.0.1"
    domain = "lab.wpdn"
    [[nodes]]
    mac = "52:54:00:77:00:11"
    name = "hv1.lab.wpdn"       # the name gives the role: hv -> hypervisor
    address = "10.77.0.11"

Every problem in the file is reported at once, each naming the key, the value
and the rule, in the style of workbench.toml's errors.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from workbench.core import naming
from workbench.core.config import Config
from workbench.core.errors import ConfigError

DEFAULT_PATH = "netboot/inventory.toml"
MODES = ("full", "proxy")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

_NETWORK_KEYS = {"subnet", "server", "gateway", "mode", "dhcp_range", "domain", "http_port", "interface"}
# A Linux interface name: at most 15 bytes, no slash, colon or whitespace (uplink.check_name uses it too).
IFNAME = re.compile(r"^[^\s/:]{1,15}$")
_STORAGE_KEYS = {"export"}
_NODE_KEYS = {"mac", "name", "address"}


@dataclass(frozen=True)
class Node:
    mac: str
    name: str
    address: str
    role: str
    environment: str

    @property
    def short(self) -> str:
        return self.name.split(".", 1)[0]


@dataclass(frozen=True)
class Network:
    subnet: str
    server: str
    gateway: str
    mode: str
    dhcp_range: tuple[str, str] | None
    domain: str
    http_port: int
    # The host interface whose LAN `netboot.serve` serves ("": the namespace alone).
    interface: str = ""

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    @property
    def netmask(self) -> str:
        return str(ipaddress.ip_network(self.subnet).netmask)

    @property
    def http(self) -> str:
        return f"http://{self.server}:{self.http_port}"


@dataclass(frozen=True)
class Inventory:
    path: Path
    network: Network
    export: Path
    nodes: tuple[Node, ...]

    def node(self, key: str) -> Node:
        """A node by MAC, full name or short name."""
        key = key.lower()
        for node in self.nodes:
            if key in (node.mac, node.name, node.short):
                return node
        known = ", ".join(n.name for n in self.nodes) or "none"
        raise ConfigError(f"{self.path}: no node {key!r} (nodes: {known})")

    def by_address(self) -> dict[str, Node]:
        return {n.address: n for n in self.nodes}

    def with_mode(self, mode: str) -> Inventory:
        """This inventory with [network] mode `mode` (`netboot.test --dhcp-mode`), checked as the file's is."""
        if mode not in MODES:
            raise ConfigError(f"DHCP mode {mode!r}: must be one of {', '.join(MODES)}")
        if mode == "full" and self.network.dhcp_range is None:
            raise ConfigError(f"{self.path}: full mode needs [network] dhcp_range = [first, last] for unknown machines")
        return replace(self, network=replace(self.network, mode=mode))


def inventory_path(config: Config, path: str | Path | None = None) -> Path:
    return (config.root / (path or DEFAULT_PATH)).resolve()


def load(config: Config, path: str | Path | None = None) -> Inventory:
    """Read and validate the inventory (default: netboot/inventory.toml of the checkout)."""
    file = inventory_path(config, path)
    try:
        data = tomllib.loads(file.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the netboot inventory {file}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    return from_dict(data, file, config)


def from_dict(data: Mapping[str, Any], path: Path, config: Config) -> Inventory:
    problems: list[str] = []
    for key in data:
        if key not in ("network", "storage", "nodes"):
            problems.append(f"unknown section [{key}]: expected network, storage, nodes")
    network = _network(_table(data, "network", problems), problems)
    storage = _table(data, "storage", problems)
    _unknown_keys("[storage]", storage, _STORAGE_KEYS, problems)
    export = storage.get("export", "persist")
    if not isinstance(export, str) or not export:
        problems.append(f"[storage] export = {export!r}: expected a directory path")
        export = "persist"
    nodes = _nodes(data.get("nodes", []), network, config, problems)
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{path}: {len(problems)} problem(s):\n{listing}")
    assert network is not None
    export_path = Path(export) if Path(export).is_absolute() else config.state_dir / "netboot" / export
    return Inventory(path, network, export_path, tuple(nodes))


def _table(data: Mapping[str, Any], key: str, problems: list[str]) -> dict[str, Any]:
    raw = data.get(key, {})
    if not isinstance(raw, dict):
        problems.append(f"[{key}] must be a table")
        return {}
    return raw


def _unknown_keys(where: str, raw: Mapping[str, Any], allowed: set[str], problems: list[str]) -> None:
    for key in raw:
        if key not in allowed:
            problems.append(f"{where}: unknown key {key!r}: expected one of {', '.join(sorted(allowed))}")


def _address(where: str, value: Any, problems: list[str]) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(value)
    except (ipaddress.AddressValueError, ValueError, TypeError):
        problems.append(f"{where} = {value!r}: not an IPv4 address")
        return None


def _network(raw: dict[str, Any], problems: list[str]) -> Network | None:
    _unknown_keys("[network]", raw, _NETWORK_KEYS, problems)
    for key in ("subnet", "server", "domain"):
        if key not in raw:
            problems.append(f"[network] {key} is missing")
    try:
        subnet = ipaddress.IPv4Network(raw.get("subnet", ""), strict=True)
    except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError, TypeError):
        if "subnet" in raw:
            problems.append(f"[network] subnet = {raw['subnet']!r}: not an IPv4 network like 10.77.0.0/24")
        return None
    inside = _inside_check(subnet, problems)
    server = _address("[network] server", raw.get("server"), problems) if "server" in raw else None
    inside("[network] server", server)
    gateway = _address("[network] gateway", raw.get("gateway", str(server)), problems)
    inside("[network] gateway", gateway)
    mode = raw.get("mode", "full")
    if mode not in MODES:
        problems.append(f"[network] mode = {mode!r}: must be one of {', '.join(MODES)}")
    dhcp_range = _dhcp_range(raw.get("dhcp_range"), inside, problems)
    if mode == "full" and dhcp_range is None and "dhcp_range" not in raw:
        problems.append("[network] dhcp_range is missing: full mode needs [first, last] for unknown machines")
    domain = raw.get("domain", "")
    if "domain" in raw and not (isinstance(domain, str) and re.match(r"^[a-z0-9-]+(\.[a-z0-9-]+)+$", domain)):
        problems.append(f"[network] domain = {domain!r}: expected a DNS domain like lab.wpdn")
    port = raw.get("http_port", 8080)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        problems.append(f"[network] http_port = {port!r}: not a TCP port (1-65535)")
    interface = raw.get("interface", "")
    if not isinstance(interface, str) or (interface and not IFNAME.match(interface)):
        problems.append(
            f'[network] interface = {interface!r}: expected a host interface name like eth0, or "" for none'
        )
        interface = ""
    if server is None:
        return None
    return Network(
        str(subnet), str(server), str(gateway or server), str(mode), dhcp_range, str(domain), int(port), interface
    )


def _inside_check(subnet: ipaddress.IPv4Network, problems: list[str]) -> Any:
    def check(where: str, address: ipaddress.IPv4Address | None) -> None:
        if address is None:
            return
        if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
            problems.append(
                f"{where} = {str(address)!r}: outside the subnet {subnet} (or its network/broadcast address)"
            )

    return check


def _dhcp_range(raw: Any, inside: Any, problems: list[str]) -> tuple[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) != 2:
        problems.append(f"[network] dhcp_range = {raw!r}: expected [first, last] addresses")
        return None
    first = _address("[network] dhcp_range[0]", raw[0], problems)
    last = _address("[network] dhcp_range[1]", raw[1], problems)
    inside("[network] dhcp_range[0]", first)
    inside("[network] dhcp_range[1]", last)
    if first is None or last is None:
        return None
    if first > last:
        problems.append(f"[network] dhcp_range = {raw!r}: the first address is after the last")
    return (str(first), str(last))


def _nodes(raw: Any, network: Network | None, config: Config, problems: list[str]) -> list[Node]:
    if not isinstance(raw, list):
        problems.append("nodes must be an array of tables ([[nodes]])")
        return []
    nodes: list[Node] = []
    macs: dict[str, str] = {}
    addresses: dict[str, str] = {}
    for i, body in enumerate(raw):
        where = f"[[nodes]] #{i + 1}"
        if not isinstance(body, dict):
            problems.append(f"{where} must be a table")
            continue
        _unknown_keys(where, body, _NODE_KEYS, problems)
        node = _node(where, body, network, config, problems)
        if node is None:
            continue
        if node.mac in macs:
            problems.append(f"{where} mac = {node.mac!r}: duplicate, already the MAC of {macs[node.mac]}")
        if node.address in addresses:
            other = addresses[node.address]
            problems.append(f"{where} address = {node.address!r}: duplicate, already the address of {other}")
        if network and node.address in (network.server, network.gateway):
            problems.append(f"{where} address = {node.address!r}: that is the node's server or gateway address")
        if network and network.dhcp_range and _in_range(node.address, network.dhcp_range):
            problems.append(f"{where} address = {node.address!r}: inside dhcp_range, which is for unknown machines")
        if any(n.name == node.name for n in nodes):
            problems.append(f"{where} name = {node.name!r}: duplicate host name")
        macs.setdefault(node.mac, node.name)
        addresses.setdefault(node.address, node.name)
        nodes.append(node)
    return nodes


def _in_range(address: str, bounds: tuple[str, str]) -> bool:
    value = ipaddress.IPv4Address(address)
    return ipaddress.IPv4Address(bounds[0]) <= value <= ipaddress.IPv4Address(bounds[1])


def _node(
    where: str, body: dict[str, Any], network: Network | None, config: Config, problems: list[str]
) -> Node | None:
    missing = [k for k in sorted(_NODE_KEYS) if k not in body]
    if missing:
        problems.append(f"{where}: missing {', '.join(missing)}")
        return None
    mac = str(body["mac"]).lower().replace("-", ":")
    ok = True
    if not _MAC.match(mac):
        problems.append(f"{where} mac = {body['mac']!r}: not a MAC address like 52:54:00:77:00:11")
        ok = False
    try:
        host = naming.parse(str(body["name"]), config)
    except ConfigError as exc:
        problems.append(f"{where} name = {body['name']!r}: {_strip_name(str(exc))}")
        return None
    if network and not host.fqdn.endswith("." + network.domain):
        problems.append(f"{where} name = {body['name']!r}: not in the lab domain {network.domain!r} ([network] domain)")
        ok = False
    address = _address(f"{where} address", body["address"], problems)
    if address is None:
        return None
    if network:
        subnet = ipaddress.IPv4Network(network.subnet)
        if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
            problems.append(f"{where} address = {str(address)!r}: outside the subnet {subnet} ([network] subnet)")
            ok = False
    return Node(mac, host.fqdn, str(address), host.role, host.environment) if ok else None


def _strip_name(message: str) -> str:
    # naming's errors start with "host name 'x':" which the caller already says.
    return re.sub(r"^host name '[^']*':? ?", "", message)
