"""`fab netboot.test`: the whole boot, proven in a VM on this machine.

The node runs in its namespace; a qemu VM with a node's MAC PXE-boots from it,
loads the live system over HTTP and reports back. Checked: the reported name
and role, the address it reported from, the VM's local disk byte for byte
unchanged. In proxy mode a stand-in home router (router.py) on the lab's bridge
lends the address and the node only adds the boot options. When the node has a
cloud configuration (`node.cloud_config_dir`, as `fab cloud.up` leaves it), the
test also waits for workbench-cloud's report of how far the compute services
got, and returns it (`cloud`). Everything is removed afterwards, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from workbench.core import progress, run
from workbench.core.config import Config
from workbench.core.errors import ConfigError, NetbootError
from workbench.core.files import sha256_of
from workbench.netboot import dnsmasq, netns, node, qemu, router, timeline
from workbench.netboot.artifacts import build_live
from workbench.netboot.inventory import Inventory, Node

TAP = "nbtap0"
# With a cloud: the time workbench-cloud may take beyond the report (fetch, render, and up to
# 5 minutes for the services to get past their configuration).
CLOUD_WAIT = 420.0


@dataclass(frozen=True)
class LabResult:
    node: str
    firmware: str
    dhcp_mode: str
    # The address the live system reported from: the node's in full mode, the router's loan in proxy mode.
    address: str
    router: dict[str, Any] | None
    reported_name: str
    reported_role: str
    disk_unchanged: bool
    persisted: str
    boot_seconds: float
    phases: dict[str, float]
    timeline: dict[str, Any]
    console: str
    # What workbench-cloud reported (state, services, ...), when the node has a cloud configuration.
    cloud: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_test(
    config: Config,
    inv: Inventory,
    node_key: str | None = None,
    firmware: str = "bios",
    dhcp_mode: str | None = None,
    timeout: float = 420.0,
) -> LabResult:
    """Boot `node_key` (default: the first node) in a VM with `firmware` and check what it reports.

    `dhcp_mode` ("full" or "proxy") overrides the inventory's [network] mode for this test only.
    """
    if firmware not in qemu.FIRMWARES:
        raise ConfigError(f"firmware {firmware!r}: must be one of {', '.join(qemu.FIRMWARES)}")
    inv = inv.with_mode(dhcp_mode) if dhcp_mode else inv
    target = inv.node(node_key) if node_key else inv.nodes[0]
    mode = inv.network.mode
    # Planned before anything starts: an inventory with no room for a router fails at once.
    stand_in = router.plan(inv) if mode == "proxy" else None
    scope = f"netboot test {target.short} ({firmware}, {mode} DHCP)"
    with progress.job(scope):
        return _run_test(config, inv, target, firmware, stand_in, scope, timeout)


def _run_test(
    config: Config, inv: Inventory, target: Node, firmware: str, stand_in: router.Router | None, scope: str,
    timeout: float,
) -> LabResult:
    mode = inv.network.mode
    live = build_live(config)
    work = config.state_dir / "netboot" / "vm"
    # In the node's state: the router's log is part of the boot's timeline (timeline.DHCP_LOGS).
    router_files = router.Files(node.node_dir(config) / "router")
    disk = work / "disk.qcow2"
    before = qemu.create_disk(disk)
    # A file from an earlier boot must not pass for this one's.
    (inv.export / target.name / "last-boot.json").unlink(missing_ok=True)
    has_cloud = (node.cloud_config_dir(config) / f"{target.name}.json").is_file()
    vm = qemu.VM(mac=target.mac, tap=TAP, disk=disk, console=work / "console.log", firmware=firmware)
    qemu.prepare_firmware(vm)
    try:
        with node.running(config, inv, live) as running, contextlib.ExitStack() as stack:
            if stand_in is not None:
                name = netns.router_namespace_name(config.prefix)
                stack.enter_context(router.serving(running.lab, stand_in, name, router_files))
                progress.step(
                    scope,
                    f"stand-in home router {stand_in.address} (namespace {name}): "
                    f"DHCP only, lends {stand_in.pool[0]}-{stand_in.pool[1]}",
                )
            netns.add_tap(running.lab, TAP)
            progress.step(scope, f"powering on a VM (qemu TCG) with MAC {target.mac}")
            power_on = time.time()
            daemon = qemu.spawn(vm, running.lab.name, work / "qemu.out")
            try:
                line = _wait_report(inv, running.state, target, daemon, vm.console, timeout, scope, has_cloud)
            finally:
                daemon.stop()
            offered = _offered(running.state / "dnsmasq.log", target)
        after = sha256_of(disk)
        persisted = _persisted(inv, target)
    finally:
        disk.unlink(missing_ok=True)
        disk.with_name("OVMF_VARS.fd").unlink(missing_ok=True)
    report = line.report or {}
    lent = None
    if stand_in is not None:
        lent = {
            "address": stand_in.address,
            "pool": list(stand_in.pool),
            "leased": router.leased(router_files.leases, target.mac),
        }
    result = LabResult(
        node=target.name,
        firmware=firmware,
        dhcp_mode=mode,
        address=str(report.get("client", "")),
        router=lent,
        reported_name=str(report.get("name", "")),
        reported_role=str(report.get("role", "")),
        disk_unchanged=before == after,
        persisted=persisted,
        boot_seconds=report["received"] - power_on,
        phases=phases(line, power_on),
        timeline=line.to_dict(),
        console=qemu.console_tail(vm.console, 15),
        cloud=report.get("cloud") if has_cloud else None,
    )
    _check(result, target, stand_in, offered, has_cloud)
    return result


def _wait_report(
    inv: Inventory,
    state: Path,
    target: Node,
    daemon: run.Daemon,
    console: Path,
    timeout: float,
    scope: str,
    cloud: bool = False,
) -> timeline.Timeline:
    """The target's timeline once it has reported (found by its MAC, whatever its address);
    with `cloud`, once its report also says how far the cloud's services got."""
    deadline = time.monotonic() + timeout + (CLOUD_WAIT if cloud else 0)
    seen = ""
    while time.monotonic() < deadline:
        line = next(t for t in timeline.build(inv, state) if t.node == target)
        # The cloud's first report comes once libvirtd and the agent run (or it failed before).
        cloud_state = ((line.report or {}).get("cloud") or {}).get("state", "")
        # Refused (403: not the address the inventory reserves, as in proxy mode): no report comes.
        refused = line.cloud_fetch is not None and line.cloud_fetch[1] != 200
        if line.report is not None and (not cloud or cloud_state or refused):
            return line
        stage = line.last if line.report is None else "reported; waiting for the cloud's report"
        if not daemon.alive():
            failure = daemon.failure()
            tail = qemu.console_tail(console)
            raise NetbootError(f"qemu exited before the VM reported back: {failure}\nconsole:\n{tail}")
        if stage != seen:
            progress.output(f"{target.short}: {stage}")
            progress.activity(f"{target.short}: {stage}")
            seen = stage
        time.sleep(0.5)
    raise NetbootError(
        f"{target.name} did not report back within {timeout + (CLOUD_WAIT if cloud else 0):.0f}s "
        f"(last stage: {seen}); console tail:\n{qemu.console_tail(console)}"
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


def _check(
    result: LabResult, target: Node, stand_in: router.Router | None, offered: list[str], has_cloud: bool = False
) -> None:
    problems = []
    if result.reported_name != target.name:
        problems.append(f"reported name {result.reported_name!r}, expected {target.name!r} (from its iPXE script)")
    if result.reported_role != target.role:
        problems.append(f"reported role {result.reported_role!r}, expected {target.role!r}")
    if stand_in is None and result.address != target.address:
        problems.append(f"reported from {result.address!r}, not the address {target.address} the node gives it")
    if stand_in is not None and offered:
        problems.append(f"the node's dnsmasq offered {target.mac} {', '.join(offered)} in proxy mode")
    if stand_in is not None and result.router is not None:
        if not (result.address and stand_in.lends(result.address)):
            problems.append(f"reported from {result.address!r}, outside the router's pool {'-'.join(stand_in.pool)}")
        elif result.router["leased"] != result.address:
            problems.append(
                f"the router's leases give {target.mac} {result.router['leased'] or 'nothing'}, "
                f"but it reported from {result.address}"
            )
    if not result.persisted:
        problems.append(f"no persistence file {target.name}/last-boot.json on the export (VM said: {result.console})")
    if has_cloud and not result.cloud:
        fetched = result.timeline.get("cloud") or {}
        problems.append(
            f"{target.name} has a cloud configuration but reported nothing of it "
            f"(its fetch: {fetched.get('status', 'none')}; 403 means not from the address the inventory reserves)"
        )
    if result.cloud and result.cloud.get("state") == "failed":
        why = result.cloud.get("error") or result.cloud.get("services")
        problems.append(f"workbench-cloud failed on {target.name}: {why}")
    if not result.disk_unchanged:
        problems.append("the VM's local disk changed: the live system wrote to it")
    if problems:
        raise NetbootError(f"netboot test of {target.name} failed: " + "; ".join(problems))


def _offered(log: Path, target: Node) -> list[str]:
    """Addresses the node's own dnsmasq offered or acked the target (none in proxy mode)."""
    try:
        events = dnsmasq.parse_log(log.read_text(errors="replace"))
    except OSError:
        return []
    return sorted({e.ip or "" for e in events if e.mac == target.mac and e.kind in ("DHCPOFFER", "DHCPACK")})


def _persisted(inv: Inventory, target: Node) -> str:
    """The file the live system wrote on the NFS export, if it is there and names the node."""
    path = inv.export / target.name / "last-boot.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    return str(path) if data.get("name") == target.name else ""
