"""A qcow2 image booted under qemu for its tests, reached over SSH on loopback.

The disk is opened with `-snapshot`: the machine writes to a throw-away
overlay, so the image under test stays byte for byte what the bake made.
User-mode networking forwards one loopback port to the guest's sshd, so
nothing but loopback is touched. qemu is stopped whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from workbench.core import progress, run
from workbench.core.config import Config
from workbench.core.errors import CommandFailed, VerifyFailed

SSH_TIMEOUT = 240.0
HOST_ALIAS = "workbench-vm"


@dataclass(frozen=True)
class Booted:
    """A running VM: `ssh -F ssh_config workbench-vm` reaches it as root."""

    port: int
    ssh_config: Path
    console: Path
    seconds_to_ssh: float

    def ssh_argv(self, *command: str) -> list[str]:
        return ["ssh", "-F", str(self.ssh_config), HOST_ALIAS, *command]


def qemu_argv(config: Config, disk: Path, port: int, console: Path, drives: Sequence[Path] = ()) -> list[str]:
    """qemu for `disk` (snapshot mode), plus read-only raw `drives` (a config drive) as further virtio disks."""
    b = config.builder
    extra = [arg for drive in drives for arg in ("-drive", f"file={drive},if=virtio,format=raw,readonly=on")]
    return [
        "qemu-system-x86_64",
        "-accel", b.accelerator,
        "-m", str(b.memory),
        "-smp", str(b.cpus),
        "-display", "none",
        "-monitor", "none",
        "-serial", f"file:{console}",
        "-drive", f"file={disk},if=virtio,format=qcow2,snapshot=on",
        *extra,
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
        "-no-reboot",
    ]  # fmt: skip


def ssh_config_text(port: int, key: Path, control: Path) -> str:
    # A fresh machine has fresh host keys at each boot: nothing to remember or check.
    # One master connection carries every test's command: a handshake costs
    # seconds of emulated crypto in the guest.
    return (
        f"Host {HOST_ALIAS}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
        f"  IdentityFile {key}\n  IdentitiesOnly yes\n  BatchMode yes\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  ConnectTimeout 5\n"
        f"  ControlMaster auto\n  ControlPath {control}\n  ControlPersist 120\n"
    )


@contextmanager
def booted(
    config: Config, disk: Path, key: Path, work: Path, *, scope: str, drives: Sequence[Path] = ()
) -> Iterator[Booted]:
    """Boot `disk` (unchanged: snapshot mode), with `drives` attached, and wait until root logs in over SSH."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    console = work / "console.log"
    ssh_config = work / "ssh_config"
    # A socket path must stay short (108 bytes): in /tmp, not under the work directory.
    control = Path(tempfile.gettempdir()) / f"wb-ssh-{port}-{os.getpid()}"
    ssh_config.write_text(ssh_config_text(port, key, control))
    start = time.monotonic()
    # A detail of the caller's step (verify): a step of its own would take the step's time from it.
    progress.detail(f"[{scope}] booting {disk.name} (qemu {config.builder.accelerator}, ssh on 127.0.0.1:{port})")
    daemon = run.spawn(qemu_argv(config, disk, port, console, drives), log=work / "qemu.log")
    try:
        booted_vm = Booted(port, ssh_config, console, 0.0)
        _wait_for_ssh(daemon, booted_vm, scope)
        seconds = time.monotonic() - start
        progress.detail(f"[{scope}] root logs in over SSH {seconds:.1f}s after power-on")
        yield Booted(port, ssh_config, console, seconds)
    finally:
        # The master connection goes with the VM anyway; this only makes it prompt.
        with contextlib.suppress(CommandFailed):
            run.capture(["ssh", "-F", str(ssh_config), "-O", "exit", HOST_ALIAS], check=False, timeout=10)
        daemon.stop(grace=5.0)
        control.unlink(missing_ok=True)


def _wait_for_ssh(daemon: run.Daemon, vm: Booted, scope: str) -> None:
    deadline = time.monotonic() + SSH_TIMEOUT
    while time.monotonic() < deadline:
        if not daemon.alive():
            raise VerifyFailed(f"{scope}: qemu exited before the VM answered on SSH:\n{_tail(daemon.tail())}")
        try:
            if run.capture(vm.ssh_argv("true"), check=False, timeout=30).returncode == 0:
                return
        except CommandFailed:  # ssh hung on a half-up guest: try again
            pass
        time.sleep(1.0)
    raise VerifyFailed(
        f"{scope}: the VM did not answer on SSH within {SSH_TIMEOUT:.0f}s; its console ({vm.console}) ends:\n"
        f"{_tail(console_tail(vm.console))}"
    )


def console_tail(console: Path, lines: int = 15) -> list[str]:
    try:
        return console.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _tail(lines: list[str]) -> str:
    return "\n".join(f"    | {line}" for line in lines) or "    | (nothing)"


def free_port() -> int:
    """A loopback port free right now (qemu binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
