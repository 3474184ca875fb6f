"""`fab netboot.test`: the whole boot, proven in a VM on this machine.

The node runs in its namespace; a qemu VM with a node's MAC PXE-boots from it,
loads the live system over HTTP and reports back. Checked: the reported name
and role, the VM's local disk byte for byte unchanged. Everything is removed
afterwards, whatever happened.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import progress, run
from ..config import Config
from ..errors import ConfigError, NetbootError
from . import httpserve, netns, node, qemu, timeline
from .artifacts import build_live
from .inventory import Inventory, Node

TAP = "nbtap0"


@dataclass(frozen=True)
class LabResult:
    node: str
    firmware: str
    reported_name: str
    reported_role: str
    disk_unchanged: bool
    persisted: str
    boot_seconds: float
    phases: dict[str, float]
    timeline: dict[str, Any]
    console: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_test(
    config: Config, inv: Inventory, node_key: str | None = None, firmware: str = "bios", timeout: float = 420.0
) -> LabResult:
    """Boot `node_key` (default: the first node) in a VM with `firmware` and check what it reports."""
    if firmware not in qemu.FIRMWARES:
        raise ConfigError(f"firmware {firmware!r}: must be one of {', '.join(qemu.FIRMWARES)}")
    target = inv.node(node_key) if node_key else inv.nodes[0]
    scope = f"netboot test {target.short} ({firmware})"
    live = build_live(config)
    work = config.state_dir / "netboot" / "vm"
    disk = work / "disk.qcow2"
    before = qemu.create_disk(disk)
    # A file from an earlier boot must not pass for this one's.
    (inv.export / target.name / "last-boot.json").unlink(missing_ok=True)
    vm = qemu.VM(mac=target.mac, tap=TAP, disk=disk, console=work / "console.log", firmware=firmware)
    qemu.prepare_firmware(vm)
    try:
        with node.running(config, inv, live) as running:
            netns.add_tap(running.lab, TAP)
            progress.step(scope, f"powering on a VM (qemu TCG) with MAC {target.mac}")
            power_on = time.time()
            daemon = qemu.spawn(vm, running.lab.name, work / "qemu.out")
            try:
                report = _wait_report(running.state, target, daemon, vm.console, timeout, scope)
            finally:
                daemon.stop()
            lines = timeline.build(inv, running.state)
        after = qemu.file_digest(disk)
        persisted = _persisted(inv, target)
    finally:
        disk.unlink(missing_ok=True)
        disk.with_name("OVMF_VARS.fd").unlink(missing_ok=True)
    line = next(t for t in lines if t.node == target)
    result = LabResult(
        node=target.name,
        firmware=firmware,
        reported_name=str(report.get("name", "")),
        reported_role=str(report.get("role", "")),
        disk_unchanged=before == after,
        persisted=persisted,
        boot_seconds=report["received"] - power_on,
        phases=phases(line, power_on),
        timeline=line.to_dict(),
        console=_tail(vm.console, 15),
    )
    _check(result, target)
    return result


def _wait_report(
    state: Path, target: Node, daemon: run.Daemon, console: Path, timeout: float, scope: str
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        report = httpserve.read_reports(state).get(target.address)
        if report is not None:
            return report
        if not daemon.alive():
            failure = daemon.failure()
            raise NetbootError(f"qemu exited before the VM reported back: {failure}\nconsole:\n{_tail(console)}")
        stage = timeline.build_one(target, state)
        if stage != seen:
            progress.detail(f"{target.short}: {stage}")
            seen = stage
        time.sleep(0.5)
    raise NetbootError(
        f"{target.name} did not report back within {timeout:.0f}s (last stage: {seen}); console tail:\n{_tail(console)}"
    )


def phases(line: timeline.Timeline, power_on: float) -> dict[str, float]:
    """Power-on to report, split as the benchmark wants it."""
    ev = line.events
    out: dict[str, float] = {}
    if "ipxe script" in ev:
        out["dhcp+ipxe"] = ev["ipxe script"] - power_on
    if "initrd" in ev and "ipxe script" in ev:
        out["kernel+initrd"] = ev["initrd"] - ev["ipxe script"]
    root_start = line.requested.get("root image")
    if root_start is not None and "initrd" in ev:
        # The kernel and the initramfs (drivers, DHCP again) until live-boot asks for the root.
        out["kernel boot"] = root_start - ev["initrd"]
        out["root image"] = ev["root image"] - root_start
    if "reported" in ev and "root image" in ev:
        out["userspace"] = ev["reported"] - ev["root image"]
    return {k: round(v, 1) for k, v in out.items()}


def _check(result: LabResult, target: Node) -> None:
    problems = []
    if result.reported_name != target.name:
        problems.append(f"reported name {result.reported_name!r}, expected {target.name!r} (from DHCP)")
    if result.reported_role != target.role:
        problems.append(f"reported role {result.reported_role!r}, expected {target.role!r}")
    if not result.persisted:
        problems.append(f"no persistence file {target.name}/last-boot.json on the export (VM said: {result.console})")
    if not result.disk_unchanged:
        problems.append("the VM's local disk changed: the live system wrote to it")
    if problems:
        raise NetbootError(f"netboot test of {target.name} failed: " + "; ".join(problems))


def _persisted(inv: Inventory, target: Node) -> str:
    """The file the live system wrote on the NFS export, if it is there and names the node."""
    path = inv.export / target.name / "last-boot.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    return str(path) if data.get("name") == target.name else ""


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no console output)"
    return "\n".join(f"  | {line}" for line in text.splitlines()[-lines:])
