"""Verification: a role's testinfra tests, against a fresh start of the candidate.

Not the build machine: the candidate is started as it will run (its own
command, which starts the role's services), so the tests see what a release
will see: a fresh container of a candidate image, or a fresh boot of a
candidate qcow2 (reached over SSH). The container or VM goes whatever happens.
"""

from __future__ import annotations

import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from workbench.build import vm
from workbench.core import engine, progress, run
from workbench.core.config import Config, Role
from workbench.core.errors import CommandFailed, VerifyFailed

READY_TIMEOUT = 90.0

# pytest's last line: `============ 14 passed, 1 warning in 6.21s ============`
_SUMMARY_RE = re.compile(r"^=+ (?P<summary>.*\d+ (?:passed|failed|error|errors|skipped).* in [\d.]+s.*?) =+$")


@dataclass(frozen=True)
class VerifyResult:
    summary: str
    seconds: float


def pytest_argv(config: Config, role: Role, hosts: Sequence[str]) -> list[str]:
    """pytest with testinfra against `hosts` (`--hosts=docker://ID`), confined to tests/roles.

    `--confcutdir` keeps the repository's own tests/conftest.py (fixtures for
    the workbench's tests) out of the role tests' run.
    """
    roles_dir = config.root / "tests" / "roles"
    return [
        sys.executable,
        "-m",
        "pytest",
        f"--confcutdir={roles_dir}",
        "-p",
        "no:cacheprovider",
        f"--rootdir={roles_dir}",
        "-o",
        "addopts=",
        "-q",
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


def verify(config: Config, role: Role, image: str, *, scope: str, on_line: Callable[[str], None]) -> VerifyResult:
    """Run the role's tests against a fresh container of `image`; VerifyFailed if any fails."""
    start = time.monotonic()
    labels = {engine.PREFIX_LABEL: config.prefix, "workbench.verify.role": role.name}
    with engine.running(image, labels=labels, name=None) as container:
        _wait_ready(container, role, scope)
        argv = pytest_argv(config, role, [f"--hosts=docker://{container.id}"])

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
        _wait_ready_vm(machine, role, scope)
        argv = pytest_argv(config, role, [f"--hosts=ssh://{vm.HOST_ALIAS}", f"--ssh-config={machine.ssh_config}"])

        def console() -> str:
            return "\n".join(vm.console_tail(machine.console, 20))

        output = _run_tests(argv, config, role, on_line, "VM's console", console)
    return VerifyResult(summary=parse_summary(output) or "passed", seconds=time.monotonic() - start)


def _run_tests(
    argv: list[str], config: Config, role: Role, on_line: Callable[[str], None], what: str, tail: Callable[[], str]
) -> str:
    try:
        return run.stream(argv, on_line=on_line, cwd=config.root).stdout
    except CommandFailed as exc:
        logs = tail()
        hint = f"\n  last lines of the {what}:\n{_indent(logs)}" if logs else ""
        raise VerifyFailed(
            f"{role.name}: the candidate failed its tests ({role.tests_path}; output shown above, "
            f"pytest exit code {exc.returncode}){hint}"
        ) from None


def _indent(text: str) -> str:
    return "\n".join(f"    | {line}" for line in text.splitlines())


def _port_probe(role: Role) -> str:
    return (
        "import socket,sys\n"
        f"for p in {list(role.ports)!r}:\n"
        "    s=socket.socket(); s.settimeout(1)\n"
        "    sys.exit(1) if s.connect_ex(('127.0.0.1',p)) else s.close()\n"
    )


def _wait_ready_vm(machine: vm.Booted, role: Role, scope: str) -> None:
    """As `_wait_ready`, over SSH: until the role's ports listen inside the VM."""
    if not role.ports:
        return
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if run.capture(machine.ssh_argv("python3", "-c", shlex.quote(_port_probe(role))), check=False).returncode == 0:
            return
        time.sleep(1.0)
    progress.detail(f"[{scope}] ports {list(role.ports)} not listening after {READY_TIMEOUT:.0f}s; running the tests")


def _wait_ready(container: object, role: Role, scope: str) -> None:
    """Until the role's ports listen inside the container (its services take a moment).

    Checked from inside (python3 is in every image) so no traffic leaves the
    container's own loopback. A role without ports is ready when it runs.
    """
    from docker.models.containers import Container

    assert isinstance(container, Container)
    if not role.ports:
        return
    probe = _port_probe(role)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        container.reload()
        if container.status != "running":
            progress.detail(f"[{scope}] the container stopped ({container.status}); running the tests anyway")
            return
        code, _ = container.exec_run(["python3", "-c", probe])
        if code == 0:
            return
        time.sleep(0.5)
    progress.detail(f"[{scope}] ports {list(role.ports)} not listening after {READY_TIMEOUT:.0f}s; running the tests")
