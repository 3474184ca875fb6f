from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import REPO
from tests.support.netboot import EXAMPLE, example
from workbench.core import config as wb_config
from workbench.core.errors import ConfigError
from workbench.netboot import inventory

INV_PATH = Path("/lab/inventory.toml")


def problems(data: dict[str, Any], config: wb_config.Config) -> str:
    with pytest.raises(ConfigError) as info:
        inventory.from_dict(data, INV_PATH, config)
    return str(info.value)


def test_example_inventory_loads_with_roles_from_names(netboot_cfg: wb_config.Config) -> None:
    inv = inventory.load(netboot_cfg, EXAMPLE)
    hv1 = inv.node("52:54:00:77:00:11")
    assert (hv1.name, hv1.role, hv1.environment, hv1.address) == ("hv1.lab.wpdn", "hypervisor", "lab", "10.77.0.11")
    assert inv.node("hv2") is inv.nodes[1]
    assert inv.network.mode == "full"
    assert inv.network.http == "http://10.77.0.1:8080"
    assert inv.export == netboot_cfg.state_dir / "netboot" / "persist"


def test_repository_configuration_knows_the_hypervisor_role() -> None:
    data = tomllib.loads((REPO / "workbench.toml").read_text())
    assert data["roles"]["hypervisor"]["aliases"] == ["hv"]
    assert "lab" in data["environments"]
    cfg = wb_config.from_dict(
        {
            "roles": {"hypervisor": data["roles"]["hypervisor"]},
            "environments": {"lab": {}},
            "workbench": {"default_role": "hypervisor"},
        },
        REPO / "workbench.toml",
    )
    assert cfg.role("hv").name == "hypervisor"


def test_duplicate_mac_and_address(netboot_cfg: wb_config.Config) -> None:
    data = example()
    data["nodes"][1]["mac"] = "52:54:00:77:00:11"
    data["nodes"][1]["address"] = "10.77.0.11"
    text = problems(data, netboot_cfg)
    assert str(INV_PATH) in text
    assert "2 problem(s)" in text
    assert "[[nodes]] #2 mac = '52:54:00:77:00:11': duplicate, already the MAC of hv1.lab.wpdn" in text
    assert "[[nodes]] #2 address = '10.77.0.11': duplicate, already the address of hv1.lab.wpdn" in text


def test_bad_names_unknown_roles_and_environments(netboot_cfg: wb_config.Config) -> None:
    data = example()
    data["nodes"][0]["name"] = "Hv_1.lab.wpdn"
    data["nodes"][1]["name"] = "web1.lab.wpdn"
    data["nodes"].append({"mac": "52:54:00:77:00:13", "name": "hv3.moon.wpdn", "address": "10.77.0.13"})
    data["nodes"].append({"mac": "52:54:00:77:00:14", "name": "hv4.staging.wpdn", "address": "10.77.0.14"})
    text = problems(data, netboot_cfg)
    assert "4 problem(s)" in text
    assert "[[nodes]] #1 name = 'Hv_1.lab.wpdn'" in text and "not a DNS label" in text
    assert "[[nodes]] #2 name = 'web1.lab.wpdn': unknown role 'web'" in text
    assert "[[nodes]] #3 name = 'hv3.moon.wpdn': unknown environment 'moon'" in text
    assert "[[nodes]] #4 name = 'hv4.staging.wpdn': not in the lab domain 'lab.wpdn'" in text


def test_addresses_outside_the_subnet(netboot_cfg: wb_config.Config) -> None:
    data = example()
    data["nodes"][0]["address"] = "10.78.0.11"
    data["nodes"][1]["address"] = "10.77.0.255"
    data["network"]["server"] = "192.168.1.2"
    data["network"]["dhcp_range"] = ["10.77.0.100", "10.77.1.5"]
    text = problems(data, netboot_cfg)
    assert "[[nodes]] #1 address = '10.78.0.11': outside the subnet 10.77.0.0/24" in text
    assert "[[nodes]] #2 address = '10.77.0.255': outside the subnet" in text
    assert "[network] server = '192.168.1.2': outside the subnet" in text
    assert "[network] dhcp_range[1] = '10.77.1.5': outside the subnet" in text


def test_malformed_values_are_all_reported(netboot_cfg: wb_config.Config) -> None:
    data = example()
    data["network"]["mode"] = "relay"
    data["network"]["http_port"] = 70000
    data["network"]["colour"] = "blue"
    data["nodes"][0]["mac"] = "52:54:00:77:00"
    data["nodes"][1]["address"] = "10.77.0.120"
    del data["nodes"][1]["mac"]
    text = problems(data, netboot_cfg)
    assert "[network] mode = 'relay': must be one of full, proxy" in text
    assert "[network] http_port = 70000: not a TCP port" in text
    assert "[network]: unknown key 'colour'" in text
    assert "[[nodes]] #1 mac = '52:54:00:77:00': not a MAC address" in text
    assert "[[nodes]] #2: missing mac" in text


def test_node_address_inside_the_dynamic_range(netboot_cfg: wb_config.Config) -> None:
    data = example()
    data["nodes"][0]["address"] = "10.77.0.120"
    assert "inside dhcp_range, which is for unknown machines" in problems(data, netboot_cfg)


def test_proxy_mode_needs_no_range(netboot_cfg: wb_config.Config) -> None:
    data = example()
    data["network"]["mode"] = "proxy"
    del data["network"]["dhcp_range"]
    inv = inventory.from_dict(data, INV_PATH, netboot_cfg)
    assert inv.network.dhcp_range is None


def test_missing_file_names_it(netboot_cfg: wb_config.Config, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the netboot inventory .*nope\.toml"):
        inventory.load(netboot_cfg, tmp_path / "nope.toml")


def test_unknown_node_lookup(netboot_cfg: wb_config.Config) -> None:
    inv = inventory.load(netboot_cfg, EXAMPLE)
    with pytest.raises(ConfigError, match="no node 'hv9'"):
        inv.node("hv9")


def test_mode_override_for_the_lab_test(netboot_cfg: wb_config.Config) -> None:
    inv = inventory.load(netboot_cfg, EXAMPLE)
    proxy = inv.with_mode("proxy")
    assert (inv.network.mode, proxy.network.mode) == ("full", "proxy")
    assert proxy.network.server == inv.network.server and proxy.nodes == inv.nodes
    with pytest.raises(ConfigError, match="DHCP mode 'relay': must be one of full, proxy"):
        inv.with_mode("relay")
    data = example()
    data["network"]["mode"] = "proxy"
    del data["network"]["dhcp_range"]
    with pytest.raises(ConfigError, match=r"full mode needs \[network\] dhcp_range"):
        inventory.from_dict(data, INV_PATH, netboot_cfg).with_mode("full")
