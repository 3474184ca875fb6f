"""The OpenStack deploy target without a cloud: its configuration, server names and metadata, what
a rollback boots, what it refuses. The cloud's side (`Fleet`) is faked; tests/e2e/test_cloud.py runs
the same target on the real cloud."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import REPO, small_config
from workbench.cloud import lab
from workbench.cloud.servers import ENVIRONMENT_KEY, PREFIX_KEY, RELEASE_KEY, ROLE_KEY, Fleet, GlanceImage, Server
from workbench.core import config as wb_config
from workbench.core.errors import ConfigError, DeployFailed
from workbench.netboot import dnsmasq, node
from workbench.release import ledger, openstack
from workbench.release import releases as release
from workbench.release.target import BootImage, Plan, health_timeout

pytestmark = pytest.mark.unit


def lab_config(root: Path, **lab_env: Any) -> wb_config.Config:
    return small_config(
        root,
        roles={"app": {"ports": [80], "health": "/health"}, "frontend": {"ports": [80]}, "db": {"data": ["/var/lib/x"]},
               "hypervisor": {"aliases": ["hv"]}},
        environments={"lab": {"target": "openstack", "frontend_port": 8090, "lab_address": "10.77.0.3", **lab_env}},
        cloud={"inventory": str(REPO / "netboot" / "inventory.toml")},
    )


class FakeFleet:
    """What the target asks of the cloud, remembered; servers kept in a dict."""

    def __init__(self) -> None:
        self.servers_by_id: dict[str, Server] = {}
        self.booted: list[dict[str, Any]] = []
        self.staged: list[GlanceImage | None] = []
        self.deleted: list[str] = []
        self.hosts = {"hv1.lab.wpdn", "hv2.lab.wpdn"}
        self.flavor_says = ""

    def stage(self, role: str, image_id: str, recorded: GlanceImage | None) -> GlanceImage:
        self.staged.append(recorded)
        return recorded or GlanceImage("glance-new", "sha512-new")

    def flavor_problem(self, flavor: str, glance_id: str) -> str:
        return self.flavor_says

    def boot(self, name: str, image: GlanceImage, flavor: str, user_data: str, metadata: dict[str, str],
             security_groups: list[str], group: str = "") -> str:
        server_id = f"id-{len(self.booted)}"
        self.booted.append({"name": name, "image": image, "flavor": flavor, "user_data": user_data,
                            "groups": security_groups, "group": group})
        self.servers_by_id[server_id] = Server(server_id, name, "ACTIVE", (f"10.77.0.{200 + len(self.booted)}",),
                                               dict(metadata), "")
        return server_id

    def server(self, server_id: str) -> Server:
        return self.servers_by_id[server_id]

    def servers(self, **metadata: str) -> list[Server]:
        return sorted((s for s in self.servers_by_id.values()
                       if all(s.metadata.get(k) == v for k, v in metadata.items())), key=lambda s: s.name)

    def host_of(self, server_id: str) -> str:
        return "hv1.lab.wpdn"

    def delete(self, ids: list[str]) -> None:
        for server_id in ids:
            self.deleted.append(self.servers_by_id.pop(server_id).name)

    def security_group(self, name: str, ports: list[int]) -> str:
        return name

    def hypervisors(self) -> set[str]:
        return self.hosts

    def server_group(self, name: str, members: int, hosts: int) -> str:
        return f"group-{name}"

    def delete_server_group(self, name: str) -> None:
        pass

    def has_image(self, glance_id: str) -> bool:
        return glance_id not in self.deleted

    def delete_image(self, glance_id: str) -> None:
        self.deleted.append(glance_id)

    def set_metadata(self, server_id: str, metadata: dict[str, str]) -> None:
        server = self.servers_by_id[server_id]
        self.servers_by_id[server_id] = dataclasses.replace(server, metadata={**server.metadata, **metadata})


def target_with(config: wb_config.Config, fleet: FakeFleet) -> openstack.OpenStackTarget:
    target = openstack.OpenStackTarget(config)
    target._fleet = fleet  # type: ignore[assignment]
    return target


def plan_of(config: wb_config.Config, tag: str = "app-12", boot: BootImage | None = None) -> Plan:
    return Plan(config.role("app"), config.environment("lab"), tag, 3, "sha256:img", "sha256:digest",
                boot=boot or BootImage("glance-1", "sha512-1"))


def test_servers_are_named_by_the_naming_rule_and_told_their_settings(tmp_path: Path) -> None:
    config = lab_config(tmp_path, replicas=2, variables={"GREETING": "it's me"})
    fleet = FakeFleet()
    target = target_with(config, fleet)
    started = target.start(plan_of(config))
    assert [i.name for i in started] == ["app-12.lab.wpdn", "app-12-2.lab.wpdn"]
    assert [i.address for i in started] == ["10.77.0.201:80", "10.77.0.202:80"]
    first = fleet.booted[0]
    assert first["image"] == GlanceImage("glance-1", "sha512-1") and first["flavor"] == "lab.small"
    assert "GREETING='it'\"'\"'s me'\n" in first["user_data"]
    assert "WORKBENCH_RELEASE=app-12\n" in first["user_data"]
    assert "WORKBENCH_HOSTNAME=app-12.lab.wpdn\n" in first["user_data"]
    # Two replicas share a group whose policy spreads them; the role's port is let in from the lab LAN.
    assert first["group"] == "group-wbx-lab-app-12" and first["groups"] == ["default", "wbx-lab-app"]
    server = fleet.servers(**{RELEASE_KEY: "app-12"})[0]
    assert {server.metadata[k] for k in (PREFIX_KEY, ENVIRONMENT_KEY, ROLE_KEY)} == {"wbx", "lab", "app"}
    assert [i.name for i in target.instances(config.environment("lab"), tag="app-12")] == [
        "app-12.lab.wpdn", "app-12-2.lab.wpdn"]
    # The lab's DNS answers each server's name while it lives (the node reads these files on SIGHUP).
    names = node.names_dir(config)
    assert (names / "app-12-2.lab.wpdn").read_text() == "10.77.0.202 app-12-2.lab.wpdn\n"
    target.stop(config.environment("lab"), "app-12")
    assert fleet.deleted == ["app-12-2.lab.wpdn", "app-12.lab.wpdn"] and not fleet.servers()
    assert not list(names.iterdir())


def test_a_flavor_that_cannot_boot_the_image_is_refused_before_any_server(tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    fleet = FakeFleet()
    fleet.flavor_says = "its 2 GiB disk is smaller than the image's 4 GiB"
    with pytest.raises(DeployFailed, match=r"workbench.toml \[environments.lab\] flavor = 'lab.small': its 2 GiB"):
        target_with(config, fleet).start(plan_of(config))
    assert fleet.booted == []


class _Flavor:
    def __init__(self, name: str, disk: int, ram: int) -> None:
        self.name, self.disk, self.ram = name, disk, ram


def test_the_flavor_must_hold_the_images_disk_and_memory() -> None:
    """Checked against glance's min_disk and min_ram, as nova would check each server."""
    flavors = [_Flavor("lab.small", 2, 512), _Flavor("lab.medium", 5, 1024)]
    fleet = Fleet.__new__(Fleet)
    fleet.conn = type("Conn", (), {"compute": type("Compute", (), {
        "find_flavor": staticmethod(lambda name: next((f for f in flavors if f.name == name), None)),
        "flavors": staticmethod(lambda: flavors)})()})()
    fleet._record = lambda glance_id: {"min_disk": 4, "min_ram": 768}  # type: ignore[method-assign]
    assert "smaller than the image's 4 GiB" in fleet.flavor_problem("lab.small", "g1")
    assert fleet.flavor_problem("lab.medium", "g1") == ""
    assert fleet.flavor_problem("lab.huge", "g1") == "the cloud has no such flavor (it has: lab.medium, lab.small)"
    fleet._record = lambda glance_id: {"min_disk": 1, "min_ram": 2048}  # type: ignore[method-assign]
    assert "1024 MiB of memory is less than the image's 2048 MiB" in fleet.flavor_problem("lab.medium", "g1")


def test_a_start_replaces_servers_an_interrupted_start_of_the_same_tag_left(tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    fleet = FakeFleet()
    target = target_with(config, fleet)
    target.start(plan_of(config))
    target.start(plan_of(config))
    assert fleet.deleted == ["app-12.lab.wpdn"] and len(fleet.servers()) == 1


def test_no_server_is_asked_for_while_no_hypervisor_is_up(tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    fleet = FakeFleet()
    fleet.hosts = set()
    with pytest.raises(DeployFailed, match="no hypervisor of the cloud can take a server"):
        target_with(config, fleet).start(plan_of(config))
    assert fleet.booted == []


def test_a_rollback_stages_the_recorded_image_by_id_and_checksum(tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    fleet = FakeFleet()
    target = target_with(config, fleet)
    recorded = BootImage("glance-7", "sha512-7")
    assert target.stage(plan_of(config), recorded) == recorded
    assert fleet.staged == [GlanceImage("glance-7", "sha512-7")]
    assert target.stage(plan_of(config), None) == BootImage("glance-new", "sha512-new")


def test_a_standby_is_marked_in_the_servers_metadata(tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    fleet = FakeFleet()
    target = target_with(config, fleet)
    target.start(plan_of(config))
    target.hold(config.environment("lab"), "app-12", standby=True)
    assert fleet.servers()[0].metadata["workbench_standby"] == "1"


def test_the_target_keeps_no_data_and_runs_nothing_in_servers(tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    target = target_with(config, FakeFleet())
    assert target.data_volumes(config.environment("lab"), config.role("app")) == ()
    instance = target.start(plan_of(config))[0]
    with pytest.raises(DeployFailed, match="no channel to run mysqldump"):
        target.run(instance, ["mysqldump"])


def test_a_role_with_data_is_refused_before_anything_is_recorded(tmp_path: Path, monkeypatch: Any) -> None:
    config = lab_config(tmp_path)
    monkeypatch.setattr(release.images, "newest_verified", lambda *a, **k: "sha256:db")
    monkeypatch.setattr(release, "_labels", lambda image_id: {"workbench.version": "1"})
    with pytest.raises(ConfigError, match=r"role db keeps data .* target = 'openstack'"):
        release.promote(config, "db", "lab", target=target_with(config, FakeFleet()))
    with ledger.opened(config) as led:
        assert led.history() == [] and led.intents() == []


def test_an_openstack_environment_needs_its_frontends_lab_address(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[environments.lab\] target = \"openstack\" needs lab_address"):
        lab_config(tmp_path, lab_address="")
    with pytest.raises(ConfigError, match=r"lab_address = 'ten': not an IPv4 address"):
        lab_config(tmp_path, lab_address="ten")


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.77.0.2", "the controller's address"),
        ("10.77.0.11", "reserved for hv1.lab.wpdn"),
        ("10.77.0.120", "inside the node's dhcp_range"),
        ("10.77.0.210", "inside [cloud] provider_pool"),
        ("10.78.0.3", "outside the lab's subnet"),
    ],
)
def test_the_frontends_lab_address_must_be_free_on_the_lab(tmp_path: Path, address: str, expected: str) -> None:
    config = lab_config(tmp_path, lab_address=address)
    with pytest.raises(ConfigError) as err:
        lab.plan(config)
    assert f"[environments.lab] lab_address = {address!r}: {expected}" in str(err.value)


def test_prune_deletes_the_glance_images_of_releases_outside_the_window(tmp_path: Path, monkeypatch: Any) -> None:
    config = lab_config(tmp_path, retention=2)
    fleet = FakeFleet()
    monkeypatch.setattr(release, "target_for", lambda config, env: target_with(config, fleet))
    monkeypatch.setattr(release.engine, "containers", lambda labels: [])
    monkeypatch.setattr(release.engine, "get_image", lambda image_id: None)
    with ledger.opened(config) as led:
        for n, boot in enumerate(["glance-a", "glance-b", "glance-a", "glance-c", "glance-d"], start=1):
            draft = ledger.Release(
                tag="", role="app", environment="lab", action=ledger.PROMOTE, status=ledger.RELEASED, version=n,
                image=f"wbx/app:{n}", image_id=f"sha256:{n}", digest="", repository="r", inputs="", verify="",
                replaces=None, rollback_of=None, who="t", at="now", target="openstack", boot_image=boot,
                boot_checksum=f"sum-{boot}")
            intent = led.begin(draft)
            led.finish(intent, intent.release)
        led.pin("app-2")
    assert release.prune(config, dry_run=True) == ["glance image glance-a (releases app-1, app-3)"]
    assert fleet.deleted == []
    release.prune(config)
    assert fleet.deleted == ["glance-a"]
    assert release.prune(config) == []


def test_records_of_schema_2_read_as_docker_releases() -> None:
    old = {"tag": "app-1", "role": "app", "environment": "staging", "action": "promote", "status": "released",
           "version": 1, "image": "wbx/app:1", "image_id": "sha256:x", "digest": "", "repository": "r",
           "inputs": "", "verify": "", "replaces": None, "rollback_of": None, "who": "t", "at": "now", "schema": 2}
    read = ledger.Release.from_dict(old)
    assert (read.target, read.boot_image, read.boot_checksum) == ("docker", "", "")


def test_the_nodes_dns_reads_the_names_directory(tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    inv = lab.plan(config).inventory
    plan = dnsmasq.Plan("nb0", tmp_path / "t", tmp_path / "l", tmp_path / "s", tmp_path / "c", hosts=tmp_path / "n")
    assert f"addn-hosts={tmp_path / 'n'}\n" in dnsmasq.config_text(inv, plan)


def test_a_servers_ipv4_addresses_and_fault_are_read_as_nova_lists_them() -> None:
    from types import SimpleNamespace

    from workbench.cloud import servers

    item = SimpleNamespace(id="i", name="app-1.lab.wpdn", status="ERROR", metadata={"workbench_replica": 1},
                           addresses={"provider": [{"addr": "10.77.0.205", "version": 4},
                                                   {"addr": "fe80::1", "version": 6}]},
                           fault={"message": "No valid host"})
    server = servers._server(item)
    assert (server.addresses, server.fault, server.metadata) == (("10.77.0.205",), "No valid host",
                                                                 {"workbench_replica": "1"})
    assert servers._server(SimpleNamespace(id="j", fault=None)).addresses == ()


def test_servers_emulated_by_qemu_get_longer_to_become_healthy(tmp_path: Path) -> None:
    config = lab_config(tmp_path)
    assert openstack.default_health_timeout(config) == openstack.HEALTH_TIMEOUT
    config = small_config(tmp_path, cloud={"virt_type": "qemu"}, roles={"app": {}}, environments={"lab": {}})
    assert openstack.default_health_timeout(config) == openstack.HEALTH_TIMEOUT * openstack.EMULATED_SLOWDOWN
    assert health_timeout(config.environments["lab"], openstack.default_health_timeout(config)) == \
        openstack.HEALTH_TIMEOUT * openstack.EMULATED_SLOWDOWN


def test_an_environment_health_timeout_overrides_the_targets_wait(tmp_path: Path) -> None:
    config = small_config(tmp_path, cloud={"virt_type": "qemu"}, roles={"app": {}},
                          environments={"lab": {"health_timeout": 3600}})
    assert health_timeout(config.environments["lab"], openstack.default_health_timeout(config)) == 3600.0
