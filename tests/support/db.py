"""Helpers of the database e2e tests (test_release_db.py, test_db_*.py) and bench/bench_db.py.

The db role is baked once per session under the session's prefix and state
(the bake is reused by its inputs hash). A second version, when a test needs
one, is a label-only copy of it: the same file system under a new
`workbench.version`, as the bake's own accept step makes (no new layer).
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any

from workbench.build import bake, images
from workbench.core import config as wb_config
from workbench.core import engine
from workbench.release import docker as docker_target
from workbench.release import registry
from workbench.release.target import ENV_LABEL

ERROR_LOG = "/var/lib/mysql/mariadb.err"
# What MariaDB writes when it shuts down cleanly, and when it starts on data it did not close.
CLEAN_SHUTDOWN = "mariadbd: Shutdown complete"
CRASH_RECOVERY = "Starting crash recovery"


def bake_db(config: wb_config.Config) -> bake.BakeResult:
    """The db role's image under `config`'s prefix (a cache hit after the first bake of the session)."""
    return bake.bake_role(config, "db")


def copy_version(config: wb_config.Config, image_id: str) -> int:
    """A label-only copy of `image_id` as the role's next version; its number.

    Its inputs label differs, so no bake ever takes it for a cache hit of the original.
    """
    image = engine.client().images.get(image_id)
    labels = dict(image.labels or {})
    role = labels[engine.ROLE_LABEL]
    with images.VersionCounter(config, role) as counter:
        version = counter.next()
        labels.update({images.VERSION_LABEL: str(version), engine.INPUTS_LABEL: labels[engine.INPUTS_LABEL] + "-copy"})
        dockerfile = "\n".join([f"FROM {image_id}", *images.label_changes(labels), ""])
        engine.client().images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{images.repository(config, role)}:"
                                     f"{version}", rm=True, pull=False, forcerm=True)
        counter.commit(version)
    return version


def serving_container(config: wb_config.Config, env: str, role: str = "db") -> Any:
    """The container of the release serving `role` in `env` (the first member of a pool)."""
    target = docker_target.DockerTarget(config)
    instances = target.instances(config.environment(env), role)
    if not instances:
        raise AssertionError(f"nothing of {role} runs in {env}")
    return engine.client().containers.get(instances[0].name)


def sql(container: Any, statement: str, *, timeout: float = 60, user: str = "") -> str:
    """Run SQL as root through the server's socket, retrying while the server starts."""
    argv = ["mariadb", "--batch", "--skip-column-names", "-e", statement]
    if user:
        argv[1:1] = ["-u", user]
    deadline = time.monotonic() + timeout
    while True:
        code, output = container.exec_run(argv)
        text = output.decode(errors="replace").strip()
        if code == 0:
            return text
        starting = "Can't connect" in text or "2002" in text
        if not starting or time.monotonic() > deadline:
            raise AssertionError(f"SQL in {container.name} failed ({code}): {statement}\n{text}")
        time.sleep(0.5)


def error_log(container: Any) -> str:
    code, output = container.exec_run(["cat", ERROR_LOG])
    assert code == 0, output
    return output.decode(errors="replace")


def remove_image(ref: str) -> None:
    engine.remove_image(ref)


class Writers:
    """Polls the engine for running containers that mount `volume`; remembers the most seen at once."""

    def __init__(self, volume: str) -> None:
        self.volume = volume
        self.most = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.most = max(self.most, len(engine.containers_using(self.volume)))
            self.samples += 1
            time.sleep(0.02)

    def __enter__(self) -> Writers:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def clean_environment(config: wb_config.Config, env: str) -> None:
    """Every container, network and data volume of `env` under the config's prefix, and its registry."""
    labels = {engine.PREFIX_LABEL: config.prefix, ENV_LABEL: env}
    for container in engine.containers(labels):
        engine.remove_container(container)
    client = engine.client()
    for network in client.networks.list(names=[f"{config.prefix}-{env}"]):
        network.remove()
    filters = {"label": [f"{engine.PREFIX_LABEL}={config.prefix}", f"{ENV_LABEL}={env}"]}
    for volume in client.volumes.list(filters=filters):
        volume.remove(force=True)
    registry.down(config)
