"""The controller: the `controller` role's image, run as a container on the lab LAN.

The image holds no secret and no database (salt/controller). Its settings
(addresses, passwords) are a file under `<state_dir>/cloud/controller/etc`,
mounted read-only; its data paths (the role's `data`: MariaDB, RabbitMQ, glance's
images, keystone's keys) are directories under `<state_dir>/cloud/controller/data`,
so a new controller image replaces the old one by tag and finds everything.
The container is on the default bridge with each API published on loopback
(the catalogue's public endpoints) and, through a veth pair, on the lab's
bridge at `[cloud] controller_address` (the internal endpoints hypervisors use).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import docker.errors
from docker.models.containers import Container

from workbench.cloud import lab
from workbench.cloud.lab import APIS, CloudPlan
from workbench.cloud.secrets import CloudSecrets, cloud_dir
from workbench.core import engine, ports
from workbench.core.config import Config
from workbench.core.errors import CloudError
from workbench.core.naming import data_slug
from workbench.core.secrets import write_private

ROLE = "controller"
HOSTNAME = "controller"
SETTINGS_MOUNT = "/etc/workbench/cloud"
SETTINGS_FILE = "controller.json"
# The controller's end of the lab veth pair (its agents' provider interface), and the bridge's end.
LAB_INTERFACE = "lab0"
LAB_PORT = "nbctl0"
CLOUD_LABEL = "workbench.cloud"
SETTINGS_LABEL = "workbench.cloud.settings"
# Bumped when how the container is run changes (options beyond the image and the settings file):
# a running controller of an older recipe is replaced, on its data, by the next `cloud.up`.
CONTAINER_RECIPE = 2
# What the services log (workbench-services writes each one's output there).
LOG_MOUNT = "/var/log/workbench"
STOP_TIMEOUT = 120


@dataclass(frozen=True)
class ControllerState:
    name: str
    image: str
    running: bool
    status: str


def container_name(config: Config) -> str:
    return f"{config.prefix}-controller"


def controller_dir(config: Config) -> Path:
    return cloud_dir(config) / "controller"


def log_dir(config: Config) -> Path:
    return controller_dir(config) / "log"


def settings(config: Config, plan: CloudPlan, secrets: CloudSecrets) -> dict[str, object]:
    """What the controller role's start hook reads (salt/controller: the contract)."""
    return {
        "region": plan.region,
        "internal_address": plan.controller,
        "public_address": "127.0.0.1",
        "public_ports": plan.public_ports,
        "provider_interface": LAB_INTERFACE,
        "workers": config.cloud.workers,
        "passwords": {k: v for k, v in secrets.passwords.items() if k != "member"},
    }


def find(config: Config) -> Container | None:
    try:
        return engine.client().containers.get(container_name(config))
    except docker.errors.NotFound:
        return None


def state(config: Config) -> ControllerState | None:
    container = find(config)
    if container is None:
        return None
    tags = container.image.tags if container.image is not None else []
    return ControllerState(container.name or "", tags[0] if tags else container.attrs["Image"][:19],
                           container.status == "running", container.status)


def _write_settings(config: Config, values: dict[str, object]) -> tuple[Path, str]:
    etc = controller_dir(config) / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    os.chmod(etc, 0o700)
    text = (json.dumps(values, indent=2, sort_keys=True) + "\n").encode()
    write_private(etc / SETTINGS_FILE, text)
    return etc, f"{hashlib.sha256(text).hexdigest()[:16]}-r{CONTAINER_RECIPE}"


def data_dirs(config: Config) -> dict[str, Path]:
    """Each data path of the controller role and the host directory that holds it."""
    role = config.role(ROLE)
    return {path: controller_dir(config) / "data" / data_slug(path) for path in role.data}


def check_ports_free(plan: CloudPlan) -> None:
    for api, port in plan.public_ports.items():
        if not ports.bindable(port):
            raise CloudError(
                f"port 127.0.0.1:{port} (the {api} API's public endpoint) is taken by another program: "
                "free it, or move every API with [cloud] public_port_offset in the configuration"
            )


def start(config: Config, plan: CloudPlan, secrets: CloudSecrets, image: str) -> tuple[Container, bool]:
    """The controller running `image` with the current settings; True when it was (re)started now.

    A controller that already runs this image with these settings is left alone
    (a second `cloud.up` changes nothing). Another one is stopped first, cleanly
    (MariaDB flushes): two controllers never share the data directories.
    """
    etc, digest = _write_settings(config, settings(config, plan, secrets))
    image_id = engine.client().images.get(image).id
    current = find(config)
    if current is not None:
        same = current.attrs["Image"] == image_id and current.labels.get(SETTINGS_LABEL) == digest
        if same and current.status == "running":
            _attach(config, plan, current)
            return current, False
        current.stop(timeout=STOP_TIMEOUT)
        engine.remove_container(current)
    check_ports_free(plan)
    role = config.role(ROLE)
    volumes: dict[str, dict[str, str]] = {str(etc): {"bind": SETTINGS_MOUNT, "mode": "ro"}}
    for path, host in data_dirs(config).items():
        host.mkdir(parents=True, exist_ok=True)
        volumes[str(host)] = {"bind": path, "mode": "rw"}
    log_dir(config).mkdir(parents=True, exist_ok=True)
    volumes[str(log_dir(config))] = {"bind": LOG_MOUNT, "mode": "rw"}
    labels = {engine.PREFIX_LABEL: config.prefix, engine.ROLE_LABEL: ROLE, CLOUD_LABEL: ROLE, SETTINGS_LABEL: digest}
    try:
        # Neutron's DHCP agent sets sysctls in each network namespace it makes (promote_secondaries
        # first): under Docker's read-only /proc/sys that failed, the agent then never brought the
        # namespace's loopback up, so its dhcp_release never reached dnsmasq, and a deleted server's
        # lease kept its address from the next server given it ("not using configured address").
        container = engine.run_with_proc_sys(
            image,
            name=container_name(config),
            hostname=HOSTNAME,
            cap_add=list(role.capabilities),
            environment={"WORKBENCH_ROLE": ROLE, "WORKBENCH_RELEASE": image, "WORKBENCH_ENVIRONMENT": "cloud"},
            labels=labels,
            ports={port: ("127.0.0.1", plan.public_ports[api]) for api, port in APIS.items()},
            binds=volumes,
        )
    except docker.errors.APIError as exc:
        engine.remove_container(container_name(config))
        raise CloudError(f"the controller container did not start from {image}: {exc.explanation or exc}") from None
    try:
        _attach(config, plan, container)
    except Exception:
        stop(config)
        raise
    return container, True


def _attach(config: Config, plan: CloudPlan, container: Container) -> None:
    """The controller's leg on the lab's bridge (again, if the node was restarted)."""
    container.reload()
    pid = int(container.attrs["State"]["Pid"] or 0)
    if not pid:
        raise CloudError(f"the controller container {container.name} is not running ({container.status}): "
                         f"its start hook failed; see `docker logs {container.name}`\n{logs_tail(container)}")
    lab.attach(config, pid, LAB_PORT, LAB_INTERFACE, plan.controller, plan.prefixlen)


def logs_tail(container: Container, lines: int = 15) -> str:
    try:
        text = container.logs(tail=lines).decode(errors="replace").rstrip()
    except docker.errors.APIError:
        return ""
    return "\n".join(f"  | {line}" for line in text.splitlines())


def exited(config: Config) -> str | None:
    """Why the controller is not running (its log's tail), or None while it runs."""
    container = find(config)
    if container is None:
        return "the controller container is gone"
    container.reload()
    if container.status == "running":
        return None
    return f"the controller container exited ({container.status}); `docker logs {container.name}`:\n" + logs_tail(
        container
    )


def stop(config: Config) -> bool:
    """Stop and remove the controller, cleanly (its data stays); False if none ran."""
    container = find(config)
    if container is None:
        return False
    # monit stops every service on SIGTERM; MariaDB gets the time to flush.
    with contextlib.suppress(docker.errors.APIError):
        container.stop(timeout=STOP_TIMEOUT)
    engine.remove_container(container)
    return True


def map_hosts(config: Config) -> set[str]:
    """Map new compute hosts into the cell (`nova-manage cell_v2 discover_hosts`, as DevStack runs
    it) and return every host the cell knows: nova schedules onto those only ("not mapped to any
    cell" otherwise), and a host is mapped only once its compute node exists, after its service is up."""
    _nova_manage(config, "discover_hosts")
    hosts = set()
    for line in _nova_manage(config, "list_hosts").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        # | Cell Name | Cell UUID | Hostname |: the heading's row names no host.
        if line.startswith("|") and len(cells) == 3 and cells[2] != "Hostname":
            hosts.add(cells[2])
    return hosts


def _nova_manage(config: Config, command: str) -> str:
    container = find(config)
    if container is None:
        raise CloudError("the controller container is gone")
    code, out = container.exec_run(["nova-manage", "cell_v2", command], user="nova")
    text = out.decode(errors="replace")
    if code != 0:
        raise CloudError(f"nova-manage cell_v2 {command} failed in the controller:\n"
                         + "\n".join(f"  | {line}" for line in text.strip().splitlines()[-5:]))
    return text
