"""`[cloud]` on its own and against the lab's inventory; the cloud's passwords; what the controller is given."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import REPO
from workbench.cloud import api, controller, lab, secrets
from workbench.core import config as wb_config
from workbench.core.errors import CloudError, ConfigError

pytestmark = pytest.mark.unit


def cloud_config(state: Path, **cloud: Any) -> wb_config.Config:
    data = {
        "workbench": {"state_dir": str(state), "prefix": "cloudunit", "default_role": "hypervisor"},
        "roles": {"hypervisor": {"aliases": ["hv"]}},
        "environments": {"lab": {}},
        "cloud": cloud,
    }
    return wb_config.from_dict(data, REPO / "workbench.toml")


def test_defaults_fit_the_example_lab(tmp_path: Path) -> None:
    plan = lab.plan(cloud_config(tmp_path))
    assert plan.controller == "10.77.0.2" and plan.prefixlen == 24
    assert plan.pool == ("10.77.0.200", "10.77.0.239")
    assert plan.public_ports["identity"] == 25000 and plan.public_ports["network"] == 29696
    assert plan.auth_url == "http://127.0.0.1:25000/v3"
    assert plan.public_url("compute") == "http://127.0.0.1:28774/v2.1"


@pytest.mark.parametrize(
    ("cloud", "expected"),
    [
        ({"controller_address": "10.77.0.300"}, "[cloud] controller_address: '10.77.0.300' is not an IPv4 address"),
        ({"provider_pool": ["10.77.0.200"]}, "give the first and the last address"),
        ({"public_port_offset": 60000}, "[cloud] public_port_offset = 60000: between 1024"),
        ({"virt_type": "xen"}, "[cloud] virt_type = 'xen': must be one of kvm, qemu, lxc"),
        ({"workers": 0}, "[cloud] workers = 0: between 1 and 16"),
        ({"project": "Lab Team"}, "[cloud] project = 'Lab Team'"),
        ({"flavours": []}, "[cloud]: unknown key 'flavours'"),
    ],
)
def test_bad_cloud_settings_are_named(tmp_path: Path, cloud: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        cloud_config(tmp_path, **cloud)
    assert expected in str(err.value)
    assert str(REPO / "workbench.toml") in str(err.value)


@pytest.mark.parametrize(
    ("cloud", "expected"),
    [
        ({"controller_address": "10.78.0.2"}, "controller_address = '10.78.0.2': outside the lab's subnet"),
        ({"controller_address": "10.77.0.11"}, "controller_address = '10.77.0.11': reserved for hv1.lab.wpdn"),
        ({"controller_address": "10.77.0.1"}, "the networking node's address"),
        ({"controller_address": "10.77.0.120"}, "inside the node's dhcp_range"),
        ({"provider_pool": ["10.77.0.140", "10.77.0.160"]}, "overlaps the node's dhcp_range"),
        ({"provider_pool": ["10.77.0.10", "10.77.0.20"]}, "holds 10.77.0.11, reserved for hv1.lab.wpdn"),
        ({"provider_pool": ["10.77.0.239", "10.77.0.200"]}, "the first address is after the last"),
    ],
)
def test_cloud_that_does_not_fit_the_lab(tmp_path: Path, cloud: dict[str, Any], expected: str) -> None:
    config = cloud_config(tmp_path, **cloud)
    with pytest.raises(ConfigError) as err:
        lab.plan(config)
    text = str(err.value)
    assert expected in text
    assert "[cloud]" in text and "netboot/inventory.toml" in text


def test_passwords_are_made_once_and_private(tmp_path: Path) -> None:
    config = cloud_config(tmp_path)
    assert secrets.load(config) is None
    made = secrets.ensure(config)
    path = secrets.secrets_path(config)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert set(made.passwords) == set(secrets.NAMES)
    assert len(set(made.passwords.values())) == len(secrets.NAMES)
    assert secrets.ensure(config).passwords == made.passwords


def test_damaged_passwords_say_how_to_recover(tmp_path: Path) -> None:
    config = cloud_config(tmp_path)
    path = secrets.secrets_path(config)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"passwords": {"admin": "x"}}))
    with pytest.raises(CloudError, match="no password for rabbitmq.*cloud.down --purge"):
        secrets.load(config)


def test_controller_settings_follow_the_roles_contract(tmp_path: Path) -> None:
    config = cloud_config(tmp_path)
    keys = secrets.ensure(config)
    settings = controller.settings(config, lab.plan(config), keys)
    assert settings["internal_address"] == "10.77.0.2"
    assert settings["public_ports"] == {
        "identity": 25000,
        "image": 29292,
        "placement": 28778,
        "compute": 28774,
        "network": 29696,
    }
    assert settings["provider_interface"] == controller.LAB_INTERFACE
    passwords = settings["passwords"]
    assert isinstance(passwords, dict)
    # The member user's password is the host's business, not the controller's.
    assert "member" not in passwords and passwords["admin"] == keys["admin"]


def test_openrc_points_at_the_public_endpoint(tmp_path: Path) -> None:
    config = cloud_config(tmp_path)
    keys = secrets.ensure(config)
    admin = api.openrc(lab.plan(config), keys)
    assert admin["OS_AUTH_URL"] == "http://127.0.0.1:25000/v3"
    assert admin["OS_USERNAME"] == "admin" and admin["OS_PASSWORD"] == keys["admin"]
    member = api.openrc(lab.plan(config), keys, member=True, project="lab")
    assert member["OS_USERNAME"] == "lab" and member["OS_PROJECT_NAME"] == "lab"


def test_a_hypervisor_takes_servers_once_its_agent_is_alive_too() -> None:
    """nova-compute up is not enough: a port bound before the host's agent reported fails, and the server with it."""
    compute = (
        api.ServiceState("nova-compute", "hv1.lab.wpdn", True),
        api.ServiceState("nova-compute", "hv2.lab.wpdn", True),
        api.ServiceState("nova-compute", "hv3.lab.wpdn", False),
        api.ServiceState("nova-conductor", "controller", True),
    )
    agents = (
        api.ServiceState(api.HYPERVISOR_AGENT, "hv1.lab.wpdn", True),
        api.ServiceState(api.HYPERVISOR_AGENT, "hv3.lab.wpdn", True),
        api.ServiceState("DHCP agent", "hv2.lab.wpdn", True),
    )
    assert api.Services(compute, agents, ()).hypervisors() == {"hv1.lab.wpdn"}


def test_a_hypervisor_powered_on_again_counts_by_its_new_reports() -> None:
    """Its previous boot's reports look up for nova's service_down_time: a server asked for then finds no host."""
    powered_on = datetime(2026, 12, 6, 8, 12, 0, tzinfo=UTC)

    def services(compute_at: str, agent_at: str) -> api.Services:
        return api.Services((api.ServiceState("nova-compute", "hv1.lab.wpdn", True, api.reported_at(compute_at)),),
                            (api.ServiceState(api.HYPERVISOR_AGENT, "hv1.lab.wpdn", True, api.reported_at(agent_at)),),
                            ())

    since = {"hv1.lab.wpdn": powered_on}
    stale = services("2026-12-06T08:11:40.000000", "2026-12-06 08:11:45")
    assert stale.hypervisors() == {"hv1.lab.wpdn"}
    assert stale.hypervisors(reported_since=since) == set()
    # nova-compute reported since, its agent not yet.
    assert services("2026-12-06T08:14:05.000000", "2026-12-06 08:11:45").hypervisors(reported_since=since) == set()
    assert services("2026-12-06T08:14:05.000000", "2026-12-06 08:14:09").hypervisors(reported_since=since) == {
        "hv1.lab.wpdn"}
    assert api.reported_at(None) is None and api.reported_at("never") is None
