"""The netboot tests' configuration, the example inventory, and stand-ins for the live image."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

from tests.support.config import REPO
from workbench.core import config as wb_config
from workbench.core.inputs import hash_inputs
from workbench.netboot import artifacts, dnsmasq

EXAMPLE = REPO / "netboot" / "inventory.toml"
# What `fab cloud.up` leaves on the node for hv1 (node.cloud_config_dir); the tests run no controller.
CLOUD_FOR_HV1 = {
    "host": "hv1.lab.wpdn",
    "controller": "10.77.0.2",
    "region": "RegionOne",
    "virt_type": "lxc",
    "passwords": {"rabbitmq": "rabbit-$ecret", "nova": "n", "neutron": "q", "placement": "p"},
}


def netboot_config(state: Path, prefix: str, *environments: str) -> wb_config.Config:
    """The checkout's own states and inventory, the hypervisor role (alias hv) as the
    default, the lab environment (and `environments`), under `prefix` and `state`."""
    data = {
        "roles": {"hypervisor": {"aliases": ["hv"]}},
        "environments": {name: {} for name in ("lab", *environments)},
        "workbench": {"default_role": "hypervisor", "state_dir": str(state), "prefix": prefix},
    }
    return wb_config.from_dict(data, REPO / "workbench.toml")


def example() -> dict[str, Any]:
    """The example inventory (netboot/inventory.toml) as data, a copy to change."""
    return copy.deepcopy(tomllib.loads(EXAMPLE.read_text()))


def plan(work: Path, *, lan: bool = False) -> dnsmasq.Plan:
    """Where a node's dnsmasq would keep its files, all under `work`."""
    return dnsmasq.Plan("nb0", work / "tftp", work / "dnsmasq.log", work / "leases", work / "d.conf", lan=lan)


def standin_live(config: wb_config.Config) -> Path:
    """Small stand-ins for the live image's files, where the node looks for the current inputs' build."""
    live = artifacts.live_dir(config) / hash_inputs(artifacts.live_inputs(config))[:12]
    live.mkdir(parents=True)
    for name in artifacts.FILES:
        (live / name).write_bytes(name.encode() * 1000)
    (live / "manifest.json").write_text(json.dumps({"role": "hypervisor", "sizes": {}}))
    return live
