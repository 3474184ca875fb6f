"""`fab cloud.up / status / openrc / down`: the homelab cloud composed from its parts.

Up, in order: the controller's bake starts in the background (a cache hit
when its inputs have not changed); the networking node (in the background, as
`fab netboot.serve` would run it, so that it outlives the command, after the
live image it serves is built), each hypervisor's file and the `--vms` VMs
powered on (they boot while the rest comes up); then the controller, once
baked (started unless it already runs that image with these settings), its
readiness, what a new cloud has, and the VMs registered in nova. Each
part that already runs as wanted is left alone: a second `cloud.up` changes
nothing. Down stops the controller cleanly and the node, and keeps the cloud's
data and passwords unless asked to purge them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench.build import bake
from workbench.cloud import api, controller, hypervisors, secrets, smoke
from workbench.cloud.lab import CloudPlan, plan
from workbench.core import progress, run
from workbench.core.config import ENV_CONFIG, Config
from workbench.core.errors import CloudError, WorkbenchError
from workbench.netboot import artifacts, netns, node, timeline

SCOPE = "cloud"
# The first start of a controller initialises its databases: minutes on 2 cores.
READY_TIMEOUT = 900.0
NODE_TIMEOUT = 60.0
# Power-on to nova-compute up, under software emulation: the live image, then the compute services.
REGISTER_TIMEOUT = 1200.0


@dataclass(frozen=True)
class UpResult:
    controller_image: str
    controller_started: bool
    node_started: bool
    made: tuple[str, ...]
    # Each hypervisor VM booted by --vms: seconds from this command's power-on until nova saw it (0: already up).
    hypervisors: dict[str, float]
    auth_url: str
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)
    # Seconds from the controller's start until each API answered (the first start makes the databases).
    readiness: dict[str, float] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.controller_started or self.node_started or bool(self.made) or any(self.hypervisors.values())

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "changed": self.changed}

    def summary(self) -> str:
        what = "started" if self.changed else "already up, nothing changed"
        split = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in self.phases.items())
        lines = [f"cloud {what} in {self.seconds:.0f}s ({split}): controller {self.controller_image}, "
                 f"keystone {self.auth_url}"]
        lines += [f"  made: {item}" for item in self.made]
        lines += [f"  hypervisor {name}: registered" + (f" after {took:.0f}s" if took else " (already up)")
                  for name, took in self.hypervisors.items()]
        lines.append("  next: eval \"$(fab cloud.openrc)\" && openstack catalog list")
        return "\n".join(lines)


def node_log(config: Config) -> Path:
    return secrets.cloud_dir(config) / "node.log"


def _ensure_node(config: Config, cloud: CloudPlan) -> bool:
    """The networking node serving the cloud's inventory; True when started now."""
    name = netns.namespace_name(config.prefix)
    if node.serving(config).get("pids") and netns.exists(name):
        return False
    node.stop(config)  # what a killed node left: its namespace, its daemons
    artifacts.build_live(config)
    argv = [sys.executable, "-m", "workbench.netboot", "serve", "--inventory", str(cloud.inventory.path)]
    daemon = run.spawn(argv, log=node_log(config), env={ENV_CONFIG: str(config.path)}, cwd=config.root)

    def up() -> bool:
        return bool(node.serving(config).get("pids")) and netns.exists(name)

    try:
        run.wait_until(up, timeout=NODE_TIMEOUT, what="the networking node", daemon=daemon, error=CloudError)
    except WorkbenchError:
        node.stop(config)
        raise
    progress.step(SCOPE, f"networking node serving {cloud.inventory.network.subnet} in namespace {name} "
                         f"(pid {daemon.pid}, log {node_log(config)})")
    return True


@contextlib.contextmanager
def _baking_controller(config: Config) -> Iterator[Future[bake.BakeResult]]:
    """The controller's bake, running while the node's live image builds and the VMs boot.

    Neither needs the other, and on two cores each leaves the processor idle while it waits
    for packages, Packer or the engine: overlapped, they cost the longer one plus a share,
    not the sum. If the block fails (or is interrupted), the bake is interrupted too and
    waited for, so that its Packer cleans up before the command ends.
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="controller-bake")
    future = pool.submit(bake.bake_role, config, controller.ROLE)
    try:
        yield future
    except BaseException:
        if not future.done():
            run.interrupt_streams()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def up(config: Config, inventory: str = "", vms: int = 0) -> UpResult:
    start = time.monotonic()
    phases: dict[str, float] = {}
    if config.builder.type != "docker":
        raise CloudError(f"the controller runs as a container: {config.path} [builder] type = "
                         f"{config.builder.type!r} bakes qcow2 disks; set type = \"docker\" for `fab cloud.up`")
    config.role(controller.ROLE)  # before anything starts: a checkout without the role fails here
    cloud = plan(config, inventory)
    chosen = hypervisors.chosen(cloud, vms)
    if controller.find(config) is None:
        # Before anything starts: a taken port is one error, with nothing to undo.
        controller.check_ports_free(cloud)
    keys = secrets.ensure(config)

    # Nothing half-done: what this command started is undone (newest first) unless it all comes up.
    with contextlib.ExitStack() as undo:
        baking = undo.enter_context(_baking_controller(config))
        mark = time.monotonic()
        node_started = _ensure_node(config, cloud)
        phases["node"] = time.monotonic() - mark
        if node_started:
            undo.callback(node.stop, config)
        # Every hypervisor of the inventory can join, a PC powered on by hand as much as a VM.
        hypervisors.write_node_configs(config, cloud, keys)
        # Powered on before the controller is baked and started: they netboot and configure
        # meanwhile, and nova-compute waits for the controller (systemd restarts it if it waits
        # longer than its start timeout).
        # Only what this command powered on: a failed `cloud.up` on a running cloud leaves its hypervisors.
        ours: list[str] = []
        undo.callback(hypervisors.stop, config, ours)
        booted = hypervisors.boot(config, cloud, chosen, ours) if chosen else []
        powered_on = time.monotonic()

        baked = baking.result()
        # The bake's own time: it ran beside the node's, so the phases overlap.
        phases["controller image"] = baked.seconds

        mark = time.monotonic()
        progress.step(SCOPE, f"controller {baked.tag} on {cloud.controller}, APIs on 127.0.0.1:"
                             f"{min(cloud.public_ports.values())}-{max(cloud.public_ports.values())}")
        container, started = controller.start(config, cloud, keys, baked.tag)
        if started:
            undo.callback(controller.stop, config)
        conn = api.connect(cloud, keys)
        try:
            ready = api.wait_ready(conn, READY_TIMEOUT, lambda: controller.exited(config))
        except WorkbenchError as exc:
            raise CloudError(f"{exc}\n  the services' logs: {controller.log_dir(config)}; "
                             f"the container's: `docker logs {container.name}`") from None
        phases["controller ready"] = time.monotonic() - mark

        mark = time.monotonic()
        made = api.ensure_defaults(conn, cloud, keys, config.cloud.project)
        phases["defaults"] = time.monotonic() - mark
        for item in made:
            progress.detail(f"made {item}")
        registered: dict[str, float] = {}
        if booted:
            mark = time.monotonic()

            mapped: set[str] = set()
            # A VM powered on now counts by its reports after that: its previous boot's look up for a minute.
            since = {vm.name: vm.powered_on for vm in booted if vm.powered_on is not None}

            def seen() -> set[str]:
                # Registered: its compute service up and its host mapped into the cell (schedulable).
                nonlocal mapped
                up = api.services(conn).hypervisors(reported_since=since)
                if up - mapped:
                    mapped = controller.map_hosts(config)
                return up & mapped

            took = hypervisors.wait_registered(config, cloud, booted, seen, REGISTER_TIMEOUT, powered_on)
            registered = {vm.name: (took[vm.name] if vm.started else 0.0) for vm in booted}
            phases["hypervisors"] = time.monotonic() - mark
        undo.pop_all()
    return UpResult(baked.tag, started, node_started, tuple(made), registered, cloud.auth_url,
                    time.monotonic() - start, phases, dict(ready.seen))


# --- status -----------------------------------------------------------------------


@dataclass(frozen=True)
class HypervisorStatus:
    name: str
    address: str
    registered: bool
    # How far its last boot got (the node's timeline: dhcp offer ... reported), and its cloud set-up.
    boot: str
    events: dict[str, float]
    cloud: dict[str, object] | None


@dataclass(frozen=True)
class CloudStatus:
    node: bool
    controller: controller.ControllerState | None
    answering: bool
    error: str
    compute: tuple[api.ServiceState, ...]
    agents: tuple[api.ServiceState, ...]
    hypervisors: tuple[HypervisorStatus, ...]
    capacity: tuple[api.Capacity, ...]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def render(self) -> str:
        lines = [f"networking node: {'serving' if self.node else 'stopped'}"]
        if self.controller is None:
            lines.append("controller: none (fab cloud.up)")
        else:
            how = "running" if self.controller.running else self.controller.status
            lines.append(f"controller: {self.controller.name} {how}, image {self.controller.image}")
        if self.error:
            lines.append(f"  API: {self.error}")
        for service in (*self.compute, *self.agents):
            lines.append(f"  {'up  ' if service.up else 'DOWN'} {service.name:<22} {service.host}")
        for hv in self.hypervisors:
            seen = "registered in nova" if hv.registered else "not registered"
            lines.append(f"hypervisor {hv.name} ({hv.address}): {seen}; last boot: {hv.boot}"
                         + (f", cloud set-up {hv.cloud}" if hv.cloud else ""))
        for c in self.capacity:
            lines.append(f"  capacity {c.name}: vCPU {c.vcpus - c.vcpus_used}/{c.vcpus} free, memory "
                         f"{c.memory_mb - c.memory_mb_used}/{c.memory_mb} MiB, disk {c.disk_gb - c.disk_gb_used}/"
                         f"{c.disk_gb} GiB")
        return "\n".join(lines)


def status(config: Config, inventory: str = "") -> CloudStatus:
    cloud = plan(config, inventory)
    serving = bool(node.serving(config).get("pids")) and netns.exists(netns.namespace_name(config.prefix))
    state = controller.state(config)
    keys = secrets.load(config)
    found: api.Services | None = None
    error = ""
    if state is not None and state.running and keys is not None:
        try:
            found = api.services(api.connect(cloud, keys))
        except api.NOT_YET as exc:
            error = f"not answering: {api.short_error(exc)}"
    elif keys is None:
        error = "no cloud yet (fab cloud.up)"
    registered = found.hypervisors() if found else set()
    lines = {t.node.name: t for t in timeline.build(cloud.inventory, node.node_dir(config))}
    hvs = []
    for hv in hypervisors.hypervisors(cloud):
        line = lines[hv.name]
        origin = min(line.events.values()) if line.events else None
        events = {stage: round(when - origin, 1) for stage, when in line.events.items()} if origin else {}
        hvs.append(HypervisorStatus(hv.name, hv.address, hv.name in registered, line.last, events,
                                    line.cloud(origin)))
    return CloudStatus(serving, state, found is not None, error, found.compute if found else (),
                       found.agents if found else (), tuple(hvs), found.capacity if found else ())


# --- openrc and down -----------------------------------------------------------


def openrc(config: Config, member: bool = False, inventory: str = "") -> dict[str, str]:
    keys = secrets.load(config)
    if keys is None:
        raise CloudError(f"no cloud yet: its passwords are made by the first `fab cloud.up` "
                         f"({secrets.secrets_path(config)} does not exist)")
    return api.openrc(plan(config, inventory), keys, member=member, project=config.cloud.project)


@dataclass(frozen=True)
class DownResult:
    done: tuple[str, ...]
    purged: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def down(config: Config, purge: bool = False) -> DownResult:
    done: list[str] = hypervisors.stop_all(config)
    if controller.stop(config):
        done.append(f"stopped the controller {controller.container_name(config)} (its data is kept)")
    done += node.stop(config)
    purged: list[str] = []
    if purge:
        data = controller.controller_dir(config)
        if data.exists():
            shutil.rmtree(data)
            purged.append(f"the controller's settings, databases, images and keys: {data}")
        if secrets.remove(config):
            purged.append(f"the cloud's passwords: {secrets.secrets_path(config)}")
        # Each hypervisor's file holds the compute services' passwords: a purged cloud leaves none.
        for path in sorted(node.cloud_config_dir(config).glob("*.json")):
            path.unlink()
            purged.append(f"{path.stem}'s cloud configuration: {path}")
        log = node_log(config)
        if log.exists():
            os.unlink(log)
    return DownResult(tuple(done), tuple(purged))


def smoke_test(config: Config, inventory: str = "") -> smoke.SmokeResult:
    """`fab cloud.test`: a server from the workbench's own image, ACTIVE, on the console, answering, deleted."""
    keys = secrets.load(config)
    if keys is None or controller.state(config) is None:
        raise CloudError("no cloud is up: run `fab cloud.up --vms 1` (or power on a hypervisor PC) first")
    try:
        return smoke.run_test(config, plan(config, inventory), keys)
    except api.NOT_YET as exc:
        raise CloudError(f"cloud test: the cloud's API failed: {api.short_error(exc)} (`fab cloud.status`; the "
                         f"services' logs: {controller.log_dir(config)})") from None
