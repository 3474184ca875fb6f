"""The boot policy: what each machine boots, as iPXE scripts served over HTTP.

A node of the inventory boots the live system of its role; an unknown machine
gets a menu whose default is its own local disk, so a PC that wanders onto the
lab network is left as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

from workbench.netboot.artifacts import LiveImage
from workbench.netboot.httpserve import CLOUD
from workbench.netboot.inventory import Inventory, Node
from workbench.netboot.nfs import PSEUDO

MENU_TIMEOUT_MS = 10000


def kernel_args(inv: Inventory, live: LiveImage, node: Node | None) -> str:
    base = inv.network.http
    args = [
        "initrd=initrd.img",
        "boot=live",
        f"fetch={base}/live/{live.digest}/filesystem.squashfs",
        # The last console= is /dev/console: the serial port, which the VM test records.
        "console=tty0",
        "console=ttyS0,115200",
        # Nothing from the live system's first boot is kept locally: no swap, no disk probing.
        "noswap",
        "nopersistence",
        "quiet",
        f"wb.report={base}/report",
        f"wb.persist={inv.network.server}:{PSEUDO}",
        # Where the node's cloud configuration is asked for (<url>/<name>.json; 404: no cloud).
        f"wb.cloud={base}/{CLOUD}",
    ]
    if node is not None:
        args += [f"wb.role={node.role}", f"wb.name={node.name}"]
    return " ".join(args)


def node_script(inv: Inventory, live: LiveImage, node: Node) -> str:
    base = f"{inv.network.http}/live/{live.digest}"
    return (
        "#!ipxe\n"
        f"# {node.name} ({node.mac}): the live {node.role} system {live.digest}\n"
        f"echo workbench: booting {node.name} as {node.role}\n"
        f"kernel {base}/vmlinuz {kernel_args(inv, live, node)}\n"
        f"initrd {base}/initrd.img\n"
        "boot\n"
    )


def menu_script(inv: Inventory, live: LiveImage) -> str:
    base = f"{inv.network.http}/live/{live.digest}"
    return (
        "#!ipxe\n"
        "# A machine not in the inventory: its own disk unless someone picks the live system.\n"
        "menu workbench netboot: this machine (${net0/mac}) is not in the inventory\n"
        "item local Boot from the local disk\n"
        f"item live Boot the live {live.role} system (nothing is written to the disk)\n"
        f"choose --default local --timeout {MENU_TIMEOUT_MS} target && goto ${{target}}\n"
        ":local\n"
        "sanboot --no-describe --drive 0x80 || exit\n"
        ":live\n"
        f"kernel {base}/vmlinuz {kernel_args(inv, live, None)}\n"
        f"initrd {base}/initrd.img\n"
        "boot\n"
    )


def write_tree(inv: Inventory, live: LiveImage, root: Path) -> list[Path]:
    """The HTTP root: boot/<node>.ipxe, boot/menu.ipxe, live/<digest> -> the artifacts."""
    boot = root / "boot"
    boot.mkdir(parents=True, exist_ok=True)
    written = []
    for node in inv.nodes:
        path = boot / f"{node.short}.ipxe"
        path.write_text(node_script(inv, live, node))
        written.append(path)
    menu = boot / "menu.ipxe"
    menu.write_text(menu_script(inv, live))
    written.append(menu)
    live_root = root / "live"
    live_root.mkdir(exist_ok=True)
    link = live_root / live.digest
    if not link.exists():
        os.symlink(live.directory, link)
    return written
