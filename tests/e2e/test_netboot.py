"""The whole netboot: build the live hypervisor image, PXE-boot it in a qemu VM, check the report.

Two boots per session, BIOS in full DHCP mode and UEFI in proxy mode (a few
minutes under software emulation on 2 cores, the artifact build included); the
other tests read what the first left.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.commands import fab
from workbench.core import config as wb_config
from workbench.netboot import netns, node


@pytest.fixture(scope="session")
def netboot_run(wb_config_path: Path, base_image: Any) -> dict[str, Any]:
    proc = fab("netboot.test", "--json", config=wb_config_path, timeout=1500)
    assert proc.returncode == 0, f"fab netboot.test failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout[proc.stdout.index("{\n") :])


def test_vm_netboots_and_reports_name_and_role(netboot_run: dict[str, Any]) -> None:
    assert netboot_run["node"] == "hv1.lab.wpdn"
    assert netboot_run["reported_name"] == "hv1.lab.wpdn"
    assert netboot_run["reported_role"] == "hypervisor"
    assert (netboot_run["dhcp_mode"], netboot_run["address"], netboot_run["router"]) == ("full", "10.77.0.11", None)
    assert netboot_run["disk_unchanged"] is True
    # Written by the live system through its NFS mount, found on the node's export.
    persisted = Path(netboot_run["persisted"])
    assert persisted.name == "last-boot.json" and persisted.parent.name == "hv1.lab.wpdn"
    assert json.loads(persisted.read_text())["name"] == "hv1.lab.wpdn"
    stages = netboot_run["timeline"]["events"]
    # --json sorts keys: compare the stages reached, then their order in time.
    order = ["dhcp offer", "dhcp ack", "ipxe script", "kernel", "initrd", "root image", "reported"]
    assert set(stages) == set(order)
    assert [stages[s] for s in order] == sorted(stages[s] for s in order)
    assert netboot_run["boot_seconds"] > 0


def test_everything_is_cleaned_up(netboot_run: dict[str, Any], wb_cfg: wb_config.Config) -> None:
    assert not netns.exists(netns.namespace_name(wb_cfg.prefix))
    assert not (node.node_dir(wb_cfg) / "node.json").exists()
    assert not (wb_cfg.state_dir / "netboot" / "vm" / "disk.qcow2").exists()
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(node.node_dir(wb_cfg)) not in procs, "a node process outlived the test"


def test_status_shows_the_finished_boot(netboot_run: dict[str, Any], wb_config_path: Path) -> None:
    data = json.loads(fab("netboot.status", "--json", config=wb_config_path, check=True).stdout)
    assert data["running"] is False
    hv1 = data["nodes"][0]
    assert (hv1["node"], hv1["last"]) == ("hv1.lab.wpdn", "reported")
    assert hv1["report"]["name"] == "hv1.lab.wpdn"
    assert data["nodes"][1]["last"] == "nothing yet"
    human = fab("netboot.status", config=wb_config_path, check=True).stdout
    assert "hv1.lab.wpdn" in human and "root image" in human


def test_build_is_content_addressed(netboot_run: dict[str, Any], wb_config_path: Path) -> None:
    proc = fab("netboot.build", config=wb_config_path, check=True)
    assert "cached" in proc.stdout
    assert "3 iPXE scripts" in proc.stdout


def test_uefi_client_boots_through_tftp_ipxe_efi_in_proxy_mode(
    netboot_run: dict[str, Any], wb_config_path: Path, wb_cfg: wb_config.Config
) -> None:
    """UEFI and proxy DHCP in one boot: a stand-in home router lends the address, the node only adds PXE."""
    proc = fab("netboot.test", "--firmware=uefi", "--dhcp-mode=proxy", "--json", config=wb_config_path, timeout=900)
    assert proc.returncode == 0, f"UEFI proxy-mode boot failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    result = json.loads(proc.stdout[proc.stdout.index("{\n") :])
    assert (result["firmware"], result["dhcp_mode"]) == ("uefi", "proxy")
    # The name came from the node's per-MAC iPXE script (wb.name=): the router knows no names.
    assert (result["reported_name"], result["reported_role"]) == ("hv1.lab.wpdn", "hypervisor")
    # The address is the router's loan, not the one the node gives hv1 in full mode (its BIOS boot's).
    router = result["router"]
    assert router["address"] != "10.77.0.1"
    assert router["leased"] == result["address"] != netboot_run["address"] == "10.77.0.11"
    first, last = (tuple(int(part) for part in a.split(".")) for a in router["pool"])
    assert first <= tuple(int(part) for part in result["address"].split(".")) <= last
    # The node only answered PXE; the offer and ack of an address were the router's (in its log).
    own = (node.node_dir(wb_cfg) / "dnsmasq.log").read_text()
    assert "PXE(nb0)" in own and "DHCPOFFER" not in own and "DHCPACK" not in own
    # Offer and ack, then the firmware's PXE fetched ipxe.efi over TFTP, then iPXE on HTTP.
    stages = result["timeline"]["events"]
    order = ["dhcp offer", "dhcp ack", "ipxe loader", "ipxe script", "kernel", "initrd", "root image", "reported"]
    assert set(stages) == set(order)
    assert [stages[s] for s in order] == sorted(stages[s] for s in order)
    assert result["disk_unchanged"] is True and result["persisted"]
    print(f"boot seconds: full (BIOS) {netboot_run['boot_seconds']:.1f}, proxy (UEFI) {result['boot_seconds']:.1f}")
    # netboot.status reads the inventory as it is (full mode) and still finds the boot by the MAC.
    data = json.loads(fab("netboot.status", "--json", config=wb_config_path, check=True).stdout)
    hv1 = data["nodes"][0]
    assert (hv1["last"], hv1["report"]["client"]) == ("reported", result["address"])
    assert not netns.exists(netns.router_namespace_name(wb_cfg.prefix))
