"""The vanilla VM disk: the base's root filesystem made bootable, for the qemu builder.

The same rootfs tarball as the docker base image, plus what a machine needs and
a container does not: a kernel with a lean initrd, systemd with networkd and
resolved (DHCP on any wired interface), and sshd accepting the workbench's key
(`ssh_key`), which is how Packer and the verification reach the VM.

The disk is put together without loop devices or mounts, so it builds wherever
a chroot does: an MBR (syslinux's boot code, the table written here), a FAT
/boot holding syslinux, the kernel and the initrd (mtools, `syslinux --install`),
and an ext4 root made from the directory by `mkfs.ext4 -d`. BIOS boot only.

Content-addressed like the base: the inputs hash names the directory, and a
directory with a manifest is reused as it is.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from workbench.build import base, chroot
from workbench.core import progress, run
from workbench.core.config import Config
from workbench.core.errors import BuildFailed, CommandFailed
from workbench.core.inputs import hash_inputs

# Bump when the recipe below changes, so that old disks are not reused.
RECIPE_VERSION = 1
PACKAGES = ("linux-image-amd64", "systemd-sysv", "systemd-resolved", "openssh-server", "zstd")
# The initrd holds only what finds and mounts the root on qemu's virtio disk: small is fast under TCG.
INITRD_MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net", "sd_mod", "ext4", "vfat", "nls_cp437")
BOOT_MB = 128
MBR_CODE = Path("/usr/lib/syslinux/mbr/mbr.bin")
SECTOR = 512
DISK_NAME = "disk.qcow2"

# What makes a machine of the root filesystem; the role's command becomes a
# unit at bake time (images/scripts/provision.sh), from the role's setting.
FILES = {
    "etc/systemd/network/80-wired-dhcp.network": "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n",
    "etc/fstab": (
        "# The workbench's VM disk: syslinux boots from the FAT /boot, the root is ext4.\n"
        "LABEL=wb-root / ext4 defaults,errors=remount-ro 0 1\n"
        "LABEL=WB-BOOT /boot vfat defaults,nofail 0 2\n"
    ),
    "etc/hostname": "localhost\n",
    # Host keys are made at the first boot of each machine, never shipped in an image.
    "etc/systemd/system/workbench-ssh-hostkeys.service": (
        "[Unit]\nDescription=SSH host keys of this machine (made at its first boot)\n"
        "ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key\nBefore=ssh.service\n\n"
        "[Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    ),
    # Under software emulation (the qemu builder; a qemu cloud, worse inside an emulated hypervisor)
    # a boot runs tens of times slower: systemd's 90 s defaults gave up on /boot's disk and on
    # networkd, and the server came up without a network. A machine at normal speed never waits that long.
    "etc/systemd/system.conf.d/50-workbench-slow-machines.conf": (
        "[Manager]\nDefaultTimeoutStartSec=15min\nDefaultDeviceTimeoutSec=15min\n"
    ),
    "etc/initramfs-tools/conf.d/workbench": "MODULES=list\nCOMPRESS=zstd\n",
    "etc/initramfs-tools/modules": "".join(f"{m}\n" for m in INITRD_MODULES),
}
UNITS = ("systemd-networkd", "systemd-resolved", "ssh", "workbench-ssh-hostkeys")


@dataclass(frozen=True)
class VMDisk:
    digest: str
    path: Path
    size: int
    cached: bool
    seconds: float


def disk_dir(config: Config) -> Path:
    return config.state_dir / "vmdisk"


def ssh_key(config: Config) -> Path:
    """The workbench's own SSH key (made once per state directory): Packer and the tests log in with it."""
    key = config.state_dir / "ssh" / "id_ed25519"
    if not key.is_file():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = key.with_name("id_ed25519.partial")
        partial.unlink(missing_ok=True)
        partial.with_suffix(".partial.pub").unlink(missing_ok=True)
        comment = f"workbench@{config.prefix}"
        run.capture(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(partial)])
        partial.with_suffix(".partial.pub").replace(key.with_suffix(".pub"))
        partial.replace(key)
    return key


def disk_inputs(config: Config) -> dict[str, object]:
    return {
        "recipe": RECIPE_VERSION,
        "base": hash_inputs(base.base_inputs(config)),
        "packages": list(PACKAGES),
        "files": FILES,
        "units": list(UNITS),
        "pruned": [*chroot.PRUNED_MODULES, *chroot.PRUNED_PATHS],
        "size_mb": config.builder.disk_size,
        "key": ssh_key(config).with_suffix(".pub").read_text().strip(),
    }


def find_disk(config: Config) -> VMDisk | None:
    digest = hash_inputs(disk_inputs(config))[:12]
    directory = disk_dir(config) / digest
    if not (directory / "manifest.json").is_file() or not (directory / DISK_NAME).is_file():
        return None
    return VMDisk(digest, directory / DISK_NAME, (directory / DISK_NAME).stat().st_size, True, 0.0)


def build_disk(config: Config, *, force: bool = False, mirror_via: str | None = None) -> VMDisk:
    """The vanilla disk for the current inputs, built unless it exists."""
    start = time.monotonic()
    scope = "vm disk"
    if not force:
        found = find_disk(config)
        if found is not None:
            progress.step(scope, f"vanilla disk {found.digest} is up to date")
            return found
    if os.geteuid() != 0:
        raise BuildFailed("building the VM disk runs a chroot, which needs root: run as root or with sudo")
    for tool, package in (("mkfs.fat", "dosfstools"), ("mcopy", "mtools"), ("syslinux", "syslinux")):
        if shutil.which(tool) is None:
            raise BuildFailed(f"{tool} is missing (Debian package {package}; `make setup` installs it)")
    if not MBR_CODE.is_file():
        raise BuildFailed(f"{MBR_CODE} is missing (Debian package syslinux-common; `make setup` installs it)")
    base_image = base.build_base(config, mirror_via=mirror_via)
    digest = hash_inputs(disk_inputs(config))[:12]
    directory = disk_dir(config) / digest
    work = config.state_dir / "tmp" / f"vmdisk-{digest}-{os.getpid()}"
    progress.step(scope, f"building vanilla disk {digest} from {base_image.tag}")
    try:
        root = work / "root"
        root.mkdir(parents=True)
        run.capture(["tar", "--numeric-owner", "-xf", str(base_image.rootfs), "-C", str(root)])
        _add_files(config, root)
        with chroot.mounted(root):
            _install(root, scope)
            chroot.prune(root)
        # chroot.mounted took the host's resolver back: the machine asks systemd-resolved.
        (root / "etc/resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
        out = work / "out"
        out.mkdir()
        _assemble(config, root, out / DISK_NAME, scope)
        manifest = {"inputs": digest, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        # A rename: a reader sees the whole directory or none of it.
        out.rename(directory)
    except CommandFailed as exc:
        raise BuildFailed(f"building the VM disk failed: {exc}") from None
    finally:
        chroot.remove_tree(work)
    size = (directory / DISK_NAME).stat().st_size
    seconds = time.monotonic() - start
    progress.step(scope, f"vanilla disk {digest}: {progress.human_size(size)} in {seconds:.0f}s")
    return VMDisk(digest, directory / DISK_NAME, size, False, seconds)


def _add_files(config: Config, root: Path) -> None:
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(ssh_key(config).with_suffix(".pub").read_text())
    (ssh_dir / "authorized_keys").chmod(0o600)


def _install(root: Path, scope: str) -> None:
    progress.step(scope, f"installing {', '.join(PACKAGES)}")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    chroot.run_in(root, ["apt-get", "update", "-qq"], env=env)
    # Captured, not streamed: dpkg's line per file would drown the progress; a failure shows its tail.
    chroot.run_in(root, ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], env=env)
    chroot.run_in(root, ["systemctl", "enable", "--quiet", *UNITS])
    # Made by openssh-server's installation: each machine makes its own at first boot.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # An empty machine-id: systemd gives each machine its own at first boot.
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)


def _assemble(config: Config, root: Path, disk: Path, scope: str) -> None:
    """MBR + FAT /boot (syslinux, kernel, initrd) + ext4 root, converted to qcow2."""
    progress.step(scope, "making the disk: FAT /boot with syslinux, ext4 root")
    boot = root / "boot"
    kernels = sorted(boot.glob("vmlinuz-*"))
    initrds = sorted(boot.glob("initrd.img-*"))
    if not kernels or not initrds:
        raise BuildFailed(f"no kernel or initrd under {boot} after installing linux-image-amd64")
    work = disk.parent
    boot_img, root_img, raw = work / "boot.img", work / "root.img", work / "disk.raw"
    root_mb = config.builder.disk_size - BOOT_MB - 1
    (work / "syslinux.cfg").write_text(syslinux_cfg(kernels[-1].name, initrds[-1].name))
    run.capture(["mkfs.fat", "-n", "WB-BOOT", "-C", str(boot_img), str(BOOT_MB * 1024)])
    files = [*(str(p) for p in sorted(boot.iterdir())), str(work / "syslinux.cfg")]
    run.capture(["mcopy", "-i", str(boot_img), *files, "::/"])
    run.capture(["syslinux", "--install", str(boot_img)])
    # /boot's files live on the FAT partition only: the root's /boot is its empty mount point.
    aside = work / "boot-aside"
    boot.rename(aside)
    boot.mkdir()
    try:
        run.capture(["mkfs.ext4", "-q", "-L", "wb-root", "-d", str(root), str(root_img), f"{root_mb}M"])
    finally:
        boot.rmdir()
        aside.rename(boot)
    with open(raw, "wb") as out:
        out.truncate(config.builder.disk_size * 1024 * 1024)
        out.write(mbr(MBR_CODE.read_bytes()[:440], [(2048, BOOT_MB * 2048, 0x0C, True),
                                                    (2048 + BOOT_MB * 2048, root_mb * 2048, LINUX_PARTITION, False)]))
        for image, offset in ((boot_img, 2048), (root_img, 2048 + BOOT_MB * 2048)):
            out.seek(offset * SECTOR)
            with open(image, "rb") as part:
                shutil.copyfileobj(part, out, 1 << 20)
            image.unlink()
    run.capture(["qemu-img", "convert", "-O", "qcow2", str(raw), str(disk)])
    raw.unlink()


def syslinux_cfg(kernel: str, initrd: str) -> str:
    # Serial console first: the build and the tests read the boot on ttyS0.
    return (
        "SERIAL 0 115200\nDEFAULT linux\nPROMPT 0\nTIMEOUT 0\n"
        f"LABEL linux\n  KERNEL /{kernel}\n  INITRD /{initrd}\n"
        "  APPEND root=LABEL=wb-root ro console=tty0 console=ttyS0,115200 net.ifnames=1\n"
    )


LINUX_PARTITION = 0x83


def root_offset(raw: Path) -> int:
    """Where the ext4 root starts in a raw copy of a disk made here, in bytes (the MBR's Linux entry)."""
    with raw.open("rb") as disk:
        sector = disk.read(SECTOR)
    if len(sector) < SECTOR or sector[510:] != b"\x55\xaa":
        raise ValueError(f"{raw}: no MBR")
    for index in range(4):
        _, _, kind, _, start, sectors = struct.unpack("<B3sB3sII", sector[446 + 16 * index:462 + 16 * index])
        if kind == LINUX_PARTITION and sectors:
            return int(start) * SECTOR
    raise ValueError(f"{raw}: no Linux partition in its MBR")


def mbr(code: bytes, partitions: list[tuple[int, int, int, bool]]) -> bytes:
    """A classic MBR: 440 bytes of boot code, then up to four (start, sectors, type, active) entries.

    CHS fields say "use LBA" (0xFE 0xFF 0xFF), as every BIOS since the 90s reads them.
    """
    if len(code) > 440 or len(partitions) > 4:
        raise ValueError("an MBR holds 440 bytes of code and four partitions")
    entries = b"".join(
        struct.pack("<B3sB3sII", 0x80 if active else 0, b"\xfe\xff\xff", kind, b"\xfe\xff\xff", start, sectors)
        for start, sectors, kind, active in partitions
    )
    return code.ljust(440, b"\0") + b"\0" * 6 + entries.ljust(64, b"\0") + b"\x55\xaa"
