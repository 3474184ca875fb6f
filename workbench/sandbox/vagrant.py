"""Vagrant, run through workbench.run; python-vagrant reads its machine formats.

python-vagrant's own runners ignore exit codes in places, so every command goes
through `workbench.run` with `--machine-readable`, and python-vagrant is used
for what it does well: parsing `vagrant status` and `vagrant ssh-config`.
Machine-readable lines are CSV, `timestamp,target,kind,data...`:

    1700000000,web,state,running
    1700000000,,error-exit,Vagrant::Errors::ProviderNotUsable,The provider 'libvirt' ...

Commas, newlines and the like inside data are escaped as `%!(VAGRANT_COMMA)`, `\\n`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import vagrant as python_vagrant

from workbench.core import progress, run
from workbench.core.errors import SandboxError, ToolMissing

_ESCAPES = (("%!(VAGRANT_COMMA)", ","), ("\\n", "\n"), ("\\r", "\r"))

# Which Vagrant plugin, and which host program, each provider needs.
PROVIDER_PLUGINS = {"libvirt": "vagrant-libvirt"}
PROVIDER_PROGRAMS = {"docker": "docker", "libvirt": "virsh", "virtualbox": "VBoxManage"}
PROVIDER_HINTS = {
    "docker": "apt-get install docker.io (make setup does)",
    "libvirt": "apt-get install vagrant-libvirt libvirt-daemon-system",
    "virtualbox": "install VirtualBox from virtualbox.org (Debian does not package it)",
}


@dataclass(frozen=True)
class MachineStatus:
    name: str
    state: str
    provider: str | None


@dataclass(frozen=True)
class MachineLine:
    target: str
    kind: str
    data: tuple[str, ...]


def unescape(text: str) -> str:
    for code, char in _ESCAPES:
        text = text.replace(code, char)
    return text


def parse_lines(output: str) -> list[MachineLine]:
    """Every machine-readable line of `output`; other lines are skipped."""
    lines = []
    for raw in output.splitlines():
        fields = raw.split(",")
        if len(fields) < 3 or not fields[0].isdigit():
            continue
        lines.append(MachineLine(fields[1], fields[2], tuple(unescape(f) for f in fields[3:])))
    return lines


def parse_status(output: str) -> list[MachineStatus]:
    """`vagrant status --machine-readable` -> one MachineStatus per machine."""
    # python-vagrant's parser does the grouping; lines about no machine (an
    # `error-exit` has one field more than it expects) are not for it.
    mine = "\n".join(line for line in output.splitlines() if line.count(",") >= 3 and line.split(",")[1])
    parsed = python_vagrant.Vagrant()._parse_status(mine)
    return [MachineStatus(s.name, s.state, s.provider) for s in parsed if s.name]


def parse_ssh_config(output: str) -> dict[str, str]:
    """`vagrant ssh-config NAME` -> {'HostName': '172.18.0.2', 'User': 'vagrant', ...}."""
    return dict(python_vagrant.Vagrant()._parse_config(output))


def parse_plugins(output: str) -> list[str]:
    """`vagrant plugin list --machine-readable` -> installed plugin names."""
    return [p.name for p in python_vagrant.Vagrant()._parse_plugin_list(output)]


def parse_error(output: str) -> str | None:
    """The message of an `error-exit` line, if Vagrant stopped on an error."""
    for line in parse_lines(output):
        if line.kind == "error-exit" and line.data:
            return line.data[-1].strip()
    return None


def ui_message(raw: str) -> str | None:
    """The human text of one machine-readable `ui` line, e.g. `==> web: Creating the container...`."""
    lines = parse_lines(raw)
    if len(lines) != 1 or lines[0].kind != "ui" or len(lines[0].data) < 2:
        return None
    return lines[0].data[1].strip() or None


class Vagrant:
    """One Vagrant environment: the Vagrantfile's directory, its dotfile path, its spec."""

    def __init__(self, root: Path, env: Mapping[str, str]) -> None:
        self.root = root
        self.env = dict(env)

    def capture(self, *args: str, check: bool = True) -> run.Result:
        return run.capture(["vagrant", *args], env=self.env, cwd=self.root, check=check)

    def stream(self, *args: str, on_line: Callable[[str], None] | None = None) -> run.Result:
        """Run a machine-readable command, showing its ui lines; errors become SandboxError."""
        shown = on_line or _show_ui
        result = run.stream(["vagrant", *args, "--machine-readable"], env=self.env, cwd=self.root,
                            on_line=shown, check=False)
        if result.returncode != 0:
            last = "\n".join(f"  | {line}" for line in result.stdout.splitlines()[-10:])
            message = parse_error(result.stdout) or f"its last lines:\n{last}"
            raise SandboxError(f"vagrant {' '.join(args)} failed: {message}")
        return result

    def status(self, name: str | None = None) -> list[MachineStatus]:
        args = ["status", "--machine-readable", *([name] if name else [])]
        result = self.capture(*args, check=False)
        if result.returncode != 0:
            message = parse_error(result.stdout) or result.stderr.strip() or "no output"
            raise SandboxError(f"vagrant status failed: {message}")
        return parse_status(result.stdout)

    def state(self, name: str) -> str:
        found = self.status(name)
        return found[0].state if found else "not_created"

    def ssh_config(self, name: str) -> dict[str, str]:
        result = self.capture("ssh-config", name, check=False)
        if result.returncode != 0:
            message = result.stderr.strip().splitlines()[-1:] or ["no output"]
            raise SandboxError(f"cannot reach sandbox {name} over SSH: {message[0]}")
        return parse_ssh_config(result.stdout)

    def ssh_config_text(self, name: str, host: str) -> str:
        """`vagrant ssh-config` with its Host line renamed to `host`, for ssh -F / testinfra."""
        return self.capture("ssh-config", name, "--host", host).stdout

    def ssh_argv(self, name: str, command: str | None = None) -> list[str]:
        return ["vagrant", "ssh", name, *(["-c", command] if command else [])]

    def plugins(self) -> list[str]:
        return parse_plugins(self.capture("plugin", "list", "--machine-readable").stdout)

    def check_provider(self, provider: str) -> None:
        """A clear error when the provider's plugin or host program is missing."""
        plugin = PROVIDER_PLUGINS.get(provider)
        if plugin and plugin not in self.plugins():
            raise SandboxError(
                f"the {provider} provider needs the Vagrant plugin {plugin}, which is not installed "
                f"({PROVIDER_HINTS[provider]}), or use --provider docker"
            )
        program = PROVIDER_PROGRAMS[provider]
        try:
            run.which(program)
        except ToolMissing:
            raise SandboxError(
                f"the {provider} provider needs {program}, which is not installed "
                f"({PROVIDER_HINTS[provider]}), or use --provider docker"
            ) from None


def _show_ui(line: str) -> None:
    """Vagrant's ui lines into the run's log; the last one is the live line's activity."""
    message = ui_message(line)
    if message:
        for part in message.splitlines():
            if part.strip():
                progress.output(part)
                progress.activity(part)

