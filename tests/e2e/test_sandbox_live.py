"""Sandboxes on the real Vagrant 2.3.4 and Docker engine, through the real `fab`.

The checkout is a temporary copy of tests/e2e/sandbox_tree (two roles whose
states need no packages, so a provision takes seconds) plus the project's
Vagrantfile; tests edit its salt/ tree, never the repository's. Everything runs
under the session's prefix and state directory, so Vagrant's machines and
containers collide with no one's.
"""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.commands import fab
from tests.support.config import REPO, write_config
from workbench.core import config as wb_config
from workbench.core import engine
from workbench.core.errors import SandboxError
from workbench.sandbox import sandboxes as sandbox
from workbench.sandbox import vagrant

TREE = Path(__file__).parent / "sandbox_tree"
FETCH = "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://{}/').read().decode())\""


@pytest.fixture(scope="module")
def checkout(
    tmp_path_factory: pytest.TempPathFactory, wb_prefix: str, wb_state: Path, base_image: Any
) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("sandbox-checkout")
    shutil.copytree(TREE / "salt", root / "salt")
    shutil.copytree(TREE / "tests", root / "tests")
    # Sandboxes use the checkout's own Vagrantfile: the one this project ships.
    shutil.copy(REPO / "Vagrantfile", root / "Vagrantfile")
    data = tomllib.loads((TREE / "workbench.toml").read_text())
    repo = tomllib.loads((REPO / "workbench.toml").read_text())
    data["workbench"].update(prefix=wb_prefix, state_dir=str(wb_state))
    data["base"] = repo["base"]  # the session's base image, built once
    write_config(root / "workbench.toml", data)
    yield root
    fab("sandbox.destroy", "--all", config=root / "workbench.toml")


@pytest.fixture(scope="module")
def cfg_path(checkout: Path) -> Path:
    return checkout / "workbench.toml"


def ok(*args: str, config: Path) -> str:
    return fab(*args, config=config, check=True, timeout=600).stdout


def sandbox_containers(prefix: str) -> list[str]:
    return [c.name for c in engine.containers({engine.PREFIX_LABEL: prefix}) if "workbench.sandbox" in c.labels]


def test_up_test_and_ssh(cfg_path: Path) -> None:
    up = fab("sandbox.up", config=cfg_path, check=True, timeout=600)  # no role: the default role, web
    # Progress on stderr, the result on stdout.
    assert "applying base, web" in up.stderr and "applying base, web" not in up.stdout
    assert "sandbox web.sandbox.wpdn up (docker" in up.stdout
    out = ok("sandbox.test", "--role", "web", config=cfg_path)
    assert "2 passed" in out
    out = ok("sandbox.ssh", "--role", "web", "-c", "hostname -f; cat /srv/web/index.html", config=cfg_path)
    assert out.splitlines() == ["web.sandbox.wpdn", "hello from web in sandbox"]
    # apt went through the package cache while the states applied (salt/base records what apt was
    # told), and goes direct again now that the cache is stopped.
    assert "package cache: apt-cacher-ng on 127.0.0.1:" in up.stderr
    port = re.search(r"package cache: apt-cacher-ng on 127\.0\.0\.1:(\d+)", up.stderr).group(1)  # type: ignore[union-attr]
    seen = ok("sandbox.ssh", "--role", "web", "-c", "cat /var/lib/workbench-sandbox/apt-proxy; "
              "ls /etc/apt/apt.conf.d", config=cfg_path)
    assert re.search(rf'^Acquire::http::Proxy "http://[\d.]+:{port}";$', seen, re.M), seen
    assert "01workbench-proxy" not in seen
    failed = fab("sandbox.ssh", "--role", "web", "-c", "exit 3", config=cfg_path)
    assert failed.returncode == 3


def test_provision_applies_an_edited_state(cfg_path: Path, checkout: Path) -> None:
    state = checkout / "salt/web/init.sls"
    original = state.read_text()
    state.write_text(original.replace(" from {{", " via {{"))
    try:
        done = fab("sandbox.provision", "--role", "web", config=cfg_path, check=True, timeout=600)
        assert "changed web-page" in done.stdout
        assert "restarting the sandbox" in done.stderr
        out = ok("sandbox.ssh", "--role", "web", "-c", FETCH.format("127.0.0.1:8000"), config=cfg_path)
        assert out.strip() == "hello via web in sandbox"
        # The role's tests see the change too: they fail now.
        failed = fab("sandbox.test", "--role", "web", config=cfg_path)
        assert failed.returncode != 0
        assert "the web role's tests failed against web.sandbox.wpdn" in failed.stderr
    finally:
        state.write_text(original)
    out = ok("sandbox.provision", "--role", "web", config=cfg_path)
    assert "changed web-page" in out
    ok("sandbox.test", "--role", "web", config=cfg_path)


def test_a_failing_state_is_an_error_naming_it(cfg_path: Path, checkout: Path) -> None:
    state = checkout / "salt/web/init.sls"
    original = state.read_text()
    state.write_text(original + '\nweb-broken:\n  cmd.run:\n    - name: "false"\n')
    try:
        failed = fab("sandbox.provision", "--role", "web", config=cfg_path)
    finally:
        state.write_text(original)
    assert failed.returncode == 1
    assert "error: states failed in sandbox web.sandbox.wpdn:" in failed.stderr
    assert "web-broken (cmd.run, sls web)" in failed.stderr
    assert "fab sandbox.provision --role web" in failed.stderr


def last_json(out: str) -> Any:
    """The JSON document `fab ... --json` prints after its progress lines."""
    lines = out.splitlines()
    start = max(i for i, line in enumerate(lines) if line in ("{", "["))
    return json.loads("\n".join(lines[start:]))


def test_two_sandboxes_reach_each_other_by_name(cfg_path: Path, wb_prefix: str) -> None:
    up = last_json(ok("sandbox.up", "--role", "peer", "--json", config=cfg_path))
    assert set(up) == {"sandbox", "states", "applied", "changed", "address", "seconds", "provider"}
    assert (up["sandbox"], up["states"], up["provider"]) == ("peer.sandbox.wpdn", ["base", "peer"], "docker")
    out = ok("sandbox.ssh", "--role", "web", "-c", FETCH.format("peer.sandbox.wpdn:8001"), config=cfg_path)
    assert out.strip() == "peer peer.sandbox.wpdn"
    out = ok("sandbox.ssh", "--role", "peer", "-c", FETCH.format("web.sandbox.wpdn:8000"), config=cfg_path)
    assert out.strip() == "hello from web in sandbox"
    # web uses the pool of peers: rendered from the sandboxes that are up, as a deploy renders it
    out = ok("sandbox.ssh", "--role", "web", "-c", "cat /run/workbench/pools/pools.json", config=cfg_path)
    members = json.loads(out)["pools"]["peers"]["members"]
    assert [m["address"] for m in members] == ["peer.sandbox.wpdn:8001"]
    status = ok("sandbox.status", config=cfg_path)
    rows = {line.split()[0]: line.split() for line in status.splitlines()}
    assert rows["web.sandbox.wpdn"][2:4] == ["running", "docker"]
    assert rows["peer.sandbox.wpdn"][2:4] == ["running", "docker"]
    assert sorted(sandbox_containers(wb_prefix)) == [f"{wb_prefix}-sandbox-peer", f"{wb_prefix}-sandbox-web"]


def test_a_failed_up_keeps_a_sandbox_it_did_not_make(
    cfg_path: Path, wb_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a workstation with VirtualBox: Vagrant refuses a second provider for web.
    monkeypatch.setattr(vagrant.Vagrant, "check_provider", lambda self, provider: None)
    with pytest.raises(SandboxError, match="An active machine was found with a different provider"):
        sandbox.up(wb_config.load(cfg_path), "web", provider="virtualbox")
    assert f"{wb_prefix}-sandbox-web" in sandbox_containers(wb_prefix)
    ok("sandbox.test", "--role", "web", config=cfg_path)


def test_halt_then_up_again(cfg_path: Path) -> None:
    ok("sandbox.halt", "--role", "peer", config=cfg_path)
    assert "peer.sandbox.wpdn                peer         stopped" in ok("sandbox.status", config=cfg_path)
    failed = fab("sandbox.test", "--role", "peer", config=cfg_path)
    assert failed.returncode == 1 and "sandbox peer.sandbox.wpdn is stopped" in failed.stderr
    ok("sandbox.up", "--role", "peer", config=cfg_path)
    ok("sandbox.test", "--role", "peer", config=cfg_path)


def test_destroy_removes_everything(cfg_path: Path, wb_prefix: str) -> None:
    out = ok("sandbox.destroy", "--all", config=cfg_path)
    assert "destroyed: web.sandbox.wpdn, peer.sandbox.wpdn" in out
    assert sandbox_containers(wb_prefix) == []
    assert not engine.client().networks.list(names=[f"{wb_prefix}-sandbox"])
    assert "no sandbox to destroy" in ok("sandbox.destroy", "--all", config=cfg_path)


def test_destroy_cleans_up_after_a_failed_up(cfg_path: Path, wb_prefix: str, base_image: Any) -> None:
    # A container left by an interrupted run holds the sandbox's name: Vagrant's
    # `docker run` fails on it, and up must leave nothing behind.
    name = f"{wb_prefix}-sandbox-peer"
    labels = {engine.PREFIX_LABEL: wb_prefix, "workbench.sandbox": "peer.sandbox.wpdn"}
    engine.client().containers.create(base_image.tag, ["sleep", "600"], name=name, labels=labels)
    failed = fab("sandbox.up", "--role", "peer", config=cfg_path)
    assert failed.returncode == 1
    assert "error: vagrant up peer --provider docker --no-provision failed: A Docker command" in failed.stderr
    assert sandbox_containers(wb_prefix) == []
    ok("sandbox.destroy", "--role", "peer", config=cfg_path)
    assert sandbox_containers(wb_prefix) == []


def test_errors_are_clear(cfg_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unknown = fab("sandbox.up", "--role", "nosuch", config=cfg_path)
    assert unknown.returncode == 2
    assert "error: unknown role 'nosuch'" in unknown.stderr
    libvirt = fab("sandbox.up", "--role", "peer", "--provider", "libvirt", config=cfg_path)
    assert libvirt.returncode == 1
    assert "the libvirt provider needs the Vagrant plugin vagrant-libvirt, which is not installed" in libvirt.stderr
    vbox = fab("sandbox.up", "--role", "peer", "--provider", "virtualbox", config=cfg_path)
    assert vbox.returncode == 1
    assert "the virtualbox provider needs VBoxManage, which is not installed" in vbox.stderr
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    no_engine = fab("sandbox.up", "--role", "peer", config=cfg_path)
    assert no_engine.returncode == 3
    assert "error: the Docker engine does not answer" in no_engine.stderr
    assert fab("sandbox.destroy", "--role", "peer", config=cfg_path).returncode == 3
