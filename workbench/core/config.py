"""The workbench's configuration: `workbench.toml`, read into frozen dataclasses.

The dataclasses below *are* the table of settings: each field has a type, a
default and a help text (in its metadata). The loader checks a file against
them, and `reference_markdown()` renders the README's configuration reference
from them, so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.core.errors import ConfigError

CONFIG_FILE = "workbench.toml"
ENV_CONFIG = "WORKBENCH_CONFIG"

NAME_RE = re.compile(r"^[a-z][a-z0-9]*$")
VARIABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Linux capabilities by Docker's names (capabilities(7) without `CAP_`), for `[roles.<r>] capabilities`.
CAPABILITIES = frozenset({
    "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "BPF", "CHECKPOINT_RESTORE", "CHOWN",
    "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER", "KILL", "LEASE",
    "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN", "NET_BIND_SERVICE", "NET_BROADCAST",
    "NET_RAW", "PERFMON", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYSLOG", "SYS_ADMIN", "SYS_BOOT",
    "SYS_CHROOT", "SYS_MODULE", "SYS_NICE", "SYS_PACCT", "SYS_PTRACE", "SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME",
    "SYS_TTY_CONFIG", "WAKE_ALARM",
})


def setting(default: Any, help: str, *, choices: tuple[str, ...] = ()) -> Any:
    """A field of the settings table: its default, its help text, its allowed values."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict, tuple)):
        frozen = tuple(default) if isinstance(default, list) else default
        return field(default_factory=lambda: frozen, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class WorkbenchSettings:
    """`[workbench]`: names and places."""

    prefix: str = setting(
        "workbench",
        "Prefix of every image, container, network and volume the tool creates.",
    )
    state_dir: str = setting(
        ".workbench",
        "Where builds, the ledger, registry data and logs live (relative to the checkout).",
    )
    checkout: str = setting(
        "", "The checkout holding salt/, images/ and tests/ (default: the directory of this file)."
    )
    domain: str = setting("wpdn", "Naming domain: hosts are `<role>[-<variant>].<environment>.<domain>`.")
    default_role: str = setting("app", "Role used when a task is given none (`fab sandbox.up`).")
    common_states: tuple[str, ...] = setting(
        ["base"], "Salt states applied to every role before its own (the users' basesystem)."
    )
    keep_logs: int = setting(
        50,
        "Run logs kept in `<state_dir>/logs/` (the whole output of each bake, promote, sandbox and netboot run, "
        "`fab log`); a new run removes the oldest beyond this many.",
    )


@dataclass(frozen=True)
class BaseSettings:
    """`[base]`: the vanilla base image every role starts from."""

    distribution: str = setting("debian", "Distribution of the base.", choices=("debian",))
    suite: str = setting("bookworm", "Distribution release debootstrap installs.")
    mirror: str = setting("http://deb.debian.org/debian", "Package mirror for the base and for bakes.")
    security_mirror: str = setting(
        "http://deb.debian.org/debian-security", "Mirror of security updates, written into the image's sources."
    )
    variant: str = setting(
        "minbase", "debootstrap variant.", choices=("minbase", "buildd", "fakechroot", "standard")
    )
    packages: tuple[str, ...] = setting(
        [], "Extra packages in the base, beyond python3 (which masterless Salt needs)."
    )


@dataclass(frozen=True)
class CacheSettings:
    """`[cache]`: the local package cache bakes fetch through (apt-cacher-ng)."""

    enabled: bool = setting(True, "Fetch packages through the local cache.")
    port: int = setting(3142, "Port of the cache on the Docker bridge gateway and loopback.")
    upstream: str = setting("", "Mirror the cache fetches from (default: `[base] mirror`).")
    offline: bool = setting(False, "Serve only what the cache holds, never contacting the mirror.")


@dataclass(frozen=True)
class RegistrySettings:
    """`[registry]`: where released images are pushed."""

    host: str = setting("127.0.0.1", "Address the local registry listens on (loopback).")
    port: int = setting(5000, "Port of the local registry.")


@dataclass(frozen=True)
class BuilderSettings:
    """`[builder]`: how role images are baked."""

    type: str = setting("docker", "Packer builder: a container image, or a qcow2 disk.", choices=("docker", "qemu"))
    parallel: int = setting(0, "Bakes run at once by `image.bake --all` (0: one per core).")
    accelerator: str = setting(
        "tcg", "qemu builder: `tcg` (software emulation) or `kvm` (needs a usable /dev/kvm).", choices=("tcg", "kvm")
    )
    memory: int = setting(1024, "qemu builder: the build and test VMs' memory, in MiB.")
    cpus: int = setting(2, "qemu builder: the build and test VMs' virtual CPUs.")
    disk_size: int = setting(4096, "qemu builder: size of the qcow2 disk, in MiB (a 128 MiB /boot, the rest root).")


@dataclass(frozen=True)
class Environment:
    """`[environments.<name>]`: a place releases are promoted to."""

    name: str
    frontend_port: int = setting(0, "Loopback port of the environment's nginx frontend (0: none).")
    frontend_role: str = setting("app", "Role the frontend sends requests to (`/` and below).")
    retention: int = setting(10, "Releases per role kept rollback-able.")
    variables: dict[str, str] = setting({}, "Settings given to containers at deploy time (environment).")
    target: str = setting(
        "docker",
        "Where the environment's releases run: the local Docker engine, or servers on the homelab cloud "
        "(`fab cloud.up`) behind a frontend container on the lab LAN.",
        choices=("docker", "openstack"),
    )
    lab_address: str = setting(
        "",
        "target = \"openstack\": the frontend container's address on the lab LAN, from which it reaches the "
        "servers (inside the inventory's subnet, outside its `dhcp_range` and `[cloud] provider_pool`).",
    )
    flavor: str = setting(
        "lab.small",
        "target = \"openstack\": the nova flavor of the environment's servers (on a kvm/qemu cloud one whose disk "
        "holds the role's qcow2, e.g. `lab.medium`; a flavor too small for the image is refused before any server "
        "starts).",
    )
    replicas: int = setting(1, "Instances of each release, all behind the frontend.")
    health_timeout: int = setting(
        0,
        "Seconds a new instance gets to pass the role's health check before the promote or rollback fails and "
        "removes it (0: the target's default: 90 on docker, 240 on the cloud, 1200 under `virt_type = \"qemu\"`).",
    )
    backup_every: str = setting(
        "",
        "How often `fab watch` backs up the databases serving here (roles with `dbms`): `6h`, `30m`, `1d`, or "
        "seconds (`\"3600\"`); empty: only `fab db.backup`.",
    )
    backup_keep: int = setting(7, "Backups kept per database role here; the oldest go after each new one.")
    standby: int = setting(
        300,
        "Seconds the release just replaced keeps running as a warm standby, taking no traffic, so that a "
        "rollback to it is a frontend switch (0: off; roles that keep data never have one).",
    )


@dataclass(frozen=True)
class Role:
    """`[roles.<name>]`: what a role image holds, and how it is checked."""

    name: str
    description: str = setting("", "One line on what the role is for.")
    states: tuple[str, ...] = setting([], "The role's Salt states (default: the role's name).")
    tests: str = setting("", "testinfra file (default: tests/roles/test_<role>.py).")
    ports: tuple[int, ...] = setting([], "Ports the role serves on.")
    health: str = setting("", "HTTP path answering 200 when healthy, on the first port (empty: none).")
    command: tuple[str, ...] = setting(
        ["/usr/local/sbin/workbench-init"],
        "The image's command. The default, from the base state, runs monit in the foreground, "
        "which starts and supervises the role's services.",
    )
    aliases: tuple[str, ...] = setting([], "Other names for the role in host names (`hv` for hypervisor).")
    formulas: tuple[str, ...] = setting([], "Extra state roots (formula directories) for this role.")
    data: tuple[str, ...] = setting(
        [],
        "Paths that hold the role's data (`/var/lib/mysql`): each environment keeps one volume per path, "
        "filled from the image at the first promote and mounted by every later release and rollback.",
    )
    idempotence_exempt: tuple[str, ...] = setting(
        [], "State IDs allowed to report changes on the second run."
    )
    dbms: str = setting(
        "",
        "The database server the role runs, for `fab db.*` backups and restores and for deployed pools' "
        "accounts and replication (needs `data`); empty: none.",
        choices=("", "mariadb"),
    )
    capabilities: tuple[str, ...] = setting(
        [],
        "Linux capabilities the role's containers get beyond Docker's defaults (`NET_ADMIN`, without `CAP_`), "
        "in verification and on the Docker deploy target; the controller's neutron agents need "
        "NET_ADMIN, SYS_ADMIN, DAC_READ_SEARCH and SYS_PTRACE.",
    )
    verify_environment: tuple[str, ...] = setting(
        [],
        "`KEY=VALUE` settings given to the candidate's container in verification only "
        "(`WORKBENCH_CLOUD_THROWAWAY=1`).",
    )
    start_timeout: int = setting(
        0,
        "Seconds verification waits for the candidate's ports to listen and its health path to answer "
        "before it runs the tests anyway (0: the default, 90).",
    )

    @property
    def state_list(self) -> tuple[str, ...]:
        return self.states or (self.name,)

    @property
    def tests_path(self) -> str:
        return self.tests or f"tests/roles/test_{self.name}.py"


@dataclass(frozen=True)
class WatchSettings:
    """`[watch]`: `fab watch` bakes the roles a new commit changed."""

    repository: str = setting("", "Git repository to watch: a path or a URL (default: the checkout itself).")
    branch: str = setting("master", "Branch whose new commits fire events.")
    interval: int = setting(30, "Seconds between two looks at the branch (the HTTP hook fires one at once).")
    roles: tuple[str, ...] = setting([], "Roles baked when a commit changes their inputs (default: every role).")
    promote: str = setting("", "Environment freshly baked roles are promoted to (empty: bake only).")
    hook_port: int = setting(8765, "Loopback port of the HTTP hook; `POST /hook` fires an event (0: no hook).")


@dataclass(frozen=True)
class Pool:
    """`[pools.<name>]`: hosts of one role that other roles are configured to use."""

    name: str
    role: str = setting("", "The role its members run (e.g. db, cache).")
    port: int = setting(0, "Port its members serve on (0: the role's first port).")
    used_by: tuple[str, ...] = setting([], "Roles whose configuration is rendered from this pool at deploy time.")
    environments: tuple[str, ...] = setting([], "Environments the pool belongs to (default: every one).")
    members: tuple[dict[str, str], ...] = setting(
        [], "Its hosts: `{ name = \"db1\", private = \"10.0.0.5\", public = \"203.0.113.5\" }` (public optional)."
    )
    variables: dict[str, str] = setting({}, "Settings handed to its users with the addresses (database name, user...).")
    deployed: bool = setting(
        False,
        "The workbench runs the members itself, as the releases of `role` in each of the pool's environments: "
        "members are named `<role><n>` and reached by name (`db2.staging.wpdn`, no `private`), each with its own data; "
        "for a `dbms` role the first is the primary, the others replicate from it over TLS, and each user role gets "
        "an account made at deploy time.",
    )


@dataclass(frozen=True)
class SandboxSettings:
    """`[sandbox]`: the Vagrant sandboxes where states are tried before a bake (`fab sandbox.up`)."""

    provider: str = setting(
        "docker",
        "Vagrant provider of new sandboxes (`--provider` overrides): a container from the base image, "
        "or a VM from `box`.",
        choices=("docker", "libvirt", "virtualbox"),
    )
    box: str = setting(
        "debian/bookworm64",
        "Vagrant box of VM sandboxes (libvirt, virtualbox); add it first with `vagrant box add`, "
        "nothing is downloaded.",
    )
    memory: int = setting(1024, "MiB of memory of a VM sandbox.")
    cpus: int = setting(1, "Virtual CPUs of a VM sandbox.")
    salt_dir: str = setting("/srv/salt", "Where the checkout's salt/ tree is shared, read-only, inside a sandbox.")
    ready_timeout: int = setting(90, "Seconds a sandbox's services get to answer on the role's ports.")
    image_only_tests: tuple[str, ...] = setting(
        ["test_no_build_machinery", "test_no_package_caches", "test_no_build_host_ca"],
        "Role tests that check the baked artifact (no Salt, no apt caches left), not what the states do: "
        "`sandbox.test` leaves them out, since a sandbox keeps Salt and caches to provision again.",
    )


@dataclass(frozen=True)
class CloudSettings:
    """`[cloud]`: the homelab OpenStack (`fab cloud.up`): a controller container on the lab LAN of the inventory."""

    inventory: str = setting("netboot/inventory.toml", "The lab's inventory: its network, node and hypervisors.")
    controller_address: str = setting(
        "10.77.0.2",
        "The controller's address on the lab LAN: inside the inventory's subnet, outside its `dhcp_range`, "
        "not the node's nor a node's reservation.",
    )
    public_port_offset: int = setting(
        20000,
        "The host reaches each API on 127.0.0.1 at its port plus this (keystone 5000 on 25000, glance 9292 on "
        "29292, placement 8778, nova 8774, neutron 9696): the catalogue's public endpoints.",
    )
    provider_pool: tuple[str, ...] = setting(
        ["10.77.0.200", "10.77.0.239"],
        "First and last address Neutron's DHCP gives servers on the flat provider network (the lab LAN): "
        "outside the node's `dhcp_range` and, in proxy mode, outside the home router's pool.",
    )
    virt_type: str = setting(
        "lxc",
        "How hypervisors run servers: `kvm` on real PCs; `qemu` (software emulation) or `lxc` (libvirt's "
        "container driver) in VMs without nested virtualisation.",
        choices=("kvm", "qemu", "lxc"),
    )
    region: str = setting("RegionOne", "The region name in the catalogue.")
    workers: int = setting(2, "Worker processes per API service (each costs about 100 MiB).")
    project: str = setting("lab", "The non-admin project (and user of the same name) a new cloud gets.")
    vm_memory: int = setting(
        4096,
        "MiB of memory of each hypervisor VM `fab cloud.up --vms N` boots: the live image lives in RAM, then "
        "libvirt, nova-compute, the agent and a guest.",
    )


DEFAULT_ENVIRONMENTS = ("sandbox", "staging", "production")

_SECTIONS: dict[str, type] = {
    "workbench": WorkbenchSettings,
    "base": BaseSettings,
    "cache": CacheSettings,
    "registry": RegistrySettings,
    "builder": BuilderSettings,
    "watch": WatchSettings,
    "sandbox": SandboxSettings,
    "cloud": CloudSettings,
}
_TABLES: dict[str, type] = {"environments": Environment, "roles": Role, "pools": Pool}


@dataclass(frozen=True)
class Config:
    """The whole configuration, validated."""

    path: Path
    workbench: WorkbenchSettings
    base: BaseSettings
    cache: CacheSettings
    registry: RegistrySettings
    builder: BuilderSettings
    environments: Mapping[str, Environment]
    roles: Mapping[str, Role]
    watch: WatchSettings = field(default_factory=WatchSettings)
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    cloud: CloudSettings = field(default_factory=CloudSettings)
    pools: Mapping[str, Pool] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        """The checkout: relative paths in the file are relative to it."""
        return (self.path.parent / self.workbench.checkout).resolve()

    @property
    def state_dir(self) -> Path:
        return (self.root / self.workbench.state_dir).resolve()

    @property
    def prefix(self) -> str:
        return self.workbench.prefix

    def role(self, name: str) -> Role:
        """The role called `name` (or one of its aliases)."""
        for role in self.roles.values():
            if name == role.name or name in role.aliases:
                return role
        known = ", ".join(sorted(self.roles)) or "none"
        raise ConfigError(
            f"unknown role {name!r}: {self.path} defines {known} (add a [roles.{name}] table to define it)"
        )

    def with_builder(self, kind: str) -> Config:
        """This configuration with `[builder] type = kind` for one command (`image.bake --builder qemu`)."""
        kinds = {f.name: f for f in dataclasses.fields(BuilderSettings)}["type"].metadata["choices"]
        if kind not in kinds:
            raise ConfigError(f"--builder {kind!r}: choose one of {', '.join(kinds)} ([builder] type of {self.path} "
                              f"is {self.builder.type!r}, used when --builder is not given)")
        return dataclasses.replace(self, builder=dataclasses.replace(self.builder, type=kind))

    def environment(self, name: str) -> Environment:
        if name not in self.environments:
            known = ", ".join(self.environments)
            raise ConfigError(
                f"unknown environment {name!r}: {self.path} defines {known} "
                f"(add an [environments.{name}] table to define it)"
            )
        return self.environments[name]


# --- loading -----------------------------------------------------------------


def find_config(start: Path | None = None) -> Path:
    """`$WORKBENCH_CONFIG`, or the nearest `workbench.toml` from `start` upwards."""
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG]).resolve()
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / CONFIG_FILE
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no {CONFIG_FILE} in {here} or above: run from the checkout, or set {ENV_CONFIG}=/path/to/{CONFIG_FILE}"
    )


def load(path: Path | None = None) -> Config:
    """Read and validate a configuration file; every problem in it is reported at once."""
    path = (path or find_config()).resolve()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_dict(data, path)


def from_dict(data: Mapping[str, Any], path: Path) -> Config:
    problems: list[str] = []
    sections: dict[str, Any] = {}  # section name -> its settings object
    for key in data:
        if key not in _SECTIONS and key not in _TABLES:
            problems.append(f"unknown section [{key}]: expected one of {', '.join([*_SECTIONS, *_TABLES])}")
    for key, cls in _SECTIONS.items():
        raw = data.get(key, {})
        if not isinstance(raw, dict):
            problems.append(f"[{key}] must be a table, not {_type_name(raw)}")
            raw = {}
        sections[key] = _build(cls, raw, f"[{key}]", problems)
    tables: dict[str, Any] = {}  # table name -> {entry name -> its object}
    for key, cls in _TABLES.items():
        raw = data.get(key)
        if raw is None:
            raw = {name: {} for name in DEFAULT_ENVIRONMENTS} if key == "environments" else {}
        if not isinstance(raw, dict):
            problems.append(f"[{key}] must be a table of tables, not {_type_name(raw)}")
            raw = {}
        built: dict[str, Any] = {}
        for name, body in raw.items():
            where = f"[{key}.{name}]"
            if not NAME_RE.match(name):
                problems.append(f"{where}: name {name!r} must be lower-case letters and digits, starting with a letter")
            if not isinstance(body, dict):
                problems.append(f"{where} must be a table, not {_type_name(body)}")
                continue
            built[name] = _build(cls, {**body, "name": name}, where, problems)
        tables[key] = built
    config = Config(path=path, **sections, **tables)
    problems.extend(_cross_checks(config))
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{path}: {len(problems)} problem(s):\n{listing}")
    return config


def _build(cls: type, raw: Mapping[str, Any], where: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            allowed = ", ".join(k for k in fields if k != "name")
            problems.append(f"{where}: unknown key {key!r}: expected one of {allowed}")
            continue
        error = _check_type(value, hints[key])
        if error:
            problems.append(f"{where} {key} = {value!r}: {error}")
            continue
        choices = fields[key].metadata.get("choices")
        if choices and value not in choices:
            problems.append(f"{where} {key} = {value!r}: must be one of {', '.join(choices)}")
            continue
        values[key] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def _check_type(value: Any, hint: Any) -> str | None:
    origin = typing.get_origin(hint)
    if hint is bool:
        return None if isinstance(value, bool) else f"expected true or false, got {_type_name(value)}"
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"expected an integer, got {_type_name(value)}"
    if hint is str:
        return None if isinstance(value, str) else f"expected a string, got {_type_name(value)}"
    if origin is tuple:
        (item, _) = typing.get_args(hint)
        if not isinstance(value, list):
            return f"expected a list, got {_type_name(value)}"
        for element in value:
            error = _check_type(element, item)
            if error:
                return f"in the list: {error}"
        return None
    if origin is dict:
        if not isinstance(value, dict):
            return f"expected a table, got {_type_name(value)}"
        for k, v in value.items():
            if not isinstance(v, str):
                return f"value of {k!r}: expected a string, got {_type_name(v)}"
        return None
    raise TypeError(f"no check for {hint}")


def _type_name(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _cross_checks(config: Config) -> list[str]:
    problems: list[str] = []
    wb = config.workbench
    if not re.match(r"^[a-z0-9][a-z0-9_.-]*$", wb.prefix):
        problems.append(f"[workbench] prefix = {wb.prefix!r}: use lower-case letters, digits, '.', '_' or '-'")
    if not re.match(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$", wb.domain):
        problems.append(f"[workbench] domain = {wb.domain!r}: must be a DNS domain (labels of a-z, 0-9, '-')")
    if not 1 <= wb.keep_logs <= 10000:
        problems.append(f"[workbench] keep_logs = {wb.keep_logs}: keep between 1 and 10000 run logs")
    if config.roles and wb.default_role not in config.roles:
        problems.append(
            f"[workbench] default_role = {wb.default_role!r}: no such role (roles: {', '.join(config.roles)})"
        )
    names: dict[str, str] = {}
    for role in config.roles.values():
        for alias in (role.name, *role.aliases):
            if not NAME_RE.match(alias):
                problems.append(f"[roles.{role.name}] aliases: {alias!r} must be lower-case letters and digits")
            if alias in names and names[alias] != role.name:
                problems.append(f"[roles.{role.name}] aliases: {alias!r} already names role {names[alias]!r}")
            names[alias] = role.name
        for port in role.ports:
            if not 0 < port < 65536:
                problems.append(f"[roles.{role.name}] ports: {port} is not a TCP port (1-65535)")
        if role.health and not role.health.startswith("/"):
            problems.append(f"[roles.{role.name}] health = {role.health!r}: must be an HTTP path starting with '/'")
        if role.health and not role.ports:
            problems.append(f"[roles.{role.name}] health is set but ports is empty: the check needs a port")
        tests = config.root / role.tests_path
        if not tests.is_file():
            problems.append(f"[roles.{role.name}] tests = {role.tests_path!r}: no such file under {config.root}")
        seen_data: set[str] = set()
        for data in role.data:
            if not data.startswith("/") or data.rstrip("/") == "" or ".." in data.split("/"):
                problems.append(f"[roles.{role.name}] data: {data!r} must be an absolute path below / (no '..')")
            elif data.rstrip("/") in seen_data:
                problems.append(f"[roles.{role.name}] data: {data!r} is listed twice")
            seen_data.add(data.rstrip("/"))
        for capability in role.capabilities:
            if capability not in CAPABILITIES:
                problems.append(
                    f"[roles.{role.name}] capabilities: {capability!r} is not a Linux capability "
                    f"(one of {', '.join(sorted(CAPABILITIES))}; without `CAP_`)"
                )
        for assignment in role.verify_environment:
            key, sep, _ = assignment.partition("=")
            if not sep or not VARIABLE_RE.match(key):
                problems.append(
                    f"[roles.{role.name}] verify_environment: {assignment!r} is not KEY=VALUE "
                    "(KEY an environment variable name)"
                )
        if not 0 <= role.start_timeout <= 3600:
            problems.append(
                f"[roles.{role.name}] start_timeout = {role.start_timeout}: give 1 to 3600 seconds (0: the default)"
            )
        if role.dbms and not role.data:
            problems.append(f"[roles.{role.name}] dbms = {role.dbms!r}: a database role needs `data` (its data path)")
        for formula in role.formulas:
            if not (config.root / formula).is_dir():
                problems.append(f"[roles.{role.name}] formulas: {formula!r} is not a directory under {config.root}")
    for env in config.environments.values():
        if env.frontend_port and not 0 < env.frontend_port < 65536:
            problems.append(f"[environments.{env.name}] frontend_port = {env.frontend_port}: not a TCP port")
        if env.frontend_port and config.roles and env.frontend_role not in config.roles:
            problems.append(
                f"[environments.{env.name}] frontend_role = {env.frontend_role!r}: no such role "
                f"(roles: {', '.join(config.roles)})"
            )
        if env.target == "openstack":
            if not env.lab_address:
                problems.append(f"[environments.{env.name}] target = \"openstack\" needs lab_address: the "
                                "frontend's address on the lab LAN (e.g. \"10.77.0.3\")")
            else:
                try:
                    ipaddress.IPv4Address(env.lab_address)
                except ValueError:
                    problems.append(f"[environments.{env.name}] lab_address = {env.lab_address!r}: not an IPv4 address")
        if env.retention < 1:
            problems.append(f"[environments.{env.name}] retention = {env.retention}: keep at least 1 release")
        if env.standby < 0:
            problems.append(f"[environments.{env.name}] standby = {env.standby}: seconds, 0 or more (0 turns it off)")
        if env.backup_every and parse_duration(env.backup_every) is None:
            problems.append(f"[environments.{env.name}] backup_every = {env.backup_every!r}: give seconds (\"3600\") "
                            "or a number with s, m, h or d (\"6h\"), at least 60 seconds")
        if not 0 <= env.health_timeout <= 86400:
            problems.append(f"[environments.{env.name}] health_timeout = {env.health_timeout}: give 1 to 86400 "
                            "seconds (0: the target's default)")
        if env.backup_keep < 1:
            problems.append(f"[environments.{env.name}] backup_keep = {env.backup_keep}: keep at least 1 backup")
        if not 1 <= env.replicas <= 16:
            problems.append(f"[environments.{env.name}] replicas = {env.replicas}: run between 1 and 16 instances")
        for var in env.variables:
            if not VARIABLE_RE.match(var):
                problems.append(f"[environments.{env.name}] variables: {var!r} is not an environment variable name")
    builder = config.builder
    if builder.memory < 256:
        problems.append(f"[builder] memory = {builder.memory}: give the VM at least 256 (MiB)")
    if builder.cpus < 1:
        problems.append(f"[builder] cpus = {builder.cpus}: give the VM at least 1")
    if builder.disk_size < 1024:
        problems.append(f"[builder] disk_size = {builder.disk_size}: at least 1024 (MiB) holds a kernel and a base")
    for port_name, port in (("cache", config.cache.port), ("registry", config.registry.port)):
        if not 0 < port < 65536:
            problems.append(f"[{port_name}] port = {port}: not a TCP port")
    problems.extend(_operations_checks(config))
    problems.extend(_cloud_checks(config.cloud))
    return problems


def _cloud_checks(cloud: CloudSettings) -> list[str]:
    """What [cloud] says on its own; what it says about the inventory's lab is checked with the inventory."""
    problems: list[str] = []
    addresses = [("controller_address", cloud.controller_address), *(("provider_pool", a) for a in cloud.provider_pool)]
    for key, value in addresses:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            problems.append(f"[cloud] {key}: {value!r} is not an IPv4 address")
    if len(cloud.provider_pool) != 2:
        problems.append(f"[cloud] provider_pool = {list(cloud.provider_pool)!r}: give the first and the last address")
    if not 1024 <= cloud.public_port_offset <= 65535 - 9696:
        problems.append(f"[cloud] public_port_offset = {cloud.public_port_offset}: between 1024 and {65535 - 9696}, "
                        "so that every API's port plus it is a TCP port")
    if not 1 <= cloud.workers <= 16:
        problems.append(f"[cloud] workers = {cloud.workers}: between 1 and 16 per API")
    if cloud.vm_memory < 2048:
        problems.append(f"[cloud] vm_memory = {cloud.vm_memory}: at least 2048 (MiB): the live image and the "
                        "compute services need that before any guest")
    if not NAME_RE.match(cloud.project):
        problems.append(f"[cloud] project = {cloud.project!r}: lower-case letters and digits, starting with a letter")
    if not re.match(r"^[A-Za-z][A-Za-z0-9_-]*$", cloud.region):
        problems.append(f"[cloud] region = {cloud.region!r}: letters, digits, '-' or '_', starting with a letter")
    return problems


def _operations_checks(config: Config) -> list[str]:
    """[watch] and [pools.*]: every role and environment they name exists."""
    problems: list[str] = []
    watch = config.watch
    roles = ", ".join(sorted(config.roles)) or "none"
    for name in watch.roles:
        if name not in config.roles:
            problems.append(f"[watch] roles: unknown role {name!r} (roles: {roles})")
    if watch.promote and watch.promote not in config.environments:
        problems.append(
            f"[watch] promote = {watch.promote!r}: no such environment ({', '.join(config.environments)})"
        )
    if watch.interval < 1:
        problems.append(f"[watch] interval = {watch.interval}: wait at least 1 second between looks")
    if not 0 <= watch.hook_port < 65536:
        problems.append(f"[watch] hook_port = {watch.hook_port}: not a TCP port (0 turns the hook off)")
    if not watch.branch.strip() or " " in watch.branch:
        problems.append(f"[watch] branch = {watch.branch!r}: not a branch name")
    for pool in config.pools.values():
        where = f"[pools.{pool.name}]"
        if not pool.role:
            problems.append(f"{where}: role is missing: name the role its members run (roles: {roles})")
        elif pool.role not in config.roles:
            problems.append(f"{where} role = {pool.role!r}: unknown role (roles: {roles}; add [roles.{pool.role}])")
        for user in pool.used_by:
            if user not in config.roles:
                problems.append(f"{where} used_by: unknown role {user!r} (roles: {roles})")
        for env in pool.environments:
            if env not in config.environments:
                problems.append(f"{where} environments: unknown environment {env!r}")
        if not 0 <= pool.port < 65536:
            problems.append(f"{where} port = {pool.port}: not a TCP port")
        if pool.deployed:
            problems.extend(_deployed_pool_checks(config, pool))
        seen: set[str] = set()
        for index, member in enumerate(pool.members):
            at = f"{where} members[{index}]"
            unknown = sorted(set(member) - {"name", "private", "public", "ssh_port"})
            if unknown:
                problems.append(f"{at}: unknown key {unknown[0]!r}: expected name, private, public, ssh_port")
            for key in ("name", "private")[: 1 if pool.deployed else 2]:
                if not member.get(key):
                    problems.append(f"{at}: {key} is missing (each member needs a name and a private address)")
            if member.get("name") in seen:
                problems.append(f"{at}: name {member['name']!r} appears twice in the pool")
            seen.add(member.get("name", ""))
            if member.get("ssh_port") and not member["ssh_port"].isdigit():
                problems.append(f"{at} ssh_port = {member['ssh_port']!r}: not a port number")
    return problems


def _deployed_pool_checks(config: Config, pool: Pool) -> list[str]:
    """A pool the workbench runs: a database role, members named by the naming rule, one such pool per role."""
    problems: list[str] = []
    where = f"[pools.{pool.name}]"
    role = config.roles.get(pool.role)
    if role is not None and not role.dbms:
        problems.append(f"{where} deployed = true: role {pool.role!r} has no `dbms` (only database pools are "
                        "deployed by the workbench)")
    if not pool.members:
        problems.append(f"{where} deployed = true: name its members (members = [{{ name = \"{pool.role}1\" }}])")
    for index, member in enumerate(pool.members):
        name = member.get("name", "")
        match = re.match(r"^(?P<role>[a-z](?:[a-z0-9]*[a-z])?)(?P<n>[1-9][0-9]*)$", name)
        names_role = match and role is not None and match["role"] in (role.name, *role.aliases)
        if name and not names_role:
            problems.append(f"{where} members[{index}] name = {name!r}: a deployed member is named <role><n> by the "
                            f"naming rule (e.g. {pool.role}1, {pool.role}2)")
        if member.get("private"):
            problems.append(f"{where} members[{index}]: no private address for a deployed member: it is reached as "
                            f"{name}.<environment>.{config.workbench.domain}")
    others = [p.name for p in config.pools.values() if p.deployed and p.role == pool.role and p.name < pool.name]
    if others:
        problems.append(f"{where}: role {pool.role} is already deployed by [pools.{others[0]}]: one deployed pool per "
                        "role")
    return problems


_DURATION = re.compile(r"^(?P<n>[0-9]+)(?P<unit>[smhd]?)$")


def parse_duration(text: str) -> int | None:
    """`6h` -> 21600, `90s`/`"90"` -> 90; None when it is not a duration of at least a minute."""
    match = _DURATION.match(text.strip())
    if not match:
        return None
    seconds = int(match["n"]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match["unit"]]
    return seconds if seconds >= 60 else None


# --- reference -----------------------------------------------------------------


def reference_markdown() -> str:
    """The configuration reference for the README, from the settings table."""
    out: list[str] = []
    for title, cls in [*_SECTIONS.items(), *(((f"{k}.<name>"), c) for k, c in _TABLES.items())]:
        out.append(f"#### `[{title}]`\n")
        doc = (cls.__doc__ or "").split(":", 1)[-1].strip()
        out.append(f"{doc[:1].upper()}{doc[1:]}\n")
        out.append("| key | type | default | meaning |")
        out.append("| --- | --- | --- | --- |")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == "name":
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
            meaning = f.metadata["help"]
            if f.metadata.get("choices"):
                meaning += " One of: " + ", ".join(f"`{c}`" for c in f.metadata["choices"]) + "."
            out.append(f"| `{f.name}` | {_hint_name(hints[f.name])} | `{_toml(default)}` | {meaning} |")
        out.append("")
    return "\n".join(out)


def _hint_name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return f"list of {_hint_name(typing.get_args(hint)[0])}"
    if typing.get_origin(hint) is dict:
        return "table of string"
    return {str: "string", int: "integer", bool: "boolean"}[hint]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return str(value)
