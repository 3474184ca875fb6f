"""The real MariaDB (the baked db role) through the safe switch of a stateful role.

promote -> a table and a row -> promote -> the row is there -> rollback by tag
-> still there -> a promote whose health check fails -> still there, and the
old release serves again. Through all of it no two containers have the data
volume mounted at once, and MariaDB's own error log (kept in the data volume,
salt/db/files/60-workbench.cnf) shows that every server that ran on the data
was shut down, never killed: one "Shutdown complete" per stop, no crash recovery.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import db as dbs
from tests.support.commands import fab
from tests.support.config import config_data, write_config
from tests.support.db import Writers
from tests.support.net import free_port
from workbench.core import config as wb_config
from workbench.core import engine
from workbench.core.errors import DeployFailed
from workbench.release import docker, ledger, target
from workbench.release import releases as release

ENV = "dbstage"


@dataclass(frozen=True)
class DbSite:
    config: wb_config.Config
    path: Path
    first: int  # the baked version
    second: int  # a label-only copy of it

    @property
    def volume(self) -> str:
        return docker.DockerTarget(self.config).data_volume_name(self.config.environment(ENV), "db", "/var/lib/mysql")

    def db(self) -> Any:
        return dbs.serving_container(self.config, ENV)

    def serving(self) -> str:
        with ledger.opened(self.config) as led:
            current = led.current(ENV, "db")
        assert current is not None
        return current.tag

    def db_containers(self) -> list[str]:
        labels = {engine.PREFIX_LABEL: self.config.prefix, target.ENV_LABEL: ENV, engine.ROLE_LABEL: "db"}
        return sorted(c.name for c in engine.containers(labels))


@pytest.fixture(scope="module")
def site(wb_prefix: str, wb_state: Path, base_image: Any) -> Iterator[DbSite]:
    baked = dbs.bake_db(wb_config.load(write_config(wb_state / "db-bake.toml", config_data(wb_prefix, wb_state))))
    state = wb_state / "release-db"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    data = config_data(wb_prefix, state, registry={"port": free_port()}, environments={ENV: {}})
    path = write_config(state / "workbench.toml", data)
    config = wb_config.load(path)
    copies: list[int] = []
    try:
        copies.append(dbs.copy_version(config, baked.id))
        yield DbSite(config, path, baked.version, copies[0])
    finally:
        dbs.clean_environment(config, ENV)
        for version in copies:
            dbs.remove_image(f"{config.prefix}/db:{version}")
        shutil.rmtree(state, ignore_errors=True)


def rows(site: DbSite) -> list[str]:
    return dbs.sql(site.db(), "SELECT CONCAT(id, ':', item) FROM shop.orders ORDER BY id").split()


def test_rows_survive_promote_rollback_and_a_failed_promote(site: DbSite, monkeypatch: pytest.MonkeyPatch) -> None:
    with Writers(site.volume) as writers:
        fab("release.promote", "db", "--env", ENV, "--version", str(site.first), config=site.path, check=True)
        first = site.serving()
        dbs.sql(site.db(), "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(40)) "
                "ENGINE=InnoDB; INSERT INTO shop.orders VALUES (1, 'first')")

        proc = fab("release.promote", "db", "--env", ENV, "--version", str(site.second), config=site.path)
        assert proc.returncode == 0, proc.stderr
        assert f"stopping {first} cleanly" in proc.stderr
        assert rows(site) == ["1:first"]
        dbs.sql(site.db(), "INSERT INTO shop.orders VALUES (2, 'second')")

        fab("release.rollback", first, config=site.path, check=True)
        assert site.db().labels[target.RELEASE_LABEL] == site.serving()
        assert rows(site) == ["1:first", "2:second"]
        serving = site.serving()

        # A new release that never passes its health check: its server ran on the data,
        # so it is shut down cleanly too, and the old release resumes on the same data.
        healthy = docker.DockerTarget.wait_healthy

        def fails_for_new(self: docker.DockerTarget, plan: target.Plan, instances: Any) -> None:
            healthy(self, plan, instances)
            if plan.tag != serving:
                raise DeployFailed(f"{plan.tag}: made to fail by the test")

        monkeypatch.setattr(docker.DockerTarget, "wait_healthy", fails_for_new)
        with pytest.raises(DeployFailed, match="was not switched to"):
            release.promote(site.config, "db", ENV, version=site.second)
        monkeypatch.undo()
    assert writers.samples > 20 and writers.most == 1
    assert site.serving() == serving
    assert [r.status for r in release.history(site.config, ENV, "db")] == ["released"] * 3 + ["failed"]
    assert rows(site) == ["1:first", "2:second"]
    assert site.db_containers() == [f"{site.config.prefix}-{ENV}-{serving}"]

    log = dbs.error_log(site.db())
    # Stopped: db-1 for db-2, db-2 for the rollback, the rollback for db-4, db-4 itself.
    assert log.count(dbs.CLEAN_SHUTDOWN) == 4, log
    assert dbs.CRASH_RECOVERY not in log
    assert log.count("ready for connections") == 5


def test_history_json_names_the_paused_step(site: DbSite) -> None:
    history = json.loads(fab("release.history", "--env", ENV, "--json", config=site.path, check=True).stdout)
    assert [r["action"] for r in history] == ["promote", "promote", "rollback", "promote"]
    assert history[2]["rollback_of"] == history[0]["tag"]
