"""The homelab cloud as a deploy target (`[environments.<env>] target = "openstack"`).

Each replica of a release is a server booted from the release's glance image
(`fab image.publish`, done by `stage` when missing), named by the naming rule:
`app-12.lab.wpdn`, then `app-12-2.lab.wpdn`, which the lab's DNS (the
networking node's) answers while the server lives. A release's replicas share a
server group, so nova spreads them over the hypervisors (one per host when there
are enough). Deploy-time settings reach a server as its user data (the metadata
service), never through the image.

The environment's frontend is the same nginx container as on the Docker target
(published on 127.0.0.1:<frontend_port>), with a leg on the lab LAN at
`[environments.<env>] lab_address`, from which it reaches the servers. Health
is checked from the lab LAN too, as the frontend sees the servers. Roles that
keep data are not run here (releases.py refuses them before anything starts).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import BinaryIO

from workbench.cloud import lab, publish
from workbench.cloud.servers import (
    ENVIRONMENT_KEY,
    FAILURES,
    PREFIX_KEY,
    RELEASE_KEY,
    REPLICA_KEY,
    ROLE_KEY,
    STANDBY_KEY,
    Fleet,
    GlanceImage,
    Server,
    wait_active,
)
from workbench.core import progress
from workbench.core.config import Config, Environment, Role
from workbench.core.errors import DeployFailed
from workbench.release.docker import DockerTarget
from workbench.release.target import (
    BootImage,
    DataVolume,
    Instance,
    Plan,
    environment_variables,
    health_timeout,
    serves_frontend,
    unhealthy,
)

ACTIVE_TIMEOUT = 600.0
HEALTH_TIMEOUT = 240.0
# Under virt_type qemu a server is a whole machine emulated in software (and, on one machine, inside
# an emulated hypervisor): its boot takes this many times longer to reach the role's command.
EMULATED_SLOWDOWN = 5
# The frontend container's interface on the lab LAN.
FRONTEND_INTERFACE = "lab0"
# What the published image's init says on the console once the role's own command runs.
RUNNING_MARKER = "workbench-init: running"


def default_health_timeout(config: Config) -> float:
    """How long a new server gets to pass its health check when its environment does not say."""
    return HEALTH_TIMEOUT * (EMULATED_SLOWDOWN if config.cloud.virt_type == "qemu" else 1)


class OpenStackTarget:
    """Servers on the homelab cloud behind a frontend container on the lab LAN."""

    kind = "openstack"

    def __init__(self, config: Config, frontend_image: str | None = None) -> None:
        self.config = config
        # The frontend is a container on the local engine, as on the Docker target.
        self.local = DockerTarget(config, frontend_image)
        self._fleet: Fleet | None = None

    @property
    def fleet(self) -> Fleet:
        # Connected on first use: `release.list` on a cloud environment needs no cloud.
        if self._fleet is None:
            self._fleet = Fleet(self.config)
        return self._fleet

    # --- names ---------------------------------------------------------------

    def server_name(self, environment: Environment, tag: str, replica: int = 1) -> str:
        """`app-12.lab.wpdn`; the second replica `app-12-2.lab.wpdn` (the role is still the first word)."""
        suffix = f"-{replica}" if replica > 1 else ""
        return f"{tag}{suffix}.{environment.name}.{self.config.workbench.domain}"

    def _tags(self, environment: Environment, role: str | None = None, tag: str | None = None) -> dict[str, str]:
        tags = {PREFIX_KEY: self.config.prefix, ENVIRONMENT_KEY: environment.name}
        if role:
            tags[ROLE_KEY] = role
        if tag:
            tags[RELEASE_KEY] = tag
        return tags

    def _group_name(self, environment: Environment, tag: str) -> str:
        return f"{self.config.prefix}-{environment.name}-{tag}"

    def _security_group_name(self, environment: Environment, role: str) -> str:
        return f"{self.config.prefix}-{environment.name}-{role}"

    # --- the Target protocol -------------------------------------------------

    def stage(self, plan: Plan, recorded: BootImage | None) -> BootImage:
        wanted = GlanceImage(recorded.id, recorded.checksum) if recorded else None
        try:
            image = self.fleet.stage(plan.role.name, plan.image_id, wanted)
        except FAILURES as exc:
            raise DeployFailed(f"the image of {plan.tag} is not bootable on the cloud: {exc}") from None
        return BootImage(image.id, image.checksum)

    def has_boot_image(self, boot_image: str) -> bool:
        return self.fleet.has_image(boot_image)

    def remove_boot_image(self, boot_image: str) -> None:
        self.fleet.delete_image(boot_image)

    def names(self, plan: Plan) -> tuple[str, ...]:
        return tuple(self.server_name(plan.environment, plan.tag, i) for i in range(1, plan.replicas + 1))

    def start(self, plan: Plan) -> tuple[Instance, ...]:
        if plan.boot is None:
            raise ValueError(f"{plan.tag}: start before stage")
        env, role = plan.environment, plan.role
        # Left by an interrupted promote of this very tag.
        self.stop(env, plan.tag)
        try:
            hosts = self.fleet.hypervisors()
            if not hosts:
                raise DeployFailed("no hypervisor of the cloud can take a server (nova-compute and its network "
                                   "agent up): power one on (`fab cloud.up --vms 1`) and see `fab cloud.status`")
            problem = self.fleet.flavor_problem(env.flavor, plan.boot.id)
            if problem:
                raise DeployFailed(f"{self.config.path} [environments.{env.name}] flavor = {env.flavor!r}: {problem}")
            groups = ["default"]
            if role.ports:
                groups.append(self.fleet.security_group(self._security_group_name(env, role.name), role.ports))
            spread = ""
            if plan.replicas > 1:
                spread = self.fleet.server_group(self._group_name(env, plan.tag), plan.replicas, len(hosts))
            ids = []
            for replica, name in enumerate(self.names(plan), start=1):
                settings = {**environment_variables(plan), "WORKBENCH_HOSTNAME": name}
                metadata = {**self._tags(env, role.name, plan.tag), REPLICA_KEY: str(replica), STANDBY_KEY: "0"}
                ids.append(self.fleet.boot(name, GlanceImage(plan.boot.id, plan.boot.checksum), env.flavor,
                                           publish.user_data(settings), metadata, groups, spread))
            started = []
            for server_id in ids:
                server = wait_active(self.fleet, server_id, ACTIVE_TIMEOUT)
                progress.detail(f"{server.name} ACTIVE on {self.fleet.host_of(server.id)} at {server.addresses[0]}")
                lab.set_name(self.config, server.name, server.addresses[0])
                started.append(self._instance(server, env))
        except FAILURES as exc:
            raise DeployFailed(f"the servers of {plan.tag} did not start: {exc}") from None
        return tuple(started)

    def wait_healthy(self, plan: Plan, instances: Sequence[Instance]) -> None:
        for instance in instances:
            self._wait_healthy(plan, instance)

    def _wait_healthy(self, plan: Plan, instance: Instance) -> None:
        """Until the role's health check answers 200 from the lab LAN (without one: its command runs)."""
        found = [s for s in self.fleet.servers(**self._tags(plan.environment, tag=plan.tag)) if s.name == instance.name]
        if not found:
            raise DeployFailed(f"{instance.name} disappeared while starting")
        server = found[0]
        url = f"http://{instance.address}{plan.role.health}" if plan.role.health and instance.address else ""
        timeout = health_timeout(plan.environment, default_health_timeout(self.config))
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            try:
                if self.fleet.server(server.id).status != "ACTIVE":
                    raise DeployFailed(f"{instance.name} stopped while starting; its console ends:\n"
                                       f"{self.fleet.console_tail(server.id)}")
                if url:
                    status, _ = lab.lab_get(self.config, url)
                    if status == 200:
                        return
                    last = f"HTTP {status}" if status else "no answer"
                elif RUNNING_MARKER in self.fleet.console_tail(server.id, lines=200):
                    return
            except FAILURES as exc:
                last = str(exc)
            progress.activity(f"waiting for {instance.name} to be healthy")
            time.sleep(1.0)
        what = f"its health check GET {plan.role.health} on {instance.address} from the lab LAN" if url \
            else f"'{RUNNING_MARKER}' on its console"
        raise DeployFailed(f"{unhealthy(plan.environment, instance.name, what, timeout, last)}; its "
                           f"console ends:\n{self.fleet.console_tail(server.id)}")

    def switch(self, environment: Environment, role: Role, instances: Sequence[Instance]) -> None:
        if not serves_frontend(environment, role):
            return
        self.frontend(environment)
        self.local.switch(environment, role, instances)

    def frontend(self, environment: Environment) -> None:
        """The environment's frontend container, with its leg on the lab LAN."""
        container = self.local.frontend(environment)
        container.reload()
        port = "nbfe" + hashlib.sha256(f"{self.config.prefix}-{environment.name}".encode()).hexdigest()[:8]
        try:
            lab.attach(self.config, int(container.attrs["State"]["Pid"]), port, FRONTEND_INTERFACE,
                       environment.lab_address, self.fleet.plan.prefixlen)
        except FAILURES as exc:
            raise DeployFailed(f"the {environment.name} frontend cannot reach the lab LAN: {exc}") from None

    def stop(self, environment: Environment, tag: str) -> None:
        self._delete(self.fleet.servers(**self._tags(environment, tag=tag)))
        self.fleet.delete_server_group(self._group_name(environment, tag))

    def _delete(self, servers: Sequence[Server]) -> None:
        for server in servers:
            lab.set_name(self.config, server.name, None)
        self.fleet.delete([s.id for s in servers])

    def instances(self, environment: Environment, role: str | None = None, tag: str | None = None) -> tuple[
        Instance, ...
    ]:
        running = [s for s in self.fleet.servers(**self._tags(environment, role, tag)) if s.status == "ACTIVE"]
        running.sort(key=lambda s: (s.metadata.get(RELEASE_KEY, ""), int(s.metadata.get(REPLICA_KEY) or 0)))
        return tuple(self._instance(s, environment) for s in running)

    def _instance(self, server: Server, environment: Environment) -> Instance:
        role_name = server.metadata.get(ROLE_KEY, "")
        role = self.config.roles.get(role_name)
        ip = server.addresses[0] if server.addresses else ""
        address = f"{ip}:{role.ports[0]}" if ip and role and role.ports else ""
        return Instance(server.name, server.metadata.get(RELEASE_KEY, ""), role_name, environment.name, ip, address)

    def hold(self, environment: Environment, tag: str, standby: bool) -> None:
        for server in self.fleet.servers(**self._tags(environment, tag=tag)):
            self.fleet.set_metadata(server.id, {STANDBY_KEY: "1" if standby else "0"})

    def pause(self, environment: Environment, tag: str) -> None:
        raise DeployFailed(f"{tag}: the openstack target does not pause releases (it runs roles without data only)")

    def resume(self, environment: Environment, tag: str) -> tuple[Instance, ...]:
        raise DeployFailed(f"{tag}: the openstack target does not resume releases (it runs roles without data only)")

    def data_volumes(self, environment: Environment, role: Role) -> tuple[DataVolume, ...]:
        return ()  # roles that keep data are refused on this target: it holds none

    def remove_data(self, volume: DataVolume) -> None:
        raise DeployFailed(f"{volume.name}: the openstack target keeps no data volumes")

    def down(self, environment: Environment, role: str | None = None) -> tuple[str, ...]:
        servers = self.fleet.servers(**self._tags(environment, role))
        self._delete(servers)
        for tag in {s.metadata.get(RELEASE_KEY, "") for s in servers}:
            self.fleet.delete_server_group(self._group_name(environment, tag))
        for name in [role] if role else sorted(self.config.roles):
            self.fleet.delete_security_group(self._security_group_name(environment, name))
        stopped = tuple(s.name for s in servers)
        # The frontend container (and its network) go with the whole environment.
        return stopped + (self.local.down(environment) if role is None else ())

    def run(self, instance: Instance, argv: Sequence[str], sink: BinaryIO | None = None) -> str:
        raise DeployFailed(f"{instance.name}: the openstack target has no channel to run {argv[0]} in a server")
