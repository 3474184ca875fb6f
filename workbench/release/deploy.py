"""Where releases run: the deploy Target, and its embedded default on the local Docker engine.

Per environment the Docker target keeps a private bridge network
`<prefix>-<env>`, an nginx frontend container (the `frontend` role) published
on 127.0.0.1:<frontend_port>, and one container per role release. A switch is:
start the new container, wait for its health check, rewrite the frontend's
upstream file and `nginx -s reload` (nginx keeps its listening socket and lets
old workers finish their requests), wait until the old workers are gone, then
stop the old container. Nothing is switched to a container that is not healthy.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Protocol

import docker.errors
from docker.models.containers import Container

from workbench.build import images
from workbench.core import engine, pools, progress
from workbench.core.config import Config, Environment, Role
from workbench.core.errors import DeployFailed, ReleaseError

ENV_LABEL = "workbench.environment"
RELEASE_LABEL = "workbench.release"
FRONTEND_ROLE = "frontend"
# Written into the frontend image by salt/frontend; the site includes it.
UPSTREAM_DIR = "/etc/nginx/workbench"
UPSTREAM_FILE = "upstream.conf"
UPSTREAM_NAME = "workbench_frontend"
# Sent by the frontend with each answer: which backend served it.
UPSTREAM_HEADER = "X-Workbench-Upstream"
HEALTH_TIMEOUT = 90.0
DRAIN_TIMEOUT = 15.0


@dataclass(frozen=True)
class Instance:
    """One running release of a role: what the target needs to find it again."""

    name: str
    address: str  # host:port inside the environment's network, "" for roles without ports


@dataclass(frozen=True)
class Plan:
    """What to start: a role's image as a given release in an environment."""

    role: Role
    environment: Environment
    tag: str
    version: int
    image_id: str
    digest: str


class Target(Protocol):
    """A place releases are deployed to (the local engine now; OpenStack would be another)."""

    def start(self, plan: Plan) -> Instance: ...
    def wait_healthy(self, plan: Plan, instance: Instance) -> None: ...
    def switch(self, environment: Environment, role: Role, instance: Instance | None) -> None: ...
    def stop(self, instance_name: str) -> None: ...
    def find(self, environment: Environment, tag: str) -> Instance | None: ...


def upstream_conf(address: str | None) -> str:
    """The frontend's upstream file; with no release yet, a backend that refuses (502)."""
    server = address or "127.0.0.1:1"
    return f"# Written by the workbench at each switch (workbench/deploy.py).\nupstream {UPSTREAM_NAME} {{\n" \
        f"    server {server};\n}}\n"


def environment_variables(plan: Plan) -> dict[str, str]:
    """The container's environment: per-environment settings, then what it runs."""
    return {
        **plan.environment.variables,
        "WORKBENCH_RELEASE": plan.tag,
        "WORKBENCH_VERSION": str(plan.version),
        "WORKBENCH_ROLE": plan.role.name,
        "WORKBENCH_ENVIRONMENT": plan.environment.name,
    }


class DockerTarget:
    """The embedded default: containers, a network and an nginx frontend on the local engine."""

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

    def container_name(self, environment: Environment, tag: str) -> str:
        return f"{self.prefix}-{environment.name}-{tag}"

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

    def _address(self, container: Container, environment: Environment, role: Role) -> str:
        container.reload()
        networks = container.attrs["NetworkSettings"]["Networks"]
        ip = (networks.get(self.network_name(environment)) or {}).get("IPAddress", "")
        if not ip:
            raise DeployFailed(f"container {container.name} has no address on {self.network_name(environment)}")
        return f"{ip}:{role.ports[0]}" if role.ports else ""

    # --- the Target protocol -------------------------------------------------

    def start(self, plan: Plan) -> Instance:
        network = self.network(plan.environment)
        name = self.container_name(plan.environment, plan.tag)
        stale = self._container(name)
        if stale is not None:
            # Left by an interrupted promote of this very tag.
            engine.remove_container(stale)
        # Pools the role uses (workbench/pools.py): variables and a read-only mount.
        extra = pools.container_options(self.config, plan.role.name, plan.environment.name)
        try:
            container = engine.client().containers.run(
                plan.image_id,
                detach=True,
                name=name,
                hostname=f"{plan.role.name}.{plan.environment.name}.{self.config.workbench.domain}",
                network=network,
                environment={**extra.get("environment", {}), **environment_variables(plan)},
                volumes=extra.get("volumes") or None,
                labels={**self._labels(plan.environment, plan.role.name, plan.tag), "workbench.digest": plan.digest},
            )
        except docker.errors.APIError as exc:
            raise DeployFailed(f"cannot start {name} from {plan.image_id[:19]}: {exc.explanation}") from None
        return Instance(name, self._address(container, plan.environment, plan.role))

    def wait_healthy(self, plan: Plan, instance: Instance) -> None:
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

    def switch(self, environment: Environment, role: Role, instance: Instance | None) -> None:
        """Point the environment's frontend at `instance` (when the frontend serves this role)."""
        if not environment.frontend_port or environment.frontend_role != role.name:
            return
        frontend = self.frontend(environment)
        address = instance.address if instance else None
        _put_file(frontend, UPSTREAM_DIR, UPSTREAM_FILE, upstream_conf(address))
        # One exec: a config nginx refuses is never reloaded.
        _exec(frontend, ["sh", "-c", "nginx -t -q && nginx -s reload"])
        if address:
            self._wait_switched(environment, address)
        _wait_drained(frontend)

    def stop(self, instance_name: str) -> None:
        container = self._container(instance_name)
        if container is None:
            return
        with contextlib.suppress(docker.errors.APIError):
            container.stop(timeout=10)
        engine.remove_container(container)

    def find(self, environment: Environment, tag: str) -> Instance | None:
        container = self._container(self.container_name(environment, tag))
        if container is None or container.status != "running":
            return None
        role = self.config.role(container.labels.get(engine.ROLE_LABEL, tag.rsplit("-", 1)[0]))
        return Instance(container.name, self._address(container, environment, role))

    def instances(self, environment: Environment, role: str) -> list[str]:
        """Names of every release container of `role` in `environment`."""
        labels = self._labels(environment, role)
        return [c.name for c in engine.containers(labels) if RELEASE_LABEL in c.labels]

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
        image = self._frontend_image or newest_verified(self.config, FRONTEND_ROLE)
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

    def _wait_switched(self, environment: Environment, address: str) -> None:
        """Until the frontend's answers come from `address`, a few times in a row."""
        url = f"http://127.0.0.1:{environment.frontend_port}{_frontend_probe_path(self.config, environment)}"
        deadline = time.monotonic() + DRAIN_TIMEOUT
        in_a_row = 0
        while time.monotonic() < deadline and in_a_row < 3:
            served_by = upstream_of(url)
            in_a_row = in_a_row + 1 if served_by == address else 0
            time.sleep(0.02)
        if in_a_row < 3:
            raise DeployFailed(f"the {environment.name} frontend still does not answer from {address} after reload")


def _published(container: Container) -> str:
    """The host port the container's port 80 is published on ("" if none)."""
    bindings = (container.attrs.get("HostConfig") or {}).get("PortBindings") or {}
    return str(((bindings.get("80/tcp") or [{}])[0]).get("HostPort", ""))


def _frontend_probe_path(config: Config, environment: Environment) -> str:
    role = config.roles.get(environment.frontend_role)
    return (role.health if role and role.health else "/") or "/"


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


def newest_verified(config: Config, role: str, version: int | None = None) -> str:
    """Id of the role's newest image that passed verification (or of `version`, which must have)."""
    if version is None:
        newest = images.latest(config, role)
        if newest is None:
            raise ReleaseError(
                f"no verified image of role {role} under prefix {config.prefix}: bake one with `fab image.bake {role}`"
            )
        return str(newest.id)
    tag = f"{images.repository(config, role)}:{version}"
    image = engine.get_image(tag)
    if image is None:
        known = ", ".join(str(images.version_of(i)) for i in reversed(images.accepted(config, role))) or "none"
        raise ReleaseError(f"no image {tag} (verified versions of {role}: {known}); `fab image.list` shows them")
    verify = (image.labels or {}).get(images.VERIFY_LABEL, "")
    if verify != "passed":
        raise ReleaseError(
            f"{tag} did not pass verification (workbench.verify={verify or 'unset'}): only verified images "
            f"are promoted; bake it again with `fab image.bake {role}`"
        )
    return str(image.id)
