"""The channel the role tests' commands travel over, and the readiness probe, run here.

The agent is the one a candidate runs, here started by this machine's python
instead of `docker exec` or ssh; the probe is the one run inside a candidate.
"""

from __future__ import annotations

import http.server
import os
import pwd
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import testinfra
from testinfra.host import Host

from tests.support.net import free_port
from workbench.build import testchannel, verify
from workbench.build.channel import BOOTSTRAP, NO_COERCION, Channel, ChannelBroken
from workbench.core.config import Role


def local_agent(*env: str) -> list[str]:
    """The agent under this machine's python, with only `env` (and PATH) in its environment."""
    return ["env", "-i", f"PATH={os.environ['PATH']}", *env, sys.executable, "-c", BOOTSTRAP]


@pytest.fixture
def agent() -> Iterator[Channel]:
    chan = Channel(local_agent(NO_COERCION))
    yield chan
    chan.close()


def test_exit_code_and_exact_bytes(agent: Channel) -> None:
    reply = agent.run(b"printf 'a\\377\\000b'; printf 'oops\\n' >&2; exit 3")
    assert (reply.rc, reply.stdout, reply.stderr) == (3, b"a\xff\x00b", b"oops\n")


def test_commands_run_in_order_on_one_agent(agent: Channel) -> None:
    pids = {agent.run(b"echo $PPID").stdout for _ in range(20)}
    assert len(pids) == 1, "one agent answers every command"
    big = agent.run(b"head -c 3000000 /dev/zero")
    assert big.rc == 0 and big.stdout == b"\0" * 3_000_000
    assert agent.run(b"echo after").stdout == b"after\n"


def test_a_command_killed_by_a_signal_gives_128_plus_the_signal(agent: Channel) -> None:
    assert agent.run(b"kill -KILL $$").rc == 128 + 9


def test_a_command_reads_empty_input_not_the_channel(agent: Channel) -> None:
    reply = agent.run(b"cat; echo done")
    assert reply.stdout == b"done\n"
    assert agent.run(b"echo still here").stdout == b"still here\n"


def test_commands_get_the_environment_without_the_agents_own_setting(agent: Channel) -> None:
    env = agent.run(b"env").stdout.decode().splitlines()
    assert not [line for line in env if line.startswith(("PYTHONCOERCECLOCALE=", "LC_CTYPE=", "LC_ALL="))], env
    assert f"PATH={os.environ['PATH']}" in env


def test_without_the_setting_python_would_change_the_commands_locale() -> None:
    # Why the agent is started with PYTHONCOERCECLOCALE=0: in a C locale, python
    # exports LC_CTYPE=C.UTF-8 to its children.
    chan = Channel(local_agent())
    try:
        assert "LC_CTYPE=C.UTF-8" in chan.run(b"env").stdout.decode().splitlines()
    finally:
        chan.close()


def test_login_shell_mode_runs_the_users_shell() -> None:
    argv = [*local_agent(NO_COERCION), "login"]
    chan = Channel(argv)
    try:
        shell = pwd.getpwuid(os.getuid()).pw_shell
        # `bash -c ...` as sshd starts it: $0 is the shell's base name
        assert chan.run(b"readlink /proc/$$/exe; echo $0").stdout.decode().split() == [
            os.path.realpath(shell),
            os.path.basename(shell),
        ]
    finally:
        chan.close()


def test_an_agent_that_dies_mid_command_breaks_the_channel_then_a_new_one_serves(agent: Channel) -> None:
    with pytest.raises(ChannelBroken):
        agent.run(b"kill -KILL $PPID; sleep 1")
    assert agent.run(b"echo again").stdout == b"again\n"


def test_a_transport_that_fails_says_why() -> None:
    chan = Channel(["sh", "-c", "echo 'Error response from daemon: container x is not running' >&2; exit 1"])
    with pytest.raises(ChannelBroken, match="is not running") as broken:
        chan.run(b"true")
    assert broken.value.returncode == 1
    chan.close()


def test_same_results_as_a_process_per_command(agent: Channel) -> None:
    """What testinfra's local backend (a shell per command) gets, the channel gets too."""
    local = testinfra.get_host("local://").backend
    commands = [
        "uname -s",
        "cat /etc/hostname",
        "ls -d /nonexistent",
        "printf 'caf\\303\\251'",
        "test -d /etc && echo dir",
        "sh -c 'exit 42'",
        "ps -o pid= -p $$ >/dev/null; echo $?",
        "umask",
        "id -u",
    ]
    for command in commands:
        expected = local.run(command)
        got = agent.run(command.encode())
        assert (got.rc, got.stdout, got.stderr) == (expected.rc, expected.stdout_bytes, expected.stderr_bytes), command


# --- the testinfra backend -------------------------------------------------------------------


def test_a_stopped_container_is_a_failed_command_as_with_docker_exec() -> None:
    backend = testchannel.DockerChannelBackend("abc123")
    backend.channel.argv = ["sh", "-c", "echo 'container abc123 is not running' >&2; exit 1"]
    result = Host(backend).run("true")
    assert result.rc == 1 and "is not running" in result.stderr
    backend.channel.close()


# --- readiness ----------------------------------------------------------------------------


def probe(role: Role, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", verify.ready_probe(role, timeout)], capture_output=True, text=True)


def test_probe_returns_as_soon_as_the_port_listens() -> None:
    port = free_port()
    server = socket.socket()
    threading.Timer(0.3, lambda: (server.bind(("127.0.0.1", port)), server.listen())).start()
    start = time.monotonic()
    try:
        done = probe(Role(name="r", ports=(port,)), timeout=10)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - start < 2


def test_probe_names_what_is_still_missing_after_the_timeout() -> None:
    port = free_port()
    done = probe(Role(name="r", ports=(port,)), timeout=0.3)
    assert done.returncode == 1
    assert f"port {port}" in done.stderr


class _Health(http.server.BaseHTTPRequestHandler):
    healthy = False

    def do_GET(self) -> None:  # noqa: N802 -- the name http.server calls
        self.send_response(200 if self.healthy and self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_probe_waits_for_the_health_path_once_the_port_listens() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    role = Role(name="r", ports=(server.server_address[1],), health="/health")
    try:
        _Health.healthy = False
        unhealthy = probe(role, timeout=0.5)
        assert unhealthy.returncode == 1 and "GET http://127.0.0.1:" in unhealthy.stderr
        threading.Timer(0.3, lambda: setattr(_Health, "healthy", True)).start()
        assert probe(role, timeout=10).returncode == 0
    finally:
        server.shutdown()
        server.server_close()
        _Health.healthy = False
