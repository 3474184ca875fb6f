"""Per-node boot timelines from the node's logs: where a boot got to, and when.

Sources: dnsmasq's log (DHCP offer/ack, TFTP of the iPXE loader), the HTTP
request log (iPXE script, kernel, initrd, root image) and the report-back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import dnsmasq, httpserve
from .inventory import Inventory, Network, Node

_NO_NETWORK = Network("0.0.0.0/0", "0.0.0.0", "0.0.0.0", "full", None, "", 0)
STAGES = ("dhcp offer", "dhcp ack", "ipxe loader", "ipxe script", "kernel", "initrd", "root image", "reported")


@dataclass
class Timeline:
    node: Node
    events: dict[str, float] = field(default_factory=dict)
    # When each HTTP fetch began (events hold when it ended): a fetch's own time.
    requested: dict[str, float] = field(default_factory=dict)
    report: dict[str, Any] | None = None

    def mark(self, stage: str, when: float, began: float | None = None) -> None:
        # The first time counts: later DHCP rounds (initramfs, userspace) do not move the start.
        self.events.setdefault(stage, when)
        if began is not None:
            self.requested.setdefault(stage, began)

    @property
    def last(self) -> str:
        reached = [s for s in STAGES if s in self.events]
        return reached[-1] if reached else "nothing yet"

    def to_dict(self) -> dict[str, Any]:
        start = min(self.events.values()) if self.events else None
        return {
            "node": self.node.name,
            "mac": self.node.mac,
            "address": self.node.address,
            "last": self.last,
            "events": {s: round(self.events[s] - start, 2) for s in STAGES if s in self.events and start is not None},
            "started": start,
            "report": self.report,
        }


def _dnsmasq_time(stamp: str, year: int) -> float:
    # dnsmasq's log has no year and local time: "Nov 22 03:41:07".
    return time.mktime(time.strptime(f"{year} {stamp}", "%Y %b %d %H:%M:%S"))


def build(inv: Inventory, state: Path) -> list[Timeline]:
    lines = {n.mac: Timeline(n) for n in inv.nodes}
    by_ip = {n.address: lines[n.mac] for n in inv.nodes}
    log = state / "dnsmasq.log"
    year = time.localtime().tm_year
    if log.is_file():
        for event in dnsmasq.parse_log(log.read_text(errors="replace")):
            line = lines.get(event.mac or "") or by_ip.get(event.ip or "")
            if line is None:
                continue
            when = _dnsmasq_time(event.stamp, year)
            if event.kind == "DHCPOFFER":
                line.mark("dhcp offer", when)
            elif event.kind == "DHCPACK":
                line.mark("dhcp ack", when)
            elif event.kind == "TFTP":
                line.mark("ipxe loader", when)
    for entry in httpserve.read_log(state / "http.jsonl"):
        line = by_ip.get(entry["client"])
        if line is None or entry["status"] not in (200, 204):
            continue
        stage = _http_stage(entry["path"])
        if stage is not None:
            line.mark(stage, entry["end"], entry["start"])
    for address, report in httpserve.read_reports(state).items():
        line = by_ip.get(address)
        if line is not None:
            line.report = report
            line.mark("reported", report["received"])
    return list(lines.values())


def _http_stage(path: str) -> str | None:
    if path.startswith("/boot/"):
        return "ipxe script"
    for suffix, stage in (("/vmlinuz", "kernel"), ("/initrd.img", "initrd"), ("/filesystem.squashfs", "root image")):
        if path.endswith(suffix):
            return stage
    return None


def render(timelines: list[Timeline]) -> str:
    """One block per node: its stages with seconds since its first event."""
    out: list[str] = []
    for t in timelines:
        data = t.to_dict()
        out.append(f"{t.node.name}  {t.node.mac}  {t.node.address}  last: {data['last']}")
        for stage in STAGES:
            seconds = data["events"].get(stage)
            out.append(f"    {stage:<12} {'-' if seconds is None else f'+{seconds:.1f}s'}")
        if t.report:
            out.append(f"    report: name {t.report.get('name')!r}, role {t.report.get('role')!r}")
    return "\n".join(out)


def build_one(node: Node, state: Path) -> str:
    """The last stage `node` reached (for progress lines while waiting)."""
    for line in build(Inventory(Path(), _NO_NETWORK, Path(), (node,)), state):
        return line.last
    return "nothing yet"
