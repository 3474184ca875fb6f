"""`fab pools.show` and `fab pools.render` as the real command, on the example pools."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.commands import fab
from tests.support.pools import POOLS, write


def test_fab_pools_show(tmp_path: Path) -> None:
    config = write(tmp_path, POOLS)
    out = fab("pools.show", config=config)
    assert out.returncode == 0, out.stderr
    assert "db  role db, port 3306" in out.stdout
    assert "db1              private 10.0.0.5         public 203.0.113.5" in out.stdout
    assert "roles: app uses cache, db, sessions; db uses cache" in out.stdout
    shown = json.loads(fab("pools.show", "--pool", "db", "--json", config=config, check=True).stdout)
    assert shown[0]["members"][1]["private"] == "10.0.0.6"
    env = fab("pools.render", "app", "--environment", "production", "--env", config=config, check=True).stdout
    assert "WORKBENCH_POOL_SESSIONS=10.0.1.5:11311" in env


def test_fab_pools_bad_input(tmp_path: Path) -> None:
    out = fab("pools.show", config=write(tmp_path, '[pools.redis]\nrole = "redis"\n'))
    assert out.returncode == 2
    assert "error:" in out.stderr and "[pools.redis] role = 'redis': unknown role" in out.stderr
