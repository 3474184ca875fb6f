"""The controller role: the homelab's OpenStack control plane, under monit.

The candidate starts as verification starts it: WORKBENCH_CLOUD_THROWAWAY=1 (random
passwords under /run, the container's own address), the image's own empty data
paths, and the capabilities neutron's agents need. Its start hook has made the
databases, schemas and catalogue before monit started the services; these tests
use the cloud as its users do: a token, nova's and neutron's services, an image
uploaded and deleted.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from basesystem import *  # noqa: F403 -- every role image carries the basesystem
from conftest import wait_until

# Every API the controller runs under uWSGI.
UWSGI_INIS = (
    "/etc/keystone/keystone-uwsgi.ini", "/etc/placement/placement-api-uwsgi.ini", "/etc/nova/nova-api-uwsgi.ini",
    "/etc/nova/nova-api-metadata-uwsgi.ini", "/etc/neutron/neutron-api-uwsgi.ini",
)

# The APIs answer once the readiness probe returns; services that report to the
# databases (nova's, neutron's agents) may take a little longer on 2 loaded cores.
SERVICE_WAIT = 240.0
OPENRC = "/root/admin-openrc"
SERVICES = (
    "mariadb", "memcached", "rabbitmq-server", "keystone", "glance-api", "placement-api", "nova-api",
    "nova-api-metadata", "nova-conductor", "nova-scheduler", "neutron-api", "neutron-rpc-server",
    "neutron-linuxbridge-agent", "neutron-dhcp-agent", "neutron-metadata-agent",
)


pytestmark = pytest.mark.usefixtures("monit_ready")


def openstack(host: Any, command: str) -> Any:
    """`openstack <command> -f json` as admin, over the internal endpoints (admin-openrc)."""
    return json.loads(host.check_output(f". {OPENRC} && openstack {command} -f json"))


def settings(host: Any) -> dict[str, Any]:
    return dict(json.loads(host.file("/run/workbench/cloud/controller.json").content_string))


def test_packages_without_recommends(host: Any) -> None:
    for name in ("keystone", "glance", "placement-api", "nova-api", "nova-conductor", "nova-scheduler",
                 "neutron-server", "neutron-linuxbridge-agent", "neutron-dhcp-agent", "neutron-metadata-agent",
                 "rabbitmq-server", "mariadb-server", "memcached", "python3-openstackclient",
                 "python3-osc-placement"):
        assert host.package(name).is_installed, name
    # What recommends would have pulled in. A VM's disk boots systemd (the vanilla disk has it); a
    # container must not get it through a recommends.
    in_vm = host.file("/proc/1/comm").content_string.strip() == "systemd"
    for name in ("gcc", "exim4-base") + (() if in_vm else ("systemd",)):
        assert not host.package(name).is_installed, name


def test_throwaway_settings_stay_under_run(host: Any) -> None:
    # Verification has no cloud.up: the start hook made random passwords, root's alone.
    assert not host.file("/etc/workbench/cloud/controller.json").exists
    made = host.file("/run/workbench/cloud/controller.json")
    assert made.mode == 0o600 and made.user == "root"
    values = settings(host)
    # The default route's interface: a container's eth0, a VM's ens3.
    device = host.check_output("ip -4 -o route show default").split(" dev ")[1].split()[0]
    address = host.check_output(f"ip -4 -o addr show dev {device}").split()[3].split("/")[0]
    assert values["internal_address"] == values["public_address"] == address
    assert len(set(values["passwords"].values())) == len(values["passwords"]), "each password its own"


def test_without_settings_the_hook_says_what_is_missing(host: Any) -> None:
    result = host.run("env -u WORKBENCH_CLOUD_THROWAWAY /etc/workbench/init.d/50-controller")
    assert result.rc != 0
    assert "/etc/workbench/cloud/controller.json is missing" in result.stderr
    assert "fab cloud.up" in result.stderr


def test_configuration_rendered_from_the_settings(host: Any) -> None:
    values = settings(host)
    nova = host.file("/etc/nova/nova.conf")
    assert nova.mode == 0o640 and nova.group == "nova"
    assert nova.contains(f"^my_ip = {values['internal_address']}$")
    assert nova.contains("^send_service_user_token = true$")
    assert host.file("/etc/neutron/neutron.conf").contains("^linuxbridge = true$")
    assert host.file("/etc/neutron/plugins/ml2/ml2_conf.ini").contains("^mechanism_drivers = linuxbridge$")
    assert host.file("/etc/neutron/plugins/ml2/linuxbridge_agent.ini").contains(
        "^physical_interface_mappings = provider:lab0$"
    )
    assert host.file("/etc/neutron/dhcp_agent.ini").contains("^interface_driver = linuxbridge$")
    secret = values["passwords"]["metadata_secret"]
    assert host.file("/etc/neutron/metadata_agent.ini").contains(f"^metadata_proxy_shared_secret = {secret}$")
    for path in ("/etc/keystone/keystone-uwsgi.ini", "/etc/nova/nova-api-uwsgi.ini",
                 "/etc/neutron/neutron-api-uwsgi.ini"):
        assert host.file(path).contains("^processes = 2$"), path
    # keystone, neutron and nova load eventlet: threads sharing its hub deadlock (seen here).
    for path in UWSGI_INIS:
        assert host.file(path).contains("^threads = 1$"), path
    openrc = host.file(OPENRC)
    assert openrc.mode == 0o600 and openrc.user == "root"


def test_neutron_tells_nova_of_ports_at_its_internal_endpoint(host: Any) -> None:
    # A kvm/qemu server starts paused until nova hears network-vif-plugged from neutron; the public
    # endpoint is the host's published port, which nothing inside the controller listens on.
    assert host.file("/etc/neutron/neutron.conf").contains("^endpoint_type = internal$")
    url = next(e["URL"] for e in openstack(host, "endpoint list --service compute --interface internal"))
    answer = host.run(f"python3 -c 'import urllib.request as u; print(u.urlopen(\"{url}\").status)'")
    assert answer.stdout.strip() == "200", answer.stderr


def test_two_workers_per_api(host: Any) -> None:
    # uWSGI's master and its two workers.
    for user in ("keystone", "placement"):
        assert int(host.check_output(f"pgrep -c -u {user} uwsgi")) == 3, user


def test_data_paths_initialised_and_owned(host: Any) -> None:
    assert host.file("/var/lib/mysql/mysql").is_directory
    assert host.file("/var/lib/mysql").user == "mysql"
    assert host.file("/var/lib/rabbitmq").user == "rabbitmq"
    assert host.file("/var/lib/glance/images").user == "glance"
    for repository in ("fernet-keys", "credential-keys"):
        keys = host.file(f"/etc/keystone/{repository}")
        assert (keys.user, keys.mode) == ("keystone", 0o700)
        assert sorted(keys.listdir()) == ["0", "1"], repository


def test_mariadb_serves_loopback_only(host: Any) -> None:
    assert host.socket("tcp://127.0.0.1:3306").is_listening
    assert not host.socket("tcp://0.0.0.0:3306").is_listening
    databases = host.check_output("mariadb --batch --skip-column-names -e 'SHOW DATABASES'").split()
    assert {"keystone", "glance", "placement", "nova_api", "nova", "nova_cell0", "neutron"} <= set(databases)


def test_rabbitmq_has_only_the_openstack_user(host: Any) -> None:
    # Its first boot makes the node's database: the port may listen before the app runs.
    users = wait_until(lambda: host.check_output("rabbitmqctl --quiet list_users --formatter json"),
                       "RabbitMQ lists its users", SERVICE_WAIT)
    assert [user["user"] for user in json.loads(users)] == ["openstack"]
    assert host.socket("tcp://0.0.0.0:5672").is_listening or host.socket("tcp://:::5672").is_listening


def test_a_token(host: Any) -> None:
    token = wait_until(lambda: openstack(host, "token issue"), "keystone issues a token", SERVICE_WAIT)
    assert token["id"] and token["project_id"]


def test_catalogue(host: Any) -> None:
    values = settings(host)
    endpoints = openstack(host, "endpoint list")
    found = {(e["Service Type"], e["Interface"]): e["URL"] for e in endpoints}
    address = values["internal_address"]
    for kind, port, path in (("identity", 5000, "/v3/"), ("image", 9292, ""), ("placement", 8778, ""),
                             ("compute", 8774, "/v2.1"), ("network", 9696, "")):
        for interface in ("public", "internal", "admin"):
            assert found.get((kind, interface)) == f"http://{address}:{port}{path}", (kind, interface)
    assert {e["Region"] for e in endpoints} == {values["region"]}
    users = {user["Name"] for user in openstack(host, "user list")}
    assert users == {"admin", "glance", "placement", "nova", "neutron"}


def test_service_users_carry_the_service_role(host: Any) -> None:
    # A service token without it is refused (service_token_roles_required): nova's calls to
    # neutron for a user's server answered 401.
    assignments = openstack(host, "role assignment list --project service --names")
    holders = {a["User"].split("@")[0] for a in assignments if a["Role"] == "service"}
    assert holders == {"glance", "placement", "nova", "neutron"}


def test_nova_conductor_and_scheduler_up(host: Any) -> None:
    def up() -> set[str]:
        services = openstack(host, "compute service list")
        binaries = {s["Binary"] for s in services if s["State"] == "up" and s["Status"] == "enabled"}
        if {"nova-conductor", "nova-scheduler"} <= binaries:
            return binaries
        raise AssertionError(f"compute services: {services}")

    wait_until(up, "nova-conductor and nova-scheduler up", SERVICE_WAIT)


def test_neutron_agents_alive(host: Any) -> None:
    def alive() -> set[str]:
        agents = openstack(host, "network agent list")
        types = {a["Agent Type"] for a in agents if a["Alive"] in (True, ":-)") and a["State"] in (True, "UP")}
        if {"Linux bridge agent", "DHCP agent", "Metadata agent"} <= types:
            return types
        raise AssertionError(f"network agents: {agents}")

    wait_until(alive, "neutron's linuxbridge, DHCP and metadata agents alive", SERVICE_WAIT)


def test_placement_answers(host: Any) -> None:
    # python3-osc-placement: resource providers (none until a compute node joins).
    assert openstack(host, "resource provider list") == []


def test_upload_and_delete_an_image(host: Any) -> None:
    host.check_output("head -c 1048576 /dev/urandom > /tmp/workbench-test.img")
    name = "workbench-verify"
    try:
        created = openstack(
            host, f"image create --disk-format raw --container-format bare --file /tmp/workbench-test.img {name}"
        )

        def active() -> dict[str, Any]:
            shown = openstack(host, f"image show {created['id']}")
            if shown["status"] == "active":
                return dict(shown)
            raise AssertionError(f"image status {shown['status']!r}")

        image = wait_until(active, "the uploaded image becomes active", 60)
        assert image["size"] == 1048576
        stored = host.file(f"/var/lib/glance/images/{image['id']}")
        assert stored.exists and stored.user == "glance"
    finally:
        host.run(f". {OPENRC} && openstack image delete {name}")
        host.run("rm -f /tmp/workbench-test.img")
    assert openstack(host, "image list") == []


def test_monit_supervises_every_service(monit_ready: dict[str, tuple[str, str]]) -> None:
    for name in SERVICES:
        assert monit_ready[name] == ("OK", "Process"), name


def test_monit_restarts_killed_keystone(host: Any, wait: Any, kill_and_wait_restart: Any) -> None:
    # Last in the file: it kills what the checks above use.
    kill_and_wait_restart("keystone", "/run/workbench/services/keystone.pid")
    wait_until(lambda: openstack(host, "token issue"), "keystone issues a token again", SERVICE_WAIT)
