"""Verification: a role's testinfra tests, against a fresh start of the candidate.

Not the build machine: the candidate is started as it will run (its own
command, which starts the role's services), so the tests see what a release
will see: a fresh container of a candidate image, or a fresh boot of a
candidate qcow2 (reached over SSH). The container or VM goes whatever happens.

The tests run on this machine, as their authors wrote them; their commands go
over one channel into the candidate (`workbench.build.testchannel`), not one
`docker exec` or ssh session each. Before they start, one probe inside the
candidate returns as soon as the role's ports listen and its health path
answers; a role without ports starts its tests at once.
"""

from __future__ import annotations

import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.build import channel, vm
from workbench.core import engine, progress, run
from workbench.core.config import Config, Role
from workbench.core.errors import CommandFailed, VerifyFailed

if TYPE_CHECKING:
    from docker.models.containers import Container

READY_TIMEOUT = 90.0
# A VM under software emulation starts its services this many times slower than a container
# (the base role's packages: 250 s under TCG against 25 s natively, here).
EMULATION_SLOWDOWN = 10
# Where a VM's image command gets the role's verification environment: a runtime drop-in,
# gone at the next boot (and the disk is opened as a snapshot: the candidate stays as made).
VERIFY_DROP_IN = "/run/systemd/system/workbench-image.service.d/50-verify-environment.conf"
# ready_probe's exit code when the time is up (sys.exit with what is still missing).
PROBE_TIMED_OUT = 1

# pytest's last line: `============ 14 passed, 1 warning in 6.21s ============`
_SUMMARY_RE = re.compile(r"^=+ (?P<summary>.*\d+ (?:passed|failed|error|errors|skipped).* in [\d.]+s.*?) =+$")


@dataclass(frozen=True)
class VerifyResult:
    summary: str
    seconds: float


def pytest_argv(config: Config, role: Role, hosts: Sequence[str]) -> list[str]:
    """pytest with testinfra against `hosts` (`--hosts=docker-channel://ID`), confined to tests/roles.

    `--confcutdir` keeps the repository's own tests/conftest.py (fixtures for
    the workbench's tests) out of the role tests' run; the plugin gives the
    channel backends.
    """
    roles_dir = config.root / "tests" / "roles"
    return [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        channel.PLUGIN,
        f"--confcutdir={roles_dir}",
        "-p",
        "no:cacheprovider",
        f"--rootdir={roles_dir}",
        "-o",
        "addopts=",
        "-v",  # one line per test: the live line shows it (workbench.build.streams)
        "-rfE",
        *hosts,
        str(config.root / role.tests_path),
    ]


def parse_summary(output: str) -> str:
    """`14 passed in 6.21s` from pytest's output ('' when it has no summary line)."""
    for line in reversed(output.splitlines()):
        match = _SUMMARY_RE.match(line.strip())
        if match:
            return match.group("summary")
        stripped = line.strip()
        # -q prints the summary bare: `14 passed in 6.21s`
        if re.match(r"^\d+ (passed|failed|error|errors|skipped)\b.* in [\d.]+s", stripped):
            return stripped
    return ""


def verify(
    config: Config,
    role: Role,
    image: str,
    *,
    scope: str,
    on_line: Callable[[str], None],
    scheme: str = channel.DOCKER_SCHEME,
) -> VerifyResult:
    """Run the role's tests against a fresh container of `image`; VerifyFailed if any fails.

    `scheme="docker"` runs them over testinfra's own `docker://` instead (bench_bake compares).
    """
    start = time.monotonic()
    labels = {engine.PREFIX_LABEL: config.prefix, "workbench.verify.role": role.name}
    with engine.running(image, labels=labels, name=None, **container_options(role)) as container:
        _wait_ready(container, role, scope)
        argv = pytest_argv(config, role, [f"--hosts={scheme}://{container.id}"])

        def log_tail() -> str:
            return str(container.logs(tail=20).decode(errors="replace").strip())

        output = _run_tests(argv, config, role, on_line, "container's log", log_tail)
    return VerifyResult(summary=parse_summary(output) or "passed", seconds=time.monotonic() - start)


def verify_vm(
    config: Config, role: Role, disk: Path, key: Path, work: Path, *, scope: str, on_line: Callable[[str], None]
) -> VerifyResult:
    """Run the role's tests against a fresh boot of the qcow2 `disk`, over SSH; VerifyFailed if any fails."""
    start = time.monotonic()
    with vm.booted(config, disk, key, work, scope=scope) as machine:
        if role.verify_environment:
            _set_environment_vm(machine, role, scope)
        _wait_ready_vm(machine, role, scope, emulated=config.builder.accelerator == "tcg")
        hosts = [f"--hosts={channel.SSH_SCHEME}://{vm.HOST_ALIAS}", f"--ssh-config={machine.ssh_config}"]
        argv = pytest_argv(config, role, hosts)

        def console() -> str:
            return "\n".join(vm.console_tail(machine.console, 20))

        output = _run_tests(argv, config, role, on_line, "VM's console", console)
    return VerifyResult(summary=parse_summary(output) or "passed", seconds=time.monotonic() - start)


def ready_timeout(role: Role, emulated: bool = False) -> float:
    """How long the readiness probe waits: the role's `start_timeout`, else READY_TIMEOUT;
    EMULATION_SLOWDOWN times that in a VM under software emulation."""
    timeout = float(role.start_timeout) if role.start_timeout else READY_TIMEOUT
    return timeout * EMULATION_SLOWDOWN if emulated else timeout


def container_options(role: Role) -> dict[str, object]:
    """What the role asks of its candidate's container: capabilities, the verification's environment."""
    options: dict[str, object] = {}
    if role.capabilities:
        options["cap_add"] = list(role.capabilities)
    if role.verify_environment:
        options["environment"] = list(role.verify_environment)
    return options


def _run_tests(
    argv: list[str], config: Config, role: Role, on_line: Callable[[str], None], what: str, tail: Callable[[], str]
) -> str:
    try:
        return run.stream(argv, on_line=on_line, cwd=config.root).stdout
    except CommandFailed as exc:
        logs = tail()
        hint = f"\n  last lines of the {what}:\n{_indent(logs)}" if logs else ""
        raise VerifyFailed(
            f"{role.name}: the candidate failed its tests ({role.tests_path}; its output is in the run log, "
            f"pytest exit code {exc.returncode}){hint}"
        ) from None


def _indent(text: str) -> str:
    return "\n".join(f"    | {line}" for line in text.splitlines())


def ready_probe(role: Role, timeout: float | None = None) -> str:
    """Python (stdlib only) that returns once the role's ports listen on loopback and its
    health path answers 200, trying every 50 ms; after `timeout` it exits 1 saying what
    is still missing. Run inside the candidate, so one call waits for the event itself."""
    health = f"http://127.0.0.1:{role.ports[0]}{role.health}" if role.ports and role.health else ""
    timeout = ready_timeout(role) if timeout is None else timeout
    return f"""\
import socket, sys, time, urllib.request
ports, health, deadline = {list(role.ports)!r}, {health!r}, time.monotonic() + {timeout!r}
opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
def listening(port):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0
def healthy():
    try:
        with opener.open(health, timeout=2) as answer:
            return answer.status == 200
    except Exception:
        return False
while True:
    missing = [f"port {{p}}" for p in ports if not listening(p)]
    if not missing and health and not healthy():
        missing = [f"GET {{health}}"]
    if not missing:
        sys.exit(0)
    if time.monotonic() > deadline:
        sys.exit(", ".join(missing))
    time.sleep(0.05)
"""


def verify_drop_in(role: Role) -> str:
    """The unit drop-in giving the image's command the role's verification environment."""
    lines = "".join(f"Environment={shlex.quote(item)}\n" for item in role.verify_environment)
    return f"# Written by the bake's verification (workbench/build/verify.py).\n[Service]\n{lines}"


def _set_environment_vm(machine: vm.Booted, role: Role, scope: str) -> None:
    """The image's command started again with the role's verification environment, as a candidate
    container is started with it (`verify_environment`). Its first start at boot had none."""
    progress.detail(f"[{scope}] restarting the image's command with {', '.join(role.verify_environment)}")
    script = (f"mkdir -p {shlex.quote(str(Path(VERIFY_DROP_IN).parent))} && cat > {shlex.quote(VERIFY_DROP_IN)} && "
              "systemctl daemon-reload && systemctl reset-failed workbench-image.service; "
              "systemctl restart workbench-image.service")
    result = run.capture(machine.ssh_argv(script), input=verify_drop_in(role), check=False, timeout=300)
    if result.returncode != 0:
        raise VerifyFailed(f"{role.name}: could not give the VM's image command its verification environment "
                           f"(ssh exit code {result.returncode}): {result.stderr.strip()[-500:]}")


def _wait_ready_vm(machine: vm.Booted, role: Role, scope: str, emulated: bool) -> None:
    """As `_wait_ready`, over SSH: one call that returns when the VM's services are up."""
    if not role.ports:
        return
    timeout = ready_timeout(role, emulated)
    probe = machine.ssh_argv("python3", "-c", shlex.quote(ready_probe(role, timeout)))
    try:
        result = run.capture(probe, check=False, timeout=timeout + 30)
    except CommandFailed:
        progress.detail(f"[{scope}] the readiness probe hung; running the tests")
        return
    if result.returncode != 0:
        said = result.stderr.strip() or f"exit code {result.returncode}"
        progress.detail(f"[{scope}] not ready after {timeout:.0f}s ({said}); running the tests")


def _wait_ready(container: object, role: Role, scope: str) -> None:
    """Until the role's ports listen and its health path answers, inside the container.

    Checked from inside (python3 is in every image) so no traffic leaves the
    container's own loopback, by one exec that ends when they do (or when the
    container stops). A role without ports is ready when it runs.
    """
    from docker.errors import APIError
    from docker.models.containers import Container

    assert isinstance(container, Container)
    if not role.ports:
        return
    try:
        code, output = container.exec_run(["python3", "-c", ready_probe(role)])
    except APIError as exc:  # it stopped before the exec started
        code, output = -1, str(exc.explanation).encode()
    if code == 0:
        return
    said = output.decode(errors="replace").strip()
    if code != PROBE_TIMED_OUT:
        # The probe was cut short: its container is stopping (the engine may
        # not say so yet), or python3 is missing.
        if _stopped(container):
            progress.detail(f"[{scope}] the container stopped ({container.status}); running the tests anyway")
        else:
            progress.detail(f"[{scope}] the readiness probe failed ({said or code}); running the tests")
        return
    progress.detail(f"[{scope}] not ready after {ready_timeout(role):.0f}s ({said}); running the tests")


def _stopped(container: Container, settle: float = 3.0) -> bool:
    """Whether the container has stopped, giving the engine `settle` seconds to notice."""
    deadline = time.monotonic() + settle
    while True:
        container.reload()
        if container.status != "running" or time.monotonic() > deadline:
            return bool(container.status != "running")
        time.sleep(0.1)
