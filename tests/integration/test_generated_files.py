"""Files the workbench writes for other programs, checked by those programs themselves:
dnsmasq's `--test` for the node's and the stand-in router's configurations, `ssh -G`
for `fab ssh.config`'s, `systemd-analyze verify` for the watcher's unit.

Their contents are the unit tier's (tests/unit/test_netboot_*.py, test_sshconfig.py,
test_watch.py); here only the programs run, on the same inputs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.commands import FAB
from tests.support.config import small_config
from tests.support.netboot import EXAMPLE, netboot_config, plan
from tests.support.pools import SSH_POOLS, SSH_ROLES, write
from workbench.core import config as wb_config
from workbench.core.errors import NetbootError
from workbench.netboot import dnsmasq, inventory, router
from workbench.ops import sshconfig, watch


@pytest.fixture(scope="module")
def example_inventory(tmp_path_factory: pytest.TempPathFactory) -> inventory.Inventory:
    cfg = netboot_config(tmp_path_factory.mktemp("netboot-state"), "nbfiles")
    return inventory.load(cfg, EXAMPLE)


@pytest.mark.parametrize("mode", ["full", "proxy"])
def test_node_config_passes_dnsmasq_test(example_inventory: inventory.Inventory, tmp_path: Path, mode: str) -> None:
    conf = dnsmasq.write(example_inventory.with_mode(mode), plan(tmp_path))
    dnsmasq.check(conf)
    assert (tmp_path / "tftp" / "undionly.kpxe").is_file()
    assert (tmp_path / "tftp" / "ipxe.efi").is_file()


def test_node_config_on_a_lan_passes_dnsmasq_test(example_inventory: inventory.Inventory, tmp_path: Path) -> None:
    dnsmasq.check(dnsmasq.write(example_inventory, plan(tmp_path, lan=True)))


def test_stand_in_router_config_passes_dnsmasq_test(example_inventory: inventory.Inventory, tmp_path: Path) -> None:
    stand_in = router.plan(example_inventory.with_mode("proxy"))
    conf = tmp_path / "router.conf"
    conf.write_text(router.config_text(stand_in, "lan0", tmp_path / "leases", tmp_path / "router.log"))
    dnsmasq.check(conf)


def test_a_config_dnsmasq_rejects_is_a_clear_error(tmp_path: Path) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text("dhcp-range=not-an-address\n")
    with pytest.raises(NetbootError, match=r"bad\.conf fails `dnsmasq --test`"):
        dnsmasq.check(conf)


def test_openssh_reads_the_rendered_config(tmp_path: Path) -> None:
    cfg = wb_config.load(write(tmp_path, SSH_POOLS, SSH_ROLES))
    path = tmp_path / "ssh_config"
    path.write_text(sshconfig.render(cfg, sshconfig.inventory(cfg), identity_file="~/.ssh/ops"))
    # `ssh -G` resolves db1 as a connection would, to its jump box and address.
    resolved = subprocess.run(["ssh", "-F", str(path), "-G", "db1"], capture_output=True, text=True, check=True).stdout
    assert "proxyjump jump1" in resolved and "hostname 10.0.0.5" in resolved and "user ops" in resolved
    jump = subprocess.run(["ssh", "-F", str(path), "-G", "jump1"], capture_output=True, text=True, check=True).stdout
    assert "hostname 203.0.113.2" in jump and "port 2222" in jump and "proxyjump" not in jump


def test_systemd_accepts_the_watcher_unit(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, watch={"branch": "main"})
    path = tmp_path / "workbench-watch.service"
    path.write_text(watch.systemd_unit(cfg, FAB))
    verify = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    problems = [line for line in verify.stderr.splitlines() if str(path) in line]
    assert not problems, verify.stderr
