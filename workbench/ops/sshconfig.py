"""`fab ssh.config`: an OpenSSH client configuration where every internal host is behind the jump box.

The inventory is the configuration's pools (each member a host, reached at its
private address) and the releases serving now (each `<role>.<env>.<domain>`,
reached through the environment's deploy target at its instance's address). The jump
box is the first member of the pool whose role is `jumpbox`, reached at its
public address; every other host gets `ProxyJump <jump box>`:

    Host db1
        HostName 10.0.0.5
        User ops
        ProxyJump jump1
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from workbench.core import pools
from workbench.core.config import Config
from workbench.core.errors import ConfigError, WorkbenchError
from workbench.core.files import write_whole

JUMPBOX_ROLE = "jumpbox"
DEFAULT_USER = "ops"


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    port: int = 22
    sources: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Inventory:
    jump: tuple[Host, ...]
    internal: tuple[Host, ...]
    notes: tuple[str, ...] = ()

    def names(self) -> list[str]:
        return [h.name for h in (*self.jump, *self.internal)]


def _pool_hosts(config: Config) -> tuple[list[Host], list[Host]]:
    jump: list[Host] = []
    internal: dict[str, Host] = {}
    for name in sorted(config.pools):
        pool = config.pools[name]
        if pool.deployed:
            # Its members are releases, one per environment (db1.staging.wpdn): not one address each.
            continue
        for m in pools.members(pool):
            source = f"pool {name}"
            if pool.role == JUMPBOX_ROLE:
                jump.append(Host(m.name, m.public or m.private, m.ssh_port, (source,)))
                continue
            known = internal.get(m.name)
            if known and known.address != m.private:
                raise ConfigError(
                    f"host {m.name!r} has two private addresses, {known.address} ({', '.join(known.sources)}) and "
                    f"{m.private} ({source}), in {config.path}: one host, one address"
                )
            sources = (*known.sources, source) if known else (source,)
            internal[m.name] = Host(m.name, m.private, m.ssh_port, sources)
    return jump, list(internal.values())


def _release_hosts(config: Config) -> tuple[list[Host], list[str]]:
    """The releases serving now, at their instances' addresses; notes on those without one."""
    from workbench.release import ledger
    from workbench.release.releases import target_for

    if not ledger.ledger_path(config).is_file():
        return [], []
    with ledger.opened(config) as led:
        serving = led.serving()
    hosts, notes = [], []
    for release in sorted(serving, key=lambda r: (r.environment, r.role)):
        if release.role == JUMPBOX_ROLE:
            continue
        name = f"{release.role}.{release.environment}.{config.workbench.domain}"
        environment = config.environment(release.environment)
        try:
            found = target_for(config, environment).instances(environment, tag=release.instances_tag)
        except WorkbenchError:
            found = ()
        addressed = [i for i in found if i.host]
        if not addressed:
            notes.append(f"{name} (release {release.tag}): no running instance, left out")
        for index, instance in enumerate(addressed, start=1):
            # Replicas beyond the first are numbered like the naming rule's pool members.
            host = name if index == 1 else f"{release.role}{index}.{release.environment}.{config.workbench.domain}"
            hosts.append(Host(host, instance.host, 22, (f"release {release.tag}",)))
    return hosts, notes


def inventory(config: Config, *, releases: bool = True) -> Inventory:
    """Every host the configuration knows: jump boxes, then internal hosts by name."""
    jump, internal = _pool_hosts(config)
    notes: list[str] = []
    if releases:
        release_hosts, notes = _release_hosts(config)
        names = {h.name for h in internal}
        internal += [h for h in release_hosts if h.name not in names]
    return Inventory(tuple(jump), tuple(sorted(internal, key=lambda h: h.name)), tuple(notes))


def _block(host: Host, options: list[tuple[str, str]]) -> list[str]:
    lines = [f"# {', '.join(host.sources)}", f"Host {host.name}", f"    HostName {host.address}"]
    if host.port != 22:
        lines.append(f"    Port {host.port}")
    lines += [f"    {key} {value}" for key, value in options if value]
    return [*lines, ""]


def render(
    config: Config,
    inv: Inventory,
    *,
    user: str = DEFAULT_USER,
    identity_file: str = "",
    known_hosts: str = "",
    only: str = "",
) -> str:
    """The client configuration (just `only` and its jump box when given)."""
    if not inv.jump:
        raise ConfigError(
            f"no jump box in {config.path}: declare a pool of role {JUMPBOX_ROLE!r} with its public address, "
            f'e.g. [pools.jump] role = "{JUMPBOX_ROLE}" members = [{{ name = "jump1", private = "10.0.0.2", '
            'public = "203.0.113.2" }]'
        )
    jump = inv.jump[0]
    if only and only not in inv.names():
        known = ", ".join(inv.names()) or "none"
        raise ConfigError(
            f"host {only!r} is not in the inventory (hosts: {known}); add it as a member of a [pools.<name>] "
            f"table in {config.path}, or promote its role"
        )
    common = [("User", user), ("IdentityFile", identity_file), ("IdentitiesOnly", "yes" if identity_file else "")]
    out = [
        f"# Generated by `fab ssh.config` from {config.path}.",
        f"# Every internal host is reached through the jump box {jump.name} ({jump.address}:{jump.port}).",
        *(f"# {note}" for note in inv.notes),
        "",
    ]
    for host in inv.jump:
        if not only or host.name in (only, jump.name):
            out += _block(host, common)
    for host in inv.internal:
        if not only or host.name == only:
            out += _block(host, [*common, ("ProxyJump", jump.name)])
    if known_hosts:
        # Sandbox hosts come and go with new host keys: remember them in a file of
        # their own, accepting a new host but never a changed key.
        out += ["Host *", f"    UserKnownHostsFile {known_hosts}", "    StrictHostKeyChecking accept-new", ""]
    return "\n".join(out)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, text, 0o600)
    return path
