"""One open channel into a candidate: every test command over it, no process spawned per command.

testinfra's `docker://` backend starts a `docker exec` (a shell, the docker CLI,
an exec in the engine) for each command, about 80 ms each; its `ssh://` backend
starts an ssh client and a remote login shell for each. A role test file runs
100+ commands. A channel starts one program in the target instead, a small
stdlib-only Python loop read from the channel itself (python3 is in every
image; nothing is written into the target), and sends it one command at a time:

    request:  4-byte big-endian length, the command (bytes)
    reply:    rc (signed), stdout length, stderr length (">iII"), stdout, stderr

The agent runs each command as the per-command transports did (`/bin/sh -c`
for docker exec, the login shell `-c` over SSH), with the environment it was
started with, stdin empty, so a command sees what it saw before; about 2.5 ms
instead of 80.
"""

from __future__ import annotations

import contextlib
import shlex
import struct
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from workbench.core import run

# The pytest plugin with the testinfra backends over a channel, and the schemes
# of their host specs (`docker-channel://<container>`, `ssh-channel://<host>`).
PLUGIN = "workbench.build.testchannel"
DOCKER_SCHEME = "docker-channel"
SSH_SCHEME = "ssh-channel"

# Read by `python3 -c` from the channel: the agent's length, then the agent.
# Its own argv stays short and neutral: tests that grep `ps` must not find
# service names in it.
BOOTSTRAP = "import sys;exec(sys.stdin.buffer.read(int(sys.stdin.buffer.readline())))"

# Python coerces a C locale to C.UTF-8 and exports LC_CTYPE to its children,
# which would change what `sort`, `ps` or an error message print. The agent is
# started with PYTHONCOERCECLOCALE=0 and drops that variable again for the
# commands, which so get the environment a plain exec gets.
NO_COERCION = "PYTHONCOERCECLOCALE=0"

AGENT = r"""
import os, pwd, struct, subprocess, sys
env = dict(os.environ)
env.pop("PYTHONCOERCECLOCALE", None)
shell = argv0 = "/bin/sh"
if sys.argv[1:] == ["login"]:  # as sshd runs a command: the login shell, named by its base name
    shell = pwd.getpwuid(os.getuid()).pw_shell or shell
    argv0 = os.path.basename(shell)
src, out = sys.stdin.buffer, sys.stdout.buffer
while True:
    head = src.read(4)
    if len(head) < 4:
        break
    command = src.read(struct.unpack(">I", head)[0])
    done = subprocess.run([argv0, "-c", command], executable=shell, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    rc = done.returncode if done.returncode >= 0 else 128 - done.returncode
    out.write(struct.pack(">iII", rc, len(done.stdout), len(done.stderr)) + done.stdout + done.stderr)
    out.flush()
"""

_REPLY = struct.Struct(">iII")


class ChannelBroken(Exception):
    """The channel ended before a command's reply came: the target stopped, or the transport failed."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


@dataclass(frozen=True)
class Reply:
    rc: int
    stdout: bytes
    stderr: bytes


def docker_argv(container: str, user: str | None = None) -> list[str]:
    """The agent in a running container, as `docker exec` would run a command there."""
    as_user = ["-u", user] if user else []
    return ["docker", "exec", "-i", *as_user, "-e", NO_COERCION, container, "python3", "-c", BOOTSTRAP]


def ssh_argv(ssh: Sequence[str]) -> list[str]:
    """The agent over `ssh` (its argv up to the host), run by the login shell as one command."""
    return [*ssh, f"{NO_COERCION} exec python3 -c {shlex.quote(BOOTSTRAP)} login"]


class Channel:
    """The agent started by `argv`, started at the first command and again after it broke."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self._proc: subprocess.Popen[bytes] | None = None
        self._errors: IO[bytes] | None = None
        self._lock = threading.Lock()

    def run(self, command: bytes) -> Reply:
        """Run one shell command in the target; ChannelBroken if the channel ended meanwhile."""
        frame = struct.pack(">I", len(command)) + command
        with self._lock:
            if not self._send(frame):
                # The agent did not read it, so nothing ran: once more, on a fresh channel.
                self._close()
                if not self._send(frame):
                    raise self._broken()
            return self._receive()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _send(self, frame: bytes) -> bool:
        proc = self._open()
        assert proc.stdin is not None
        try:
            proc.stdin.write(frame)
            proc.stdin.flush()
        except OSError:  # BrokenPipeError: the agent or its transport has gone
            return False
        return True

    def _receive(self) -> Reply:
        assert self._proc is not None and self._proc.stdout is not None
        head = self._proc.stdout.read(_REPLY.size)
        if len(head) < _REPLY.size:
            raise self._broken()
        rc, out_len, err_len = _REPLY.unpack(head)
        body = self._proc.stdout.read(out_len + err_len)
        if len(body) < out_len + err_len:
            raise self._broken()
        return Reply(rc, body[:out_len], body[out_len:])

    def _open(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._close()
        argv = [run.which(self.argv[0]), *self.argv[1:]]
        # The transport's own complaints ("container ... is not running"), for ChannelBroken.
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 -- lives as long as the process; _close closes it
        # A two-way pipe for the whole session, which run.py's one-shot and
        # daemon helpers do not offer; its own session, so a Ctrl-C of pytest
        # reaches pytest, which then closes the channel.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
            env=run.base_env(),
            start_new_session=True,
        )
        self._proc = proc
        agent = AGENT.encode()
        assert proc.stdin is not None
        with contextlib.suppress(OSError):  # if it is gone already, the first command finds out
            proc.stdin.write(b"%d\n" % len(agent) + agent)
            proc.stdin.flush()
        return proc

    def _broken(self) -> ChannelBroken:
        proc, errors = self._proc, self._errors
        assert proc is not None and errors is not None
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = run.stop_group(proc, grace=2.0)
        errors.seek(0)
        said = errors.read().decode(errors="replace").strip()
        self._close()
        return ChannelBroken(f"{' '.join(self.argv[:3])} ended (exit code {code}): {said or 'no output'}", code)

    def _close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):  # a pipe already broken
                    proc.stdin.close()  # the agent ends at the end of its input
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                run.stop_group(proc, grace=2.0)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._errors is not None:
            self._errors.close()
            self._errors = None
