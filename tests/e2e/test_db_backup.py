"""Backups of the real MariaDB that restore: `fab db.backup`, `db.backups`, `db.restore`, the schedule.

Rows are written, backed up, changed; the restore brings the first rows back
(the table checksums match) through a pause of the serving release, with one
writer on the data at a time and no crash recovery. A damaged backup file is
refused before anything is touched. Retention and the schedule `fab watch` runs
keep the newest `backup_keep`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import db as dbs
from tests.support.commands import fab
from tests.support.config import config_data, fresh_dir, write_config
from tests.support.db import Writers
from tests.support.net import free_port
from workbench.build.bake import BakeResult
from workbench.core import config as wb_config
from workbench.ops import watch
from workbench.release import backup, docker

ENV = "dbback"


@dataclass(frozen=True)
class Site:
    config: wb_config.Config
    path: Path

    def db(self) -> Any:
        return dbs.serving_container(self.config, ENV)

    def rows(self) -> list[str]:
        return dbs.sql(self.db(), "SELECT CONCAT(id, ':', item) FROM shop.orders ORDER BY id").split()

    def checksum(self) -> str:
        return dbs.sql(self.db(), "CHECKSUM TABLE shop.orders EXTENDED").split()[-1]

    def fab(self, *args: str, check: bool = True) -> Any:
        return fab(*args, config=self.path, check=check)


@pytest.fixture(scope="module")
def site(wb_prefix: str, wb_state: Path, baked: Callable[[str], BakeResult]) -> Iterator[Site]:
    db = baked("db")
    state = fresh_dir(wb_state / "db-backup")
    data = config_data(wb_prefix, state, registry={"port": free_port()},
                       environments={ENV: {"backup_keep": 2, "backup_every": "1h"}})
    path = write_config(state / "workbench.toml", data)
    config = wb_config.load(path)
    try:
        fab("release.promote", "db", "--env", ENV, "--version", str(db.version), config=path, check=True)
        yield Site(config, path)
    finally:
        dbs.clean_environment(config, ENV)
        shutil.rmtree(state, ignore_errors=True)


def test_backup_change_restore_brings_the_rows_back(site: Site) -> None:
    dbs.sql(site.db(), "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(40)) "
            "ENGINE=InnoDB; INSERT INTO shop.orders VALUES (1, 'first'), (2, 'second')")
    before = site.checksum()
    made = backup.Backup.from_dict(json.loads(site.fab("db.backup", "--env", ENV, "--json").stdout))
    path = backup.directory(site.config, ENV, "db") / made.name
    assert made.name.startswith(f"db-{ENV}-") and made.name.endswith(".sql.gz")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == made.sha256 and path.stat().st_size == made.size
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert made.release == dbs.serving_container(site.config, ENV).labels["workbench.release"]

    dbs.sql(site.db(), "DELETE FROM shop.orders WHERE id = 1; UPDATE shop.orders SET item = 'changed' WHERE id = 2; "
            "INSERT INTO shop.orders VALUES (3, 'third')")
    assert site.rows() == ["2:changed", "3:third"]

    volume = docker.DockerTarget(site.config).data_volume_name(site.config.environment(ENV), "db", "/var/lib/mysql")
    with Writers(volume) as writers:
        proc = site.fab("db.restore", made.name, "--env", ENV, "--json")
    assert writers.samples > 10 and writers.most == 1
    restored = json.loads(proc.stdout)
    assert restored["release"] == made.release and restored["before"] == f"{volume}-before-restore"
    assert site.rows() == ["1:first", "2:second"]
    assert site.checksum() == before
    log = dbs.error_log(site.db())
    assert dbs.CRASH_RECOVERY not in log
    # The data as it was just before the restore is kept aside.
    listing = json.loads(site.fab("db.backups", "--env", ENV, "--json").stdout)
    assert [b["name"] for b in listing] == [made.name]


def test_a_damaged_backup_is_refused_and_the_database_untouched(site: Site) -> None:
    [made] = backup.backups(site.config, ENV)
    path = backup.directory(site.config, ENV, "db") / made.name
    damaged = path.with_name(made.name.replace(".sql.gz", "-damaged.sql.gz"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    manifest = backup.Backup.from_dict({**made.to_dict(), "name": damaged.name})
    backup._write_manifest(damaged, manifest)
    started = site.db().attrs["State"]["StartedAt"]
    dbs.sql(site.db(), "INSERT INTO shop.orders VALUES (4, 'after-backup')")

    proc = site.fab("db.restore", damaged.name, "--env", ENV, check=False)
    assert proc.returncode == 1
    assert f"backup {damaged} is damaged" in proc.stderr
    assert f"sha256sum {damaged.name}` must print {made.sha256}" in proc.stderr
    assert "was not touched" in proc.stderr
    assert site.db().attrs["State"]["StartedAt"] == started
    assert site.rows() == ["1:first", "2:second", "4:after-backup"]
    damaged.unlink()
    backup._manifest_path(damaged).unlink()

    missing = site.fab("db.restore", "db-dbback-nope.sql.gz", "--env", ENV, check=False)
    assert missing.returncode == 1 and "no backup 'db-dbback-nope.sql.gz' of db in dbback" in missing.stderr


def test_retention_and_the_schedule_keep_the_newest(site: Site) -> None:
    first = backup.backups(site.config, ENV)
    # Just made: not due for an hour.
    assert backup.due(site.config) == []
    assert [(e, r) for e, r in backup.due(site.config, now=_epoch(first[-1].created) + 3600)] == [(ENV, "db")]
    site.fab("db.backup", "--env", ENV)
    site.fab("db.backup", "--env", ENV)
    kept = backup.backups(site.config, ENV)
    assert len(kept) == 2 and first[0].name not in [b.name for b in kept]
    assert sorted(p.name for p in backup.directory(site.config, ENV, "db").iterdir()) == sorted(
        [b.name for b in kept] + [b.name.replace(".sql.gz", ".json") for b in kept])
    # What `fab watch` runs at each look: nothing due now; after removing them all, one.
    assert watch.scheduled_backups(site.config) == ()
    for made in kept:
        (backup.directory(site.config, ENV, "db") / made.name).unlink()
        backup._manifest_path(backup.directory(site.config, ENV, "db") / made.name).unlink()
    [done] = watch.scheduled_backups(site.config)
    assert done.environment == ENV and done.backup is not None and not done.error
    assert [b.name for b in backup.backups(site.config, ENV)] == [done.backup.name]


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()
