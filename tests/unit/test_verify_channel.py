"""The testinfra backends over a channel, and how the bake runs pytest with them (no program runs here).

tests/integration/test_channel_agent.py runs the agent and the probe.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import testinfra
import testinfra.backend

from tests.support.config import REPO
from workbench.build import channel, testchannel, verify
from workbench.build.channel import BOOTSTRAP, NO_COERCION
from workbench.core import config
from workbench.core.config import Role


@pytest.fixture
def registered() -> Iterator[None]:
    before = dict(testinfra.backend.BACKENDS)
    testchannel.pytest_configure(None)  # type: ignore[arg-type]
    yield
    testinfra.backend.BACKENDS.clear()
    testinfra.backend.BACKENDS.update(before)
    testchannel.pytest_unconfigure(None)  # type: ignore[arg-type]


def test_docker_channel_backend_runs_the_agent_as_docker_exec_would(registered: None) -> None:
    backend = testinfra.backend.get_backend("docker-channel://abc123")
    assert isinstance(backend, testchannel.DockerChannelBackend)
    assert backend.channel.argv == ["docker", "exec", "-i", "-e", NO_COERCION, "abc123", "python3", "-c", BOOTSTRAP]
    as_user = testinfra.backend.get_backend("docker-channel://webapps@abc123")
    assert as_user.channel.argv[:5] == ["docker", "exec", "-i", "-u", "webapps"]  # type: ignore[attr-defined]


def test_ssh_channel_backend_uses_the_ssh_config(registered: None) -> None:
    backend = testinfra.backend.get_backend("ssh-channel://workbench-vm", ssh_config="/w/ssh_config")
    assert isinstance(backend, testchannel.SshChannelBackend)
    argv = backend.channel.argv
    assert argv[:3] == ["ssh", "-F", "/w/ssh_config"] and argv[-2] == "workbench-vm"
    assert argv[-1] == f"{NO_COERCION} exec python3 -c '{BOOTSTRAP}' login"


def test_the_bake_runs_pytest_with_the_plugin() -> None:
    cfg = config.load(REPO / "workbench.toml")
    argv = verify.pytest_argv(cfg, cfg.role("app"), ["--hosts=docker-channel://x"])
    assert argv[argv.index("-p") + 1] == channel.PLUGIN == testchannel.__name__


def test_the_probe_and_the_agent_need_only_the_standard_library(tmp_path: Path) -> None:
    # They run in the candidate's python3, which has nothing of this venv.
    script = tmp_path / "agent.py"
    script.write_text(channel.AGENT + "\n" + verify.ready_probe(Role(name="r"), 0))
    done = subprocess.run([sys.executable, "-I", "-S", str(script)], input=b"", capture_output=True)
    assert done.returncode == 0, done.stderr
