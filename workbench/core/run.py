"""The one place where the workbench starts other programs.

argv lists only (never a shell), an explicit environment, the binary resolved
first so a missing tool says how to get it, output drained to the end before the
exit code is trusted, and Ctrl-C passed on to the child so it can clean up.

Daemons too: `spawn`/`serving` start one in its own process group, `wait_until`
waits for it to be ready (or says why it died), and `PidFile` keeps one that
outlives us and stops it only once it is sure the pid is still ours.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.core import progress
from workbench.core.errors import CommandFailed, ToolMissing, WorkbenchError

TAIL_LINES = 25
# How long a child gets to clean up after Ctrl-C before it is killed. Packer
# removes its build container in this time.
INTERRUPT_GRACE = 60.0
# How often `wait_until` asks whether a daemon is ready.
POLL_INTERVAL = 0.05
# How long a SIGKILLed process may take to go (one in uninterruptible sleep takes a while).
KILL_WAIT = 5.0

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


def stream(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    on_line: LineHandler | None = progress.tool_line,
    check: bool = True,
) -> Result:
    """Run with stdout and stderr merged, handing each line to `on_line` as it comes.

    By default each line goes to the run's log and becomes the live line's
    activity (`progress.tool_line`); a handler of one's own should pass the lines
    on to `progress.output`. The merged output is kept in the result so parsers
    can read it afterwards, and a failure carries its last lines (the terminal
    did not show them).
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
        raise CommandFailed(full, returncode, duration, list(tail))
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
    """A long-running child started by `spawn`: its output goes to a log file.

    `own_log` is the log the program writes itself, when it has one besides its
    output (dnsmasq's log-facility, ganesha's -L): its tail belongs in any error too.
    """

    def __init__(self, proc: subprocess.Popen[bytes], argv: list[str], log: Path, own_log: Path | None = None) -> None:
        self.proc = proc
        self.argv = argv
        self.log = log
        self.own_log = own_log
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def logs(self) -> list[Path]:
        return [self.log] if self.own_log is None else [self.log, self.own_log]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = TAIL_LINES) -> list[str]:
        """The last lines of its output."""
        return _tail(self.log, lines)

    def failure(self) -> CommandFailed:
        """The exception for a daemon that exited when it should be running: its output's
        and its own log's last lines."""
        code = self.proc.poll()
        lines = self.tail() + (_tail(self.own_log, TAIL_LINES) if self.own_log else [])
        return CommandFailed(self.argv, code if code is not None else 0, time.monotonic() - self.started, lines)

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM its process group, then SIGKILL after `grace` seconds; its exit code."""
        return stop_group(self.proc, grace)


def _tail(path: Path, lines: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    own_log: Path | None = None,
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
    return Daemon(proc, full, log, own_log)


@contextlib.contextmanager
def serving(
    argv: Sequence[str],
    *,
    log: Path,
    ready: Callable[[Daemon], None],
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    own_log: Path | None = None,
) -> Iterator[Daemon]:
    """A daemon for the `with` block: spawned, `ready(daemon)` waited for (it raises
    if the daemon never gets there; `wait_until` does), and always stopped on the way out."""
    daemon = spawn(argv, log=log, env=env, cwd=cwd, own_log=own_log)
    try:
        ready(daemon)
        yield daemon
    finally:
        daemon.stop()


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    daemon: Daemon | None = None,
    error: type[WorkbenchError] = WorkbenchError,
    hints: Mapping[str, str] | None = None,
) -> None:
    """Ask `ready()` every POLL_INTERVAL seconds until it says yes, for at most `timeout` seconds.

    With `daemon`, the one being waited for: if it exits first, `error` says so at
    once with its exit code and the last lines of its logs, plus the hint of each
    `hints` entry whose text is in them ({"in use": "is port 53 taken?"}); after
    the deadline it is stopped, and `error` says it was not ready in time.

        wait_until(lambda: answers(host, port), timeout=20, what="the registry", daemon=d, error=ReleaseError)
    """
    deadline = time.monotonic() + timeout
    while True:
        if daemon is not None and not daemon.alive():
            failure = daemon.failure()
            text = "\n".join(failure.tail or [])
            found = [hint for needle, hint in (hints or {}).items() if needle in text]
            said = f"; {'; '.join(found)}\n" if found else ": "
            raise error(f"{what} exited at start{said}{failure}")
        if ready():
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL)
    if daemon is None:
        raise error(f"{what} was not ready within {timeout:g}s")
    daemon.stop()
    logs = ", ".join(str(path) for path in daemon.logs)
    lines = daemon.failure().tail
    said = "".join(f"\n  | {line}" for line in lines) if lines else " (no output)"
    raise error(f"{what} was not ready within {timeout:g}s; last lines of its log ({logs}):{said}")


# --- daemons that outlive us ---------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, session, ..."""
    try:
        # "4242 (dnsmasq) S 1 4242 4242 ...": the fields follow the last ")", as the name may hold one.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def parent(pid: int) -> int | None:
    """The parent of process `pid`, None if there is no such process."""
    fields = _stat(pid)
    return int(fields[1]) if fields else None


def owns(pid: int, program: str, marker: str) -> bool:
    """Whether process `pid` is ours: running (not a zombie), `program` among the
    names of its first three arguments (`/usr/sbin/dnsmasq`, and `python3 -m
    workbench.netboot.httpserve` too), and `marker` (our config file or state
    directory) inside one of its arguments. Pids are reused: a pid file or a
    record alone proves nothing."""
    fields = _stat(pid)
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if not fields or fields[0] in ("Z", "X") or not raw:
        return False
    argv = raw.decode(errors="replace").rstrip("\0").split("\0")
    return program in {Path(arg).name for arg in argv[:3]} and any(marker in arg for arg in argv)


def stop_process(
    pid: int, ours: Callable[[int], bool], grace: float = 10.0, first: signal.Signals = signal.SIGTERM
) -> bool:
    """Stop process `pid` if `ours(pid)` says it is ours (`owns` does, mostly):
    `first`, SIGKILL after `grace` seconds, reaped if it is our child. False, and
    no signal at all, if it is not ours or not running.

    A process leading its own session, as `spawn` starts daemons, is signalled
    with its process group. The check and the signals go through a pidfd, so a
    process that exits in between is never mistaken for the next one to get its pid.
    """
    try:
        handle = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        # Checked once the pidfd is open: if that process is still alive after the
        # check, the check read that process and not another with its pid.
        if not ours(pid) or _exited(handle, 0):
            _reap(pid)
            return False
        group = _leads_session(pid)
        _signal(handle, pid, first, group)
        if not _exited(handle, grace):
            _signal(handle, pid, signal.SIGKILL, group)
            _exited(handle, KILL_WAIT)
        _reap(pid)
        return True
    finally:
        os.close(handle)


def _leads_session(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and int(fields[3]) == pid


def _signal(handle: int, pid: int, sig: signal.Signals, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group:
            # The group bears the leader's pid, which no other process can get while
            # the pidfd shows the leader alive (signal 0 raises once it is gone).
            signal.pidfd_send_signal(handle, 0)
            os.killpg(pid, sig)
        else:
            signal.pidfd_send_signal(handle, sig)


def _exited(handle: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for the process of pidfd `handle` to exit (a pidfd
    becomes readable then, for a child or not); whether it did."""
    readable, _, _ = select.select([handle], [], [], timeout)
    return bool(readable)


def _reap(pid: int) -> None:
    """Collect the exit status of a child of ours (the tests start daemons in process)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@dataclass(frozen=True)
class PidFile:
    """Where a daemon that outlives the process that started it keeps its pid
    (`fab registry.up`; a package cache a killed bake left behind).

    Only a process that `owns(pid, program, marker)` is reported or signalled:
    a stale file whose pid now belongs to another program, or to the same
    program for another workbench, is left alone.
    """

    path: Path
    program: str
    marker: str

    def owns(self, pid: int) -> bool:
        return owns(pid, self.program, self.marker)

    def write(self, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{pid}\n")

    def read(self) -> int | None:
        """The pid in the file, ours or not."""
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> int | None:
        """The pid in the file, if that process runs and is ours."""
        pid = self.read()
        return pid if pid is not None and self.owns(pid) else None

    def stop(self, grace: float = 10.0) -> int | None:
        """Stop the daemon if it is ours (`stop_process`) and remove the file; the pid
        stopped, None if none of ours was running."""
        pid = self.read()
        self.clear()
        return pid if pid is not None and stop_process(pid, self.owns, grace) else None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def interactive(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | str | None = None) -> int:
    """Run attached to our terminal (an SSH session); its exit code.

    The child shares our process group, so the terminal's Ctrl-C reaches it
    directly, and we wait for it rather than die first.
    """
    full = _resolve(argv)
    progress.hand_over_terminal()
    proc = subprocess.Popen(full, env=base_env(env), cwd=cwd)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue
