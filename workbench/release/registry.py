"""The local registry released images are pushed to: Debian's `docker-registry`.

It listens on loopback only, keeps its data under `<state_dir>/registry/data`,
and has deletion switched off: a released tag is never deleted, and `push`
refuses to move an existing tag to another digest, so it is never overwritten.

Two ways to run it: `serving(config)`, a context manager that owns the daemon
for the length of a `with` block; and `up`/`down`, which keep one running in the
background with a pid file (`fab registry.up`). Promotes call `ensure`, which
uses the running one or starts it in the background.
"""

from __future__ import annotations

import ipaddress
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker.errors

from workbench.core import engine, files, progress, run
from workbench.core.config import Config
from workbench.core.errors import ConfigError, EngineUnavailable, ReleaseError

READY_TIMEOUT = 20.0
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


@dataclass(frozen=True)
class Registry:
    """A registry answering on `host:port`."""

    host: str
    port: int
    pid: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def repository(self, prefix: str, role: str) -> str:
        """`127.0.0.1:5000/workbench/app`"""
        return f"{self.address}/{prefix}/{role}"


def directory(config: Config) -> Path:
    return config.state_dir / "registry"


def render_config(data_dir: Path, host: str, port: int) -> str:
    """The registry's config.yml: filesystem storage, no deletes, loopback only."""
    return (
        "version: 0.1\n"
        "log:\n  level: info\n  fields:\n    service: workbench-registry\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {data_dir}\n"
        "  delete:\n    enabled: false\n"
        "  maintenance:\n    uploadpurging:\n      enabled: false\n"
        f"http:\n  addr: {host}:{port}\n"
        "  headers:\n    X-Content-Type-Options: [nosniff]\n"
    )


def _check_loopback(config: Config) -> None:
    try:
        loopback = ipaddress.ip_address(config.registry.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(
            f"{config.path}: [registry] host = {config.registry.host!r}: the local registry listens on loopback "
            "only (use 127.0.0.1)"
        )


def _write_config(config: Config) -> Path:
    _check_loopback(config)
    root = directory(config)
    (root / "data").mkdir(parents=True, exist_ok=True)
    path = root / "config.yml"
    path.write_text(render_config(root / "data", config.registry.host, config.registry.port))
    return path


def answers(host: str, port: int) -> bool:
    """True when a registry answers `GET /v2/` there."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/v2/", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _refuse_foreign(config: Config) -> None:
    if answers(config.registry.host, config.registry.port):
        raise ReleaseError(
            f"something else already answers on {config.registry.host}:{config.registry.port} "
            f"(not this workbench's registry, which keeps its pid in {_pid_file(config).path}): "
            f"stop it, or set another [registry] port in {config.path}"
        )


def _start(config: Config) -> run.Daemon:
    path = _write_config(config)
    _refuse_foreign(config)
    daemon = run.spawn(["docker-registry", "serve", str(path)], log=directory(config) / "registry.log")
    host, port = config.registry.host, config.registry.port
    run.wait_until(
        lambda: answers(host, port),
        timeout=READY_TIMEOUT,
        what=f"the registry (docker-registry on {host}:{port})",
        daemon=daemon,
        error=ReleaseError,
    )
    return daemon


@contextmanager
def serving(config: Config) -> Iterator[Registry]:
    """A registry for the `with` block: started here, always stopped on the way out."""
    daemon = _start(config)
    try:
        yield Registry(config.registry.host, config.registry.port, daemon.pid)
    finally:
        daemon.stop()


# --- in the background -------------------------------------------------------


def _pid_file(config: Config) -> run.PidFile:
    """Ours is the docker-registry serving this workbench's config.yml."""
    return run.PidFile(directory(config) / "registry.pid", "docker-registry", str(directory(config) / "config.yml"))


def status(config: Config) -> Registry | None:
    """The background registry, if it runs and answers."""
    pid = _pid_file(config).running()
    if pid is None or not answers(config.registry.host, config.registry.port):
        return None
    return Registry(config.registry.host, config.registry.port, pid)


def up(config: Config) -> tuple[Registry, bool]:
    """Start the background registry unless it runs; (registry, started now)."""
    directory(config).mkdir(parents=True, exist_ok=True)
    # Parallel promotes may all find it down: one starts it, the others wait.
    with files.locked(directory(config) / "start.lock"):
        running = status(config)
        if running is not None:
            return running, False
        progress.step("registry", f"starting docker-registry on {config.registry.host}:{config.registry.port}")
        daemon = _start(config)
        _pid_file(config).write(daemon.pid)
        progress.detail(f"data in {directory(config) / 'data'}, log in {daemon.log}")
        return Registry(config.registry.host, config.registry.port, daemon.pid), True


def down(config: Config) -> bool:
    """Stop the background registry; False if none was running."""
    return _pid_file(config).stop() is not None


def ensure(config: Config) -> Registry:
    """The running registry, started in the background if need be."""
    registry, _ = up(config)
    return registry


# --- images --------------------------------------------------------------------


def manifest_digest(registry: Registry, repository: str, tag: str) -> str | None:
    """The digest `repository:tag` names in the registry, or None if it has no such tag."""
    name = repository.split("/", 1)[1]
    request = urllib.request.Request(
        f"http://{registry.address}/v2/{name}/manifests/{tag}", method="HEAD", headers={"Accept": MANIFEST_TYPES}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.headers["Docker-Content-Digest"])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise ReleaseError(f"the registry at {registry.address} answered {exc.code} for {name}:{tag}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ReleaseError(f"the registry at {registry.address} does not answer ({exc}): `fab registry.up`") from None


def push(registry: Registry, image_id: str, repository: str, tag: str) -> str:
    """Push a local image as `repository:tag`; its manifest digest.

    A tag already in the registry is never moved: pushing another image under it
    raises ReleaseError, pushing the same image again is a no-op.
    """
    image = engine.get_image(image_id)
    if image is None:
        raise ReleaseError(f"image {image_id[:19]} is not in the local engine, nothing to push")
    existing = manifest_digest(registry, repository, tag)
    if existing is not None:
        if _local_digest(image_id, repository) == existing:
            return existing
        raise ReleaseError(
            f"{repository}:{tag} already names {existing} in the registry: a released tag is never overwritten"
        )
    image.tag(repository, tag)
    digest = None
    meter = engine.PushProgress()
    try:
        for event in engine.client().api.push(repository, tag=tag, stream=True, decode=True):
            progress.activity(meter.feed(event))
            if "error" in event:
                raise ReleaseError(f"pushing {repository}:{tag} failed: {event['error']}")
            digest = (event.get("aux") or {}).get("Digest") or digest
    except docker.errors.APIError as exc:
        raise ReleaseError(f"pushing {repository}:{tag} failed: {exc.explanation}") from None
    if not digest:
        raise ReleaseError(f"pushing {repository}:{tag}: the engine reported no digest")
    return str(digest)


def _local_digest(image_id: str, repository: str) -> str | None:
    image = engine.get_image(image_id)
    for ref in (image.attrs.get("RepoDigests") or []) if image else []:
        repo, _, digest = ref.partition("@")
        if repo == repository:
            return str(digest)
    return None


def pull(registry: Registry, repository: str, digest: str) -> str:
    """Fetch `repository@digest` into the local engine; its image id."""
    try:
        image = engine.client().images.pull(f"{repository}@{digest}")
    except docker.errors.NotFound:
        raise ReleaseError(f"{repository}@{digest} is not in the registry at {registry.address}") from None
    except docker.errors.APIError as exc:
        if "not found" in str(exc.explanation).lower() or "unknown" in str(exc.explanation).lower():
            raise ReleaseError(f"{repository}@{digest} is not in the registry at {registry.address}") from None
        raise EngineUnavailable(f"pulling {repository}@{digest} failed: {exc.explanation}") from None
    return str(image.id)
