"""Per-node boot timelines from the node's logs: where a boot got to, and when.

Sources: dnsmasq's log (DHCP offer/ack, TFTP of the iPXE loader), the HTTP
request log (iPXE script, kernel, initrd, root image) and the report-back. A node
with a cloud has a `cloud` part besides its stages: when it fetched its cloud
configuration (or was refused it) and how far workbench-cloud got, from the
update of its report.
In proxy mode the node gives no addresses: its offer is the PXE boot offer it
adds to the router's, and a machine's address is learned from the DHCP logs, the
iPXE script it fetched and its report (which names its MAC). The router's offer
and ack are in the router's log, which a real home router keeps to itself; the
lab test's stand-in router leaves its log in the node's state (router/).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.netboot import dnsmasq, httpserve
from workbench.netboot.inventory import Inventory, Node

# The node's dnsmasq log, and the lab test's stand-in router's (router.py) if there is one.
DHCP_LOGS = ("dnsmasq.log", "router/router.log")
STAGES = ("dhcp offer", "dhcp ack", "ipxe loader", "ipxe script", "kernel", "initrd", "root image", "reported")


@dataclass
class Timeline:
    node: Node
    events: dict[str, float] = field(default_factory=dict)
    # When each HTTP fetch began (events hold when it ended): a fetch's own time.
    requested: dict[str, float] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    # The cloud configuration's fetch: when it answered, with which status (200, 403, 404).
    cloud_fetch: tuple[float, int] | None = None

    def mark(self, stage: str, when: float, began: float | None = None) -> None:
        # The first time counts: later DHCP rounds (initramfs, userspace) do not move the start.
        if stage not in self.events or when < self.events[stage]:
            self.events[stage] = when
        if began is not None:
            self.requested.setdefault(stage, began)

    @property
    def last(self) -> str:
        reached = [s for s in STAGES if s in self.events]
        return reached[-1] if reached else "nothing yet"

    def cloud(self, start: float | None) -> dict[str, Any] | None:
        """The cloud part: {"fetched": +s, "status": 200, "state": "started", "updated": +s}, or None."""
        reported = (self.report or {}).get("cloud")
        if self.cloud_fetch is None and not reported:
            return None
        origin = start or 0.0
        out: dict[str, Any] = {}
        if self.cloud_fetch is not None:
            out["fetched"] = round(self.cloud_fetch[0] - origin, 2)
            out["status"] = self.cloud_fetch[1]
        if isinstance(reported, dict):
            out["state"] = reported.get("state", "")
            if self.report and "updated" in self.report:
                out["updated"] = round(self.report["updated"] - origin, 2)
        return out

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
            "cloud": self.cloud(start),
        }


def _dnsmasq_time(stamp: str, year: int) -> float:
    # dnsmasq's log has no year and local time: "Nov 22 03:41:07".
    return time.mktime(time.strptime(f"{year} {stamp}", "%Y %b %d %H:%M:%S"))


def build(inv: Inventory, state: Path) -> list[Timeline]:
    lines = {n.mac: Timeline(n) for n in inv.nodes}
    by_ip = {n.address: lines[n.mac] for n in inv.nodes}
    events = [e for name in DHCP_LOGS for e in dnsmasq.parse_log(_read(state / name))]
    requests = httpserve.read_log(state / "http.jsonl")
    reports = httpserve.read_reports(state)
    # In proxy mode the router lends the addresses: learn who holds which from what the node saw.
    by_ip.update(_learned(lines, events, requests, reports))
    year = time.localtime().tm_year
    for event in events:
        line = lines.get(event.mac or "") or by_ip.get(event.ip or "")
        if line is None:
            continue
        when = _dnsmasq_time(event.stamp, year)
        if event.kind == "DHCPOFFER":
            line.mark("dhcp offer", when)
        elif event.kind == "DHCPACK":
            line.mark("dhcp ack", when)
        elif event.kind == "PXE" and "ignored" not in event.detail:
            # Proxy mode: the node's boot options beside the router's offer (or before it: a router
            # checks by ping that an address is free before it offers it).
            line.mark("dhcp offer", when)
        elif event.kind == "TFTP":
            line.mark("ipxe loader", when)
    for entry in requests:
        line = by_ip.get(entry["client"])
        if line is not None and entry["path"].startswith(f"/{httpserve.CLOUD}/"):
            # The last fetch counts: a reboot asks again.
            line.cloud_fetch = (entry["end"], entry["status"])
            continue
        if line is None or entry["status"] not in (200, 204):
            continue
        stage = _http_stage(entry["path"])
        if stage is not None:
            line.mark(stage, entry["end"], entry["start"])
    for address, report in reports.items():
        line = lines.get(report.get("mac", "")) or by_ip.get(address)
        if line is not None:
            line.report = report
            line.mark("reported", report["received"])
    return list(lines.values())


def _learned(
    lines: dict[str, Timeline],
    events: list[dnsmasq.LogEvent],
    requests: list[dict[str, Any]],
    reports: dict[str, dict[str, Any]],
) -> dict[str, Timeline]:
    """Client addresses tied to a node: by MAC in dnsmasq's log and the reports, by its own iPXE script."""
    learned: dict[str, Timeline] = {}
    for event in events:
        if event.ip and event.mac in lines:
            learned[event.ip] = lines[event.mac]
    scripts = {f"/boot/{t.node.short}.ipxe": t for t in lines.values()}
    for entry in requests:
        if entry["path"] in scripts and entry["status"] == 200:
            learned[entry["client"]] = scripts[entry["path"]]
    for address, report in reports.items():
        if report.get("mac") in lines:
            learned[address] = lines[report["mac"]]
    return learned


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


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
        cloud = data["cloud"]
        if cloud:
            fetched = f"configuration +{cloud['fetched']:.1f}s ({cloud['status']})" if "fetched" in cloud else ""
            state = f"{cloud['state']} +{cloud['updated']:.1f}s" if "updated" in cloud else cloud.get("state", "")
            out.append(f"    cloud: {', '.join(x for x in (fetched, state) if x)}")
    return "\n".join(out)
