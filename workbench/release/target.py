"""Where releases run: the deploy `Target` protocol and what every target shares.

A target runs a release as a set of instances (one per replica) and points the
environment's frontend at them. The release sequence (workbench/release/releases.py)
speaks only this protocol, so the local Docker engine (workbench/release/docker.py)
and a cloud are interchangeable per environment (`[environments.<env>] target`,
resolved by `releases.target_for`).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from workbench.core.config import Environment, Role

ENV_LABEL = "workbench.environment"
RELEASE_LABEL = "workbench.release"
REPLICA_LABEL = "workbench.replica"
FRONTEND_ROLE = "frontend"
# Sent by the frontend with each answer: which backend served it.
UPSTREAM_HEADER = "X-Workbench-Upstream"
UPSTREAM_NAME = "workbench_frontend"


@dataclass(frozen=True)
class Instance:
    """One running replica of a release: what the target needs to find it again."""

    name: str  # the container's (or server's) name
    tag: str  # the release it runs (`app-12`)
    role: str
    environment: str
    host: str  # its address inside the environment's network ("" when it has none)
    address: str  # host:port of the role's first port, "" for roles without ports


@dataclass(frozen=True)
class DataVolume:
    """Where one data path of a stateful role lives in one environment."""

    name: str
    role: str
    environment: str
    path: str  # where instances mount it (`/var/lib/mysql`)
    size: int = -1  # bytes, -1 when the target cannot tell


@dataclass(frozen=True)
class Member:
    """One member of a pool the workbench deploys (`[pools.<p>] deployed`): an instance with its own data.

    `db1` in staging is reached as `db1` and `db1.staging.wpdn` on the environment's
    network; `settings` and `files` are what the deploy gives it alone (its
    server id, the primary it follows, its TLS key and certificates).
    """

    name: str
    aliases: tuple[str, ...]
    settings: Mapping[str, str] = field(default_factory=dict)
    files: str = ""  # a host directory mounted read-only at MEMBER_FILES ("" for none)


# Where a member's deploy-time files (TLS key and certificates) appear in its instance.
MEMBER_FILES = "/run/workbench/tls"


@dataclass(frozen=True)
class BootImage:
    """What a cloud boots a release from: its image service's image, by id and by the checksum it
    computed at upload (a rollback boots exactly this, never whatever now has the name)."""

    id: str
    checksum: str


@dataclass(frozen=True)
class Plan:
    """What to start: a role's image as a given release in an environment."""

    role: Role
    environment: Environment
    tag: str
    version: int
    image_id: str
    digest: str
    # A deployed pool's members, one instance each, the first the primary; () for plain replicas.
    members: tuple[Member, ...] = ()
    # What a cloud target boots (Target.stage); None on the Docker engine, which runs `digest`.
    boot: BootImage | None = None

    @property
    def replicas(self) -> int:
        return len(self.members) or self.environment.replicas


class Target(Protocol):
    """A place releases are deployed to: the local engine, or a cloud."""

    kind: str

    def stage(self, plan: Plan, recorded: BootImage | None) -> BootImage | None:
        """Make the release's image bootable where it runs, before anything starts: the cloud's image
        (`recorded`, checked, when the ledger names one), or None where the registry's digest is enough."""
        ...

    def has_boot_image(self, boot_image: str) -> bool:
        """Whether the image `stage` made (a release's recorded BootImage id) is still there."""
        ...

    def remove_boot_image(self, boot_image: str) -> None:
        """Delete an image `stage` made (`release.prune`: its releases are outside every retention window)."""
        ...

    def names(self, plan: Plan) -> tuple[str, ...]:
        """The instances `start(plan)` will make, for progress and the ledger."""
        ...

    def start(self, plan: Plan) -> tuple[Instance, ...]:
        """Start every replica of the release beside what runs now; never switch traffic."""
        ...

    def wait_healthy(self, plan: Plan, instances: Sequence[Instance]) -> None:
        """Return once every instance passes the role's health check; DeployFailed otherwise."""
        ...

    def switch(self, environment: Environment, role: Role, instances: Sequence[Instance]) -> None:
        """Send the environment's requests for `role` to `instances` (none: nothing serves)."""
        ...

    def stop(self, environment: Environment, tag: str) -> None:
        """Stop and remove every instance of release `tag`, running or not; nothing if none is left."""
        ...

    def instances(self, environment: Environment, role: str | None = None, tag: str | None = None) -> tuple[
        Instance, ...
    ]:
        """The running instances of the environment, of one role, or of one release."""
        ...

    def hold(self, environment: Environment, tag: str, standby: bool) -> None:
        """Mark the release's running instances as a warm standby (taking no traffic), or as serving again."""
        ...

    def pause(self, environment: Environment, tag: str) -> None:
        """Stop the release's instances cleanly (services shut down, not killed) and keep them for `resume`."""
        ...

    def resume(self, environment: Environment, tag: str) -> tuple[Instance, ...]:
        """Start a paused release's instances again, on the same data; () when none is left."""
        ...

    def data_volumes(self, environment: Environment, role: Role) -> tuple[DataVolume, ...]:
        """The volumes that hold the role's data in the environment (existing ones only)."""
        ...

    def remove_data(self, volume: DataVolume) -> None:
        """Delete one data volume for good; DeployFailed while an instance uses it."""
        ...

    def down(self, environment: Environment, role: str | None = None) -> tuple[str, ...]:
        """Stop every instance of the environment (of one role), the frontend with the whole environment."""
        ...

    def run(self, instance: Instance, argv: Sequence[str], sink: BinaryIO | None = None) -> str:
        """Run a command in a running instance: its output, or streamed into `sink`; DeployFailed if it fails."""
        ...


def environment_variables(plan: Plan) -> dict[str, str]:
    """What an instance is told at deploy time: per-environment settings, then what it runs."""
    return {
        **plan.environment.variables,
        "WORKBENCH_RELEASE": plan.tag,
        "WORKBENCH_VERSION": str(plan.version),
        "WORKBENCH_ROLE": plan.role.name,
        "WORKBENCH_ENVIRONMENT": plan.environment.name,
    }


def upstream_conf(addresses: Sequence[str]) -> str:
    """The frontend's upstream block; with no release yet, a backend that refuses (502)."""
    servers = "".join(f"    server {a};\n" for a in addresses) or "    server 127.0.0.1:1;\n"
    return f"# Written by the workbench at each switch (workbench/release/target.py).\nupstream {UPSTREAM_NAME} {{\n" \
        f"{servers}}}\n"


def serves_frontend(environment: Environment, role: Role) -> bool:
    """Whether a switch of `role` in `environment` moves its frontend."""
    return bool(environment.frontend_port) and environment.frontend_role == role.name


def health_timeout(environment: Environment, default: float) -> float:
    """How long a new instance gets to pass its health check: the environment's say, else the target's."""
    return float(environment.health_timeout) if environment.health_timeout else default


def unhealthy(environment: Environment, instance: str, check: str, timeout: float, last: str) -> str:
    """What a health wait that ran out says, on every target: which check, how long, the last answer, and
    the setting that gives it longer."""
    return (f"{instance} did not pass {check} within {timeout:.0f}s (last: {last}; "
            f"`[environments.{environment.name}] health_timeout` gives it longer)")


def probe(url: str) -> tuple[bool, str]:
    """(answered 200, what happened) for one GET."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, str(getattr(exc, "reason", exc))


def upstream_of(url: str) -> str | None:
    """Which backend the frontend used for one GET (its X-Workbench-Upstream header)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.headers.get(UPSTREAM_HEADER)
    except urllib.error.HTTPError as exc:
        return exc.headers.get(UPSTREAM_HEADER)
    except (urllib.error.URLError, OSError):
        return None
