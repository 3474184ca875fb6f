"""Sandboxes: a role on the base image, its states applied live from the checkout.

`fab sandbox.up app` brings up `app.sandbox.<domain>` with Vagrant (the
Vagrantfile at the root, fed a JSON spec written here), then applies the
common states and the role's masterlessly, exactly as a bake does (the same
thin bundle, salt-call arguments, pillar and naming grains; the environment
grain says `sandbox`). The checkout's salt/ tree is shared read-only, so an
edited state applies with `fab sandbox.provision` in seconds.

With the docker provider every sandbox joins the network `<prefix>-sandbox`,
where each answers to its full name, and the pools a role uses are rendered
for it from the sandboxes that are up (workbench.pools, as a deploy does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker.errors
from docker.models.containers import Container

from workbench.build import aptcache, salt, streams, verify
from workbench.core import engine, naming, pools, progress, run
from workbench.core.config import Config, Role
from workbench.core.errors import CommandFailed, ConfigError, EngineUnavailable, SandboxError
from workbench.core.files import write_whole
from workbench.sandbox import image as sandbox_image
from workbench.sandbox import provision as sandbox_provision
from workbench.sandbox.provision import GUEST, VM_UNIT
from workbench.sandbox.vagrant import Vagrant, parse_ssh_config

ENVIRONMENT = "sandbox"
SPEC_ENV = "WORKBENCH_SANDBOX_SPEC"
SANDBOX_LABEL = "workbench.sandbox"
PROVIDERS = ("docker", "libvirt", "virtualbox")
UP_ATTEMPTS = 3


@dataclass(frozen=True)
class Sandbox:
    host: naming.HostName
    role: Role
    machine: str
    container: str

    @property
    def fqdn(self) -> str:
        return self.host.fqdn


@dataclass(frozen=True)
class ProvisionResult:
    """The states applied in a running sandbox: `fab sandbox.provision`."""

    sandbox: str
    states: tuple[str, ...]
    applied: int
    changed: tuple[str, ...]
    address: str
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class UpResult:
    """A sandbox brought up and provisioned: `fab sandbox.up`."""

    provisioned: ProvisionResult
    provider: str
    seconds: float

    def to_dict(self) -> dict[str, object]:
        # One flat object, as `--json` has always printed it; `seconds` counts the whole up.
        return {**self.provisioned.to_dict(), "provider": self.provider, "seconds": self.seconds}


@dataclass(frozen=True)
class TestResult:
    """The role's tests passed against its sandbox: `fab sandbox.test`."""

    __test__ = False  # a result, not a class for pytest to collect

    sandbox: str
    tests: str
    seconds: float
    summary: str = ""  # pytest's own: `2 passed in 1.21s`

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def resolve(config: Config, target: str | None = None) -> Sandbox:
    """`app`, `app.sandbox.wpdn` or nothing (the default role) -> the Sandbox."""
    target = (target or config.workbench.default_role).strip()
    if "." in target:
        host = naming.parse(target, config)
        if host.environment != ENVIRONMENT:
            raise ConfigError(
                f"{target!r} is in the {host.environment} environment: sandboxes are <role>.sandbox.<domain>"
            )
    else:
        role = config.role(target)
        host = naming.parse(naming.host_name(role.name, ENVIRONMENT, config.workbench.domain), config)
    role = config.role(host.role)
    return Sandbox(host, role, host.short, f"{config.prefix}-sandbox-{host.short}")


def known(config: Config) -> list[Sandbox]:
    """One machine per role, plus the variant names brought up before (`app-blue`)."""
    found = {r: resolve(config, r) for r in config.roles}
    for name in _extra_names(config):
        try:
            sandbox = resolve(config, name)
        except ConfigError:
            continue  # its role left the configuration; destroy still finds its container
        found.setdefault(sandbox.machine, sandbox)
    return list(found.values())


def _extra_path(config: Config) -> Path:
    return _home(config) / "names.json"


def _extra_names(config: Config) -> list[str]:
    path = _extra_path(config)
    return list(json.loads(path.read_text())) if path.is_file() else []


def _remember(config: Config, sandbox: Sandbox, present: bool) -> None:
    if sandbox.machine in config.roles:
        return
    names = set(_extra_names(config))
    names = names | {sandbox.fqdn} if present else names - {sandbox.fqdn}
    _write(_extra_path(config), json.dumps(sorted(names)))


# --- places ------------------------------------------------------------------------


def _home(config: Config) -> Path:
    return config.state_dir / "sandbox"


def _machine_dir(config: Config, sandbox: Sandbox) -> Path:
    return _home(config) / "machines" / sandbox.machine


def network_name(config: Config) -> str:
    return f"{config.prefix}-sandbox"


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, text, mode)


def vagrantfile_dir(config: Config) -> Path:
    """The checkout's Vagrantfile, on purpose: users read and extend it there."""
    if not (config.root / "Vagrantfile").is_file():
        raise ConfigError(f"{config.root}: no Vagrantfile in the checkout (sandboxes need the one this project ships)")
    return config.root


def _vagrant(config: Config) -> Vagrant:
    home = _home(config)
    root = vagrantfile_dir(config)
    env = {
        "VAGRANT_CWD": str(root),
        "VAGRANT_DOTFILE_PATH": str(home / "vagrant"),
        SPEC_ENV: str(home / "spec.json"),
    }
    return Vagrant(root, env)


# --- the spec the Vagrantfile reads ----------------------------------------------


def machine_spec(config: Config, sandbox: Sandbox, key: sandbox_image.SshKey, thin: Path) -> dict[str, object]:
    shares = [
        {"host": str(config.root / "salt"), "guest": config.sandbox.salt_dir},
        {"host": str(thin.parent), "guest": f"{GUEST}/thin-src"},
        {"host": str(_machine_dir(config, sandbox)), "guest": f"{GUEST}/ctl"},
        *({"host": str(config.root / f), "guest": f"{GUEST}/{f}"} for f in sandbox.role.formulas),
    ]
    uses_pools = bool(pools.used_by(config, sandbox.role.name, ENVIRONMENT))
    if uses_pools:
        pool_dir = pools.rendered_dir(config, sandbox.role.name, ENVIRONMENT)
        shares.append({"host": str(pool_dir), "guest": pools.MOUNT})
    return {
        "name": sandbox.machine,
        "hostname": sandbox.fqdn,
        "container": sandbox.container,
        "command": [sandbox_image.INIT_PATH, *sandbox.role.command],
        "labels": {
            engine.PREFIX_LABEL: config.prefix,
            engine.ROLE_LABEL: sandbox.role.name,
            SANDBOX_LABEL: sandbox.fqdn,
        },
        "env": {
            "WORKBENCH_ROLE": sandbox.role.name,
            "WORKBENCH_ENVIRONMENT": ENVIRONMENT,
            "WORKBENCH_RELEASE": "sandbox",
            **({"WORKBENCH_POOLS": f"{pools.MOUNT}/{pools.FILE}"} if uses_pools else {}),
        },
        "shares": shares,
        "files": [{"host": str(key.authorized_keys), "guest": "/home/vagrant/.ssh/authorized_keys"}],
    }


def write_spec(config: Config, image: str = "") -> Path:
    """The JSON the Vagrantfile reads: every known sandbox, the image, the network, the key."""
    key = sandbox_image.ensure_key(config)
    thin = salt.thin_bundle(config)
    machines = []
    for sandbox in known(config):
        _machine_dir(config, sandbox).mkdir(parents=True, exist_ok=True)
        pools.rendered_dir(config, sandbox.role.name, ENVIRONMENT).mkdir(parents=True, exist_ok=True)
        machines.append(machine_spec(config, sandbox, key, thin))
    spec = {
        "image": image,
        "box": config.sandbox.box,
        "memory": config.sandbox.memory,
        "cpus": config.sandbox.cpus,
        "network": network_name(config),
        "ssh_private_key": str(key.private),
        "machines": machines,
    }
    path = _home(config) / "spec.json"
    _write(path, json.dumps(spec, indent=2, sort_keys=True) + "\n")
    return path


def _current_image(config: Config) -> str:
    """The image tag of the last spec (commands other than `up` must not rebuild it)."""
    path = _home(config) / "spec.json"
    if path.is_file():
        return str(json.loads(path.read_text()).get("image", ""))
    return ""


# --- up, provision, test -------------------------------------------------------------


def _provider(config: Config, provider: str | None) -> str:
    chosen = provider or config.sandbox.provider
    if chosen not in PROVIDERS:
        raise ConfigError(
            f"unknown provider {chosen!r}: use one of {', '.join(PROVIDERS)} (--provider or [sandbox] provider)"
        )
    return chosen


def up(config: Config, target: str | None = None, provider: str | None = None) -> UpResult:
    """Bring a sandbox up and provision it; its summary."""
    sandbox = resolve(config, target)
    with progress.job(f"sandbox {sandbox.fqdn}"):
        return _up(config, sandbox, provider)


def _up(config: Config, sandbox: Sandbox, provider: str | None) -> UpResult:
    start = time.monotonic()
    chosen = _provider(config, provider)
    scope = f"sandbox {sandbox.fqdn}"
    vg = _vagrant(config)
    vg.check_provider(chosen)
    image = ""
    if chosen == "docker":
        engine.client()
        image = sandbox_image.ensure_image(config).tag
        _ensure_network(config)
    _remember(config, sandbox, True)
    write_spec(config, image)
    progress.step(scope, f"vagrant up {sandbox.machine} --provider {chosen}")
    existed = _known_to_vagrant(config, sandbox)
    for attempt in range(1, UP_ATTEMPTS + 1):
        try:
            vg.stream("up", sandbox.machine, "--provider", chosen, "--no-provision")
            break
        except SandboxError as exc:
            if attempt < UP_ATTEMPTS and _raced(str(exc)):
                progress.detail("a container vanished while Vagrant inspected it (another user of the engine): again")
                continue
            # Leave nothing half-made, but never remove a sandbox this up did not make.
            if not existed:
                _cleanup(config, vg, sandbox)
            raise
    provisioned = _provision(config, sandbox)
    return UpResult(provisioned, chosen, round(time.monotonic() - start, 1))


def _raced(message: str) -> bool:
    """Vagrant's docker provider inspects every container of the engine on each
    up (for port collisions); one removed in between by someone else fails it:
    `Command: ["docker", "inspect", "2dc4…"] … Error: No such object: 2dc4…`."""
    return '"docker", "inspect"' in message and "No such object" in message


def _ensure_network(config: Config) -> None:
    client = engine.client()
    name = network_name(config)
    if not client.networks.list(names=[name]):
        client.networks.create(name, driver="bridge", labels={engine.PREFIX_LABEL: config.prefix})


def _ssh_config(config: Config, vg: Vagrant, sandbox: Sandbox) -> tuple[Path, dict[str, str]]:
    """An ssh_config file naming the sandbox by its full name, and its parsed settings."""
    path = _machine_dir(config, sandbox) / "ssh_config"
    if path.is_file():
        # Vagrant takes seconds to start; the last answer holds while the
        # container runs at the same address (a restart may change it).
        cached = parse_ssh_config(path.read_text())
        for container in _containers(config, sandbox):
            address = container.attrs.get("NetworkSettings", {}).get("IPAddress")
            if container.status == "running" and address and address == cached.get("HostName"):
                return path, cached
    try:
        text = vg.ssh_config_text(sandbox.machine, sandbox.fqdn)
    except CommandFailed:
        state = vg.state(sandbox.machine)
        raise SandboxError(
            f"sandbox {sandbox.fqdn} is {state.replace('_', ' ')}: run `fab sandbox.up --role {sandbox.machine}`"
        ) from None
    # One connection shared by the many commands of a test run (testinfra
    # opens one per check); the socket path must stay short for a unix socket.
    text = text.rstrip("\n") + "\n  ControlMaster auto\n  ControlPath /tmp/wbsbx-%C\n  ControlPersist 30\n"
    _write(path, text, 0o600)
    return path, parse_ssh_config(text)


def provision(config: Config, target: str | None = None) -> ProvisionResult:
    """Apply the common and role states in the running sandbox, then (re)start its services."""
    sandbox = resolve(config, target)
    with progress.job(f"sandbox {sandbox.fqdn}"):
        return _provision(config, sandbox)


def _provision(config: Config, sandbox: Sandbox) -> ProvisionResult:
    start = time.monotonic()
    scope = f"sandbox {sandbox.fqdn}"
    vg = _vagrant(config)
    write_spec(config, _current_image(config))
    _render_pools(config)
    ssh_file, ssh = _ssh_config(config, vg, sandbox)
    containers = _containers(config, sandbox)  # none: a VM sandbox
    _check_share(config, sandbox, containers)
    states = salt.state_list(config, sandbox.role)
    # A container sandbox fetches its packages through the bakes' cache; a VM's network may
    # not reach the Docker bridge the cache listens on, so a VM goes to the mirror.
    with aptcache.package_cache(config) if containers else contextlib.nullcontext() as cache:
        _write_control(config, sandbox, states, cache.container_proxy if cache else "")
        progress.step(scope, f"applying {', '.join(states)} (salt-call --local; grains "
                             f"workbench_role={sandbox.role.name}, workbench_environment={ENVIRONMENT})")
        watcher = sandbox_provision.SaltWatcher()
        result = run.stream(["ssh", "-F", str(ssh_file), sandbox.fqdn, f"sudo sh {GUEST}/ctl/provision.sh"],
                            on_line=watcher.feed, check=False)
    state_run = salt.parse_state_run(watcher.result())
    if not state_run.ok or result.returncode != 0:
        detail = salt.describe_failure(state_run) if not state_run.ok else f"  salt-call exited {result.returncode}"
        raise SandboxError(
            f"states failed in sandbox {sandbox.fqdn}:\n{detail}\n"
            f"the sandbox keeps running: fix the state and run `fab sandbox.provision --role {sandbox.machine}`"
        )
    changed = [s.id for s in state_run.changed()]
    progress.detail(f"{len(state_run.states)} states, {len(changed)} changed, 0 failed")
    if watcher.restart and changed:
        progress.step(scope, "restarting the sandbox: its services start from the new state, as in a new container")
        _restart(config, vg, sandbox)
        ssh_file, ssh = _ssh_config(config, vg, sandbox)
    address = _address(config, sandbox) or ssh.get("HostName", "")
    wait_ready(config, sandbox, address)
    return ProvisionResult(
        sandbox=sandbox.fqdn,
        states=tuple(states),
        applied=len(state_run.states),
        changed=tuple(changed),
        address=address,
        seconds=round(time.monotonic() - start, 1),
    )


def _check_share(config: Config, sandbox: Sandbox, containers: list[Container]) -> None:
    """A sandbox made from another checkout would apply that checkout's states."""
    wanted = str(config.root / "salt")
    for container in containers:
        for mount in container.attrs.get("Mounts", []):
            if mount.get("Destination") == config.sandbox.salt_dir and mount.get("Source") != wanted:
                raise SandboxError(
                    f"sandbox {sandbox.fqdn} shares the states of {mount.get('Source')}, not {wanted}: "
                    f"`fab sandbox.destroy --role {sandbox.machine}`, then up again from this checkout"
                )


def _write_control(config: Config, sandbox: Sandbox, states: list[str], apt_proxy: str) -> None:
    files = sandbox_provision.control_files(
        config, sandbox.role, sandbox.fqdn, states, salt.thin_bundle(config), apt_proxy
    )
    for name, text in files.items():
        _write(_machine_dir(config, sandbox) / name, text)


def _restart(config: Config, vg: Vagrant, sandbox: Sandbox) -> None:
    if _containers(config, sandbox):
        try:
            engine.client().containers.get(sandbox.container).restart(timeout=20)
        except docker.errors.APIError as exc:
            raise SandboxError(f"cannot restart sandbox {sandbox.fqdn}: {exc.explanation}") from None
    else:
        ssh_file = _machine_dir(config, sandbox) / "ssh_config"
        run.capture(["ssh", "-F", str(ssh_file), sandbox.fqdn, f"sudo systemctl restart {VM_UNIT}"])


def wait_ready(config: Config, sandbox: Sandbox, address: str) -> None:
    """Wait until the role's ports answer (and its health path gives 200)."""
    role = sandbox.role
    if not role.ports or not address:
        return
    if address.startswith("127."):
        # A VM behind NAT (virtualbox): only its SSH port is forwarded.
        progress.detail(f"not waiting for port(s) {', '.join(map(str, role.ports))}: {address} forwards SSH only")
        return
    deadline = time.monotonic() + config.sandbox.ready_timeout
    for port in role.ports:
        while not _answers(address, port):
            _give_up_after(deadline, config, sandbox, f"nothing listens on {address}:{port}")
    if role.health:
        url = f"http://{address}:{role.ports[0]}{role.health}"
        while not _healthy(url):
            _give_up_after(deadline, config, sandbox, f"{url} does not answer 200")
    progress.detail(f"services answer on {address}: port(s) {', '.join(map(str, role.ports))}")


def _give_up_after(deadline: float, config: Config, sandbox: Sandbox, what: str) -> None:
    if time.monotonic() > deadline:
        raise SandboxError(
            f"sandbox {sandbox.fqdn}: {what} after {config.sandbox.ready_timeout}s "
            f"(its services' log: `docker logs {sandbox.container}`; "
            f"`fab sandbox.ssh --role {sandbox.machine}` to look)"
        )
    time.sleep(0.5)


def _answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 (our sandbox, http only)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def test(config: Config, target: str | None = None) -> TestResult:
    """Run the role's testinfra tests against the sandbox, over SSH."""
    sandbox = resolve(config, target)
    with progress.job(f"sandbox {sandbox.fqdn}"):
        return _test(config, sandbox)


def _test(config: Config, sandbox: Sandbox) -> TestResult:
    start = time.monotonic()
    scope = f"sandbox {sandbox.fqdn}"
    vg = _vagrant(config)
    ssh_file, ssh = _ssh_config(config, vg, sandbox)
    wait_ready(config, sandbox, _address(config, sandbox) or ssh.get("HostName", ""))
    tests = config.root / sandbox.role.tests_path
    progress.step(scope, f"testinfra: {sandbox.role.tests_path} over ssh://{sandbox.fqdn}")
    argv = [
        sys.executable, "-m", "pytest", "-v", "-rfE", "-p", "no:cacheprovider",
        f"--confcutdir={tests.parent}", f"--rootdir={tests.parent}",
        f"--hosts=ssh://{sandbox.fqdn}", f"--ssh-config={ssh_file}", "--sudo", str(tests),
    ]
    skipped = config.sandbox.image_only_tests
    if skipped:
        argv[-1:-1] = ["-k", "not (" + " or ".join(skipped) + ")"]
    watcher = streams.PytestProgress()
    result = run.stream(argv, cwd=config.root, on_line=watcher.feed, check=False)
    if result.returncode != 0:
        failing = watcher.describe_failures() or "\n".join(f"  | {line}" for line in result.stdout.splitlines()[-15:])
        raise SandboxError(f"the {sandbox.role.name} role's tests failed against {sandbox.fqdn}:\n{failing}")
    return TestResult(sandbox.fqdn, sandbox.role.tests_path, round(time.monotonic() - start, 1),
                      verify.parse_summary(result.stdout))


# --- ssh, status, halt, destroy --------------------------------------------------------


def ssh(config: Config, target: str | None = None, command: str | None = None) -> int:
    """`vagrant ssh` into the sandbox, or run `command` there; its exit code."""
    sandbox = resolve(config, target)
    vg = _vagrant(config)
    if command is None:
        return run.interactive(vg.ssh_argv(sandbox.machine), env=vg.env, cwd=vg.root)
    result = run.stream(vg.ssh_argv(sandbox.machine, command), env=vg.env, cwd=vg.root, on_line=print, check=False)
    return result.returncode


@dataclass(frozen=True)
class SandboxStatus:
    """One row of `fab sandbox.status`."""

    name: str
    machine: str
    role: str
    state: str
    provider: str
    address: str

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def status(config: Config) -> list[SandboxStatus]:
    """Every known sandbox with its Vagrant state and, for docker, its address on the sandbox network."""
    sandboxes = {s.machine: s for s in known(config)}
    if not (_home(config) / "spec.json").is_file():
        return [SandboxStatus(s.fqdn, m, s.role.name, "not_created", "", "") for m, s in sandboxes.items()]
    out = []
    for machine in _vagrant(config).status():
        sandbox = sandboxes.get(machine.name)
        if sandbox is None:
            continue
        out.append(SandboxStatus(sandbox.fqdn, machine.name, sandbox.role.name, machine.state,
                                 machine.provider or "", _address(config, sandbox)))
    return out


def _address(config: Config, sandbox: Sandbox) -> str:
    for container in engine.containers({SANDBOX_LABEL: sandbox.fqdn, engine.PREFIX_LABEL: config.prefix}):
        networks = container.attrs.get("NetworkSettings", {}).get("Networks", {})
        return str(networks.get(network_name(config), {}).get("IPAddress", ""))
    return ""


def halt(config: Config, target: str | None = None) -> None:
    sandbox = resolve(config, target)
    write_spec(config, _current_image(config))
    progress.step(f"sandbox {sandbox.fqdn}", f"vagrant halt {sandbox.machine}")
    _vagrant(config).stream("halt", sandbox.machine)


def destroy(config: Config, target: str | None = None, all: bool = False) -> list[str]:
    """Destroy one sandbox (or every one); works after a failed up, and twice."""
    sandboxes = known(config) if all else [resolve(config, target)]
    if config.sandbox.provider == "docker":
        engine.client()  # a clear error now rather than Vagrant's later
    vg = _vagrant(config)
    write_spec(config, _current_image(config))
    removed = []
    for sandbox in sandboxes:
        if _cleanup(config, vg, sandbox):
            removed.append(sandbox.fqdn)
    _drop_network_if_unused(config)
    if _engine_answers():
        _render_pools(config)  # the others no longer list what was destroyed
    return removed


def _cleanup(config: Config, vg: Vagrant, sandbox: Sandbox) -> bool:
    """vagrant destroy, then remove whatever Vagrant lost track of; True if anything was there."""
    progress.step(f"sandbox {sandbox.fqdn}", f"vagrant destroy {sandbox.machine}")
    created = _created(config, sandbox)
    failure = None
    try:
        vg.stream("destroy", "--force", sandbox.machine)
    except SandboxError as exc:
        failure = exc
    leftovers = _containers(config, sandbox)
    for container in leftovers:
        engine.remove_container(container)
    ssh_file = _machine_dir(config, sandbox) / "ssh_config"
    if ssh_file.is_file():
        # Ends the shared SSH connection now rather than when it times out.
        run.capture(["ssh", "-F", str(ssh_file), "-O", "exit", sandbox.fqdn], check=False)
        ssh_file.unlink()
    _remember(config, sandbox, False)
    if failure is not None and leftovers:
        progress.detail(f"vagrant destroy failed ({failure}); removed the container {sandbox.container} directly")
    elif failure is not None:
        raise failure
    return created


def _known_to_vagrant(config: Config, sandbox: Sandbox) -> bool:
    # Vagrant keeps a machine's id in its dotfile directory while it exists.
    return any((_home(config) / "vagrant" / "machines" / sandbox.machine).glob("*/id"))


def _created(config: Config, sandbox: Sandbox) -> bool:
    return _known_to_vagrant(config, sandbox) or bool(_containers(config, sandbox))


def _containers(config: Config, sandbox: Sandbox) -> list[Container]:
    if config.sandbox.provider != "docker" and not _engine_answers():
        return []  # VM sandboxes on a machine without a Docker engine
    return engine.containers({SANDBOX_LABEL: sandbox.fqdn, engine.PREFIX_LABEL: config.prefix})


def _engine_answers() -> bool:
    try:
        engine.client()
    except EngineUnavailable:
        return False
    return True


def _drop_network_if_unused(config: Config) -> None:
    if not _engine_answers():
        return
    for network in engine.client().networks.list(names=[network_name(config)]):
        network.reload()
        if not network.attrs.get("Containers"):
            network.remove()


# --- pools ------------------------------------------------------------------------------


def _render_pools(config: Config) -> None:
    """Each role's pools in the sandbox environment, whose members are the sandboxes that are up."""
    up_names = _running_names(config)
    members = {
        name: tuple({"name": fqdn, "private": fqdn} for fqdn in sorted(up_names.get(p.role, [])))
        for name, p in config.pools.items()
    }
    derived = dataclasses.replace(
        config, pools={name: dataclasses.replace(p, members=members[name]) for name, p in config.pools.items()}
    )
    for sandbox in known(config):
        if pools.used_by(derived, sandbox.role.name, ENVIRONMENT):
            pools.write(derived, sandbox.role.name, ENVIRONMENT)


def _running_names(config: Config) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for container in _iter_sandbox_containers(config):
        labels = container.labels
        found.setdefault(labels.get(engine.ROLE_LABEL, ""), []).append(labels.get(SANDBOX_LABEL, ""))
    return found


def _iter_sandbox_containers(config: Config) -> Iterator[Container]:
    for container in engine.containers({engine.PREFIX_LABEL: config.prefix}):
        if SANDBOX_LABEL in container.labels and container.status == "running":
            yield container
