"""The whole netboot: build the live hypervisor image, PXE-boot it in a qemu VM, check the report.

One boot per session (a few minutes under software emulation on 2 cores, the
artifact build included); the other tests read what it left.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import fab

from workbench import config as wb_config
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


def test_uefi_client_boots_through_tftp_ipxe_efi(netboot_run: dict[str, Any], wb_config_path: Path) -> None:
    proc = fab("netboot.test", "--firmware=uefi", "--json", config=wb_config_path, timeout=900)
    assert proc.returncode == 0, f"UEFI boot failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    result = json.loads(proc.stdout[proc.stdout.index("{\n") :])
    assert (result["firmware"], result["reported_name"], result["reported_role"]) == (
        "uefi",
        "hv1.lab.wpdn",
        "hypervisor",
    )
    # The firmware's own PXE fetched iPXE's EFI loader over TFTP before iPXE took over on HTTP.
    assert "ipxe loader" in result["timeline"]["events"]
    assert result["disk_unchanged"] is True and result["persisted"]
