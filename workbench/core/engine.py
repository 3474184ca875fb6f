"""The Docker engine, through the docker SDK: one place that knows how to reach it.

Everything the workbench creates carries the label `workbench.prefix`, so a
prefix (a test run's, say) can be listed and removed as a whole.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container
from docker.models.images import Image

from workbench.core.errors import EngineUnavailable, WorkbenchError
from workbench.core.progress import human_size

PREFIX_LABEL = "workbench.prefix"
ROLE_LABEL = "workbench.role"
INPUTS_LABEL = "workbench.inputs"


@functools.cache
def client() -> docker.DockerClient:
    """A client for the local engine, or EngineUnavailable saying how to start one."""
    try:
        c = docker.from_env(timeout=120)
        c.ping()
    except docker.errors.DockerException as exc:
        raise EngineUnavailable(
            f"the Docker engine does not answer ({_first_line(exc)}): "
            "`make setup` starts one (log: .workbench/dockerd.log)"
        ) from None
    return c


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def get_image(ref: str) -> Image | None:
    try:
        return client().images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def images(labels: dict[str, str]) -> list[Image]:
    """Local images carrying all of `labels`."""
    filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
    return list(client().images.list(filters=filters))


def containers(labels: dict[str, str]) -> list[Container]:
    filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
    # The SDK inspects each listed container: one removed in between (a build
    # container Packer is cleaning up) makes the listing fail; list again.
    for _ in range(4):
        try:
            return list(client().containers.list(all=True, filters=filters))
        except docker.errors.NotFound:
            continue
    return list(client().containers.list(all=True, filters=filters))


def containers_using(volume: str, running_only: bool = True) -> list[Container]:
    """The containers that mount the named volume (running ones only, by default)."""
    return list(client().containers.list(all=not running_only, filters={"volume": volume}))


def remove_image(ref: str) -> None:
    """Remove an image (and its tag); a missing image is not an error."""
    try:
        client().images.remove(ref, force=True)
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.APIError as exc:
        raise WorkbenchError(f"cannot remove image {ref}: {exc.explanation}") from None


def remove_container(container: Container | str) -> None:
    try:
        if isinstance(container, str):
            container = client().containers.get(container)
        container.remove(force=True, v=True)
    except docker.errors.NotFound:
        pass


@contextmanager
def running(image: str, **kwargs: Any) -> Iterator[Container]:
    """A container from `image` that exists only inside the `with` block."""
    container = client().containers.run(image, detach=True, **kwargs)
    try:
        yield container
    finally:
        remove_container(container)


def run_with_proc_sys(
    image: str,
    *,
    name: str,
    hostname: str,
    environment: dict[str, str],
    labels: dict[str, str],
    ports: dict[int, tuple[str, int]],
    binds: dict[str, dict[str, str]],
    cap_add: list[str],
    stop_signal: str = "SIGTERM",
) -> Container:
    """Start a detached container whose /proc/sys is writable, as `docker run --security-opt
    systempaths=unconfined` does: Docker masks /proc paths and mounts /proc/sys read-only, and its
    API knows the CLI's option only as two HostConfig lists, which docker-py's `run` cannot set."""
    api = client().api
    host_config = api.create_host_config(cap_add=cap_add, port_bindings=ports, binds=binds)
    host_config["MaskedPaths"] = []
    host_config["ReadonlyPaths"] = []
    created = api.create_container(image, name=name, hostname=hostname, environment=environment, labels=labels,
                                   ports=list(ports), volumes=[bind["bind"] for bind in binds.values()],
                                   host_config=host_config, stop_signal=stop_signal, detach=True)
    api.start(created["Id"])
    return client().containers.get(created["Id"])


def bridge_gateway() -> str:
    """The default bridge's gateway: how containers reach services on the host."""
    network = client().networks.get("bridge")
    configs = network.attrs.get("IPAM", {}).get("Config") or [{}]
    return str(configs[0].get("Gateway", "172.17.0.1"))


def remove_prefix(prefix: str) -> int:
    """Remove every container, image, network and volume labelled with `prefix`."""
    removed = 0
    labels = {PREFIX_LABEL: prefix}
    for container in containers(labels):
        remove_container(container)
        removed += 1
    for network in client().networks.list(filters={"label": f"{PREFIX_LABEL}={prefix}"}):
        try:
            network.remove()
        except docker.errors.NotFound:
            continue
        removed += 1
    for volume in client().volumes.list(filters={"label": f"{PREFIX_LABEL}={prefix}"}):
        volume.remove(force=True)
        removed += 1
    # Newest first, so children usually go before the images they were built on;
    # images created in the same second may still come in the wrong order, so an
    # image that has children left is tried again after the others.
    pending = sorted(images(labels), key=lambda i: i.attrs["Created"], reverse=True)
    for _ in range(len(pending)):
        blocked = []
        for image in pending:
            try:
                remove_image(image.id)
                removed += 1
            except WorkbenchError:
                blocked.append(image)
        if not blocked or len(blocked) == len(pending):
            pending = blocked
            break
        pending = blocked
    if pending:
        names = ", ".join(sorted(tag for image in pending for tag in image.tags) or [i.short_id for i in pending])
        raise WorkbenchError(
            f"cannot remove {len(pending)} image(s) of {prefix} that other images are built on: {names} "
            "(remove those first)"
        )
    return removed


class PushProgress:
    """The engine's push events as the live line's activity: `pushed 12.3 MB of 45.6 MB, 3 of 5 layers`.

    Events look like `{"status": "Pushing", "id": "5f70bf18a086",
    "progressDetail": {"current": 12345, "total": 45678}}`, then
    `{"status": "Pushed", "id": ...}` or `{"status": "Layer already exists", ...}`.
    """

    def __init__(self) -> None:
        self.layers: dict[str, tuple[int, int]] = {}
        self.done: set[str] = set()

    def feed(self, event: dict[str, Any]) -> str:
        layer = str(event.get("id", ""))
        detail = event.get("progressDetail") or {}
        if layer and "current" in detail:
            self.layers[layer] = (int(detail["current"]), int(detail.get("total") or 0))
        if layer and event.get("status") in ("Pushed", "Layer already exists"):
            self.done.add(layer)
            self.layers.setdefault(layer, (0, 0))
        sent = sum(current for current, _ in self.layers.values())
        total = sum(size for _, size in self.layers.values())
        of = f" of {human_size(total)}" if total else ""
        return f"pushed {human_size(sent)}{of}, {len(self.done)} of {len(self.layers)} layers done"
