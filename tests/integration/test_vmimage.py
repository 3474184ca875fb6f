"""A qcow2 made publishable (workbench.cloud.vmimage) with the real qemu-img, debugfs and e2fsck, on a
small disk laid out as the qemu builder lays one out (MBR, FAT /boot, ext4 root). Its boot is in
tests/e2e/test_bake_qemu.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from workbench.build import vmdisk
from workbench.cloud import vmimage
from workbench.core.errors import CloudError

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIWorkbenchOwnKeyMustNotBePublished workbench\n"
BOOT_SECTORS, ROOT_MB = 2048, 48


def _disk(tmp_path: Path) -> Path:
    """A qcow2 with root's authorized_keys, a host key and the image's unit, as a bake leaves them."""
    tree = tmp_path / "tree"
    for directory in ("root/.ssh", "etc/ssh", "etc/systemd/system/multi-user.target.wants", "usr/lib"):
        (tree / directory).mkdir(parents=True)
    (tree / "root/.ssh/authorized_keys").write_text(KEY)
    (tree / "etc/ssh/ssh_host_ed25519_key").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nhost\n")
    (tree / "etc/ssh/sshd_config").write_text("PermitRootLogin prohibit-password\n")
    (tree / "etc/systemd/system/workbench-image.service").write_text("[Service]\nExecStart=/bin/true\n")
    root = tmp_path / "root.img"
    subprocess.run(["mkfs.ext4", "-q", "-L", "wb-root", "-d", str(tree), str(root), f"{ROOT_MB}M"], check=True)
    raw = tmp_path / "disk.raw"
    start = 2048 + BOOT_SECTORS
    with raw.open("wb") as out:
        out.truncate((start + ROOT_MB * 2048) * 512)
        out.write(vmdisk.mbr(b"", [(2048, BOOT_SECTORS, 0x0C, True),
                                   (start, ROOT_MB * 2048, vmdisk.LINUX_PARTITION, False)]))
        out.seek(start * 512)
        out.write(root.read_bytes())
    disk = tmp_path / "1.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(disk)], check=True)
    return disk


def _raw(path: Path, tmp_path: Path) -> Path:
    raw = tmp_path / f"{path.stem}.check.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(path), str(raw)], check=True)
    return raw


def test_no_key_stays_and_the_settings_unit_is_enabled(tmp_path: Path) -> None:
    source = _disk(tmp_path)
    assert vmimage.keys_in(vmimage.filesystem(_raw(source, tmp_path))) == [
        "/root/.ssh/authorized_keys", "/etc/ssh/ssh_host_ed25519_key"]
    published = vmimage.disk_file(tmp_path / "store", source, "sha256:0123456789abcdef0123")
    raw = _raw(published, tmp_path)
    root = vmimage.filesystem(raw)
    assert vmimage.keys_in(root) == []
    # Not even the bytes: the files were zeroed before they were removed.
    data = raw.read_bytes()
    assert b"WorkbenchOwnKeyMustNotBePublished" not in data and b"PRIVATE KEY" not in data
    assert vmimage.read(root, "/etc/ssh/sshd_config") == "PermitRootLogin prohibit-password\n"
    assert vmimage.read(root, vmimage.HELPER) == vmimage.DEPLOY_SETTINGS
    assert "EnvironmentFile=-/run/workbench/settings" in vmimage.read(root, vmimage.IMAGE_DROP_IN)
    assert "Before=workbench-image.service ssh.service" in vmimage.read(root, vmimage.SETTINGS_UNIT)
    link = subprocess.run(["debugfs", "-R", f"stat {vmimage.ENABLED}", root], capture_output=True, text=True)
    assert f'Fast link dest: "{vmimage.SETTINGS_UNIT}"' in link.stdout
    assert subprocess.run(["e2fsck", "-f", "-n", root], capture_output=True).returncode == 0
    assert vmimage.virtual_size(published) == vmimage.virtual_size(source)
    # Made once per source and recipe.
    made = published.stat().st_mtime_ns
    assert vmimage.disk_file(tmp_path / "store", source, "sha256:0123456789abcdef0123") == published
    assert published.stat().st_mtime_ns == made


def test_a_disk_without_a_linux_partition_is_refused(tmp_path: Path) -> None:
    disk = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    with pytest.raises(CloudError, match="no MBR"):
        vmimage.disk_file(tmp_path / "store", disk, "sha256:feedfeedfeedfeed")
    assert not list((tmp_path / "store").iterdir()), "nothing half-made is left"


def test_the_settings_helper_is_valid_python() -> None:
    compile(vmimage.DEPLOY_SETTINGS, "deploy-settings", "exec")
