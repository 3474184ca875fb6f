"""Files the live image gets beyond packages and states: the report-back and cloud units.

They are real files beside this module (files/), shipped as package data, so that
linters and tests read the report program like any other.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

# Runs once userspace is up. The name and role come from the kernel command line
# the node's per-MAC iPXE script set (`wb.name=hv1.lab.wpdn wb.role=hypervisor`):
# the node knows the machine by MAC in full and proxy mode alike, while in proxy
# mode the router's DHCP knows no names. Without wb.name (the menu's live system)
# the name comes from DHCP (the initramfs' ipconfig leaves it in
# /run/net-<iface>.conf, e.g. `HOSTNAME='hv1'` and `DNSDOMAIN='lab.wpdn'`). The
# report carries the interface's MAC, by which the node knows the machine whatever
# address it got, and goes to `wb.report=URL`.
REPORT_SCRIPT = resources.files(__package__).joinpath("files/workbench-report.py").read_text()
REPORT_UNIT = resources.files(__package__).joinpath("files/workbench-report.service").read_text()
# After the report: asks the node for this machine's cloud configuration (404: none),
# renders nova's and neutron's, starts libvirtd, the linuxbridge agent and nova-compute.
CLOUD_SCRIPT = resources.files(__package__).joinpath("files/workbench-cloud.py").read_text()
CLOUD_UNIT = resources.files(__package__).joinpath("files/workbench-cloud.service").read_text()
UNITS = {"workbench-report": (REPORT_SCRIPT, REPORT_UNIT), "workbench-cloud": (CLOUD_SCRIPT, CLOUD_UNIT)}


def digest() -> str:
    return hashlib.sha256("".join(s + u for s, u in UNITS.values()).encode()).hexdigest()


def install(root: Path, role: str) -> None:
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for name, (program, unit_text) in UNITS.items():
        script = root / "usr/local/sbin" / name
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(program)
        script.chmod(0o755)
        unit = root / f"etc/systemd/system/{name}.service"
        unit.write_text(unit_text)
        link = wants / f"{name}.service"
        link.unlink(missing_ok=True)
        link.symlink_to(f"/etc/systemd/system/{name}.service")
    (root / "etc/workbench").mkdir(parents=True, exist_ok=True)
    (root / "etc/workbench/role").write_text(role + "\n")
    # The name comes from DHCP at boot (live-boot writes it), never from the build.
    (root / "etc/hostname").unlink(missing_ok=True)
