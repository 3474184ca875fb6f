"""Servers of releases on the homelab cloud: what the OpenStack deploy target asks of the cloud.

workbench/release/openstack.py speaks in releases; this module speaks nova,
neutron and glance (through `api`) and the lab LAN. Servers run in the member
project, are found again by their metadata (the workbench's prefix, the
environment, the role, the release), and are reached from the lab LAN only:
health checks go through the networking node's namespace (`lab.lab_get`), and
the environment's frontend, a container on the host, has its own leg on the
lab's bridge (`lab.attach`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import openstack.exceptions

from workbench.cloud import api, controller, lab, publish
from workbench.cloud import secrets as cloud_secrets
from workbench.core import progress
from workbench.core.config import Config
from workbench.core.errors import CloudError

# Metadata keys of a release's server (nova keeps string values).
PREFIX_KEY = "workbench_prefix"
ENVIRONMENT_KEY = "workbench_environment"
ROLE_KEY = "workbench_role"
RELEASE_KEY = "workbench_release"
REPLICA_KEY = "workbench_replica"
STANDBY_KEY = "workbench_standby"
# What a failing cloud raises: the workbench's own errors, and the API's when it does not answer.
FAILURES: tuple[type[Exception], ...] = (CloudError, *api.NOT_YET)
# A group's servers on distinct hosts (nova refuses one more than there are hosts), or spread only as
# far as its weighers choose to: with fewer hypervisors than replicas, they still all run.
STRICT_SPREAD, SOFT_SPREAD = "anti-affinity", "soft-anti-affinity"


@dataclass(frozen=True)
class Server:
    id: str
    name: str
    status: str
    addresses: tuple[str, ...]
    metadata: dict[str, str]
    fault: str


@dataclass(frozen=True)
class GlanceImage:
    id: str
    checksum: str  # glance's own hash of the image (os_hash_value, sha512)


class Fleet:
    """The cloud as a place to run releases: one connection as the member user, one as admin."""

    def __init__(self, config: Config) -> None:
        keys = cloud_secrets.load(config)
        if keys is None or controller.state(config) is None:
            raise CloudError("no cloud is up: run `fab cloud.up` first (an environment with target = \"openstack\" "
                             "runs its releases there)")
        self.config = config
        self.plan = lab.plan(config)
        self.conn = api.connect(self.plan, keys, member=True, project=config.cloud.project)
        self.admin = api.connect(self.plan, keys)

    # --- images ---------------------------------------------------------------

    def stage(self, role: str, image_id: str, recorded: GlanceImage | None) -> GlanceImage:
        """The glance image servers of `image_id` boot: `recorded` when glance still holds exactly it,
        else the image published now (once per content: `fab image.publish`)."""
        if recorded is not None:
            found = self._image(recorded.id)
            if found is not None and found.checksum != recorded.checksum:
                raise CloudError(f"glance image {recorded.id} no longer has the checksum the ledger recorded "
                                 f"({recorded.checksum[:16]}…, now {found.checksum[:16]}…): it is not booted")
            if found is not None:
                return found
            progress.detail(f"glance image {recorded.id} is gone: publishing the release's image again")
        published = publish.publish(self.config, role, image_id=image_id)
        made = self._image(published.glance_id)
        if made is None:
            raise CloudError(f"glance image {published.glance_id} vanished right after it was published")
        return made

    def has_image(self, glance_id: str) -> bool:
        return self._record(glance_id) is not None

    def delete_image(self, glance_id: str) -> None:
        api.delete_image(self.conn, glance_id)

    def _record(self, glance_id: str) -> dict[str, Any] | None:
        """What glance records of the image, None when it has no such image."""
        try:
            return api.image_record(self.conn, glance_id)
        except openstack.exceptions.NotFoundException:
            return None

    def _image(self, glance_id: str) -> GlanceImage | None:
        record = self._record(glance_id)
        if record is None or record.get("status") != "active":
            return None
        return GlanceImage(str(record["id"]), str(record.get("os_hash_value") or ""))

    def flavor_problem(self, flavor: str, glance_id: str) -> str:
        """Why servers of the flavor cannot boot the image ('' when they can): nova would refuse
        them one by one, after the release had begun."""
        found = self.conn.compute.find_flavor(flavor)
        if found is None:
            names = ", ".join(sorted(f.name for f in self.conn.compute.flavors()))
            return f"the cloud has no such flavor (it has: {names})"
        record = self._record(glance_id) or {}
        min_disk, min_ram = int(record.get("min_disk") or 0), int(record.get("min_ram") or 0)
        if found.disk and found.disk < min_disk:
            return (f"its {found.disk} GiB disk is smaller than the image's {min_disk} GiB (glance's min_disk): "
                    f"choose a larger flavor (e.g. {api.FLAVORS[-1].name}, {api.FLAVORS[-1].disk} GiB)")
        if found.ram < min_ram:
            return f"its {found.ram} MiB of memory is less than the image's {min_ram} MiB (glance's min_ram)"
        return ""

    # --- servers ---------------------------------------------------------------

    def boot(self, name: str, image: GlanceImage, flavor: str, user_data: str, metadata: dict[str, str],
             security_groups: Sequence[str], group: str = "") -> str:
        """Ask nova for a server (its id); it is BUILD until `server` says ACTIVE."""
        return api.boot_server(self.conn, name, image.id, flavor, api.PROVIDER_NETWORK, tuple(security_groups),
                               user_data=user_data, metadata=metadata, group=group)

    def servers(self, **metadata: str) -> list[Server]:
        """The project's servers whose metadata holds every key=value given, by name."""
        found = []
        for item in self.conn.compute.servers(details=True):
            tags = dict(item.metadata or {})
            if all(tags.get(key) == value for key, value in metadata.items()):
                found.append(_server(item))
        return sorted(found, key=lambda s: s.name)

    def server(self, server_id: str) -> Server:
        return _server(self.conn.compute.get_server(server_id))

    def host_of(self, server_id: str) -> str:
        """The hypervisor a server runs on (only the admin sees it)."""
        return api.server_state(self.admin, server_id).host

    def set_metadata(self, server_id: str, metadata: dict[str, str]) -> None:
        self.conn.compute.set_server_metadata(server_id, **metadata)

    def delete(self, server_ids: Sequence[str]) -> None:
        """Delete the servers side by side and wait until nova has let each go."""
        if not server_ids:
            return
        with ThreadPoolExecutor(max_workers=min(8, len(server_ids))) as pool:
            for done in [pool.submit(api.delete_server, self.conn, sid) for sid in server_ids]:
                done.result()

    def console_tail(self, server_id: str, lines: int = 8) -> str:
        try:
            text = api.console_output(self.conn, server_id) or "(empty)"
        except api.NOT_YET as exc:
            return f"(console not available: {api.short_error(exc)})"
        return "\n".join(text.splitlines()[-lines:])

    # --- security groups and server groups ---------------------------------------------------

    def security_group(self, name: str, ports: Sequence[int]) -> str:
        """A group letting the role's ports in from the lab LAN, made once per environment and role."""
        found = self.conn.network.find_security_group(name)
        if found is not None:
            return name
        subnet = self.plan.inventory.network.subnet
        group = self.conn.network.create_security_group(
            name=name, description=f"tcp {', '.join(map(str, ports))} from the lab LAN {subnet} (workbench releases)")
        for port in ports:
            self.conn.network.create_security_group_rule(
                security_group_id=group.id, direction="ingress", ethertype="IPv4", protocol="tcp",
                port_range_min=port, port_range_max=port, remote_ip_prefix=subnet)
        return name

    def delete_security_group(self, name: str) -> None:
        found = self.conn.network.find_security_group(name)
        if found is not None:
            api.delete_security_group(self.conn, str(found.id))

    def hypervisors(self) -> set[str]:
        """The hypervisors that can take a server now (nova-compute up, network agent alive)."""
        return api.services(self.admin).hypervisors()

    def server_group(self, name: str, members: int, hosts: int) -> str:
        """The group that spreads `members` servers over `hosts` hypervisors, one per host when there
        are enough; its id. Nova's soft policy alone is a weigher among others (free memory outweighs
        it: both replicas landed on the emptier host), so it is only the fallback."""
        for group in self.conn.compute.server_groups():
            if group.name == name:
                return str(group.id)
        policy = STRICT_SPREAD if hosts >= members else SOFT_SPREAD
        if policy == SOFT_SPREAD:
            progress.detail(f"{members} servers on {hosts} hypervisor(s): some share one")
        return str(self.conn.compute.create_server_group(name=name, policy=policy).id)

    def delete_server_group(self, name: str) -> None:
        for group in self.conn.compute.server_groups():
            if group.name == name:
                self.conn.compute.delete_server_group(group.id, ignore_missing=True)


def _server(item: object) -> Server:
    metadata = {str(k): str(v) for k, v in (getattr(item, "metadata", None) or {}).items()}
    return Server(str(getattr(item, "id", "")), str(getattr(item, "name", "")), str(getattr(item, "status", "")),
                  api.ipv4_addresses(item), metadata, api.fault_message(item))


def wait_active(fleet: Fleet, server_id: str, timeout: float) -> Server:
    """Until nova says ACTIVE with an address; CloudError on ERROR (with nova's fault) or time out."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            server = fleet.server(server_id)
        except api.NOT_YET as exc:
            last = f" (last answer: {api.short_error(exc)})"
        else:
            if server.status == "ERROR":
                raise CloudError(f"server {server.name} went to ERROR: {server.fault or 'no fault recorded'} "
                                 "(`fab cloud.status`; nova-compute's log is on the hypervisor)")
            if server.status == "ACTIVE" and server.addresses:
                return server
            last = f" (status {server.status})"
        if time.monotonic() > deadline:
            raise CloudError(f"server {server_id} did not become ACTIVE within {timeout:.0f}s{last}")
        progress.activity(f"waiting for server {server_id[:8]} to be ACTIVE")
        time.sleep(2.0)
