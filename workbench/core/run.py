"""The one place where the workbench starts other programs.

argv lists only (never a shell), an explicit environment, the binary resolved
first so a missing tool says how to get it, output drained to the end before the
exit code is trusted, and Ctrl-C passed on to the child so it can clean up.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.core.errors import CommandFailed, ToolMissing

TAIL_LINES = 25
# How long a child gets to clean up after Ctrl-C before it is killed. Packer
# removes its build container in this time.
INTERRUPT_GRACE = 60.0

# Which make target installs each external program, for the "not installed" hint.
_INSTALL_HINT = "make setup installs it"


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    duration: float


def which(program: str) -> str:
    """Absolute path of `program`, or ToolMissing naming how to install it."""
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if path is None:
        raise ToolMissing(f"{program} is not installed ({_INSTALL_HINT})")
    return path


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment children get: ours, minus phone-home checks, plus `extra`."""
    env = dict(os.environ)
    env.setdefault("CHECKPOINT_DISABLE", "1")
    env.setdefault("VAGRANT_CHECKPOINT_DISABLE", "1")
    env.setdefault("LC_ALL", "C.UTF-8")
    if extra:
        env.update(extra)
    return env


def _resolve(argv: Sequence[str]) -> list[str]:
    argv = [str(a) for a in argv]
    if not argv:
        raise ValueError("empty argv")
    if os.sep not in argv[0]:
        argv[0] = which(argv[0])
    return argv


def capture(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> Result:
    """Run to completion, collecting stdout and stderr apart (for machine formats)."""
    full = _resolve(argv)
    start = time.monotonic()
    try:
        proc = subprocess.run(
            full,
            input=input,
            capture_output=True,
            text=True,
            env=base_env(env),
            cwd=cwd,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        raise CommandFailed(full, -signal.SIGKILL, time.monotonic() - start, out.splitlines()[-TAIL_LINES:]) from None
    duration = time.monotonic() - start
    result = Result(full, proc.returncode, proc.stdout, proc.stderr, duration)
    if check and proc.returncode != 0:
        lines = (proc.stdout + proc.stderr).splitlines()
        raise CommandFailed(full, proc.returncode, duration, lines[-TAIL_LINES:])
    return result


LineHandler = Callable[[str], None]


def _print_indented(line: str) -> None:
    sys.stdout.write(f"    {line}\n")
    sys.stdout.flush()


def stream(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    on_line: LineHandler | None = _print_indented,
    check: bool = True,
) -> Result:
    """Run with stdout and stderr merged, handing each line to `on_line` as it comes.

    The merged output is kept in the result so parsers can read it afterwards.
    On Ctrl-C the child gets SIGINT, then INTERRUPT_GRACE seconds to finish its
    own clean-up, and the KeyboardInterrupt goes on up.
    """
    full = _resolve(argv)
    start = time.monotonic()
    lines: list[str] = []
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    proc = subprocess.Popen(
        full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        bufsize=1,
        env=base_env(env),
        cwd=cwd,
        # Own process group: a terminal Ctrl-C reaches only us, and we decide
        # how the child hears of it.
        start_new_session=True,
    )
    _streaming.add(proc)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            tail.append(line)
            if on_line is not None:
                on_line(line)
        returncode = proc.wait()
    except BaseException:
        stop_group(proc, INTERRUPT_GRACE, signal.SIGINT)
        raise
    finally:
        _streaming.discard(proc)
    duration = time.monotonic() - start
    output = "\n".join(lines)
    if check and returncode != 0:
        shown = None if on_line is _print_indented else list(tail)
        raise CommandFailed(full, returncode, duration, shown)
    return Result(full, returncode, output, "", duration)


# Children of `stream` still running, in any thread: a Ctrl-C reaches only the
# main thread, which passes it on to the children of worker threads (parallel bakes).
_streaming: set[subprocess.Popen[str]] = set()


def interrupt_streams() -> None:
    """Send SIGINT to every child `stream` is running (each then cleans up and exits)."""
    for proc in list(_streaming):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)


def stop_group(proc: subprocess.Popen[Any], grace: float, first: signal.Signals = signal.SIGTERM) -> int:
    """Send `first` to the process group of `proc` (started in a session of its own),
    then SIGKILL after `grace` seconds; its exit code."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, first)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
    return proc.wait()


class Daemon:
    """A long-running child started by `spawn`: its output goes to a log file."""

    def __init__(self, proc: subprocess.Popen[bytes], argv: list[str], log: Path) -> None:
        self.proc = proc
        self.argv = argv
        self.log = log
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = TAIL_LINES) -> list[str]:
        try:
            return self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return []

    def failure(self) -> CommandFailed:
        """The exception for a daemon that exited when it should be running."""
        code = self.proc.poll()
        return CommandFailed(self.argv, code if code is not None else 0, time.monotonic() - self.started, self.tail())

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM its process group, then SIGKILL after `grace` seconds; its exit code."""
        return stop_group(self.proc, grace)


def spawn(
    argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None, cwd: Path | str | None = None
) -> Daemon:
    """Start a daemon in the foreground of its own process group, stdout+stderr to `log`.

    The caller owns it: `Daemon.stop()` ends it and whatever it started.
    """
    full = _resolve(argv)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            full,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=base_env(env),
            cwd=cwd,
            start_new_session=True,
        )
    return Daemon(proc, full, log)


@contextlib.contextmanager
def serving(
    argv: Sequence[str],
    *,
    log: Path,
    ready: Callable[[Daemon], None],
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
) -> Iterator[Daemon]:
    """A daemon for the `with` block: spawned, `ready(daemon)` waited for (it raises
    if the daemon never gets there), and always stopped on the way out."""
    daemon = spawn(argv, log=log, env=env, cwd=cwd)
    try:
        ready(daemon)
        yield daemon
    finally:
        daemon.stop()


def interactive(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | str | None = None) -> int:
    """Run attached to our terminal (an SSH session); its exit code.

    The child shares our process group, so the terminal's Ctrl-C reaches it
    directly, and we wait for it rather than die first.
    """
    full = _resolve(argv)
    proc = subprocess.Popen(full, env=base_env(env), cwd=cwd)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue
