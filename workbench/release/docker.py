"""The embedded default deploy target: the local Docker engine.

Per environment it keeps a private bridge network `<prefix>-<env>`, an nginx
frontend container (the `frontend` role) published on 127.0.0.1:<frontend_port>,
and one container per replica of each role release. A switch rewrites the
frontend's upstream file and runs `nginx -s reload` (nginx keeps its listening
socket and lets old workers finish their requests), then waits until the old
workers are gone. Nothing is switched to a container that is not healthy.
"""

from __future__ import annotations

import contextlib
import io
import socket
import tarfile
import time
from collections.abc import Sequence
from typing import BinaryIO

import docker.errors
from docker.models.containers import Container

from workbench.build import images
from workbench.core import engine, pools, progress
from workbench.core.config import Config, Environment, Role
from workbench.core.errors import DeployFailed
from workbench.core.naming import data_slug
from workbench.release.target import (
    ENV_LABEL,
    FRONTEND_ROLE,
    MEMBER_FILES,
    RELEASE_LABEL,
    REPLICA_LABEL,
    BootImage,
    DataVolume,
    Instance,
    Plan,
    environment_variables,
    health_timeout,
    probe,
    serves_frontend,
    unhealthy,
    upstream_conf,
    upstream_of,
)

# Written into the frontend image by salt/frontend; the site includes it.
UPSTREAM_DIR = "/etc/nginx/workbench"
UPSTREAM_FILE = "upstream.conf"
HEALTH_TIMEOUT = 90.0
DRAIN_TIMEOUT = 15.0
# How long monit gets to stop a role's services (MariaDB flushes its buffers).
QUIESCE_TIMEOUT = 120.0
DATA_LABEL = "workbench.data"
# The deployed pool member (`db2`) an instance or a data volume belongs to.
MEMBER_LABEL = "workbench.member"
# Appended to the names of a release's containers while they are a warm standby.
STANDBY_SUFFIX = "-standby"


class DockerTarget:
    """Containers, a network and an nginx frontend on the local engine."""

    kind = "docker"

    def __init__(self, config: Config, frontend_image: str | None = None) -> None:
        self.config = config
        self.prefix = config.prefix
        # Found lazily: a rollback of a role without a frontend does not need one.
        self._frontend_image = frontend_image

    # --- names ---------------------------------------------------------------

    def network_name(self, environment: Environment) -> str:
        return f"{self.prefix}-{environment.name}"

    def frontend_name(self, environment: Environment) -> str:
        return f"{self.prefix}-{environment.name}-frontend"

    def container_name(self, environment: Environment, tag: str, replica: int = 1) -> str:
        # A single replica keeps the plain name (`wb-staging-app-3`); more are numbered.
        suffix = f"-{replica}" if replica > 1 else ""
        return f"{self.prefix}-{environment.name}-{tag}{suffix}"

    def _labels(self, environment: Environment, role: str, tag: str = "") -> dict[str, str]:
        labels = {engine.PREFIX_LABEL: self.prefix, ENV_LABEL: environment.name, engine.ROLE_LABEL: role}
        if tag:
            labels[RELEASE_LABEL] = tag
        return labels

    # --- the environment ---------------------------------------------------

    def network(self, environment: Environment) -> str:
        name = self.network_name(environment)
        client = engine.client()
        if not client.networks.list(names=[name]):
            client.networks.create(name, driver="bridge", labels=self._labels(environment, "network"))
        return name

    def _container(self, name: str) -> Container | None:
        try:
            return engine.client().containers.get(name)
        except docker.errors.NotFound:
            return None

    def _instance(self, container: Container, environment: Environment) -> Instance:
        container.reload()
        networks = container.attrs["NetworkSettings"]["Networks"]
        ip = (networks.get(self.network_name(environment)) or {}).get("IPAddress", "")
        if not ip:
            raise DeployFailed(f"container {container.name} has no address on {self.network_name(environment)}")
        role_name = container.labels.get(engine.ROLE_LABEL, "")
        role = self.config.roles.get(role_name)
        address = f"{ip}:{role.ports[0]}" if role and role.ports else ""
        return Instance(container.name, container.labels.get(RELEASE_LABEL, ""), role_name, environment.name, ip,
                        address)

    # --- the Target protocol -------------------------------------------------

    def stage(self, plan: Plan, recorded: BootImage | None) -> BootImage | None:
        return None  # the engine runs the image by the digest the registry gave it

    def has_boot_image(self, boot_image: str) -> bool:
        return False  # stage makes none

    def remove_boot_image(self, boot_image: str) -> None:
        pass  # stage makes none

    def names(self, plan: Plan) -> tuple[str, ...]:
        count = plan.replicas
        return tuple(self.container_name(plan.environment, plan.tag, i) for i in range(1, count + 1))

    def start(self, plan: Plan) -> tuple[Instance, ...]:
        network = self.network(plan.environment)
        for stale in self._release_containers(plan.environment, tag=plan.tag):
            # Left by an interrupted promote of this very tag.
            engine.remove_container(stale)
        # Pools the role uses (workbench/core/pools.py): variables and a read-only mount.
        extra = pools.container_options(self.config, plan.role.name, plan.environment.name)
        fqdn = f"{plan.role.name}.{plan.environment.name}.{self.config.workbench.domain}"
        started = []
        for replica, name in enumerate(self.names(plan), start=1):
            member = plan.members[replica - 1] if plan.members else None
            mounts = dict(extra.get("volumes") or {})
            for volume in self._ensure_data(plan, member.name if member else ""):
                mounts[volume.name] = {"bind": volume.path, "mode": "rw"}
            if member and member.files:
                mounts[member.files] = {"bind": MEMBER_FILES, "mode": "ro"}
            # Stable names on the environment's network, whichever release runs: `db.staging.wpdn`
            # (a pool's primary), `db2`, `db2.staging.wpdn` (each member).
            aliases = [*(member.aliases if member else ()), *([fqdn] if replica == 1 or not member else [])]
            try:
                container = engine.client().containers.run(
                    plan.image_id,
                    detach=True,
                    name=name,
                    hostname=member.aliases[-1] if member else fqdn,
                    network=network,
                    networking_config={network: engine.client().api.create_endpoint_config(aliases=aliases)},
                    environment={**extra.get("environment", {}), **environment_variables(plan),
                                 **(member.settings if member else {})},
                    volumes=mounts or None,
                    # Linux capabilities the role asks for ([roles.<r>] capabilities).
                    cap_add=list(plan.role.capabilities) or None,
                    labels={
                        **self._labels(plan.environment, plan.role.name, plan.tag),
                        REPLICA_LABEL: str(replica),
                        "workbench.digest": plan.digest,
                        **({MEMBER_LABEL: member.name} if member else {}),
                    },
                )
            except docker.errors.APIError as exc:
                raise DeployFailed(f"cannot start {name} from {plan.image_id[:19]}: {exc.explanation}") from None
            started.append(self._instance(container, plan.environment))
        return tuple(started)

    def wait_healthy(self, plan: Plan, instances: Sequence[Instance]) -> None:
        for instance in instances:
            self._wait_healthy(plan, instance)

    def _wait_healthy(self, plan: Plan, instance: Instance) -> None:
        """Until the role's health check answers 200 (or, without one, it keeps running)."""
        container = self._container(instance.name)
        timeout = health_timeout(plan.environment, HEALTH_TIMEOUT)
        deadline = time.monotonic() + timeout
        settle = time.monotonic() + 2.0
        last = "no answer yet"
        while time.monotonic() < deadline:
            if container is None:
                raise DeployFailed(f"{instance.name} disappeared while starting")
            container.reload()
            if container.status not in ("created", "running"):
                tail = container.logs(tail=15).decode(errors="replace").strip()
                raise DeployFailed(f"{instance.name} exited while starting ({container.status}); its last output:\n"
                                   f"{tail}")
            if plan.role.health:
                ok, last = probe(f"http://{instance.address}{plan.role.health}")
                if ok:
                    return
            elif instance.address:
                # No HTTP check: the role's first port accepting connections is its sign of life.
                ok, last = _accepts(instance.address)
                if ok:
                    return
            elif time.monotonic() > settle:
                return
            time.sleep(0.1)
        check = f"its health check GET {plan.role.health} on {instance.address}" if plan.role.health \
            else f"a connection to {instance.address}"
        raise DeployFailed(unhealthy(plan.environment, instance.name, check, timeout, last))

    def switch(self, environment: Environment, role: Role, instances: Sequence[Instance]) -> None:
        """Point the environment's frontend at `instances` (when the frontend serves this role)."""
        if not serves_frontend(environment, role):
            return
        frontend = self.frontend(environment)
        addresses = [i.address for i in instances if i.address]
        _put_file(frontend, UPSTREAM_DIR, UPSTREAM_FILE, upstream_conf(addresses))
        # One exec: a config nginx refuses is never reloaded.
        _exec(frontend, ["sh", "-c", "nginx -t -q && nginx -s reload"])
        if addresses:
            self._wait_switched(environment, set(addresses))
        _wait_drained(frontend)

    def stop(self, environment: Environment, tag: str) -> None:
        for container in self._release_containers(environment, tag=tag):
            if container.status == "running" and container.labels.get(engine.ROLE_LABEL) in self._stateful():
                # A new release that failed its check has its server running on the data too.
                _stop_services(container)
            with contextlib.suppress(docker.errors.APIError):
                container.stop(timeout=10)
            engine.remove_container(container)

    def instances(self, environment: Environment, role: str | None = None, tag: str | None = None) -> tuple[
        Instance, ...
    ]:
        running = [c for c in self._release_containers(environment, role, tag) if c.status == "running"]
        return tuple(self._instance(c, environment) for c in sorted(running, key=lambda c: c.name))

    def hold(self, environment: Environment, tag: str, standby: bool) -> None:
        # Labels cannot change on a container; its name can, and shows in `docker ps`.
        for container in self._release_containers(environment, tag=tag):
            plain = container.name.removesuffix(STANDBY_SUFFIX)
            wanted = plain + STANDBY_SUFFIX if standby else plain
            if container.name != wanted:
                container.rename(wanted)

    def pause(self, environment: Environment, tag: str) -> None:
        for container in self._release_containers(environment, tag=tag):
            if container.status == "running":
                _stop_services(container)
                with contextlib.suppress(docker.errors.APIError):
                    container.stop(timeout=30)

    def resume(self, environment: Environment, tag: str) -> tuple[Instance, ...]:
        for container in self._release_containers(environment, tag=tag):
            if container.status == "running":
                # A pause cut short (its command killed) may have stopped the services only.
                container.exec_run(["monit", "-B", "start", "all"])
                continue
            self._refuse_second_writer(container)
            try:
                container.start()
            except docker.errors.APIError as exc:
                raise DeployFailed(f"cannot start {container.name} again: {exc.explanation}") from None
            _start_services(container)
        return self.instances(environment, tag=tag)

    # --- data ----------------------------------------------------------------

    def data_volume_name(self, environment: Environment, role: str, path: str, member: str = "") -> str:
        """`<prefix>-staging-db-var-lib-mysql`; a deployed pool's member has its own (`...-staging-db2-var-...`)."""
        return f"{self.prefix}-{environment.name}-{member or role}-{data_slug(path)}"

    def data_volumes(self, environment: Environment, role: Role) -> tuple[DataVolume, ...]:
        filters = {"label": [f"{k}={v}" for k, v in self._labels(environment, role.name).items()] + [DATA_LABEL]}
        found = [DataVolume(v.name, role.name, environment.name, v.attrs["Labels"][DATA_LABEL], _volume_size(v.name))
                 for v in engine.client().volumes.list(filters=filters)]
        return tuple(sorted(found, key=lambda v: v.name))

    def _ensure_data(self, plan: Plan, member: str = "") -> list[DataVolume]:
        """The role's (or a member's) data volumes, made at its first promote into the environment.

        Docker fills an empty named volume from the image's files at that path on
        its first mount, so the first release starts from what the package's
        postinst made (MariaDB's system tables); later releases find the data.
        """
        volumes = []
        for path in plan.role.data:
            name = self.data_volume_name(plan.environment, plan.role.name, path, member)
            try:
                engine.client().volumes.get(name)
            except docker.errors.NotFound:
                labels = {**self._labels(plan.environment, plan.role.name), DATA_LABEL: path}
                if member:
                    labels[MEMBER_LABEL] = member
                engine.client().volumes.create(name, labels=labels)
                progress.detail(f"data volume {name} for {path} made (filled from the image at first start)")
            users = [c.name for c in engine.containers_using(name)]
            if users:
                raise DeployFailed(f"{', '.join(users)} still has {name} mounted: a second writer on the same data "
                                   "is refused")
            volumes.append(DataVolume(name, plan.role.name, plan.environment.name, path))
        return volumes

    def _refuse_second_writer(self, container: Container) -> None:
        for mount in container.attrs.get("Mounts") or []:
            if mount.get("Type") != "volume":
                continue
            name = mount.get("Name", "")
            others = [c.name for c in engine.containers_using(name) if c.id != container.id]
            if others:
                raise DeployFailed(f"{', '.join(others)} still has {name} mounted: {container.name} is not started "
                                   "beside it")

    def remove_data(self, volume: DataVolume) -> None:
        users = [c.name for c in engine.containers_using(volume.name, running_only=False)]
        if users:
            raise DeployFailed(f"{volume.name} is still used by {', '.join(users)}: take the release down first")
        with contextlib.suppress(docker.errors.NotFound):
            engine.client().volumes.get(volume.name).remove()

    # --- taking an environment down ---------------------------------------------

    def down(self, environment: Environment, role: str | None = None) -> tuple[str, ...]:
        stopped = []
        for container in self._release_containers(environment, role):
            if container.status == "running" and container.labels.get(engine.ROLE_LABEL) in self._stateful():
                _stop_services(container)
            with contextlib.suppress(docker.errors.APIError):
                container.stop(timeout=30)
            engine.remove_container(container)
            stopped.append(container.name)
        if role is None:
            frontend = self._container(self.frontend_name(environment))
            if frontend is not None:
                engine.remove_container(frontend)
                stopped.append(frontend.name)
            client = engine.client()
            for network in client.networks.list(names=[self.network_name(environment)]):
                with contextlib.suppress(docker.errors.APIError):
                    network.remove()
        return tuple(stopped)

    def run(self, instance: Instance, argv: Sequence[str], sink: BinaryIO | None = None) -> str:
        container = self._container(instance.name)
        if container is None:
            raise DeployFailed(f"{instance.name} is gone: cannot run {argv[0]} in it")
        if sink is None:
            return _exec(container, list(argv))
        _exec_to(container, list(argv), sink)
        return ""

    def _stateful(self) -> set[str]:
        return {name for name, role in self.config.roles.items() if role.data}

    def _release_containers(self, environment: Environment, role: str | None = None, tag: str | None = None) -> list[
        Container
    ]:
        """Every release container of the environment (running or not), of one role or one release."""
        labels = {engine.PREFIX_LABEL: self.prefix, ENV_LABEL: environment.name}
        if role:
            labels[engine.ROLE_LABEL] = role
        if tag:
            labels[RELEASE_LABEL] = tag
        return [c for c in engine.containers(labels) if RELEASE_LABEL in c.labels]

    # --- the frontend --------------------------------------------------------

    def frontend(self, environment: Environment) -> Container:
        """The environment's frontend container, started if need be."""
        name = self.frontend_name(environment)
        container = self._container(name)
        if container is not None and container.status == "running" and _published(container) == str(
            environment.frontend_port
        ):
            return container
        if container is not None:
            # Stopped, or published on a port the configuration no longer names.
            engine.remove_container(container)
        image = self._frontend_image or images.newest_verified(self.config, FRONTEND_ROLE)
        progress.detail(f"starting the {environment.name} frontend on 127.0.0.1:{environment.frontend_port}")
        try:
            container = engine.client().containers.run(
                image,
                detach=True,
                name=name,
                hostname=f"{FRONTEND_ROLE}.{environment.name}.{self.config.workbench.domain}",
                network=self.network(environment),
                ports={"80/tcp": ("127.0.0.1", environment.frontend_port)},
                environment={"WORKBENCH_ROLE": FRONTEND_ROLE, "WORKBENCH_ENVIRONMENT": environment.name,
                             **environment.variables},
                labels=self._labels(environment, FRONTEND_ROLE),
            )
        except docker.errors.APIError as exc:
            raise DeployFailed(
                f"cannot start the {environment.name} frontend on 127.0.0.1:{environment.frontend_port}: "
                f"{exc.explanation} (is the port taken? set [environments.{environment.name}] frontend_port)"
            ) from None
        self._wait_frontend(environment, container)
        return container

    def _wait_frontend(self, environment: Environment, container: Container) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while time.monotonic() < deadline:
            container.reload()
            if container.status not in ("created", "running"):
                raise DeployFailed(f"the {environment.name} frontend exited: "
                                   f"{container.logs(tail=10).decode(errors='replace')}")
            if _nginx_up(container):
                return
            time.sleep(0.1)
        raise DeployFailed(f"the {environment.name} frontend did not start nginx within {HEALTH_TIMEOUT:.0f}s")

    def _wait_switched(self, environment: Environment, addresses: set[str]) -> None:
        """Until the frontend's answers come from `addresses` only, a few times in a row."""
        url = f"http://127.0.0.1:{environment.frontend_port}{_frontend_probe_path(self.config, environment)}"
        deadline = time.monotonic() + DRAIN_TIMEOUT
        in_a_row = 0
        wanted = 3 * len(addresses)
        while time.monotonic() < deadline and in_a_row < wanted:
            served_by = upstream_of(url)
            in_a_row = in_a_row + 1 if served_by in addresses else 0
            time.sleep(0.02)
        if in_a_row < wanted:
            listing = ", ".join(sorted(addresses))
            raise DeployFailed(f"the {environment.name} frontend still does not answer from {listing} after reload")


def _published(container: Container) -> str:
    """The host port the container's port 80 is published on ("" if none)."""
    bindings = (container.attrs.get("HostConfig") or {}).get("PortBindings") or {}
    return str(((bindings.get("80/tcp") or [{}])[0]).get("HostPort", ""))


def _frontend_probe_path(config: Config, environment: Environment) -> str:
    role = config.roles.get(environment.frontend_role)
    return (role.health if role and role.health else "/") or "/"


def _put_file(container: Container, directory: str, name: str, text: str) -> None:
    data = text.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(data))
    if not container.put_archive(directory, buffer.getvalue()):
        raise DeployFailed(f"cannot write {directory}/{name} in {container.name}")


def _exec_ok(container: Container, argv: list[str]) -> str | None:
    """Output of a command in the container, or None if it failed."""
    code, output = container.exec_run(argv)
    return output.decode(errors="replace") if code == 0 else None


def _exec_to(container: Container, argv: list[str], sink: BinaryIO) -> None:
    """Run `argv` in the container, its standard output streamed into `sink` as it comes."""
    api = engine.client().api
    exec_id = api.exec_create(container.id, argv, stdout=True, stderr=True)["Id"]
    errors = bytearray()
    for out, err in api.exec_start(exec_id, stream=True, demux=True):
        if out:
            sink.write(out)
        if err:
            errors.extend(err[-4096:])
            del errors[:-4096]
    code = api.exec_inspect(exec_id).get("ExitCode")
    if code != 0:
        text = errors.decode(errors="replace").strip()
        raise DeployFailed(f"`{' '.join(argv)}` in {container.name} exited {code}: {text or 'no message'}")


def _exec(container: Container, argv: list[str]) -> str:
    code, output = container.exec_run(argv)
    text = output.decode(errors="replace").strip()
    if code != 0:
        raise DeployFailed(f"`{' '.join(argv)}` in {container.name} exited {code}: {text}")
    return text


def _nginx_pids(container: Container, pattern: str) -> list[str]:
    """/proc entries of processes whose title matches `pattern` (an extended regex).

    nginx names its processes in argv, e.g. "nginx: worker process is shutting
    down". Patterns end in a bracket class (`dow[n]`) so the grep does not find
    its own command line.
    """
    script = 'grep -l -s -a -E -- "$0" /proc/[0-9]*/cmdline || true'
    listing = _exec_ok(container, ["sh", "-c", script, pattern])
    return [line for line in (listing or "").split() if line]


def _nginx_up(container: Container) -> bool:
    return bool(_nginx_pids(container, "nginx: worker proces[s]"))


def _wait_drained(container: Container) -> None:
    """Until the workers of the old configuration have finished their requests and exited."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline:
        if not _nginx_pids(container, "is shutting dow[n]"):
            return
        time.sleep(0.05)
    raise DeployFailed(f"old nginx workers in {container.name} still busy after {DRAIN_TIMEOUT:.0f}s")


def _accepts(address: str) -> tuple[bool, str]:
    """(a TCP connection to host:port succeeds, what happened)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True, "connected"
    except OSError as exc:
        return False, str(exc)


def _volume_size(name: str) -> int:
    """Bytes the volume holds, from the engine's disk-usage report (-1 if it does not say)."""
    try:
        usage = engine.client().df().get("Volumes") or []
    except docker.errors.APIError:
        return -1
    for volume in usage:
        if volume.get("Name") == name:
            return int((volume.get("UsageData") or {}).get("Size", -1))
    return -1


def _stop_services(container: Container) -> None:
    """Have monit stop every service it supervises, and wait until it has.

    `docker stop` alone ends monit, and with it PID 1, so the kernel kills what
    is left: MariaDB would be killed mid-write instead of shut down. monit's own
    stop runs each service's stop program (MariaDB gets SIGTERM and flushes).
    Images without monit are left to `docker stop`.
    """
    code, _ = container.exec_run(["monit", "-B", "stop", "all"])
    if code != 0:
        return
    deadline = time.monotonic() + QUIESCE_TIMEOUT
    while time.monotonic() < deadline:
        code, output = container.exec_run(["monit", "-B", "summary"])
        if code == 0 and all(status == "Not monitored" for status in _monit_processes(output.decode())):
            return
        time.sleep(0.2)
    raise DeployFailed(f"monit in {container.name} did not stop its services within {QUIESCE_TIMEOUT:.0f}s")


def _start_services(container: Container) -> None:
    """Have monit monitor (and so start) every service again after a pause.

    monit keeps the services' state across its restarts (its state file): the
    services a pause stopped stay unmonitored when the container starts again
    unless they are started explicitly, once monit answers.
    """
    deadline = time.monotonic() + QUIESCE_TIMEOUT
    while time.monotonic() < deadline:
        container.reload()
        if container.status != "running":
            return
        # Only the daemon may start them: `monit start` without one runs the start programs itself.
        code, output = container.exec_run(["monit", "-B", "summary"])
        if b"executable file not found" in output:
            return  # an image without monit: its own command started everything
        if code == 0:
            _exec(container, ["monit", "-B", "start", "all"])
            return
        time.sleep(0.2)
    raise DeployFailed(f"monit in {container.name} did not answer within {QUIESCE_TIMEOUT:.0f}s to start its services")


def _monit_processes(summary: str) -> list[str]:
    """Statuses of the process services in `monit -B summary`, whose lines look like:

         Service Name                     Status                      Type
         mariadb                          Not monitored               Process
    """
    statuses = []
    for line in summary.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[:2] != ["Service", "Name"] and fields[-1] == "Process":
            statuses.append(" ".join(fields[1:-1]))
    return statuses
