"""Run logs: the whole output of one run (a bake, a promote, a sandbox, a netboot test).

Each run writes `<state>/logs/<run id>.log`: a header naming the command, then
every progress event and every line the tools printed (Packer, Salt, pytest,
apt), each with the seconds since the start and its job, then a footer with
the exit status. A new run prunes the oldest beyond `[workbench] keep_logs`.

    # workbench run 20261130-073840-image.bake-3fa2c1
    # command: fab image.bake app
    # started: 2026-11-30T07:38:40+00:00
       0.0 [bake] ==> base: workbench/base:fb525f854c00
      12.4 [bake app] | [INFO    ] Running state [nginx] at time 07:38:52.1234
    # finished: exit 0 after 52.3s
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from workbench.core.errors import ConfigError

LOG_DIR = "logs"
SUFFIX = ".log"
_HEADER = "# workbench run "
_COMMAND = "# command: "
_STARTED = "# started: "
_FINISHED = "# finished: "
_FINISHED_RE = re.compile(r"^# finished: exit (?P<code>-?\d+) after (?P<seconds>[\d.]+)s$")


def log_dir(state_dir: Path) -> Path:
    return state_dir / LOG_DIR


class RunLog:
    """An open run log; `write` may be called from any thread."""

    def __init__(self, path: Path, run_id: str, file: IO[str]) -> None:
        self.path = path
        self.id = run_id
        self._file = file
        self._lock = threading.Lock()
        self._start = time.monotonic()

    def write(self, scope: str, text: str) -> None:
        lead = f"[{scope}] " if scope else ""
        with self._lock:
            if self._file.closed:
                return
            for line in text.splitlines() or [""]:
                self._file.write(f"{time.monotonic() - self._start:8.1f} {lead}{line}\n")
            # A run in progress can be read (`fab log`) and a killed one keeps its last lines.
            self._file.flush()

    def finish(self, exit_code: int) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.write(f"{_FINISHED}exit {exit_code} after {time.monotonic() - self._start:.1f}s\n")
                self._file.close()


def new_id(task: str, now: datetime | None = None) -> str:
    """`20261130-073840-image.bake-3fa2c1`: sortable by time, unique, says what ran."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", task).strip("-") or "run"
    return f"{stamp}-{slug}-{secrets.token_hex(3)}"


def open_log(state_dir: Path, task: str, command: str, keep: int) -> RunLog:
    """Start the log of a new run, pruning old ones so that `keep` remain with it."""
    directory = log_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    prune(state_dir, max(keep - 1, 0))
    run_id = new_id(task)
    path = directory / f"{run_id}{SUFFIX}"
    file = open(path, "w", encoding="utf-8", errors="replace")  # noqa: SIM115 - RunLog.finish closes it
    file.write(f"{_HEADER}{run_id}\n{_COMMAND}{command}\n{_STARTED}{datetime.now(UTC).isoformat(timespec='seconds')}\n")
    file.flush()
    return RunLog(path, run_id, file)


def _logs(state_dir: Path) -> list[Path]:
    """Every run log, oldest first (the id starts with its time)."""
    directory = log_dir(state_dir)
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"*{SUFFIX}"), key=lambda p: p.name)


def prune(state_dir: Path, keep: int) -> list[Path]:
    """Remove all but the newest `keep` run logs; those removed."""
    logs = _logs(state_dir)
    gone = logs[: max(len(logs) - keep, 0)]
    for path in gone:
        path.unlink(missing_ok=True)
    return gone


@dataclass(frozen=True)
class RunInfo:
    """One kept run, as `fab log --list` shows it."""

    id: str
    path: str
    command: str
    started: str
    exit_code: int | None  # None: still running, or killed
    seconds: float | None
    size: int


def info(path: Path) -> RunInfo:
    command = started = ""
    exit_code: int | None = None
    seconds: float | None = None
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            for _, line in zip(range(3), file, strict=False):
                if line.startswith(_COMMAND):
                    command = line[len(_COMMAND):].strip()
                elif line.startswith(_STARTED):
                    started = line[len(_STARTED):].strip()
        last = _last_line(path)
    except OSError:
        last = ""
    match = _FINISHED_RE.match(last)
    if match:
        exit_code, seconds = int(match["code"]), float(match["seconds"])
    size = path.stat().st_size if path.exists() else 0
    return RunInfo(path.name.removesuffix(SUFFIX), str(path), command, started, exit_code, seconds, size)


def _last_line(path: Path) -> str:
    with open(path, "rb") as file:
        file.seek(0, os.SEEK_END)
        file.seek(max(file.tell() - 400, 0))
        lines = file.read().decode(errors="replace").splitlines()
    return lines[-1] if lines else ""


def runs(state_dir: Path) -> list[RunInfo]:
    """The kept runs, oldest first."""
    return [info(path) for path in _logs(state_dir)]


def find(state_dir: Path, run_id: str = "") -> Path:
    """The log of run `run_id` (or a unique part of it), or of the last run."""
    logs = _logs(state_dir)
    if not logs:
        raise ConfigError(f"no run logs yet in {log_dir(state_dir)}: bakes, promotes, sandboxes and netboot keep one")
    if not run_id:
        return logs[-1]
    exact = [p for p in logs if p.name.removesuffix(SUFFIX) == run_id]
    matches = exact or [p for p in logs if run_id in p.name.removesuffix(SUFFIX)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ConfigError(f"no run {run_id!r} in {log_dir(state_dir)} (`fab log --list` lists them)")
    names = ", ".join(p.name.removesuffix(SUFFIX) for p in matches[-5:])
    raise ConfigError(f"{run_id!r} names {len(matches)} runs ({names}): give more of the id")
