"""The jump box for real: the jumpbox role baked by the pipeline, sshd containers on a private network.

The internal hosts sit on an internal Docker network whose bridge has no
address on this machine (`inhibit_ipv4`), so nothing on the host can reach
them; the jump box is on that network and on an ordinary one, its port 22
published on 127.0.0.1. `fab ssh.config` writes the client configuration,
and `ssh -F` reaches the internal host through the jump box only.

The same image shows supervision (monit brings a killed sshd back) and the
basesystem's update and out-of-memory settings.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.commands import fab
from tests.support.config import config_data, write_config
from workbench.build.bake import BakeResult
from workbench.core import engine


@pytest.fixture(scope="module")
def jumpbox_image(baked: Callable[[str], BakeResult]) -> str:
    """The jumpbox role baked and verified (its role tests pass) by the bake pipeline."""
    return baked("jumpbox").tag


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ops-ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ops-test", "-f", str(path)], check=True)
    return path


def address(container: Any, network: str) -> str:
    container.reload()
    return str(container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"])


@pytest.fixture(scope="module")
def site(wb_prefix: str, jumpbox_image: str, key: Path) -> Iterator[dict[str, Any]]:
    """A jump box (outer + inner network, 22 published on loopback) and two internal sshd hosts."""
    client = engine.client()
    labels = {engine.PREFIX_LABEL: wb_prefix}
    made: list[Any] = []
    networks: list[Any] = []
    env = {"WORKBENCH_SSH_AUTHORIZED_KEYS": key.with_suffix(".pub").read_text().strip()}
    try:
        outer = client.networks.create(f"{wb_prefix}-ops-outer", driver="bridge", labels=labels)
        networks.append(outer)
        inner = client.networks.create(
            f"{wb_prefix}-ops-inner",
            driver="bridge",
            internal=True,
            # No address for this machine on the bridge: the host has no way in.
            options={"com.docker.network.bridge.inhibit_ipv4": "true"},
            labels=labels,
        )
        networks.append(inner)
        jump = client.containers.run(
            jumpbox_image,
            detach=True,
            name=f"{wb_prefix}-ops-jump1",
            hostname="jump1",
            network=outer.name,
            ports={"22/tcp": ("127.0.0.1", None)},
            environment=env,
            labels=labels,
        )
        made.append(jump)
        inner.connect(jump)
        hosts = {}
        for name in ("db1", "cache1"):
            container = client.containers.run(
                jumpbox_image,
                detach=True,
                name=f"{wb_prefix}-ops-{name}",
                hostname=name,
                network=inner.name,
                environment=env,
                labels=labels,
            )
            made.append(container)
            hosts[name] = container
        jump.reload()
        port = int(jump.attrs["NetworkSettings"]["Ports"]["22/tcp"][0]["HostPort"])
        yield {
            "jump": jump,
            "port": port,
            "jump_inner": address(jump, inner.name),
            "hosts": hosts,
            "addresses": {name: address(c, inner.name) for name, c in hosts.items()},
            "inner": inner,
        }
    finally:
        for container in made:
            engine.remove_container(container)
        for network in networks:
            network.remove()


@pytest.fixture(scope="module")
def ssh_config(site: dict[str, Any], wb_prefix: str, wb_state: Path, key: Path) -> Path:
    data = config_data(
        wb_prefix,
        wb_state,
        pools={
            "jump": {
                "role": "jumpbox",
                "members": [
                    {
                        "name": "jump1",
                        "private": site["jump_inner"],
                        "public": "127.0.0.1",
                        "ssh_port": str(site["port"]),
                    }
                ],
            },
            "db": {"role": "db", "used_by": ["app"], "members": [{"name": "db1", "private": site["addresses"]["db1"]}]},
            "cache": {
                "role": "cache",
                "used_by": ["app"],
                "members": [{"name": "cache1", "private": site["addresses"]["cache1"]}],
            },
        },
    )
    config = write_config(wb_state / "ops-ssh.toml", data)
    out = key.parent / "ssh_config"
    fab(
        "ssh.config",
        "--identity-file",
        str(key),
        "--known-hosts",
        str(key.parent / "known_hosts"),
        "--output",
        str(out),
        "--no-releases",
        config=config,
        check=True,
    )
    return out


def ssh(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=8", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def wait_for_ssh(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """sshd starts under monit a moment after the container: retry until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        out = ssh(*args)
        if out.returncode == 0 or time.monotonic() > deadline:
            return out
        time.sleep(1)


def test_generated_config_uses_the_jump_box(ssh_config: Path, site: dict[str, Any]) -> None:
    text = ssh_config.read_text()
    assert oct(ssh_config.stat().st_mode & 0o777) == "0o600"
    assert f"Host jump1\n    HostName 127.0.0.1\n    Port {site['port']}\n" in text
    db1 = text[text.index("Host db1") :].split("\n\n")[0]
    assert f"HostName {site['addresses']['db1']}" in db1
    assert "ProxyJump jump1" in db1
    assert "ProxyJump" not in text[text.index("Host jump1") :].split("\n\n")[0]


def test_internal_hosts_are_reached_through_the_jump_box(ssh_config: Path) -> None:
    for name in ("db1", "cache1"):
        out = wait_for_ssh("-F", str(ssh_config), name, "hostname; id -un")
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [name, "ops"]


def test_the_host_cannot_reach_an_internal_host_directly(site: dict[str, Any], key: Path) -> None:
    target = site["addresses"]["db1"]
    # No address of this machine lies in the internal network: no route but the default one.
    subnet = ipaddress.ip_network(site["inner"].attrs["IPAM"]["Config"][0]["Subnet"])
    own = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout)
    mine = [a["local"] for link in own for a in link.get("addr_info", []) if a.get("family") == "inet"]
    assert not [a for a in mine if ipaddress.ip_address(a) in subnet], mine
    no_checks = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    out = ssh("-i", str(key), *no_checks, f"ops@{target}", "true")
    assert out.returncode != 0


def test_root_and_unknown_keys_are_refused(ssh_config: Path, site: dict[str, Any], tmp_path: Path) -> None:
    assert wait_for_ssh("-F", str(ssh_config), "db1", "true").returncode == 0
    root = ssh("-F", str(ssh_config), "-l", "root", "db1", "true")
    assert root.returncode != 0 and "Permission denied" in root.stderr
    # A key the deploy did not authorize gets nowhere, not even onto the jump box.
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    stranger = ssh(
        "-F", "/dev/null", "-i", str(other), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-p", str(site["port"]), "ops@127.0.0.1", "true",
    )
    assert stranger.returncode != 0 and "Permission denied (publickey)" in stranger.stderr


def test_each_container_has_its_own_host_keys(site: dict[str, Any]) -> None:
    prints = set()
    for container in (site["jump"], *site["hosts"].values()):
        code, out = container.exec_run(["ssh-keygen", "-l", "-f", "/etc/ssh/ssh_host_ed25519_key.pub"])
        assert code == 0, out
        prints.add(out.split()[1])
    assert len(prints) == 3


def test_a_host_missing_from_the_inventory(ssh_config: Path, wb_state: Path) -> None:
    out = fab("ssh.config", "--host", "redis9", "--no-releases", config=wb_state / "ops-ssh.toml")
    assert out.returncode == 2
    assert "host 'redis9' is not in the inventory (hosts: jump1, cache1, db1)" in out.stderr


def test_monit_restarts_a_killed_service(site: dict[str, Any], ssh_config: Path) -> None:
    container = site["hosts"]["cache1"]
    assert wait_for_ssh("-F", str(ssh_config), "cache1", "true").returncode == 0
    code, before = container.exec_run(["cat", "/run/sshd.pid"])
    assert code == 0
    pid = before.decode().strip()
    code, _ = container.exec_run(["kill", "-9", pid])
    assert code == 0
    deadline = time.monotonic() + 60
    after = pid
    while time.monotonic() < deadline:
        running = container.exec_run(["sh", "-c", f"kill -0 $(cat /run/sshd.pid) && [ $(cat /run/sshd.pid) != {pid} ]"])
        if running.exit_code == 0:
            after = container.exec_run(["cat", "/run/sshd.pid"]).output.decode().strip()
            break
        time.sleep(1)
    assert after != pid, "monit did not start sshd again within 60 s"
    out = wait_for_ssh("-F", str(ssh_config), "cache1", "hostname")
    assert out.returncode == 0 and out.stdout.strip() == "cache1"


def test_out_of_memory_reboot_and_automatic_updates_in_the_image(site: dict[str, Any]) -> None:
    container = site["jump"]

    def sh(command: str) -> str:
        code, out = container.exec_run(["sh", "-c", command])
        assert code == 0, f"{command}: {out.decode(errors='replace')}"
        return out.decode()

    sysctl = sh("cat /etc/sysctl.d/*oom*")
    assert "vm.panic_on_oom" in sysctl and "kernel.panic" in sysctl
    pairs = (line.partition("=") for line in sysctl.splitlines() if not line.startswith("#"))
    values = {k.strip(): v.strip() for k, _, v in pairs if v}
    assert int(values["vm.panic_on_oom"]) >= 1 and int(values["kernel.panic"]) > 0
    periodic = sh("cat /etc/apt/apt.conf.d/20auto-upgrades")
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    assert 'APT::Periodic::Update-Package-Lists "1";' in periodic
    # What apt really reads, after every apt.conf.d file: the security archive only.
    dump = sh("apt-config dump").splitlines()
    patterns = [line for line in dump if line.startswith("Unattended-Upgrade::Origins-Pattern")]
    assert patterns and all("Debian-Security" in line for line in patterns[1:]), patterns
    assert sh("dpkg-query -W -f '${Status}' unattended-upgrades") == "install ok installed"
    assert os.path.basename(sh("command -v unattended-upgrade").strip()) == "unattended-upgrade"
