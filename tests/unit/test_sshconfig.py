"""`fab ssh.config` from pools: the inventory, the rendered configuration, bad inputs (what OpenSSH
makes of it: tests/integration/test_generated_files.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.pools import SSH_POOLS, SSH_ROLES, write
from workbench.core import config as wb_config
from workbench.core.errors import ConfigError
from workbench.ops import sshconfig


def load(tmp_path: Path, pools_text: str) -> wb_config.Config:
    return wb_config.load(write(tmp_path, pools_text, SSH_ROLES))


def test_inventory_from_pools(tmp_path: Path) -> None:
    inv = sshconfig.inventory(load(tmp_path, SSH_POOLS))
    assert [(h.name, h.address, h.port) for h in inv.jump] == [("jump1", "203.0.113.2", 2222)]
    assert [(h.name, h.address, h.port) for h in inv.internal] == [
        ("cache1", "10.0.1.5", 22),
        ("db1", "10.0.0.5", 22),
        ("db2", "10.0.0.6", 2200),
    ]
    # A host in two pools is one host, from both.
    assert inv.internal[0].sources == ("pool cache", "pool sessions")


def test_render(tmp_path: Path) -> None:
    cfg = load(tmp_path, SSH_POOLS)
    text = sshconfig.render(cfg, sshconfig.inventory(cfg), identity_file="~/.ssh/ops", known_hosts="/tmp/kh")
    assert "Host jump1\n    HostName 203.0.113.2\n    Port 2222\n    User ops\n    IdentityFile ~/.ssh/ops\n" in text
    assert "Host db2\n    HostName 10.0.0.6\n    Port 2200\n    User ops\n" in text
    for host in ("db1", "db2", "cache1"):
        block = text[text.index(f"Host {host}\n") :].split("\n\n")[0]
        assert block.endswith("    ProxyJump jump1")
    assert "ProxyJump" not in text[text.index("Host jump1\n") :].split("\n\n")[0]
    assert "Host *\n    UserKnownHostsFile /tmp/kh\n    StrictHostKeyChecking accept-new\n" in text


def test_render_one_host_keeps_its_jump_box(tmp_path: Path) -> None:
    cfg = load(tmp_path, SSH_POOLS)
    text = sshconfig.render(cfg, sshconfig.inventory(cfg), only="db1")
    assert "Host db1\n" in text and "Host jump1\n" in text
    assert "Host db2\n" not in text and "Host cache1\n" not in text


def test_a_host_missing_from_the_inventory(tmp_path: Path) -> None:
    cfg = load(tmp_path, SSH_POOLS)
    with pytest.raises(ConfigError, match=r"host 'redis1' is not in the inventory \(hosts: jump1, cache1, db1, db2\)"):
        sshconfig.render(cfg, sshconfig.inventory(cfg), only="redis1")


def test_no_jump_box(tmp_path: Path) -> None:
    cfg = load(tmp_path, SSH_POOLS.split("[pools.db]")[0].replace("jumpbox", "db").replace("[pools.jump]", "[pools.x]"))
    with pytest.raises(ConfigError, match="no jump box in .*declare a pool of role 'jumpbox'"):
        sshconfig.render(cfg, sshconfig.inventory(cfg))


def test_one_host_two_addresses(tmp_path: Path) -> None:
    other = '\n[pools.other]\nrole = "db"\nmembers = [{ name = "db1", private = "10.9.9.9" }]\n'
    cfg = load(tmp_path, SSH_POOLS + other)
    with pytest.raises(ConfigError, match="host 'db1' has two private addresses, 10.0.0.5 .* and 10.9.9.9"):
        sshconfig.inventory(cfg)


def test_write_is_private(tmp_path: Path) -> None:
    path = sshconfig.write(tmp_path / "sub/config", "Host x\n")
    assert path.read_text() == "Host x\n" and path.stat().st_mode & 0o777 == 0o600
