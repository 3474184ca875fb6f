"""`fab status`: the whole workbench on one screen.

The base image; each role's newest image and its test result; what serves in
each environment, since when and whether it answers its health check; the
registry and the package cache (running, size on disk); the sandboxes; the
netboot node and its nodes. Each part is read from where it lives (the engine,
the ledger, the daemons' pid files, Vagrant, the network namespace); a part
that cannot be read says why instead of failing the whole screen.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from workbench.build import aptcache, base, disks, images
from workbench.core import engine, progress
from workbench.core.config import Config
from workbench.core.errors import WorkbenchError
from workbench.release import registry, releases, target

T = TypeVar("T")


@dataclass(frozen=True)
class BaseStatus:
    tag: str
    built: bool
    id: str
    size: int
    age_seconds: int


@dataclass(frozen=True)
class RoleStatus:
    """A role's newest accepted image (`tag` is empty when it was never baked)."""

    role: str
    tag: str
    version: int
    age_seconds: int
    size: int
    verify: str
    tests: str


@dataclass(frozen=True)
class ReleaseStatus:
    role: str
    tag: str
    image: str
    age_seconds: int
    instances: int
    healthy: bool
    health: str  # `GET /health: HTTP 200`, `running`, `not running`


@dataclass(frozen=True)
class EnvironmentStatus:
    name: str
    frontend: str  # its address, "" when it has none
    frontend_answers: bool
    releases: tuple[ReleaseStatus, ...]


@dataclass(frozen=True)
class DaemonStatus:
    """The registry or the package cache: running, and how much it holds."""

    name: str
    running: bool
    address: str
    pid: int | None
    data: str
    size: int


@dataclass(frozen=True)
class SandboxStatus:
    name: str
    role: str
    state: str
    provider: str
    address: str


@dataclass(frozen=True)
class NodeStatus:
    name: str
    mac: str
    address: str
    last: str  # the last boot stage seen: dhcp, ipxe, kernel, ..., reported


@dataclass(frozen=True)
class NetbootStatus:
    running: bool
    namespace: str
    interface: str
    nodes: tuple[NodeStatus, ...]


@dataclass(frozen=True)
class WorkbenchStatus:
    """What `fab status` shows; `problems` says which parts could not be read, and why."""

    config: str
    prefix: str
    base: BaseStatus | None
    roles: tuple[RoleStatus, ...]
    environments: tuple[EnvironmentStatus, ...]
    registry: DaemonStatus | None
    cache: DaemonStatus | None
    sandboxes: tuple[SandboxStatus, ...]
    netboot: NetbootStatus | None
    problems: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def status(config: Config) -> WorkbenchStatus:
    problems: list[str] = []

    def read(part: str, reader: Callable[[Config], T], empty: T) -> T:
        try:
            return reader(config)
        except WorkbenchError as exc:
            problems.append(f"{part}: {exc}")
            return empty

    return WorkbenchStatus(
        config=str(config.path),
        prefix=config.prefix,
        base=read("base", _base, None),
        roles=read("roles", _roles, ()),
        environments=read("environments", _environments, ()),
        registry=read("registry", _registry, None),
        cache=read("package cache", _cache, None),
        sandboxes=read("sandboxes", _sandboxes, ()),
        netboot=read("netboot", _netboot, None),
        problems=tuple(problems),
    )


def _age(iso: str) -> int:
    try:
        return int((datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds())
    except ValueError:
        return -1


def _base(config: Config) -> BaseStatus:
    tag = base.base_tag(config)
    found = base.find_base(config)
    if found is None:
        return BaseStatus(tag, False, "", 0, -1)
    image = engine.get_image(found.id)
    built = image.labels.get("workbench.built", "") if image is not None else ""
    return BaseStatus(tag, True, found.id, found.size, _age(built))


def _roles(config: Config) -> tuple[RoleStatus, ...]:
    newest: dict[str, images.ImageInfo] = {}
    for found in images.list_images(config) + disks.list_disks(config):
        if found.role not in newest or found.version > newest[found.role].version:
            newest[found.role] = found
    out = []
    for name in config.roles:
        i = newest.get(name)
        out.append(RoleStatus(name, i.tag, i.version, i.age_seconds, i.size, i.verify, i.tests) if i
                   else RoleStatus(name, "", 0, -1, 0, "", ""))
    return tuple(out)


def _environments(config: Config) -> tuple[EnvironmentStatus, ...]:
    serving = releases.current(config)
    out = []
    for env in config.environments.values():
        mine = [r for r in serving if r.environment == env.name]
        frontend = f"http://127.0.0.1:{env.frontend_port}" if env.frontend_port else ""
        answers = bool(frontend) and bool(mine) and target.probe(f"{frontend}/")[0]
        if not mine and not frontend:
            continue
        deploy = releases.target_for(config, env) if mine else None
        rows = []
        for r in mine:
            assert deploy is not None
            role = config.role(r.role)
            running = deploy.instances(env, r.role, r.instances_tag)
            if not running:
                healthy, health = False, "not running"
            elif role.health and running[0].address:
                checks = [target.probe(f"http://{i.address}{role.health}") for i in running]
                healthy = all(ok for ok, _ in checks)
                health = f"GET {role.health}: " + ", ".join(sorted({said for _, said in checks}))
            else:
                healthy, health = True, "running"
            rows.append(ReleaseStatus(r.role, r.tag, r.image, _age(r.at), len(running), healthy, health))
        out.append(EnvironmentStatus(env.name, frontend, answers, tuple(rows)))
    return tuple(out)


def _registry(config: Config) -> DaemonStatus:
    found = registry.status(config)
    data = registry.directory(config) / "data"
    return DaemonStatus("registry", found is not None, f"{config.registry.host}:{config.registry.port}",
                        found.pid if found else None, str(data), du(data))


def _cache(config: Config) -> DaemonStatus:
    pid = aptcache.running_pid(config) if config.cache.enabled else None
    data = aptcache.directory(config) / "data"
    return DaemonStatus("package cache", pid is not None, f"port {config.cache.port} (while a bake runs)", pid,
                        str(data), du(data))


def _sandboxes(config: Config) -> tuple[SandboxStatus, ...]:
    from workbench.sandbox import sandboxes

    return tuple(SandboxStatus(s.name, s.role, s.state, s.provider, s.address) for s in sandboxes.status(config)
                 if s.state != "not_created")


def _netboot(config: Config) -> NetbootStatus:
    from workbench.netboot import inventory, netns, node, timeline

    namespace = netns.namespace_name(config.prefix)
    running = netns.exists(namespace)
    interface = str(node.serving(config).get("interface", "")) if running else ""
    inv = inventory.load(config)
    lines = timeline.build(inv, node.node_dir(config))
    nodes = tuple(NodeStatus(t.node.name, t.node.mac, t.node.address, t.last) for t in lines)
    return NetbootStatus(running, namespace, interface, nodes)


def du(path: Path) -> int:
    """Bytes under `path` (0 when it does not exist)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


# --- the screen -----------------------------------------------------------------


def render(report: WorkbenchStatus) -> str:
    """`fab status` for a person: one screen."""
    size, age = progress.human_size, images.human_age
    out = [f"workbench {report.prefix} ({report.config})"]
    b = report.base
    if b is not None:
        out.append(f"base          {b.tag}  " + (f"built {age(b.age_seconds)} ago, {size(b.size)}" if b.built
                                                  else "not built (fab image.base)"))
    out.append("roles")
    for r in report.roles:
        if r.tag:
            out.append(f"  {r.role:<12} {r.tag:<28} {age(r.age_seconds):>5} ago  {r.verify}: {r.tests}")
        else:
            out.append(f"  {r.role:<12} {'-':<28} {'':>5}      never baked (fab image.bake {r.role})")
    out.append("environments")
    if not report.environments:
        out.append("  nothing released (fab release.promote <role> --env <environment>)")
    for e in report.environments:
        answers = (" answers" if e.frontend_answers else " does not answer") if e.releases else ""
        front = f"frontend {e.frontend}{answers}" if e.frontend else "no frontend"
        out.append(f"  {e.name:<12} {front}")
        for rel in e.releases:
            mark = "ok" if rel.healthy else "UNHEALTHY"
            out.append(f"    {rel.tag:<10} {rel.image:<26} {age(rel.age_seconds):>5} ago  {rel.instances} running  "
                       f"{mark} ({rel.health})")
        if not e.releases:
            out.append("    nothing serves")
    for d in (report.registry, report.cache):
        if d is not None:
            state = f"running (pid {d.pid})" if d.running else "stopped"
            out.append(f"{d.name:<13} {state}, {d.address}, {size(d.size)} in {d.data}")
    out.append("sandboxes     " + (", ".join(f"{s.name} {s.state} {s.address or ''}".rstrip()
                                            for s in report.sandboxes) or "none"))
    n = report.netboot
    if n is not None:
        where = f" on the LAN of {n.interface}" if n.interface else ""
        out.append(f"netboot       node {'running' if n.running else 'stopped'} ({n.namespace}{where})")
        for nd in n.nodes:
            out.append(f"  {nd.name:<22} {nd.mac}  {nd.address:<15} last: {nd.last}")
    for problem in report.problems:
        out.append(f"(could not read {problem})")
    return "\n".join(out)
