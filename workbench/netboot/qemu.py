"""A PXE-booting qemu VM on a tap device of the lab, under software emulation.

/dev/kvm on these machines does not run ordinary guests, so the VM always uses
TCG. It has a blank local disk whose bytes are compared before and after, to
prove the live system leaves a machine's disk alone.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from workbench.core import run
from workbench.core.errors import NetbootError
from workbench.core.files import sha256_of


@dataclass(frozen=True)
class VM:
    mac: str
    tap: str
    disk: Path
    console: Path
    memory_mb: int = 1536
    cpus: int = 2
    firmware: str = "bios"


FIRMWARES = ("bios", "uefi")
# OVMF (Debian's ovmf package), without Secure Boot: Debian's kernel via iPXE is not signed for it.
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


def argv(vm: VM) -> list[str]:
    """qemu's command line: network boot first, serial console to a file, no display."""
    return [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-machine",
        "q35",
        "-m",
        str(vm.memory_mb),
        "-smp",
        str(vm.cpus),
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{vm.console}",
        "-netdev",
        f"tap,id=n0,ifname={vm.tap},script=no,downscript=no",
        "-device",
        _nic(vm),
        "-drive",
        f"file={vm.disk},if=virtio,format=qcow2",
        "-boot",
        "order=n",
        "-no-reboot",
        *_firmware(vm),
    ]


def _nic(vm: VM) -> str:
    nic = f"virtio-net-pci,netdev=n0,mac={vm.mac}"
    # Under UEFI, no iPXE option ROM: the firmware's own PXE fetches ipxe.efi over TFTP,
    # as a real PC's would. Under BIOS, qemu's NIC ROM is iPXE already.
    return nic + ",romfile=" if vm.firmware == "uefi" else nic


def _firmware(vm: VM) -> list[str]:
    if vm.firmware != "uefi":
        return []
    variables = vm.disk.with_name("OVMF_VARS.fd")
    return [
        "-drive",
        f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        "-drive",
        f"if=pflash,format=raw,unit=1,file={variables}",
    ]


def prepare_firmware(vm: VM) -> None:
    """UEFI needs a writable copy of OVMF's variable store per VM."""
    if vm.firmware != "uefi":
        return
    if not OVMF_CODE.is_file():
        raise NetbootError(f"UEFI firmware {OVMF_CODE} is missing (the ovmf package; make setup installs it)")
    shutil.copyfile(OVMF_VARS, vm.disk.with_name("OVMF_VARS.fd"))


def create_disk(path: Path, size: str = "2G") -> str:
    """A blank qcow2 disk; the sha256 of its file, to compare after the boot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run.capture(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size])
    return sha256_of(path)


def spawn(vm: VM, netns: str, log: Path) -> run.Daemon:
    vm.console.unlink(missing_ok=True)
    return run.spawn(["ip", "netns", "exec", netns, *argv(vm)], log=log)


def console_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a VM's serial console, indented for an error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "  (no console output)"
    return "\n".join(f"  | {line}" for line in text.splitlines()[-lines:])
