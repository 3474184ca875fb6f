"""The cloud's hypervisors: netbooted nodes of the inventory, told by the node how to join the cloud.

Each hypervisor fetches `cloud/<its name>.json` from the networking node at
boot (salt/hypervisor, workbench/netboot/files/workbench-cloud.py): the
controller's address and the compute services' passwords. On a real LAN the
user powers the PCs on; `fab cloud.up --vms N` boots the first N hypervisors
of the inventory as qemu VMs on the lab's bridge instead, each with its
node's MAC and a blank disk of its own that the live system never touches.
The VMs outlive the command (their pids under `<state_dir>/cloud/vms/`);
`fab cloud.down` stops them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from workbench.cloud.lab import CloudPlan
from workbench.cloud.secrets import CloudSecrets, cloud_dir
from workbench.core import progress, run
from workbench.core.config import Config
from workbench.core.errors import CloudError, ConfigError
from workbench.core.secrets import write_private
from workbench.netboot import netns, node, qemu, timeline
from workbench.netboot.inventory import Node

HYPERVISOR_ROLE = "hypervisor"
# What each hypervisor is given (the rest of the controller's passwords stays with the controller).
PASSWORDS = ("rabbitmq", "nova", "neutron", "placement")
QEMU = "qemu-system-x86_64"
VM_CPUS = 2


@dataclass(frozen=True)
class BootedVM:
    name: str
    mac: str
    pid: int
    console: Path
    started: bool
    powered_on: datetime | None = None  # UTC, when this command powered it on


def hypervisors(plan: CloudPlan) -> tuple[Node, ...]:
    return tuple(n for n in plan.inventory.nodes if n.role == HYPERVISOR_ROLE)


def chosen(plan: CloudPlan, count: int) -> tuple[Node, ...]:
    """The first `count` hypervisors of the inventory; ConfigError if it lists fewer."""
    nodes = hypervisors(plan)
    if count < 0 or count > len(nodes):
        raise ConfigError(f"--vms {count}: {plan.inventory.path} lists {len(nodes)} hypervisor(s) "
                          f"({', '.join(n.name for n in nodes) or 'none'}); add [[nodes]] or ask for fewer")
    return nodes[:count]


def write_node_configs(config: Config, plan: CloudPlan, keys: CloudSecrets) -> list[Path]:
    """Each hypervisor's `cloud/<name>.json` on the node, 0600 (the node serves it to that node alone)."""
    directory = node.cloud_config_dir(config)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for hv in hypervisors(plan):
        body = {
            "host": hv.name,
            "controller": plan.controller,
            "region": plan.region,
            "virt_type": config.cloud.virt_type,
            "passwords": {name: keys[name] for name in PASSWORDS},
        }
        path = directory / f"{hv.name}.json"
        write_private(path, json.dumps(body, indent=2, sort_keys=True).encode())
        written.append(path)
    return written


def vm_dir(config: Config, hv: Node) -> Path:
    return cloud_dir(config) / "vms" / hv.short


def _pidfile(directory: Path) -> run.PidFile:
    return run.PidFile(directory / "qemu.pid", QEMU, f"{directory}/")


def _tap(plan: CloudPlan, hv: Node) -> str:
    return f"hvtap{hypervisors(plan).index(hv)}"


def boot(config: Config, plan: CloudPlan, nodes: tuple[Node, ...], powered_on: list[str] | None = None) -> list[
    BootedVM
]:
    """Power on a VM for each of `nodes` that is not running yet; each one powered on is added to
    `powered_on` (by its directory's name, as `stop` takes it) as soon as it runs: what an undo must
    power off, and nothing else."""
    lab = netns.Lab(netns.namespace_name(config.prefix), netns.BRIDGE)
    booted = []
    for hv in nodes:
        directory = vm_dir(config, hv)
        pids = _pidfile(directory)
        console = directory / "console.log"
        running = pids.running()
        if running is not None:
            booted.append(BootedVM(hv.name, hv.mac, running, console, False))
            continue
        disk = directory / "disk.qcow2"
        qemu.create_disk(disk)
        vm = qemu.VM(mac=hv.mac, tap=_tap(plan, hv), disk=disk, console=console, memory_mb=config.cloud.vm_memory,
                     cpus=VM_CPUS)
        netns.add_tap(lab, vm.tap)
        daemon = qemu.spawn(vm, lab.name, directory / "qemu.out")
        pids.write(daemon.pid)
        if powered_on is not None:
            powered_on.append(directory.name)
        progress.step("cloud", f"powered on {hv.name} (MAC {hv.mac}, {vm.memory_mb} MiB, qemu TCG; console {console})")
        booted.append(BootedVM(hv.name, hv.mac, daemon.pid, console, True, datetime.now(UTC)))
    return booted


def wait_registered(
    config: Config, plan: CloudPlan, vms: list[BootedVM], registered: Callable[[], set[str]], timeout: float,
    powered_on: float,
) -> dict[str, float]:
    """Seconds from `powered_on` (monotonic) until nova reports each VM's compute service up; CloudError
    naming the first that does not within `timeout` seconds of this call."""
    start = time.monotonic()
    seen: dict[str, float] = {}
    state = node.node_dir(config)
    while len(seen) < len(vms):
        up = registered()
        for vm in vms:
            if vm.name in up and vm.name not in seen:
                seen[vm.name] = time.monotonic() - powered_on
                progress.step("cloud", f"{vm.name} registered in nova and placement, its network agent alive, "
                                       f"{seen[vm.name]:.0f}s after its power-on")
        if len(seen) == len(vms):
            break
        lines = {t.node.name: t for t in timeline.build(plan.inventory, state)}
        for vm in vms:
            if vm.name in seen:
                continue
            if not _pidfile(vm.console.parent).running():
                raise CloudError(f"hypervisor {vm.name}: its VM stopped before it registered; console "
                                 f"{vm.console}:\n{qemu.console_tail(vm.console, 15)}")
            line = lines.get(vm.name)
            progress.activity(f"{vm.name}: {line.last if line else 'nothing yet'}")
        if time.monotonic() - start > timeout:
            waiting = [vm for vm in vms if vm.name not in seen]
            vm = waiting[0]
            line = lines.get(vm.name)
            cloud = line.cloud(None) if line else None
            raise CloudError(
                f"hypervisor {vm.name} did not register in nova within {timeout:.0f}s (boot reached: "
                f"{line.last if line else 'nothing'}; cloud set-up: {cloud or 'not reported'}); its console "
                f"{vm.console}:\n{qemu.console_tail(vm.console, 15)}"
            )
        time.sleep(3.0)
    return seen


def stop_all(config: Config) -> list[str]:
    """Power off every hypervisor VM of this state dir (and remove their disks)."""
    root = cloud_dir(config) / "vms"
    if not root.is_dir():
        return []
    return stop(config, [p.name for p in sorted(root.iterdir()) if p.is_dir()])


def stop(config: Config, names: list[str]) -> list[str]:
    """Power off the hypervisor VMs of these directories (`hv1`) and remove their disks."""
    done: list[str] = []
    for name in names:
        directory = cloud_dir(config) / "vms" / name
        pid = _pidfile(directory).stop(grace=5.0)
        if pid is not None:
            done.append(f"powered off hypervisor VM {name} (pid {pid})")
        (directory / "disk.qcow2").unlink(missing_ok=True)
    return done
