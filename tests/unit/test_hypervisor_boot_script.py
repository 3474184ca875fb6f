"""workbench-cloud (workbench/netboot/files), the live hypervisor's boot-time program: the parts
that need no booted node: how its heartbeat names the busiest programs, and nova's [libvirt]."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import types
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "workbench/netboot/files/workbench-cloud.py"


@pytest.fixture(scope="module")
def script() -> types.ModuleType:
    loader = importlib.machinery.SourceFileLoader("workbench_cloud_script", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_busiest_sums_a_programs_processes_and_ranks_them(script: types.ModuleType) -> None:
    tick = script.TICKS
    before = {"1": ("init", 100), "20": ("nova-compute", 5 * tick), "30": ("uwsgi", 0)}
    now = {
        "1": ("init", 100),  # idle: left out
        "20": ("nova-compute", 8 * tick),  # 3 s of CPU
        "30": ("uwsgi", 2 * tick),
        "31": ("uwsgi", 2 * tick),  # started meanwhile: all of its time counts
    }
    assert script.busiest(before, now, 10.0) == [["uwsgi", 40], ["nova-compute", 30]]


def test_busiest_keeps_the_top_few(script: types.ModuleType) -> None:
    now = {str(pid): (f"p{pid}", pid * script.TICKS) for pid in range(1, 10)}
    top = script.busiest({}, now, 100.0)
    assert [name for name, _ in top] == ["p9", "p8", "p7", "p6", "p5"]


def test_cpu_ticks_names_a_python_program_by_its_script(script: types.ModuleType) -> None:
    found = script.cpu_ticks()
    name, ticks = found[str(os.getpid())]
    # pytest runs as `python -m pytest ...` or `.../bin/pytest`: never the interpreter's path.
    assert "/" not in name and ticks >= 0


def test_lxc_roots_are_raw_files(script: types.ModuleType) -> None:
    # An lxc guest's root is mounted through a loop device: qcow2 would need nbd.
    assert script.libvirt({"virt_type": "lxc"}) == {"virt_type": "lxc", "images_type": "raw"}
    assert script.libvirt({"virt_type": "qemu"}) == {"virt_type": "qemu"}


def test_neutron_agent_keeps_one_root_helper(script: types.ModuleType) -> None:
    # Every iptables, ebtables or ip call of the agent through one rootwrap daemon, not a sudo each.
    cloud = {
        "controller": "10.0.0.2", "host": "hv1.lab.wpdn", "region": "RegionOne", "virt_type": "lxc",
        "passwords": {name: "s$cret" for name in ("nova", "placement", "neutron", "rabbitmq")},
    }
    node = {"address": "10.0.0.11", "instances": "/persist/instances", "provider_interface": "eth0"}
    text, group = script.render(cloud, node)["/etc/neutron/neutron.conf"]
    assert group == "neutron"
    assert "root_helper_daemon = sudo /usr/bin/neutron-rootwrap-daemon /etc/neutron/rootwrap.conf\n" in text
    nova, _ = script.render(cloud, node)["/etc/nova/nova.conf"]
    assert "password = s$$cret\n" in nova, "oslo.config reads $ as a reference"
