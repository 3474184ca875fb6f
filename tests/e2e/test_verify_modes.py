"""Verification over one channel into the candidate: the same results as a `docker exec` per command.

The role tests run unchanged; only their transport differs. These tests run
the same files both ways against fresh containers of one image and compare the
outcome of every test, failing checks included; bake tiny roles whose check
fails or whose port opens late; and time the wait before the tests.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import REPO, config_data, write_config
from workbench.build import bake, channel, verify, vm
from workbench.core import config, engine
from workbench.core.errors import VerifyFailed

# Checks of testinfra's usual kinds, and two that must fail the same way in both modes.
PROBE_TESTS = '''\
import pytest

def test_file(host):
    assert host.file("/etc/os-release").contains("bookworm")
    assert host.file("/etc/workbench/role").content_string.strip() == "base"

def test_package_and_user(host):
    assert host.package("python3").is_installed
    root = host.user("root")
    assert (root.uid, root.home) == (0, "/root")

def test_failed_command_and_its_stderr(host):
    result = host.run("ls -d /nonexistent")
    assert result.rc == 2 and "No such file" in result.stderr and result.stdout == ""

def test_bytes_and_text(host):
    assert host.run("printf 'caf\\\\303\\\\251'").stdout == "caf\\u00e9"
    assert host.file("/bin/true").content[:4] == b"\\x7fELF"

def test_environment_is_the_containers(host):
    env = dict(line.split("=", 1) for line in host.check_output("env").splitlines())
    assert "PYTHONCOERCECLOCALE" not in env and "LC_CTYPE" not in env and "LC_ALL" not in env
    assert env["HOME"] == "/root"

def test_processes(host):
    assert host.process.get(pid=1).comm == "tini"
    assert host.process.get(comm="monit").user == "root"

def test_deliberately_failing_check(host):
    assert host.file("/etc/workbench/role").content_string.strip() == "not-this-role"

def test_deliberately_failing_command(host):
    host.check_output("exit 3")
'''


# The same over SSH, as a user with a login shell (the qcow2 path logs in as root).
PROBE_SSH_TESTS = '''\
def test_file(host):
    assert host.file("/etc/workbench/role").content_string.strip() == "jumpbox"

def test_user_and_shell(host):
    assert host.check_output("id -un") == "ops"
    assert host.check_output("echo $0") == "bash", "sshd runs commands as `bash -c`"

def test_failed_command_and_its_stderr(host):
    result = host.run("ls -d /nonexistent")
    assert result.rc == 2 and "No such file" in result.stderr and result.stdout == ""

def test_bytes_and_text(host):
    assert host.run("printf 'caf\\\\303\\\\251'").stdout == "caf\\u00e9"

def test_environment_is_the_sessions(host):
    env = dict(line.split("=", 1) for line in host.check_output("env").splitlines())
    assert "PYTHONCOERCECLOCALE" not in env
    assert (env["USER"], env["HOME"], env["SHELL"]) == ("ops", "/home/ops", "/bin/bash")
    assert "SSH_CONNECTION" in env

def test_deliberately_failing_check(host):
    assert host.file("/etc/workbench/role").content_string.strip() == "not-this-role"

def test_deliberately_failing_command(host):
    host.check_output("exit 3")
'''


def junit_outcomes(path: Path) -> dict[str, str]:
    """{test name without its host id: "passed" | "failed: <message>" | ...} from pytest's --junitxml."""
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "").split("[")[0]
        verdict = "passed"
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                # The message names the backend object; the rest must match.
                message = re.sub(r"<[\w.]+ object at 0x[0-9a-f]+>", "<backend>", found.get("message", ""))
                verdict = f"{kind}: {message}"
        outcomes[name] = verdict
    return outcomes


def run_tests(test_file: Path, hosts: str, junit: Path, *more: str) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable, "-m", "pytest", "-p", channel.PLUGIN, "-p", "no:cacheprovider",
        f"--confcutdir={test_file.parent}", f"--rootdir={test_file.parent}", "-o", "addopts=",
        "-q", "-rfE", f"--hosts={hosts}", f"--junitxml={junit}", *more, str(test_file),
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, cwd=test_file.parent, timeout=300)


@pytest.fixture(scope="module")
def base_role(wb_cfg: config.Config, base_image: Any) -> str:
    """The base role's image (a cache hit when test_bake.py baked it already)."""
    return bake.bake(wb_cfg, ["base"])[0].tag


@pytest.fixture
def fresh(wb_prefix: str) -> Iterator[Any]:
    """`fresh(image)`: a container of `image` with its own command, removed at the end."""
    started: list[Any] = []

    def start(image: str, command: list[str] | None = None, **kwargs: Any) -> Any:
        container = engine.client().containers.run(
            image, command, detach=True, labels={engine.PREFIX_LABEL: wb_prefix}, **kwargs
        )
        started.append(container)
        return container

    yield start
    for container in started:
        engine.remove_container(container)


@pytest.mark.parametrize("tests", ["tests/roles/test_base.py", "probe"])
def test_both_transports_give_the_same_result_for_every_test(
    base_role: str, fresh: Any, tmp_path: Path, tests: str
) -> None:
    if tests == "probe":
        roles = tmp_path / "roles"
        shutil.copytree(REPO / "tests" / "roles", roles, ignore=shutil.ignore_patterns("test_*", "__pycache__"))
        test_file = roles / "test_probe.py"
        test_file.write_text(PROBE_TESTS)
    else:
        test_file = REPO / tests
    outcomes = {}
    for scheme in ("docker", channel.DOCKER_SCHEME):
        container = fresh(base_role)
        done = run_tests(test_file, f"{scheme}://{container.id}", tmp_path / f"{scheme}.xml")
        assert done.returncode in (0, 1), done.stdout + done.stderr
        outcomes[scheme] = junit_outcomes(tmp_path / f"{scheme}.xml")
    assert outcomes["docker"] == outcomes[channel.DOCKER_SCHEME]
    if tests == "probe":
        failed = {name: verdict for name, verdict in outcomes["docker"].items() if verdict != "passed"}
        assert set(failed) == {"test_deliberately_failing_check", "test_deliberately_failing_command"}, failed
        assert "assert 'base' == 'not-this-role'" in failed["test_deliberately_failing_check"]
    else:
        assert set(outcomes["docker"].values()) == {"passed"}


@pytest.fixture(scope="module")
def jumpbox_role(wb_cfg: config.Config, base_image: Any) -> str:
    """The jumpbox role's image: an sshd that lets `ops` in with a key."""
    return bake.bake(wb_cfg, ["jumpbox"])[0].tag


def test_both_ssh_transports_give_the_same_result_for_every_test(
    jumpbox_role: str, fresh: Any, tmp_path: Path
) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    roles = tmp_path / "roles"
    roles.mkdir()
    test_file = roles / "test_probe_ssh.py"
    test_file.write_text(PROBE_SSH_TESTS)
    outcomes = {}
    for scheme in ("ssh", channel.SSH_SCHEME):
        container = fresh(
            jumpbox_role,
            environment={"WORKBENCH_SSH_AUTHORIZED_KEYS": key.with_suffix(".pub").read_text().strip()},
            ports={"22/tcp": ("127.0.0.1", None)},
        )
        container.reload()
        port = int(container.attrs["NetworkSettings"]["Ports"]["22/tcp"][0]["HostPort"])
        # The VM's client configuration (one master connection), as `ops`.
        ssh_config = tmp_path / f"{scheme}.ssh_config"
        control = Path(f"/tmp/wb-test-{port}")
        ssh_config.write_text(vm.ssh_config_text(port, key, control))
        ssh = ["ssh", "-F", str(ssh_config), "-o", "User=ops", vm.HOST_ALIAS]
        try:
            deadline = time.monotonic() + 60
            while subprocess.run([*ssh, "true"], capture_output=True).returncode != 0:
                assert time.monotonic() < deadline, "sshd of the jumpbox never let ops in"
                time.sleep(0.5)
            done = run_tests(test_file, f"{scheme}://ops@{vm.HOST_ALIAS}", tmp_path / f"{scheme}.xml",
                             f"--ssh-config={ssh_config}")
        finally:
            subprocess.run(["ssh", "-F", str(ssh_config), "-O", "exit", vm.HOST_ALIAS], capture_output=True)
            control.unlink(missing_ok=True)
        assert done.returncode in (0, 1), done.stdout + done.stderr
        outcomes[scheme] = junit_outcomes(tmp_path / f"{scheme}.xml")
    assert outcomes["ssh"] == outcomes[channel.SSH_SCHEME]
    failed = {name for name, verdict in outcomes["ssh"].items() if verdict != "passed"}
    assert failed == {"test_deliberately_failing_check", "test_deliberately_failing_command"}, outcomes["ssh"]


# --- bakes of tiny roles -------------------------------------------------------------------

TINY = {
    # a check that fails: the bake must fail, showing the assertion
    "wrongfile": (
        "/etc/wrongfile.txt:\n  file.managed:\n    - contents: real\n",
        "def test_content(host):\n    assert host.file('/etc/wrongfile.txt').content_string == 'expected'\n",
        {"command": ["sleep", "infinity"]},
    ),
    # a port that opens two seconds after the start: the tests must wait for it and its health
    "lateport": (
        "/srv/late/health:\n  file.managed:\n    - contents: ok\n    - makedirs: true\n",
        "def test_port_listens(host):\n"
        "    probe = 'import socket; socket.create_connection((\"127.0.0.1\", 8080), 1)'\n"
        "    assert host.run('python3 -c %s', probe).rc == 0\n",
        {
            "command": ["sh", "-c", "sleep 2; exec python3 -m http.server -d /srv/late 8080"],
            "ports": [8080],
            "health": "/health",
        },
    ),
}


@pytest.fixture(scope="module")
def tiny(wb_prefix: str, wb_state: Path, tmp_path_factory: pytest.TempPathFactory, base_image: Any) -> config.Config:
    root = tmp_path_factory.mktemp("verify-checkout")
    shutil.copytree(REPO / "images", root / "images")
    (root / "salt" / "pillar").mkdir(parents=True)
    (root / "salt" / "pillar" / "top.sls").write_text("base: {}\n")
    (root / "tests" / "roles").mkdir(parents=True)
    for name, (state, test, _) in TINY.items():
        (root / "salt" / name).mkdir()
        (root / "salt" / name / "init.sls").write_text(state)
        (root / "tests" / "roles" / f"test_{name}.py").write_text(test)
    full = config_data(wb_prefix, wb_state)
    data = {k: full[k] for k in ("workbench", "base", "cache", "builder") if k in full}
    data["environments"] = {"sandbox": {}}
    data["workbench"].update(checkout=str(root), common_states=[], default_role="wrongfile")
    data["roles"] = {name: role for name, (_, _, role) in TINY.items()}
    return config.load(write_config(wb_state / "verify-tiny.toml", data))


def test_a_failing_check_fails_the_bake_showing_the_assertion(tiny: config.Config, capfd: Any) -> None:
    with pytest.raises(VerifyFailed, match="failed its tests") as failure:
        bake.bake(tiny, ["wrongfile"], force=True)
    message = str(failure.value)
    assert "- test_content" in message and "AssertionError: assert 'real\\n' == 'expected'" in message
    shown = "".join(capfd.readouterr())  # pytest's output, streamed by the bake
    assert "E       AssertionError: assert 'real\\n' == 'expected'" in shown and "1 failed" in shown
    assert not engine.images({engine.PREFIX_LABEL: tiny.prefix, engine.ROLE_LABEL: "wrongfile"})


def test_the_tests_start_once_the_port_listens_and_the_health_path_answers(tiny: config.Config) -> None:
    result = bake.bake(tiny, ["lateport"], force=True)[0]
    assert result.tests.startswith("1 passed")
    assert dict(result.phases)["verify"] >= 2.0, "the probe waited for the late port"


# --- the wait before the tests ------------------------------------------------------------


def test_a_role_without_ports_is_not_delayed(base_image: Any, fresh: Any) -> None:
    container = fresh(base_image.tag, ["sleep", "infinity"])
    start = time.monotonic()
    verify._wait_ready(container, config.Role(name="noports"), "test")
    assert time.monotonic() - start < 0.1


def test_a_port_that_never_opens_is_waited_for_until_the_timeout_only(
    base_image: Any, fresh: Any, monkeypatch: pytest.MonkeyPatch, capfd: Any
) -> None:
    monkeypatch.setattr(verify, "READY_TIMEOUT", 1.0)
    container = fresh(base_image.tag, ["sleep", "infinity"])
    start = time.monotonic()
    verify._wait_ready(container, config.Role(name="silent", ports=(9,)), "test")
    assert 1.0 <= time.monotonic() - start < 5
    assert "not ready after 1s (port 9); running the tests" in capfd.readouterr().err


def test_a_container_that_exits_ends_the_wait_at_once(base_image: Any, fresh: Any, capfd: Any) -> None:
    container = fresh(base_image.tag, ["sh", "-c", "sleep 1"])
    start = time.monotonic()
    verify._wait_ready(container, config.Role(name="short", ports=(80,)), "test")
    assert time.monotonic() - start < 10
    assert "the container stopped" in capfd.readouterr().err
