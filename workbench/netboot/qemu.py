"""A PXE-booting qemu VM on a tap device of the lab, under software emulation.

/dev/kvm on these machines does not run ordinary guests, so the VM always uses
TCG. It has a blank local disk whose bytes are compared before and after, to
prove the live system leaves a machine's disk alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .. import run


@dataclass(frozen=True)
class VM:
    mac: str
    tap: str
    disk: Path
    console: Path
    memory_mb: int = 1536
    cpus: int = 2


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
        f"virtio-net-pci,netdev=n0,mac={vm.mac}",
        "-drive",
        f"file={vm.disk},if=virtio,format=qcow2",
        "-boot",
        "order=n",
        "-no-reboot",
    ]


def create_disk(path: Path, size: str = "2G") -> str:
    """A blank qcow2 disk; the sha256 of its file, to compare after the boot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run.capture(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size])
    return file_digest(path)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def spawn(vm: VM, netns: str, log: Path) -> run.Daemon:
    vm.console.unlink(missing_ok=True)
    return run.spawn(["ip", "netns", "exec", netns, *argv(vm)], log=log)
