"""testinfra backends over one channel per target, and the pytest plugin that offers them.

The role tests stay what their authors wrote: `host.file(...)`, `host.run(...)`
and the rest of testinfra, run by pytest on this machine. Only the transport
changes, by the host spec the bake passes:

    pytest -p workbench.build.testchannel --hosts=docker-channel://<container id> tests/roles/test_app.py
    pytest -p workbench.build.testchannel --hosts=ssh-channel://workbench-vm --ssh-config=... tests/roles/test_base.py

`docker-channel://` runs each command as `docker://` does (`/bin/sh -c` as the
container's user, a failed exec reported as a failed command), `ssh-channel://`
as `ssh://` does (the login shell; a broken connection raises, as ssh's exit
code 255 does there); both over `workbench.build.channel`.
"""

from __future__ import annotations

import shlex
from typing import Any

import pytest
import testinfra.backend
from testinfra.backend.base import CommandResult
from testinfra.backend.docker import DockerBackend
from testinfra.backend.ssh import SshBackend

from workbench.build.channel import DOCKER_SCHEME, SSH_SCHEME, Channel, ChannelBroken, docker_argv, ssh_argv

# Every channel this session opened, closed when it ends.
_channels: list[Channel] = []


class DockerChannelBackend(DockerBackend):
    """`docker://` with one `docker exec -i` for the whole session."""

    NAME = DOCKER_SCHEME

    def __init__(self, name: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(name, *args, **kwargs)
        self.channel = Channel(docker_argv(self.name, self.user))
        _channels.append(self.channel)

    def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:
        cmd = self.encode(self.get_command(command, *args))
        try:
            reply = self.channel.run(cmd)
        except ChannelBroken as exc:
            # What `docker exec` gives for a container that stopped: a failed command, the engine's words.
            return self.result(exc.returncode or 1, cmd, b"", str(exc).encode())
        return self.result(reply.rc, cmd, reply.stdout, reply.stderr)


class SshChannelBackend(SshBackend):
    """`ssh://` with one session for the whole test run (on the master connection, if the config has one)."""

    NAME = SSH_SCHEME

    def __init__(self, hostspec: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(hostspec, *args, **kwargs)
        self.channel = Channel(ssh_argv(self._ssh()))
        _channels.append(self.channel)

    def _ssh(self) -> list[str]:
        argv = ["ssh", *shlex.split(self.ssh_extra_args or "")]
        if self.ssh_config:
            argv += ["-F", self.ssh_config]
        if self.host.user:
            argv += ["-o", f"User={self.host.user}"]
        if self.host.port:
            argv += ["-o", f"Port={self.host.port}"]
        if self.ssh_identity_file:
            argv += ["-i", self.ssh_identity_file]
        return [*argv, "-o", f"ConnectTimeout={self.timeout}", self.host.name]

    def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:
        cmd = self.encode(self.get_command(command, *args))
        try:
            reply = self.channel.run(cmd)
        except ChannelBroken as exc:
            raise RuntimeError(f"{self.host.name}: {exc}") from None
        return self.result(reply.rc, cmd, reply.stdout, reply.stderr)


def pytest_configure(config: pytest.Config) -> None:
    # testinfra finds a backend by the scheme of the host spec in this table.
    testinfra.backend.BACKENDS.setdefault(DOCKER_SCHEME, f"{__name__}.DockerChannelBackend")
    testinfra.backend.BACKENDS.setdefault(SSH_SCHEME, f"{__name__}.SshChannelBackend")


def pytest_unconfigure(config: pytest.Config) -> None:
    while _channels:
        _channels.pop().close()

