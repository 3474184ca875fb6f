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
import tarfile
import time
from collections.abc import Sequence

import docker.errors
from docker.models.containers import Container

from workbench.build import images
from workbench.core import engine, pools, progress
from workbench.core.config import Config, Environment, Role
from workbench.core.errors import DeployFailed
from workbench.release.target import (
    ENV_LABEL,
    FRONTEND_ROLE,
    RELEASE_LABEL,
    REPLICA_LABEL,
    Instance,
    Plan,
    environment_variables,
    probe,
    serves_frontend,
    upstream_conf,
    upstream_of,
)

# Written into the frontend image by salt/frontend; the site includes it.
UPSTREAM_DIR = "/etc/nginx/workbench"
UPSTREAM_FILE = "upstream.conf"
HEALTH_TIMEOUT = 90.0
DRAIN_TIMEOUT = 15.0


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
        started = []
        for replica, name in enumerate(self.names(plan), start=1):
            try:
                container = engine.client().containers.run(
                    plan.image_id,
                    detach=True,
                    name=name,
                    hostname=f"{plan.role.name}.{plan.environment.name}.{self.config.workbench.domain}",
                    network=network,
                    environment={**extra.get("environment", {}), **environment_variables(plan)},
                    volumes=extra.get("volumes") or None,
                    labels={
                        **self._labels(plan.environment, plan.role.name, plan.tag),
                        REPLICA_LABEL: str(replica),
                        "workbench.digest": plan.digest,
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
        deadline = time.monotonic() + HEALTH_TIMEOUT
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
            elif time.monotonic() > settle:
                return
            time.sleep(0.1)
        raise DeployFailed(
            f"{instance.name} did not pass its health check GET {plan.role.health} on {instance.address} "
            f"within {HEALTH_TIMEOUT:.0f}s (last: {last})"
        )

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
            with contextlib.suppress(docker.errors.APIError):
                container.stop(timeout=10)
            engine.remove_container(container)

    def instances(self, environment: Environment, role: str | None = None, tag: str | None = None) -> tuple[
        Instance, ...
    ]:
        running = [c for c in self._release_containers(environment, role, tag) if c.status == "running"]
        return tuple(self._instance(c, environment) for c in sorted(running, key=lambda c: c.name))

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
