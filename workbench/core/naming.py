"""Host names declare roles: `<role>[<n>][-<variant>].<environment>.<domain>`.

`redis-sessions.production.wpdn` is role redis, variant sessions, environment
production, domain wpdn; `hv1.lab.wpdn` is the first host of role `hv` (an alias
of hypervisor) in the lab. One parser serves bakes, sandboxes, netboot and releases.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from workbench.core.config import Config
from workbench.core.errors import ConfigError, HostNameError

# The first label: a role (letters and digits, starting with a letter, ending
# with a letter), an optional instance number, an optional variant after '-'.
_HOST_LABEL = re.compile(
    r"^(?P<role>[a-z](?:[a-z0-9]*[a-z])?)(?P<index>[0-9]+)?(?:-(?P<variant>[a-z0-9]+(?:-[a-z0-9]+)*))?$"
)
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

FORM = "<role>[<n>][-<variant>].<environment>.<domain>"


@dataclass(frozen=True)
class HostName:
    fqdn: str
    role: str
    environment: str
    domain: str
    variant: str | None = None
    index: int | None = None

    @property
    def short(self) -> str:
        return self.fqdn.split(".", 1)[0]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def parse(name: str, config: Config) -> HostName:
    """Parse `name` and check its role, environment and domain against `config`."""
    host = parse_syntax(name, config.workbench.domain)
    try:
        role = config.role(host.role)
    except ConfigError:
        known = ", ".join(sorted(config.roles)) or "none"
        raise HostNameError(
            f"host name {name!r}: unknown role {host.role!r} (roles in {config.path.name}: {known})"
        ) from None
    if host.environment not in config.environments:
        known = ", ".join(config.environments)
        raise HostNameError(
            f"host name {name!r}: unknown environment {host.environment!r} "
            f"(environments in {config.path.name}: {known})"
        )
    return HostName(host.fqdn, role.name, host.environment, host.domain, host.variant, host.index)


def parse_syntax(name: str, domain: str) -> HostName:
    """Parse `name` by form alone: role (as written), environment, domain."""
    fqdn = name.strip().lower().rstrip(".")
    if not fqdn:
        raise HostNameError(f"empty host name: expected {FORM}")
    labels = fqdn.split(".")
    bad = [label for label in labels if not _LABEL.match(label)]
    if bad:
        raise HostNameError(
            f"host name {name!r}: label {bad[0]!r} is not a DNS label (a-z, 0-9 and '-', not at either end)"
        )
    suffix = "." + domain
    if not fqdn.endswith(suffix):
        raise HostNameError(f"host name {name!r} is not in the domain {domain!r}: expected {FORM}")
    head = fqdn[: -len(suffix)].split(".")
    if len(head) != 2:
        raise HostNameError(
            f"host name {name!r}: expected exactly a host and an environment before .{domain} ({FORM})"
        )
    host_label, environment = head
    match = _HOST_LABEL.match(host_label)
    if not match:
        raise HostNameError(
            f"host name {name!r}: {host_label!r} is not <role>[<n>][-<variant>] "
            "(role: letters and digits ending in a letter, e.g. redis-sessions, hv1)"
        )
    index = match["index"]
    return HostName(
        fqdn=fqdn,
        role=match["role"],
        environment=environment,
        domain=domain,
        variant=match["variant"],
        index=int(index) if index is not None else None,
    )


def host_name(role: str, environment: str, domain: str, variant: str | None = None) -> str:
    """The name a host of `role` gets in `environment`: the inverse of `parse`."""
    head = role if variant is None else f"{role}-{variant}"
    return f"{head}.{environment}.{domain}"


def data_slug(path: str) -> str:
    """`/var/lib/mysql` -> `var-lib-mysql`: a data path as part of a volume or directory name."""
    return "-".join(part for part in path.strip("/").split("/") if part) or "root"
