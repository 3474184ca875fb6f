"""Packer, driven through packer-py: argument builder, machine-readable parser, runner.

packer-py's `PackerExecutable` knows Packer's flag syntax (`-var k=v`,
`-only=...`); it runs Packer itself with pipes and no streaming, so we borrow
its argument builder and run the command through `workbench.run`, which streams
the output live and forwards Ctrl-C (Packer then removes its build container).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from packerpy import PackerExecutable

from workbench.core import run
from workbench.core.errors import CommandFailed

# Packer escapes these in machine-readable data fields.
_ESCAPES = (("%!(PACKER_COMMA)", ","), ("\\n", "\n"), ("\\r", "\r"))


@dataclass(frozen=True)
class Event:
    """One line of `packer -machine-readable`: `timestamp,target,type,data...`.

    e.g. `1700000000,docker,artifact,0,id,sha256:b898...` or
    `1700000000,,ui,message,    docker: workbench: applying states base%!(PACKER_COMMA)app`
    """

    timestamp: int
    target: str
    type: str
    data: tuple[str, ...]


def parse_line(line: str) -> Event | None:
    """The event on one output line, or None for a line that is not one."""
    parts = line.split(",")
    if len(parts) < 3 or not parts[0].isdigit():
        return None
    data = []
    for value in parts[3:]:
        for escaped, plain in _ESCAPES:
            value = value.replace(escaped, plain)
        data.append(value)
    return Event(int(parts[0]), parts[1], parts[2], tuple(data))


@dataclass
class BuildLog:
    """What a Packer build said, gathered as the lines come."""

    artifacts: dict[str, dict[str, str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def feed(self, event: Event) -> None:
        if event.type == "ui" and len(event.data) >= 2:
            kind, text = event.data[0], event.data[1]
            self.messages.append(text)
            if kind == "error":
                self.errors.append(text)
        elif event.type == "artifact" and len(event.data) >= 3:
            # `artifact,0,id,sha256:...`: one dict per builder (target) and index.
            key = f"{event.target}.{event.data[0]}"
            self.artifacts.setdefault(key, {})[event.data[1]] = ",".join(event.data[2:])

    def artifact_id(self, builder: str) -> str | None:
        return self.artifacts.get(f"{builder}.0", {}).get("id")


def parse_output(lines: Iterable[str]) -> BuildLog:
    """A whole recorded build output, parsed (what the runner does line by line)."""
    log = BuildLog()
    for line in lines:
        event = parse_line(line)
        if event is not None:
            log.feed(event)
    return log


def build_argv(
    template: Path, *, variables: Mapping[str, str], only: str, on_error: str = "cleanup"
) -> list[str]:
    """`packer build -machine-readable -only=docker -on-error=cleanup -var k=v ... TEMPLATE`."""
    args = PackerExecutable._explode_args(only=only, on_error=on_error, var=dict(variables))
    return ["packer", "build", "-machine-readable", "-color=false", *args, str(template)]


UiHandler = Callable[[str], None]


def build(
    template: Path,
    *,
    variables: Mapping[str, str],
    only: str,
    on_error: str = "cleanup",
    on_ui: UiHandler,
    cwd: Path | None = None,
) -> tuple[BuildLog, CommandFailed | None]:
    """Run a build, handing each human-readable line to `on_ui` as it comes.

    Returns the parsed log and, if Packer failed, the failure (the caller knows
    better what went wrong: it reads the provisioner's results first).
    """
    log = BuildLog()

    def on_line(line: str) -> None:
        event = parse_line(line)
        if event is None:
            on_ui(line)
            return
        log.feed(event)
        if event.type == "ui" and len(event.data) >= 2:
            for text in event.data[1].splitlines() or [""]:
                on_ui(text)

    argv = build_argv(template, variables=variables, only=only, on_error=on_error)
    # Packer's download cache (the qemu builder makes one even for a local disk) goes
    # with the build, not into the working directory.
    env = {"PACKER_CACHE_DIR": str(template.parent / "packer_cache")}
    try:
        run.stream(argv, on_line=on_line, cwd=cwd, env=env)
    except CommandFailed as exc:
        return log, exc
    return log, None


def version() -> str:
    """`Packer v1.6.6` -> `1.6.6`."""
    out = run.capture(["packer", "version"]).stdout.strip().splitlines()
    return out[0].split()[-1].lstrip("v") if out else "unknown"
