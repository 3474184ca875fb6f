"""Database roles in the configuration (dbms, backup_every/backup_keep, deployed pools) and backup records."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from workbench.core import config as wb_config
from workbench.core.errors import BackupError, ConfigError
from workbench.release import backup

REPO = Path(__file__).resolve().parents[2]
PATH = REPO / "workbench.toml"
DB = {"ports": [3306], "data": ["/var/lib/mysql"], "dbms": "mariadb", "tests": "tests/roles/test_db.py"}
APP = {"ports": [80], "tests": "tests/roles/test_app.py"}


def problems(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        wb_config.from_dict(data, PATH)
    return str(info.value)


@pytest.mark.parametrize(("text", "seconds"), [("6h", 21600), ("30m", 1800), ("1d", 86400), ("3600", 3600),
                                               ("90s", 90), ("59", None), ("1h30m", None), ("-1h", None), ("", None)])
def test_parse_duration(text: str, seconds: int | None) -> None:
    assert wb_config.parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"environments": {"staging": {"backup_every": "often"}}},
         "[environments.staging] backup_every = 'often': give seconds"),
        ({"environments": {"staging": {"backup_every": 3600}}},
         "[environments.staging] backup_every = 3600: expected a string, got an integer"),
        ({"environments": {"staging": {"backup_keep": 0}}}, "backup_keep = 0: keep at least 1 backup"),
        ({"roles": {"db": {**DB, "data": []}}}, "[roles.db] dbms = 'mariadb': a database role needs `data`"),
        ({"roles": {"db": {**DB, "dbms": "postgres"}}}, "[roles.db] dbms = 'postgres': must be one of , mariadb"),
        ({"roles": {"db": DB, "app": APP},
          "pools": {"db": {"role": "db", "deployed": True, "members": [{"name": "cache1"}]}}},
         "members[0] name = 'cache1': a deployed member is named <role><n>"),
        ({"roles": {"db": DB, "app": APP},
          "pools": {"db": {"role": "db", "deployed": True, "members": [{"name": "db1", "private": "10.0.0.5"}]}}},
         "no private address for a deployed member: it is reached as db1.<environment>.wpdn"),
        ({"roles": {"db": {**DB, "dbms": ""}, "app": APP},
          "pools": {"db": {"role": "db", "deployed": True, "members": [{"name": "db1"}]}}},
         "deployed = true: role 'db' has no `dbms`"),
        ({"roles": {"db": DB, "app": APP},
          "pools": {"a": {"role": "db", "deployed": True, "members": [{"name": "db1"}]},
                    "b": {"role": "db", "deployed": True, "members": [{"name": "db2"}]}}},
         "[pools.b]: role db is already deployed by [pools.a]"),
        ({"roles": {"db": DB, "app": APP}, "pools": {"db": {"role": "db", "deployed": True}}},
         "deployed = true: name its members"),
    ],
)
def test_database_settings_are_checked(data: dict[str, Any], expected: str) -> None:
    assert expected in problems(data)


def test_a_deployed_pool_needs_no_addresses() -> None:
    data = {"roles": {"db": DB, "app": APP},
            "pools": {"db": {"role": "db", "deployed": True, "used_by": ["app"], "environments": ["staging"],
                             "members": [{"name": "db1"}, {"name": "db2"}]}},
            "environments": {"staging": {"backup_every": "6h", "backup_keep": 3}}}
    cfg = wb_config.from_dict(data, PATH)
    assert cfg.pools["db"].deployed and cfg.environment("staging").backup_keep == 3


def test_the_repository_db_role_is_a_mariadb() -> None:
    cfg = wb_config.load(PATH)
    assert backup.database_role(cfg).name == "db"
    with pytest.raises(ConfigError, match="role app runs no database"):
        backup.database_role(cfg, "app")


def made(tmp_path: Path, content: bytes) -> tuple[Path, backup.Backup]:
    path = tmp_path / "db-staging-20261130T074512Z.sql.gz"
    path.write_bytes(content)
    record = backup.Backup(path.name, "staging", "db", "db-7", "2026-11-30T07:45:12+00:00", len(content),
                           hashlib.sha256(content).hexdigest(), 1.5)
    backup._write_manifest(path, record)
    return path, record


def test_backup_record_round_trips_through_its_manifest(tmp_path: Path) -> None:
    path, record = made(tmp_path, b"dump")
    manifest = tmp_path / "db-staging-20261130T074512Z.json"
    assert manifest.stat().st_mode & 0o777 == 0o600
    assert backup.Backup.from_dict(record.to_dict()) == record
    assert backup.Backup.from_dict({**record.to_dict(), "future_field": 1}) == record
    backup.check(path, record)


def test_a_damaged_file_names_itself_and_the_fix(tmp_path: Path) -> None:
    path, record = made(tmp_path, b"dump")
    path.write_bytes(b"dumq")
    with pytest.raises(BackupError) as info:
        backup.check(path, record)
    text = str(info.value)
    assert f"backup {path} is damaged" in text
    assert f"`sha256sum {path.name}` must print {record.sha256}" in text
    assert "fab db.backups --env staging" in text
