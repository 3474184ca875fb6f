"""The cloud's API, through openstacksdk: readiness, what a new cloud has, what runs.

Only this module speaks OpenStack. It reaches the controller on its public
endpoints (127.0.0.1 plus `[cloud] public_port_offset`), as `openstack` on the
host does with `fab cloud.openrc`.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import keystoneauth1.exceptions
import openstack
import openstack.exceptions
from openstack.connection import Connection
from openstack.identity.v3._proxy import Proxy as IdentityV3

from workbench.cloud.lab import PHYSNET, CloudPlan
from workbench.cloud.secrets import CloudSecrets
from workbench.core import progress
from workbench.core.errors import CloudError

DOMAIN = "Default"
MEMBER_ROLE = "member"
PROVIDER_NETWORK = "provider"
PROVIDER_SUBNET = "provider-v4"
# Sized for hypervisors of a few GiB running under software emulation.
@dataclass(frozen=True)
class Flavor:
    name: str
    vcpus: int
    ram: int  # MiB
    disk: int  # GiB


# lab.medium holds a role's qcow2 (the qemu builder's 4 GiB disk) on a kvm/qemu cloud.
FLAVORS = (Flavor("lab.tiny", 1, 128, 1), Flavor("lab.small", 1, 512, 2), Flavor("lab.medium", 1, 1024, 5))
# The compute services and network agents a working controller runs.
CONTROLLER_SERVICES = ("nova-conductor", "nova-scheduler")
CONTROLLER_AGENTS = ("Linux bridge agent", "DHCP agent", "Metadata agent")
# What each hypervisor runs beside nova-compute.
HYPERVISOR_AGENT = "Linux bridge agent"
# Errors that mean "not answering yet" while the controller starts.
NOT_YET: tuple[type[Exception], ...] = (
    keystoneauth1.exceptions.ClientException,
    openstack.exceptions.SDKException,
    ConnectionError,
)


# While a controller starts, every poll would log that discovery failed: what is not ready is said once, by us.
for _name in ("keystoneauth", "openstack"):
    logging.getLogger(_name).setLevel(logging.ERROR)


def connect(plan: CloudPlan, secrets: CloudSecrets, *, member: bool = False, project: str = "lab") -> Connection:
    """A session as the cloud's admin (or as the member user of the lab project)."""
    user, password, scope = (project, secrets["member"], project) if member else ("admin", secrets["admin"], "admin")
    return openstack.connection.Connection(
        auth_url=plan.auth_url,
        username=user,
        password=password,
        project_name=scope,
        user_domain_name=DOMAIN,
        project_domain_name=DOMAIN,
        region_name=plan.region,
        interface="public",
        identity_api_version="3",
        api_timeout=30,
        # uwsgi closes idle keep-alive connections: the next request on a pooled one fails
        # ("Remote end closed connection without response") and must be sent again.
        connect_retries=3,
    )


def openrc(plan: CloudPlan, secrets: CloudSecrets, *, member: bool = False, project: str = "lab") -> dict[str, str]:
    """The variables `openstack` (python-openstackclient) needs on the host."""
    user, password, scope = (project, secrets["member"], project) if member else ("admin", secrets["admin"], "admin")
    return {
        "OS_AUTH_URL": plan.auth_url,
        "OS_IDENTITY_API_VERSION": "3",
        "OS_USERNAME": user,
        "OS_PASSWORD": password,
        "OS_PROJECT_NAME": scope,
        "OS_USER_DOMAIN_NAME": DOMAIN,
        "OS_PROJECT_DOMAIN_NAME": DOMAIN,
        "OS_REGION_NAME": plan.region,
        "OS_INTERFACE": "public",
    }


# --- readiness ----------------------------------------------------------------


@dataclass
class Readiness:
    """When each part of a starting controller first answered, in seconds from the wait's start."""

    seen: dict[str, float] = field(default_factory=dict)
    missing: str = "nothing answered yet"


def wait_ready(
    conn: Connection, timeout: float, failed: Callable[[], str | None], scope: str = "cloud controller"
) -> Readiness:
    """Return once keystone issues tokens, the APIs answer, nova's conductor and scheduler are up and
    neutron's agents alive; CloudError after `timeout` or as soon as `failed()` says why it cannot."""
    start = time.monotonic()
    ready = Readiness()
    checks: list[tuple[str, Callable[[], str | None]]] = [
        ("token", lambda: None if conn.authorize() else "no token"),
        ("image", lambda: _answers(lambda: list(conn.image.images(limit=1)))),
        ("placement", lambda: _answers(lambda: list(conn.placement.resource_providers()))),
        ("compute", lambda: _missing_services(conn)),
        ("network", lambda: _missing_agents(conn)),
    ]
    pending = list(checks)
    while pending:
        why = failed()
        if why:
            raise CloudError(f"{scope}: {why}")
        name, check = pending[0]
        try:
            missing = check()
        except NOT_YET as exc:
            missing = f"{name}: {short_error(exc)}"
        if missing is None:
            ready.seen[name] = time.monotonic() - start
            progress.step(scope, f"{name} ready after {ready.seen[name]:.0f}s")
            pending.pop(0)
            continue
        ready.missing = missing
        if time.monotonic() - start > timeout:
            raise CloudError(f"{scope}: not ready after {timeout:.0f}s: {missing}")
        time.sleep(2.0)
    return ready


def _answers(call: Callable[[], Any]) -> str | None:
    call()
    return None


def _missing_services(conn: Connection) -> str | None:
    up = {s.binary for s in conn.compute.services() if s.state == "up"}
    missing = [name for name in CONTROLLER_SERVICES if name not in up]
    return f"nova services not up: {', '.join(missing)}" if missing else None


def _missing_agents(conn: Connection) -> str | None:
    alive = {a.agent_type for a in conn.network.agents() if a.is_alive}
    missing = [name for name in CONTROLLER_AGENTS if name not in alive]
    return f"neutron agents not alive: {', '.join(missing)}" if missing else None


def short_error(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


# --- what a new cloud has -------------------------------------------------------


def ensure_defaults(conn: Connection, plan: CloudPlan, secrets: CloudSecrets, project_name: str) -> list[str]:
    """Flavors, a member project and user, SSH and ping allowed, the provider network; what was made now."""
    made: list[str] = []
    for flavor in FLAVORS:
        if conn.compute.find_flavor(flavor.name) is None:
            conn.compute.create_flavor(name=flavor.name, vcpus=flavor.vcpus, ram=flavor.ram, disk=flavor.disk,
                                       is_public=True)
            made.append(f"flavor {flavor.name} ({flavor.vcpus} vCPU, {flavor.ram} MiB, {flavor.disk} GiB)")
    identity = cast(IdentityV3, conn.identity)  # identity_api_version = 3 (connect)
    domain = identity.find_domain(DOMAIN)
    if domain is None:
        raise CloudError("keystone has no Default domain: the controller's bootstrap did not run")
    project = identity.find_project(project_name, domain_id=domain.id)
    if project is None:
        project = identity.create_project(name=project_name, domain_id=domain.id,
                                               description="The lab's project (fab cloud.up)")
        made.append(f"project {project_name}")
    user = identity.find_user(project_name, domain_id=domain.id)
    if user is None:
        user = identity.create_user(name=project_name, password=secrets["member"], domain_id=domain.id,
                                         default_project_id=project.id)
        made.append(f"user {project_name}")
    role = identity.find_role(MEMBER_ROLE)
    if role is None:
        raise CloudError(f"keystone has no {MEMBER_ROLE!r} role: the controller's bootstrap did not run")
    if not identity.validate_user_has_project_role(project, user, role):
        identity.assign_project_role_to_user(project, user, role)
        made.append(f"role {MEMBER_ROLE} of {project_name} in {project_name}")
    made += _provider_network(conn, plan)
    made += _security_rules(plan, secrets, project_name)
    return made


def _provider_network(conn: Connection, plan: CloudPlan) -> list[str]:
    made: list[str] = []
    net = plan.inventory.network
    network = conn.network.find_network(PROVIDER_NETWORK)
    if network is None:
        network = conn.network.create_network(
            name=PROVIDER_NETWORK,
            is_shared=True,
            provider_network_type="flat",
            provider_physical_network=PHYSNET,
        )
        made.append(f"network {PROVIDER_NETWORK} (flat, on the lab LAN)")
    if conn.network.find_subnet(PROVIDER_SUBNET) is None:
        conn.network.create_subnet(
            name=PROVIDER_SUBNET,
            network_id=network.id,
            ip_version=4,
            cidr=net.subnet,
            gateway_ip=net.gateway,
            allocation_pools=[{"start": plan.pool[0], "end": plan.pool[1]}],
            dns_nameservers=[net.server],
            is_dhcp_enabled=True,
        )
        made.append(f"subnet {PROVIDER_SUBNET} {net.subnet}, servers from {plan.pool[0]} to {plan.pool[1]}")
    return made


def _security_rules(plan: CloudPlan, secrets: CloudSecrets, project_name: str) -> list[str]:
    """SSH and ping into the member project's default group (neutron makes the group at the project's first look)."""
    made: list[str] = []
    member = connect(plan, secrets, member=True, project=project_name)
    groups = [g for g in member.network.security_groups(name="default") if g.project_id == member.current_project_id]
    if not groups:
        raise CloudError(f"neutron made no default security group for project {project_name}")
    group = groups[0]
    wanted = {("tcp", 22): "SSH", ("icmp", None): "ping"}
    for rule in group.security_group_rules or []:
        key = (rule.get("protocol"), rule.get("port_range_min"))
        if rule.get("direction") == "ingress" and rule.get("ethertype") == "IPv4" and key in wanted:
            wanted.pop(key)
    for (protocol, port), what in wanted.items():
        member.network.create_security_group_rule(
            security_group_id=group.id, direction="ingress", ethertype="IPv4", protocol=protocol,
            port_range_min=port, port_range_max=port, remote_ip_prefix="0.0.0.0/0",
        )
        made.append(f"security group rule: {what} into {project_name}")
    return made


# --- what runs ------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceState:
    name: str
    host: str
    up: bool
    reported: datetime | None = None  # its last report, UTC: nova's updated_at, neutron's last heartbeat


@dataclass(frozen=True)
class Capacity:
    """One resource provider (a hypervisor) as placement counts it."""

    name: str
    vcpus: int
    vcpus_used: int
    memory_mb: int
    memory_mb_used: int
    disk_gb: int
    disk_gb_used: int


@dataclass(frozen=True)
class Services:
    compute: tuple[ServiceState, ...]
    agents: tuple[ServiceState, ...]
    capacity: tuple[Capacity, ...]

    def hypervisors(self, reported_since: Mapping[str, datetime] | None = None) -> set[str]:
        """Hosts that can take a server: nova-compute up and their network agent alive. nova-compute
        alone is not enough: a port bound while the host's agent has not yet reported fails its
        binding, and nova, with no other host to retry on, puts the server in ERROR.

        A host in `reported_since` counts only once both have reported after that time: one powered
        on again looks up from its previous boot's last reports until nova's service_down_time (60 s)
        has passed, and a server asked for then finds no valid host."""
        since = reported_since or {}

        def fresh(state: ServiceState) -> bool:
            after = since.get(state.host)
            return state.up and (after is None or (state.reported is not None and state.reported > after))

        agents = {s.host for s in self.agents if s.name == HYPERVISOR_AGENT and fresh(s)}
        return {s.host for s in self.compute if s.name == "nova-compute" and fresh(s) and s.host in agents}


def services(conn: Connection) -> Services:
    compute = tuple(ServiceState(s.binary, s.host, s.state == "up", reported_at(s.updated_at))
                    for s in conn.compute.services())
    agents = tuple(ServiceState(a.agent_type, a.host, bool(a.is_alive), reported_at(a.last_heartbeat_at))
                   for a in conn.network.agents())
    return Services(compute, agents, tuple(_capacity(conn)))


def reported_at(value: object) -> datetime | None:
    """nova's and neutron's report times ("2026-12-06T08:14:05.000000", "2026-12-06 08:14:05"), in UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _capacity(conn: Connection) -> list[Capacity]:
    found = []
    for provider in conn.placement.resource_providers():
        inventory = {i.resource_class: i for i in conn.placement.resource_provider_inventories(provider)}
        usages = conn.placement.get(f"/resource_providers/{provider.id}/usages").json().get("usages", {})
        totals = {rc: _usable(inventory.get(rc)) for rc in ("VCPU", "MEMORY_MB", "DISK_GB")}
        found.append(Capacity(provider.name, totals["VCPU"], int(usages.get("VCPU", 0)), totals["MEMORY_MB"],
                              int(usages.get("MEMORY_MB", 0)), totals["DISK_GB"], int(usages.get("DISK_GB", 0))))
    return found


def _usable(item: Any) -> int:
    """What placement lets servers use of one inventory: (total - reserved) x allocation ratio."""
    if item is None:
        return 0
    return int((item.total - (item.reserved or 0)) * (item.allocation_ratio or 1.0))


# --- servers and images -----------------------------------------------------------


def upload_image(conn: Connection, name: str, path: Path, properties: dict[str, str], *, min_disk: int = 0,
                 disk_format: str = "raw") -> str:
    """An image in glance from `path` (`raw` or `qcow2`); its id. The caller decides what a name already
    taken means (the SDK's own look-up by name fails on names with a colon, as `<prefix>/<role>:<N>`).
    Nova refuses a flavor whose disk is under `min_disk` GiB with an error that says so."""
    extra: dict[str, Any] = {"visibility": "private", "min_disk": min_disk, **properties}
    image = conn.image.create_image(name, filename=str(path), disk_format=disk_format, container_format="bare",
                                    allow_duplicates=True, wait=True, timeout=600, **extra)
    return str(image.id)


def image_record(conn: Connection, image_id: str) -> dict[str, Any]:
    """What glance records of an image: its status, size, checksums and properties, as one mapping."""
    return _record(conn.image.get_image(image_id))


def _record(image: Any) -> dict[str, Any]:
    return {**(image.properties or {}), "id": image.id, "name": image.name, "status": image.status,
            "size": image.size, "os_hash_algo": image.hash_algo, "os_hash_value": image.hash_value}


def images_named(conn: Connection, name: str) -> list[dict[str, Any]]:
    """Every image of the project called `name` (an interrupted upload leaves one that is not active)."""
    # Glance reads `name=a:b` as operator `a`: a quoted value in an `in:` list is taken whole.
    quoted = name.replace('"', '\\"')
    return [_record(image) for image in conn.image.images(name=f'in:"{quoted}"')]


def delete_image(conn: Connection, image_id: str) -> None:
    conn.image.delete_image(image_id, ignore_missing=True)


def boot_server(conn: Connection, name: str, image_id: str, flavor: str, network: str,
                security_groups: tuple[str, ...] = ("default",), *, user_data: str = "",
                metadata: dict[str, str] | None = None, group: str = "") -> str:
    """Ask nova for a server; its id (it is BUILD until ACTIVE). `user_data` is what the metadata
    service hands the server; `group` a server group whose policy the scheduler follows."""
    found = conn.compute.find_flavor(flavor)
    net = conn.network.find_network(network)
    if found is None or net is None:
        raise CloudError(f"the cloud has no flavor {flavor!r} or no network {network!r}: run `fab cloud.up` first")
    server = conn.compute.create_server(name=name, image_id=image_id, flavor_id=found.id,
                                        networks=[{"uuid": net.id}],
                                        security_groups=[{"name": g} for g in security_groups],
                                        metadata=metadata or {},
                                        # Nova's API takes user data base64-encoded; the SDK's proxy sends it as is.
                                        **({"user_data": base64.b64encode(user_data.encode()).decode()}
                                           if user_data else {}),
                                        **({"scheduler_hints": {"group": group}} if group else {}))
    return str(server.id)


def open_port(conn: Connection, name: str, port: int, source: str) -> str:
    """A security group `name` that lets TCP `port` in from `source` (a CIDR); its id."""
    group = conn.network.create_security_group(name=name, description=f"tcp/{port} from {source} (fab cloud.test)")
    conn.network.create_security_group_rule(security_group_id=group.id, direction="ingress", ethertype="IPv4",
                                            protocol="tcp", port_range_min=port, port_range_max=port,
                                            remote_ip_prefix=source)
    return str(group.id)


def delete_security_group(conn: Connection, group_id: str, timeout: float = 60) -> None:
    """Delete the group once neutron has let go of the deleted server's port (409 until then)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.network.delete_security_group(group_id, ignore_missing=True)
            return
        except openstack.exceptions.ConflictException:
            if time.monotonic() > deadline:
                raise
            time.sleep(2.0)


@dataclass(frozen=True)
class ServerState:
    id: str
    status: str
    host: str
    addresses: tuple[str, ...]
    fault: str


def server_state(conn: Connection, server_id: str) -> ServerState:
    server = conn.compute.get_server(server_id)
    return ServerState(str(server.id), str(server.status), str(server.hypervisor_hostname or ""),
                       ipv4_addresses(server), fault_message(server))


def ipv4_addresses(server: Any) -> tuple[str, ...]:
    """A server's IPv4 addresses, over all its networks (nova lists them per network)."""
    return tuple(a["addr"] for net in (getattr(server, "addresses", None) or {}).values() for a in net
                 if a.get("version") == 4)


def fault_message(server: Any) -> str:
    """What nova recorded of a server's fault ("" when none)."""
    fault = getattr(server, "fault", None)
    return str(fault.get("message", "")) if isinstance(fault, dict) else ""


def console_output(conn: Connection, server_id: str) -> str:
    answer = conn.compute.get_server_console_output(server_id)
    return str(answer.get("output", "") if isinstance(answer, dict) else answer)


def delete_server(conn: Connection, server_id: str, timeout: float = 300) -> None:
    """Delete the server and wait until nova has let it go.

    A deletion can fail on the hypervisor (libvirt's LXC driver, destroying a
    container whose cgroup is already gone): nova then leaves the server in
    ERROR, and asking again deletes it.
    """
    conn.compute.delete_server(server_id, ignore_missing=True)
    deadline = time.monotonic() + timeout
    asked = time.monotonic()
    while (server := conn.compute.find_server(server_id)) is not None:
        if time.monotonic() > deadline:
            raise CloudError(f"server {server_id} was not deleted within {timeout:.0f}s")
        if server.status == "ERROR" and not server.task_state and time.monotonic() - asked > 5:
            conn.compute.delete_server(server_id, ignore_missing=True)
            asked = time.monotonic()
        time.sleep(2.0)
