"""The homelab cloud: `fab cloud.up` from the session's state, the real controller image, the real APIs.

One cloud for the module (its first start makes the databases: minutes on 2
cores): the networking node in the session's namespace, the controller baked
from salt/controller (a cache hit when tests/e2e/test_bake.py baked it first),
on loopback ports no one else uses, and one netbooted hypervisor VM (hv1,
qemu under software emulation, libvirt's lxc driver for its servers). The
tests read it through `fab` and the `openstack` command, as a user would;
the last ones restart the controller on its data. Everything goes at the end,
data and passwords too (`cloud.down --purge`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import random
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.commands import FAB, fab, kill_9_after
from tests.support.config import REPO, config_data, write_config
from tests.support.net import free_port
from tests.support.releasekit import assert_served
from workbench.build import bake
from workbench.cloud import controller, lab, publish
from workbench.core import config as wb_config
from workbench.core import engine, ports
from workbench.netboot import netns, node
from workbench.release import loadgen, registry, target

pytestmark = pytest.mark.e2e


def free_offset() -> int:
    """A `[cloud] public_port_offset` whose every API port is free on loopback."""
    for _ in range(200):
        offset = random.randrange(20000, 65535 - max(lab.APIS.values()))
        if all(ports.bindable(port + offset) for port in lab.APIS.values()):
            return offset
    raise AssertionError("no free set of ports for the cloud's APIs")


def json_of(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(proc.stdout)


def openstack_raw(config: Path, *args: str, member: bool = False, check: bool = True, timeout: int = 120) -> str:
    """What the `openstack` command prints from a shell that ran `eval "$(fab cloud.openrc)"`."""
    openrc = f"{REPO}/.venv/bin/fab cloud.openrc" + (" --member" if member else "")
    script = f'set -e; eval "$({openrc})"; openstack "$@"'
    env = {**os.environ, wb_config.ENV_CONFIG: str(config), "PATH": f"{REPO}/.venv/bin:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", script, "openstack", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0 or not check, f"openstack {' '.join(args)}: {proc.stderr[-3000:]}"
    return proc.stdout


def openstack(config: Path, *args: str, member: bool = False, timeout: int = 120) -> Any:
    return json.loads(openstack_raw(config, *args, "-f", "json", member=member, timeout=timeout))


def debugfs(image: Path, request: str) -> str:
    """debugfs's answer to one request on an ext4 image (its errors included): a look inside, no mount."""
    proc = subprocess.run(["debugfs", "-R", request, str(image)], capture_output=True, text=True, timeout=60)
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def cloud_config(wb_prefix: str, wb_state: Path, base_image: Any) -> Path:
    """The session's configuration (its prefix, state and live image), the APIs on free ports, the lab
    environment's frontend (its releases run on the cloud) on a free port too."""
    data = config_data(wb_prefix, wb_state, cloud={"public_port_offset": free_offset()},
                       registry={"port": free_port()})
    data["environments"]["lab"] = {**data["environments"]["lab"], "frontend_port": free_port()}
    return write_config(wb_state / "cloud.toml", data)


@pytest.fixture(scope="module")
def cloud_up(cloud_config: Path) -> Iterator[dict[str, Any]]:
    try:
        # From nothing: the live image and the controller bake side by side, hv1 booting while the
        # controller makes its databases; beside the other tiers.
        yield json_of(fab("cloud.up", "--vms", "1", "--json", config=cloud_config, timeout=3600))
    finally:
        fab("cloud.down", "--purge", config=cloud_config, timeout=300)
        # The releases on the cloud started the registry on its own port.
        registry.down(wb_config.load(cloud_config))


def test_a_taken_port_is_one_error_and_leaves_nothing_running(cloud_config: Path) -> None:
    config = wb_config.load(cloud_config)
    port = lab.APIS["image"] + config.cloud.public_port_offset
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        proc = fab("cloud.up", config=cloud_config, timeout=2400)
    assert proc.returncode != 0
    assert f"port 127.0.0.1:{port} (the image API's public endpoint) is taken" in proc.stderr
    assert "public_port_offset" in proc.stderr
    assert controller.find(config) is None
    assert not netns.exists(netns.namespace_name(config.prefix))


def test_up_brings_a_working_controller(cloud_up: dict[str, Any], cloud_config: Path) -> None:
    assert cloud_up["controller_started"] is True and cloud_up["changed"] is True
    assert set(cloud_up["readiness"]) == {"token", "image", "placement", "compute", "network"}
    made = " ".join(cloud_up["made"])
    for thing in ("flavor lab.tiny", "project lab", "user lab", "network provider", "subnet provider-v4",
                  "SSH into lab", "ping into lab"):
        assert thing in made, made
    status = json_of(fab("cloud.status", "--json", config=cloud_config))
    assert status["node"] is True and status["answering"] is True
    assert status["controller"]["running"] is True
    assert {s["name"] for s in status["compute"] if s["up"]} >= {"nova-conductor", "nova-scheduler"}
    assert {s["name"] for s in status["agents"] if s["up"]} >= {"Linux bridge agent", "DHCP agent", "Metadata agent"}
    assert [h["name"] for h in status["hypervisors"]] == ["hv1.lab.wpdn", "hv2.lab.wpdn"]
    # hv1 netbooted, fetched its file from the node and registered; hv2 (a PC never powered on) did not.
    assert cloud_up["hypervisors"]["hv1.lab.wpdn"] > 0
    assert [h["registered"] for h in status["hypervisors"]] == [True, False]
    assert "nova-compute" in {s["name"] for s in status["compute"] if s["up"]}


def test_openstack_cli_works_from_the_host_shell(cloud_up: dict[str, Any], cloud_config: Path) -> None:
    config = wb_config.load(cloud_config)
    endpoints = openstack(cloud_config, "endpoint", "list", "--interface", "public")
    urls = {e["Service Type"]: e["URL"] for e in endpoints}
    # The catalogue writes keystone's URL with a trailing slash (/v3/), as keystone's own bootstrap does.
    assert urls["identity"].rstrip("/") == f"http://127.0.0.1:{5000 + config.cloud.public_port_offset}/v3"
    assert set(urls) >= {"identity", "image", "placement", "compute", "network"}
    internal = openstack(cloud_config, "endpoint", "list", "--interface", "internal")
    assert all(e["URL"].startswith(f"http://{config.cloud.controller_address}:") for e in internal)
    flavors = {f["Name"]: f for f in openstack(cloud_config, "flavor", "list")}
    assert flavors["lab.tiny"]["RAM"] == 128
    subnet = openstack(cloud_config, "subnet", "show", "provider-v4")
    assert subnet["cidr"] == "10.77.0.0/24"
    assert subnet["allocation_pools"] == [{"start": "10.77.0.200", "end": "10.77.0.239"}]
    # The member user sees the shared provider network and its own group's SSH and ping rules.
    assert "provider" in {n["Name"] for n in openstack(cloud_config, "network", "list", member=True)}
    rules = openstack(cloud_config, "security", "group", "rule", "list", "default", member=True)
    assert {(r["IP Protocol"], r["Port Range"]) for r in rules if r["Direction"] == "ingress"} >= {
        ("tcp", "22:22"), ("icmp", "")}


def test_a_server_boots_on_hv1_and_answers_on_its_neutron_address(cloud_up: dict[str, Any],
                                                                   cloud_config: Path) -> None:
    """`cloud.test`: the workbench's own image as a server on the netbooted hypervisor, its address from
    Neutron's DHCP, its page fetched from the lab LAN; then nothing of it is left in the cloud."""
    config = wb_config.load(cloud_config)
    result = json_of(fab("cloud.test", "--json", config=cloud_config, timeout=1200))
    assert result["hypervisor"] == "hv1.lab.wpdn"
    assert result["console_marker"] is True and result["answer"] == "workbench-smoke"
    first, last = (ipaddress.ip_address(a) for a in config.cloud.provider_pool)
    assert first <= ipaddress.ip_address(result["address"]) <= last, result["address"]
    assert set(result["phases"]) == {"upload", "active", "console", "answered", "deleted"}
    server = result["server"]
    assert server.startswith("smoke-")
    assert server not in {s["Name"] for s in openstack(cloud_config, "server", "list", "--all-projects")}
    assert server not in {i["Name"] for i in openstack(cloud_config, "image", "list")}
    assert server not in {g["Name"] for g in openstack(cloud_config, "security", "group", "list")}


def test_publish_uploads_once_and_a_server_runs_the_roles_command(
        cloud_up: dict[str, Any], cloud_config: Path, baked: Callable[[str], bake.BakeResult], tmp_path: Path) -> None:
    """`image.publish app`: in glance once, with the image's labels, no key in it; a server from it takes
    its address from Neutron, its settings from the metadata service, and serves the role's health check."""
    config = wb_config.load(cloud_config)
    app = baked("app")
    first = json_of(fab("image.publish", "app", "--json", config=cloud_config, timeout=900))
    assert first["uploaded"] is True and first["source"] == app.id
    assert first["name"] == f"{config.prefix}/app:{app.version}"
    again = json_of(fab("image.publish", "app", "--version", str(app.version), "--json", config=cloud_config))
    assert again["uploaded"] is False and again["glance_id"] == first["glance_id"]
    image = openstack(cloud_config, "image", "show", first["glance_id"], member=True)
    assert image["status"] == "active" and image["visibility"] == "private"
    # The file holds its contents and a little slack; the flavor gives the room (min_disk: a flavor's
    # disk must hold the file).
    assert first["size"] < (app.size + 96 * 2**20) * 1.3, first
    assert image["min_disk"] == -(-first["size"] // 2**30), image
    properties = image["properties"]
    assert properties["workbench_inputs"] == app.inputs and properties["workbench_verify"] == "passed"
    assert properties["workbench_sha256"] == first["checksum"] and properties["workbench_version"] == str(app.version)
    # What glance serves, inspected: the workbench's init, and no key of any kind.
    saved = tmp_path / "published.raw"
    openstack_raw(cloud_config, "image", "save", "--file", str(saved), first["glance_id"], member=True)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == first["checksum"]
    assert "udhcpc" in debugfs(saved, "cat /sbin/init")
    for path in ("/root/.ssh", "/etc/ssh/ssh_host_ed25519_key"):
        assert "File not found" in debugfs(saved, f"stat {path}"), path
    refused = fab("image.publish", "app", "--version", "999", config=cloud_config)
    assert refused.returncode != 0 and f"no image {config.prefix}/app:999" in refused.stderr

    name = f"{config.prefix}-published-app"
    settings = tmp_path / "user-data"
    settings.write_text(publish.user_data({"WORKBENCH_RELEASE": "app-77", "WORKBENCH_ROLE": "app"}))
    try:
        openstack(cloud_config, "security", "group", "create", name, member=True)
        openstack(cloud_config, "security", "group", "rule", "create", name, "--protocol", "tcp", "--dst-port", "80",
                  "--remote-ip", "10.77.0.0/24", member=True)
        server = openstack(cloud_config, "server", "create", "--image", first["glance_id"], "--flavor", "lab.small",
                           "--network", "provider", "--security-group", "default", "--security-group", name,
                           "--user-data", str(settings), "--wait", name, member=True, timeout=900)
        address = server["addresses"]["provider"][0]
        lab = netns.namespace_name(config.prefix)
        deadline = time.monotonic() + 300
        while True:
            got = subprocess.run(["ip", "netns", "exec", lab, "curl", "-sf", "--max-time", "5",
                                  f"http://{address}/health"], capture_output=True, text=True)
            if got.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(5)
        console = openstack_raw(cloud_config, "console", "log", "show", name, member=True)
        assert got.returncode == 0, f"no answer from http://{address}/health; the console:\n{console[-3000:]}"
        health = json.loads(got.stdout)
        assert (health["status"], health["release"]) == ("ok", "app-77"), health
        assert "workbench-init: running /usr/local/sbin/workbench-init" in console
        # Nova grew the root to the flavor's disk (lab.small: 2 GiB), and its file system with it.
        grown = re.search(r"workbench-init: root filesystem (\d+) MiB", console)
        assert grown and int(grown.group(1)) > 1800, console[-3000:]
    finally:
        for leftover in (("server", "delete", "--wait", name), ("security", "group", "delete", name),
                         ("image", "delete", first["glance_id"])):
            openstack_raw(cloud_config, *leftover, member=True, check=False, timeout=600)


def lab_health(port: int) -> dict[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
        return dict(json.loads(response.read()))


def test_releases_on_the_cloud_promote_promote_rollback_by_tag(
        cloud_up: dict[str, Any], cloud_config: Path, baked: Callable[[str], bake.BakeResult]) -> None:
    """The lab environment runs on the cloud: promote; promote a fresh bake under load as two replicas,
    one on each hypervisor (hv2 joins the running cloud meanwhile: `cloud.up --vms 2` powers on hv2
    only); roll back by tag to the first release's very glance image; kill -9 recovered; the history.
    Each release is servers behind the lab's frontend, the replaced ones deleted."""
    config = wb_config.load(cloud_config)
    port = config.environment("lab").frontend_port
    domain = config.workbench.domain
    data = config_data(config.prefix, config.state_dir, cloud={"public_port_offset": config.cloud.public_port_offset},
                       registry={"port": config.registry.port})
    data["environments"]["lab"] = {**data["environments"]["lab"], "replicas": 2, "frontend_port": port}
    # A jump box for `ssh.config` (a pool: nothing of it runs here).
    data["pools"] = {"jump": {"role": "jumpbox", "members": [{"name": "jump1", "private": "10.77.0.250",
                                                              "public": "192.0.2.10"}]}}
    replicas_config = write_config(config.state_dir / "cloud-replicas.toml", data)
    joining = subprocess.Popen([str(FAB), "cloud.up", "--vms", "2", "--json"], cwd=REPO, text=True,
                               env={**os.environ, wb_config.ENV_CONFIG: str(cloud_config)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    baked("frontend")
    first_bake = baked("app")

    def servers() -> dict[str, dict[str, Any]]:
        return {s["Name"]: s for s in openstack(cloud_config, "server", "list", "--long", member=True)}

    try:
        first = json_of(fab("release.promote", "app", "--env", "lab", "--version", str(first_bake.version), "--json",
                            config=cloud_config, timeout=1200))
        assert (first["target"], first["status"]) == ("openstack", "released")
        assert lab_health(port) == {"status": "ok", "role": "app", "release": first["tag"],
                                    "version": str(first_bake.version), "environment": "lab"}
        running = servers()
        assert set(running) == {f"{first['tag']}.lab.{domain}"}, running
        assert running[f"{first['tag']}.lab.{domain}"]["Image ID"] == first["boot_image"]
        image = openstack(cloud_config, "image", "show", first["boot_image"], member=True)
        assert image["name"] == f"{config.prefix}/app:{first_bake.version}"
        assert image["properties"]["os_hash_value"] == first["boot_checksum"]
        # The lab's DNS answers the server's name.
        lab_ns = netns.namespace_name(config.prefix)
        node_address = lab.plan(config).inventory.network.server
        answer = subprocess.run(["ip", "netns", "exec", lab_ns, "busybox", "nslookup", f"{first['tag']}.lab.{domain}",
                                 node_address], capture_output=True, text=True, timeout=30).stdout
        assert running[f"{first['tag']}.lab.{domain}"]["Networks"]["provider"][0] in answer, answer
        assert config.environment("lab").lab_address not in answer

        second_bake = bake.bake_role(config, "app", force=True)
        out, err = joining.communicate(timeout=1800)
        assert joining.returncode == 0, err[-3000:]
        added = json.loads(out)
        assert added["controller_started"] is False and added["hypervisors"]["hv1.lab.wpdn"] == 0.0
        assert added["hypervisors"]["hv2.lab.wpdn"] > 0
        with loadgen.Load(f"http://127.0.0.1:{port}/health") as load:
            second = json_of(fab("release.promote", "app", "--env", "lab", "--json", config=replicas_config,
                                 timeout=1200))
        assert_served(load.result, 10)
        assert second["version"] == second_bake.version and second["boot_image"] != first["boot_image"]
        assert lab_health(port)["release"] == second["tag"]
        hosts = {s["Name"]: s["Host"] for s in openstack(cloud_config, "server", "list", "--all-projects", "--long")}
        assert set(hosts) == {f"{second['tag']}.lab.{domain}", f"{second['tag']}-2.lab.{domain}"}, hosts
        assert set(hosts.values()) == {"hv1.lab.wpdn", "hv2.lab.wpdn"}, hosts
        answered_by = {target.upstream_of(f"http://127.0.0.1:{port}/health") for _ in range(20)}
        assert len(answered_by) == 2 and None not in answered_by, answered_by
        # `ssh.config` lists the servers of the release serving, at their lab addresses, behind the jump box.
        listed = fab("ssh.config", config=replicas_config, check=True).stdout
        addresses = {a for s in servers().values() for a in s["Networks"]["provider"]}
        blocks = dict(re.findall(r"Host (\S+)\n    HostName (\S+)\n    User ops\n    ProxyJump jump1\n", listed))
        assert set(blocks) == {f"app.lab.{domain}", f"app2.lab.{domain}"}, listed
        assert set(blocks.values()) == addresses, (listed, addresses)

        with loadgen.Load(f"http://127.0.0.1:{port}/health") as load:
            back = json_of(fab("release.rollback", first["tag"], "--json", config=cloud_config, timeout=1200))
        assert_served(load.result, 10)
        assert (back["rollback_of"], back["path"]) == (first["tag"], "cold")
        assert (back["boot_image"], back["boot_checksum"]) == (first["boot_image"], first["boot_checksum"])
        assert lab_health(port) == {"status": "ok", "role": "app", "release": back["tag"],
                                    "version": str(first_bake.version), "environment": "lab"}
        running = servers()
        assert set(running) == {f"{back['tag']}.lab.{domain}"}
        assert running[f"{back['tag']}.lab.{domain}"]["Image ID"] == first["boot_image"]

        # kill -9 while the next release's server runs beside the current one: the next command undoes it,
        # and its JSON is still only JSON.
        kill_9_after(cloud_config, "started", "release.promote", "app", "--env", "lab", "--version",
                     str(second_bake.version))
        listed = fab("release.list", "--json", config=cloud_config, check=True, timeout=600)
        assert "recover" in listed.stderr, listed.stderr
        assert [r["tag"] for r in json.loads(listed.stdout) if r["environment"] == "lab"] == [back["tag"]]
        assert set(servers()) == {f"{back['tag']}.lab.{domain}"}
        assert lab_health(port)["release"] == back["tag"]

        history = json_of(fab("release.history", "--env", "lab", "--json", config=cloud_config))
        assert [(r["action"], r["status"], r["target"]) for r in history] == [
            ("promote", "released", "openstack"), ("promote", "released", "openstack"),
            ("rollback", "released", "openstack"), ("promote", "aborted", "openstack")]
        assert [r["tag"] for r in history[:3]] == [first["tag"], second["tag"], back["tag"]]
    finally:
        if joining.poll() is None:
            joining.kill()
            joining.communicate()
        down = fab("release.down", "--env", "lab", config=cloud_config, timeout=600)
    assert down.returncode == 0, down.stderr[-3000:]
    assert not servers()
    assert not engine.containers({engine.PREFIX_LABEL: config.prefix, "workbench.environment": "lab"})


def test_no_secret_in_the_image_and_settings_private(cloud_up: dict[str, Any], cloud_config: Path) -> None:
    config = wb_config.load(cloud_config)
    keys = json.loads((config.state_dir / "cloud" / "secrets.json").read_text())["passwords"]
    settings = controller.controller_dir(config) / "etc" / controller.SETTINGS_FILE
    assert oct(settings.stat().st_mode & 0o777) == "0o600"
    image = engine.client().images.get(cloud_up["controller_image"])
    history = json.dumps(image.history()) + json.dumps(image.attrs["Config"])
    assert keys["admin"] not in history and keys["rabbitmq"] not in history


def test_second_up_changes_nothing_and_a_restart_keeps_the_data(cloud_up: dict[str, Any], cloud_config: Path) -> None:
    config = wb_config.load(cloud_config)
    before = controller.find(config)
    assert before is not None
    again = json_of(fab("cloud.up", "--json", config=cloud_config, timeout=600))
    assert again["changed"] is False and again["made"] == []
    after = controller.find(config)
    assert after is not None and after.id == before.id
    # Something of the cloud's own: down keeps it, the next up (a new container) finds it.
    openstack(cloud_config, "project", "create", "kept", "--description", "made before a restart")
    down = fab("cloud.down", config=cloud_config, timeout=300)
    assert down.returncode == 0 and "its data is kept" in down.stdout
    assert controller.find(config) is None
    restarted = json_of(fab("cloud.up", "--json", config=cloud_config, timeout=1800))
    assert restarted["controller_started"] is True and restarted["made"] == []
    assert openstack(cloud_config, "project", "show", "kept")["description"] == "made before a restart"


def test_down_purge_leaves_no_password_behind(cloud_up: dict[str, Any], cloud_config: Path) -> None:
    """Last in the module: the hypervisors' files hold passwords too, and a purge removes them with the rest."""
    config = wb_config.load(cloud_config)
    served = sorted(p.name for p in node.cloud_config_dir(config).glob("*.json"))
    assert served == ["hv1.lab.wpdn.json", "hv2.lab.wpdn.json"]
    down = json_of(fab("cloud.down", "--purge", "--json", config=cloud_config, timeout=300))
    purged = " ".join(down["purged"])
    assert "hv1.lab.wpdn's cloud configuration" in purged and "the cloud's passwords" in purged
    assert list(node.cloud_config_dir(config).glob("*.json")) == []
    assert not (config.state_dir / "cloud" / "secrets.json").exists()
    assert not controller.controller_dir(config).exists() and controller.find(config) is None
    assert not netns.exists(netns.namespace_name(config.prefix))
