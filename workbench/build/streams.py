"""Reading tools' output as it streams: what the live line shows, what a failure quotes.

A bake's Packer build carries Salt's log; the verification is pytest's. Each
reader is handed every line (`feed`), passes it on to the run's log
(`progress.output`) and, when the line says what the tool is doing now, makes
that the live line's activity (`progress.activity`); pytest's reader also keeps
the failing tests with their assertions for the error message, since the full
output is no longer on the terminal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from workbench.core import progress

# Packer prefixes each line of the build with its builder:
# `==> docker: [INFO    ] Running state [webapps] at time 03:21:26.656170`
# `    docker: workbench: applying states base,app`
_PACKER_PREFIX = re.compile(r"^(?:==> |    )(?:docker|qemu): ")
# Salt's log at level info, one state after the other:
# `[INFO    ] Running state [webapps] at time 03:21:26.656170`
# `[INFO    ] Executing state user.present for [webapps]`
_RUNNING = re.compile(r"\[INFO\s*\] Running state \[(?P<name>.*)\] at time")
_EXECUTING = re.compile(r"\[INFO\s*\] Executing state (?P<function>\S+) for \[(?P<name>.*)\]")
_LOG_LEVEL = re.compile(r"^\[(?P<level>[A-Z]+)\s*\]")


def packer_text(line: str) -> str:
    """A Packer ui line without its builder prefix."""
    return _PACKER_PREFIX.sub("", line, count=1)


@dataclass
class SaltProgress:
    """Salt's log (through Packer, or straight from salt-call): the state being applied.

    `==> docker: Committing the container` and the provision script's own
    `workbench: ...` lines say what happens between the Salt runs.
    """

    states: int = 0
    state: str = ""

    def feed(self, line: str) -> None:
        progress.output(line)
        activity = self.read(line)
        if activity:
            progress.activity(activity)

    def read(self, line: str) -> str | None:
        """The activity a line announces, or None (most of Salt's log says nothing of the kind)."""
        text = packer_text(line)
        executing = _EXECUTING.search(text)
        if executing:
            return f"state {self.states}: {executing['function']} {executing['name']}"
        running = _RUNNING.search(text)
        if running:
            self.states += 1
            self.state = running["name"]
            return f"state {self.states}: {running['name']}"
        if text.startswith("workbench: "):
            return text.removeprefix("workbench: ")
        if line.startswith("==> ") and not _LOG_LEVEL.match(text) and text[:1].isupper():
            # Packer's own steps: `Starting docker container...`, `Committing the container`.
            return text
        return None


# pytest -v: `tests/roles/test_app.py::test_nginx_serves PASSED    [ 12%]`
_RESULT = re.compile(
    r"^(?P<node>\S+::\S+)\s+(?P<outcome>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b(?:\s+\[\s*(?P<percent>\d+)%\])?"
)
# `collected 16 items` (`collecting ... collected 16 items` on a terminal-less run)
_COLLECTED = re.compile(r"\bcollected (?P<count>\d+) items?")
# testinfra's host parameter, the same for every test of a run: `test_nginx[docker-channel://4f2a...]`
_HOST_PARAM = re.compile(r"\[[a-z-]+://[^\]]*\]$")
# The short summary (-rfE): `FAILED tests/roles/test_flunk.py::test_content - AssertionError: assert ...`
_SHORT = re.compile(r"^(?P<outcome>FAILED|ERROR) (?P<node>\S+::\S+)(?: - (?P<reason>.*))?$")
# A failure's section: `____________ test_content ____________` (a long title gets one `_` each
# side: `_ test_content[docker-channel://4f2a...] _`), then the source and `E   ` lines.
_SECTION = re.compile(r"^_+ (?P<title>\S.*?) _+$")
# Lines of an `E` block kept per failing test; the log has them all.
ASSERTION_LINES = 12


@dataclass
class PytestProgress:
    """pytest's verbose output: the test just run and how many are done; the failures."""

    total: int = 0
    done: int = 0
    failed: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    assertions: dict[str, list[str]] = field(default_factory=dict)
    _section: str = ""

    def feed(self, line: str) -> None:
        progress.output(line)
        activity = self.read(line)
        if activity:
            progress.activity(activity)

    def read(self, line: str) -> str | None:
        collected = _COLLECTED.search(line)
        if collected:
            self.total = int(collected["count"])
            return f"{self.total} tests collected"
        result = _RESULT.match(line)
        if result:
            self.done += 1
            name = _test_name(result["node"])
            if result["outcome"] in ("FAILED", "ERROR") and name not in self.failed:
                self.failed.append(name)
            of = f"/{self.total}" if self.total else ""
            return f"{name} {result['outcome'].lower()} ({self.done}{of})"
        short = _SHORT.match(line)
        if short:
            name = _test_name(short["node"])
            if name not in self.failed:
                self.failed.append(name)
            self.reasons[name] = short["reason"] or ""
            self._section = ""
            return None
        section = _SECTION.match(line)
        if section:
            self._section = _test_name("::" + section["title"].split(" ")[-1].replace(".", "::"))
            return None
        if self._section and line.startswith("E "):
            kept = self.assertions.setdefault(self._section, [])
            if len(kept) < ASSERTION_LINES:
                kept.append(line.rstrip())
        return None

    def describe_failures(self) -> str:
        """The failing tests, each with its assertion: the part of pytest's output that matters.

        `  - test_content: AssertionError: assert 'real' == 'expected'` and its `E` lines.
        """
        lines = []
        for name in self.failed:
            reason = self.reasons.get(name, "")
            lines.append(f"  - {name}" + (f": {reason}" if reason else ""))
            for detail in self.assertions.get(name, []):
                lines.append(f"      {detail}")
        return "\n".join(lines)


def _test_name(node: str) -> str:
    """`tests/roles/test_app.py::test_nginx[docker-channel://4f2a]` -> `test_nginx`."""
    return _HOST_PARAM.sub("", node.split("::", 1)[1])
