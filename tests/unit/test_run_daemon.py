"""run.wait_until, run.owns and run.PidFile: the one way daemons get ready and get stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workbench.core import run
from workbench.core.errors import NetbootError, WorkbenchError

# A daemon of ours: a script named like a program, its config directory (the marker) in its arguments.
# Python, not sh: Popen returns once its child runs `sleep`, so a SIGTERM right after "serving"
# cannot reach that child before it drops the script's handlers (sh's `&` has that race).
FAKE = """
import os, signal, subprocess, sys
# fakedaemon --config=DIR: ready once it says so, stops on SIGTERM unless told to ignore it.
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(["sleep", "60"])
print("fakedaemon: serving", flush=True)
child.wait()
"""


@pytest.fixture()
def fake(tmp_path: Path) -> list[str]:
    """The argv that runs the fake daemon: `python3 .../fakedaemon`."""
    program = tmp_path / "fakedaemon"
    program.write_text(FAKE)
    return [sys.executable, str(program)]


@pytest.fixture()
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A process that is not ours, whatever a pid file says: it must survive every test."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def spawn_fake(fake: list[str], config: Path, ignore_term: bool = False) -> run.Daemon:
    env = {"IGNORE_TERM": "1"} if ignore_term else None
    daemon = run.spawn([*fake, f"--config={config}"], log=config / "fake.log", env=env)
    run.wait_until(lambda: "serving" in "\n".join(daemon.tail()), timeout=10, what="fakedaemon", daemon=daemon)
    return daemon


def gone(pid: int, wait: float = 0.0) -> bool:
    """Whether process `pid` is gone (a zombie is), within `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


# --- wait_until ------------------------------------------------------------------


def test_wait_until_returns_once_ready() -> None:
    asked: list[int] = []

    def ready() -> bool:
        asked.append(1)
        return len(asked) == 3

    run.wait_until(ready, timeout=5, what="the thing")
    assert len(asked) == 3


def test_wait_until_gives_up_at_the_deadline() -> None:
    start = time.monotonic()
    with pytest.raises(WorkbenchError, match=r"^the thing was not ready within 0.3s$"):
        run.wait_until(lambda: False, timeout=0.3, what="the thing")
    assert 0.3 <= time.monotonic() - start < 2


def test_a_daemon_never_ready_is_stopped_at_the_deadline(tmp_path: Path) -> None:
    daemon = run.spawn(["sh", "-c", "echo starting; exec sleep 60"], log=tmp_path / "out.log")
    start = time.monotonic()
    with pytest.raises(NetbootError) as err:
        run.wait_until(lambda: False, timeout=0.5, what="the slow one", daemon=daemon, error=NetbootError)
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert message.startswith(f"the slow one was not ready within 0.5s; last lines of its log ({tmp_path}/out.log)")
    assert "| starting" in message
    assert not daemon.alive()


def test_a_daemon_that_dies_while_waited_for_fails_at_once_with_its_log(tmp_path: Path) -> None:
    own = tmp_path / "own.log"
    script = f"echo 'listen: Address already in use'; echo 'from its own log' > {own}; exit 3"
    daemon = run.spawn(["sh", "-c", script], log=tmp_path / "out.log", own_log=own)
    start = time.monotonic()
    with pytest.raises(NetbootError) as err:
        run.wait_until(
            lambda: False,
            timeout=30,
            what="the doomed one",
            daemon=daemon,
            error=NetbootError,
            hints={"already in use": "is its port taken?", "no such thing": "never shown"},
        )
    assert time.monotonic() - start < 5, "it must not wait for the deadline"
    message = str(err.value)
    assert message.startswith("the doomed one exited at start; is its port taken?\ncommand ")
    assert "exited with code 3" in message and "never shown" not in message
    assert "| listen: Address already in use" in message and "| from its own log" in message


def test_a_daemon_that_dies_without_a_hint(tmp_path: Path) -> None:
    daemon = run.spawn(["sh", "-c", "echo bad option; exit 2"], log=tmp_path / "out.log")
    expected = r"(?s)^the thing exited at start: command .* exited with code 2.*\| bad option"
    with pytest.raises(WorkbenchError, match=expected):
        run.wait_until(lambda: False, timeout=30, what="the thing", daemon=daemon)


def test_serving_waits_then_always_stops(fake: list[str], tmp_path: Path) -> None:
    def ready(daemon: run.Daemon) -> None:
        run.wait_until(lambda: "serving" in "\n".join(daemon.tail()), timeout=10, what="fake", daemon=daemon)

    with run.serving([*fake, f"--config={tmp_path}"], log=tmp_path / "fake.log", ready=ready) as daemon:
        assert daemon.alive()
    assert not daemon.alive()


# --- ownership ---------------------------------------------------------------------


def test_owns_needs_the_program_and_the_marker(
    fake: list[str], tmp_path: Path, stranger: subprocess.Popen[bytes]
) -> None:
    daemon = spawn_fake(fake, tmp_path)
    try:
        assert run.owns(daemon.pid, "fakedaemon", str(tmp_path))
        assert not run.owns(daemon.pid, "fakedaemon", "/another/workbench")
        assert not run.owns(daemon.pid, "dnsmasq", str(tmp_path))
        assert not run.owns(stranger.pid, "sleep", str(tmp_path))
        assert run.owns(stranger.pid, "sleep", "60")
    finally:
        daemon.stop()
    assert not run.owns(daemon.pid, "fakedaemon", str(tmp_path))


def test_a_zombie_is_not_running() -> None:
    proc = subprocess.Popen(["sh", "-c", "exit 0"])
    while not gone(proc.pid):
        time.sleep(0.01)
    assert not run.owns(proc.pid, "sh", "exit")
    proc.wait()


# --- PidFile -----------------------------------------------------------------------


def test_pid_file_stops_our_daemon_and_its_group(fake: list[str], tmp_path: Path) -> None:
    daemon = spawn_fake(fake, tmp_path)
    pids = run.PidFile(tmp_path / "fake.pid", "fakedaemon", str(tmp_path))
    pids.write(daemon.pid)
    assert pids.running() == daemon.pid
    child = int(subprocess.run(["pgrep", "-P", str(daemon.pid), "sleep"], capture_output=True, text=True).stdout)
    assert pids.stop(grace=5) == daemon.pid
    # The daemon is gone once stop returns; what it started went down with its group.
    assert gone(daemon.pid) and gone(child, wait=5)
    assert not pids.path.exists()
    assert pids.running() is None and pids.stop() is None


def test_pid_file_kills_what_ignores_sigterm_after_the_grace(fake: list[str], tmp_path: Path) -> None:
    daemon = spawn_fake(fake, tmp_path, ignore_term=True)
    pids = run.PidFile(tmp_path / "fake.pid", "fakedaemon", str(tmp_path))
    pids.write(daemon.pid)
    start = time.monotonic()
    assert pids.stop(grace=0.5) == daemon.pid
    assert 0.5 <= time.monotonic() - start < 5
    assert gone(daemon.pid)


def test_a_reused_pid_is_never_signalled(tmp_path: Path, stranger: subprocess.Popen[bytes]) -> None:
    # The daemon is long gone and the kernel gave its pid to someone else's `sleep 60`.
    pids = run.PidFile(tmp_path / "registry.pid", "sleep", str(tmp_path / "config.yml"))
    pids.write(stranger.pid)
    assert pids.read() == stranger.pid
    assert pids.running() is None
    assert pids.stop(grace=0.1) is None
    assert not run.stop_process(stranger.pid, pids.owns, grace=0.1)
    time.sleep(0.2)
    assert stranger.poll() is None, "the stranger survives"
    assert not pids.path.exists(), "the stale file goes"


def test_the_same_program_for_another_workbench_is_not_ours(fake: list[str], tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    daemon = spawn_fake(fake, theirs)
    try:
        pids = run.PidFile(tmp_path / "fake.pid", "fakedaemon", str(tmp_path / "ours"))
        pids.write(daemon.pid)
        assert pids.running() is None and pids.stop(grace=0.1) is None
        assert daemon.alive()
    finally:
        daemon.stop()


def test_a_garbled_pid_file_is_nothing_running(tmp_path: Path) -> None:
    pids = run.PidFile(tmp_path / "x.pid", "fakedaemon", str(tmp_path))
    pids.path.write_text("not a pid\n")
    assert pids.read() is None and pids.running() is None and pids.stop() is None
    assert pids.running() is None  # and no file at all is nothing either


def test_stop_process_leaves_a_process_not_leading_a_session_alone_in_its_group(tmp_path: Path) -> None:
    # A process we did not start in a session of its own (a shell's job): only it is signalled.
    script = "sleep 60 & echo $! > child; exec sleep 61"
    proc = subprocess.Popen(["sh", "-c", script], cwd=tmp_path, process_group=0)
    try:
        while not (tmp_path / "child").exists() or not (tmp_path / "child").read_text().strip():
            time.sleep(0.01)
        child = int((tmp_path / "child").read_text())
        # The shell writes the file before it execs: under load, the pid may still be `sh -c` here.
        deadline = time.monotonic() + 10
        while not run.owns(proc.pid, "sleep", "61") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert run.stop_process(proc.pid, lambda pid: run.owns(pid, "sleep", "61"), grace=5)
        assert gone(proc.pid) and not gone(child)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
