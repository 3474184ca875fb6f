"""Pools: validation in workbench.toml, what a role is given at deploy time (`fab pools.show` itself:
tests/integration/test_pools_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.pools import POOLS, write
from workbench.core import config as wb_config
from workbench.core import pools
from workbench.core.errors import ConfigError


@pytest.fixture
def cfg(tmp_path: Path) -> wb_config.Config:
    return wb_config.load(write(tmp_path, POOLS))


def test_pools_load(cfg: wb_config.Config) -> None:
    assert set(cfg.pools) == {"db", "sessions", "cache"}
    db = pools.members(cfg.pools["db"])
    assert [(m.name, m.private, m.public) for m in db] == [("db1", "10.0.0.5", "203.0.113.5"), ("db2", "10.0.0.6", "")]


def test_render_for_a_role_and_environment(cfg: wb_config.Config) -> None:
    staging = pools.render(cfg, "app", "staging")
    assert sorted(staging["pools"]) == ["cache", "db"]  # sessions is production only
    db = staging["pools"]["db"]
    assert db["port"] == 3306  # the role's first port
    assert [m["address"] for m in db["members"]] == ["10.0.0.5:3306", "10.0.0.6:3306"]
    assert db["variables"] == {"database": "app", "user": "app"}
    production = pools.render(cfg, "app", "production")
    assert production["pools"]["sessions"]["members"][0]["address"] == "10.0.1.5:11311"
    assert pools.render(cfg, "cache", "staging")["pools"] == {}


def test_environment_variables(cfg: wb_config.Config) -> None:
    env = pools.environment_variables(pools.render(cfg, "app", "staging"))
    assert env["WORKBENCH_POOL_DB"] == "10.0.0.5:3306,10.0.0.6:3306"
    assert env["WORKBENCH_POOL_DB_ROLE"] == "db"
    assert env["WORKBENCH_POOL_DB_DATABASE"] == "app"
    assert env["WORKBENCH_POOL_CACHE"] == "10.0.1.5:11211"
    assert env["WORKBENCH_POOLS"] == "/run/workbench/pools/pools.json"


def test_container_options_render_files_at_deploy_time(cfg: wb_config.Config) -> None:
    options = pools.container_options(cfg, "app", "staging")
    ((host_dir, mount),) = options["volumes"].items()
    assert mount == {"bind": "/run/workbench/pools", "mode": "ro"}
    document = json.loads((Path(host_dir) / "pools.json").read_text())
    assert document == pools.render(cfg, "app", "staging")
    env_file = (Path(host_dir) / "pools.env").read_text()
    assert "WORKBENCH_POOL_DB='10.0.0.5:3306,10.0.0.6:3306'\n" in env_file
    # A role that uses no pool gets nothing added.
    assert pools.container_options(cfg, "cache", "staging") == {}


def test_adding_a_member_changes_what_the_next_deploy_renders(tmp_path: Path) -> None:
    first = wb_config.load(write(tmp_path, POOLS))
    host_dir = Path(next(iter(pools.container_options(first, "app", "staging")["volumes"])))
    db2 = '{ name = "db2", private = "10.0.0.6" },'
    more = POOLS.replace(db2, db2 + '\n  { name = "db3", private = "10.0.0.7" },')
    second = wb_config.load(write(tmp_path, more))
    pools.container_options(second, "app", "staging")
    document = json.loads((host_dir / "pools.json").read_text())
    assert [m["name"] for m in document["pools"]["db"]["members"]] == ["db1", "db2", "db3"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[pools.redis]\nrole = "redis"\n',
            "[pools.redis] role = 'redis': unknown role (roles: app, cache, db; add [roles.redis])",
        ),
        ('[pools.db]\nrole = "db"\nused_by = ["web"]\n', "[pools.db] used_by: unknown role 'web'"),
        ("[pools.db]\nused_by = []\n", "[pools.db]: role is missing"),
        ('[pools.db]\nrole = "db"\nenvironments = ["qa"]\n', "[pools.db] environments: unknown environment 'qa'"),
        ('[pools.db]\nrole = "db"\nmembers = [{ name = "db1" }]\n', "[pools.db] members[0]: private is missing"),
        (
            '[pools.db]\nrole = "db"\nmembers = [{ name = "a", private = "1" }, { name = "a", private = "2" }]\n',
            "[pools.db] members[1]: name 'a' appears twice",
        ),
        ('[pools.db]\nrole = "db"\nmembers = [{ name = "a", private = "1", ip = "x" }]\n', "unknown key 'ip'"),
        (
            '[pools.db]\nrole = "db"\nmembers = ["10.0.0.5"]\n',
            "[pools.db] members = ['10.0.0.5']: in the list: expected a table",
        ),
        ('[pools.db]\nrole = "db"\nport = 70000\n', "[pools.db] port = 70000: not a TCP port"),
    ],
)
def test_bad_pools(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        wb_config.load(write(tmp_path, text))
    assert message in str(caught.value)
    assert str(tmp_path / "workbench.toml") in str(caught.value)


def test_unknown_role_or_environment_when_rendering(cfg: wb_config.Config) -> None:
    with pytest.raises(ConfigError, match="unknown role 'web'"):
        pools.render(cfg, "web", "staging")
    with pytest.raises(ConfigError, match="unknown environment 'qa'"):
        pools.render(cfg, "app", "qa")
    with pytest.raises(ConfigError, match="no pool 'redis'.*pools: cache, db, sessions"):
        pools.show(cfg, "redis")
