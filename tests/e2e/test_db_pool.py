"""A database pool the workbench deploys: a primary and a replica over TLS, and the app logging in through it.

`[pools.db] deployed = true` with members db1 and db2 in the environment
`dbpool`: a promote of the baked db role runs both, each on its own data
volume; db2 is seeded from db1 and follows it by GTID over TLS (certificates
from the environment's CA, made at deploy time); the replication account
requires TLS. The baked app, promoted into the same environment, is given its
account through the pool rendering and its GET /pools logs into both members.
"""

from __future__ import annotations

import json
import shutil
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import db as dbs
from tests.support.config import config_data, write_config
from tests.support.net import free_port
from workbench.build import bake
from workbench.core import config as wb_config
from workbench.core import engine, pools, secrets
from workbench.release import dbpool, docker, target
from workbench.release import releases as release

ENV = "dbpool"


@dataclass(frozen=True)
class Site:
    config: wb_config.Config
    db_version: int
    app_image: str

    def members(self) -> dict[str, Any]:
        """Member name -> its running container."""
        labels = {engine.PREFIX_LABEL: self.config.prefix, target.ENV_LABEL: ENV, engine.ROLE_LABEL: "db"}
        running = [c for c in engine.containers(labels) if c.status == "running"]
        return {c.labels[docker.MEMBER_LABEL]: c for c in running}

    def password(self, name: str) -> str:
        return secrets.password(self.config, ENV, name)


@pytest.fixture(scope="module")
def site(wb_prefix: str, wb_state: Path, base_image: Any) -> Iterator[Site]:
    bake_config = wb_config.load(write_config(wb_state / "db-bake.toml", config_data(wb_prefix, wb_state)))
    db = dbs.bake_db(bake_config)
    app = bake.bake_role(bake_config, "app")
    state = wb_state / "db-pool"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    data = config_data(
        wb_prefix, state, registry={"port": free_port()}, environments={ENV: {}},
        pools={"db": {"role": "db", "deployed": True, "environments": [ENV], "used_by": ["app"],
                      "members": [{"name": "db1"}, {"name": "db2"}], "variables": {"database": "shop"}}},
    )
    config = wb_config.load(write_config(state / "workbench.toml", data))
    try:
        yield Site(config, db.version, app.tag)
    finally:
        dbs.clean_environment(config, ENV)
        shutil.rmtree(state, ignore_errors=True)


def wait_for(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.5)


def test_the_pool_deploys_a_primary_and_a_replica_over_tls(site: Site) -> None:
    first = release.promote(site.config, "db", ENV, version=site.db_version)
    members = site.members()
    assert sorted(members) == ["db1", "db2"]
    assert members["db1"].name == f"{site.config.prefix}-{ENV}-{first.tag}"
    volumes = {v.name for v in docker.DockerTarget(site.config).data_volumes(site.config.environment(ENV),
                                                                             site.config.role("db"))}
    assert volumes == {f"{site.config.prefix}-{ENV}-db1-var-lib-mysql", f"{site.config.prefix}-{ENV}-db2-var-lib-mysql"}

    dbs.sql(members["db1"], "CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(40)) ENGINE=InnoDB; "
            "INSERT INTO shop.orders VALUES (1, 'written on db1')")
    wait_for(lambda: dbs.sql(members["db2"], "SELECT item FROM shop.orders WHERE id = 1") == "written on db1",
             "the row reaches db2")

    status = dbpool.replica_status(docker.DockerTarget(site.config), _instance(site, "db2"))
    assert status["Master_Host"] == f"db1.{ENV}.{site.config.workbench.domain}"
    assert status["Master_User"] == "replication"
    assert (status["Master_SSL_Allowed"], status["Master_SSL_Verify_Server_Cert"]) == ("Yes", "Yes")
    assert (status["Slave_IO_Running"], status["Slave_SQL_Running"]) == ("Yes", "Yes")
    assert status["Using_Gtid"] == "Slave_Pos"
    assert dbs.sql(members["db2"], "SELECT @@read_only, @@server_id") == "1\t2"
    assert dbs.sql(members["db1"], "SELECT @@read_only, @@server_id") == "0\t1"
    # The replication account needs TLS: without it, refused; with it (verifying db1's name), in.
    login = ["mariadb", "-h", f"db1.{ENV}.{site.config.workbench.domain}", "-u", "replication",
             f"-p{site.password('db-replication')}", "-N", "-e"]
    code, out = members["db2"].exec_run([*login[:-2], "--skip-ssl", "-N", "-e", "SELECT 1"])
    assert code != 0 and b"Access denied for user 'replication'" in out, out
    code, out = members["db2"].exec_run([*login[:-2], "--ssl", f"--ssl-ca={dbpool.CA_FILE}", "--ssl-verify-server-cert",
                                         "-N", "-e", "SHOW STATUS LIKE 'Ssl_cipher'"])
    assert code == 0 and out.decode().split()[0] == "Ssl_cipher" and len(out.decode().split()) == 2, out
    assert dbs.sql(members["db1"], "SELECT ssl_type FROM mysql.user WHERE user = 'replication'") == "ANY"


def test_keys_stay_on_the_host_and_out_of_the_image(site: Site) -> None:
    folder = secrets.directory(site.config, ENV)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "tls" / "db1" / "server.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "passwords.json").stat().st_mode) == 0o600
    image = site.members()["db1"].attrs["Image"]
    bare = engine.client().containers.run(image, ["sh", "-c", "ls /etc/mysql/tls /run/workbench/tls 2>&1; true"],
                                          remove=True)
    assert b"No such file or directory" in bare and b"server.key" not in bare
    # In the running member, MariaDB's own copy of the key is readable by mysql alone.
    code, out = site.members()["db1"].exec_run(["stat", "-c", "%U %a", "/etc/mysql/tls/server.key"])
    assert out.decode().strip() == "mysql 600"
    assert dbs.sql(site.members()["db1"], "SELECT @@have_ssl") == "YES"


def _instance(site: Site, member: str) -> Any:
    container = site.members()[member]
    return target.Instance(container.name, container.labels[target.RELEASE_LABEL], "db", ENV, "", "")


def get_pools(site: Site, want: int, timeout: float = 60) -> dict[str, Any]:
    [app] = docker.DockerTarget(site.config).instances(site.config.environment(ENV), "app")
    url = f"http://{app.address}/pools"
    last: object = None

    def answered() -> dict[str, Any] | None:
        nonlocal last
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                status, body = reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        except OSError as exc:
            last = exc
            return None
        last = (status, body)
        return dict(json.loads(body)) if status == want else None

    try:
        return dict(wait_for(answered, f"GET {url} answering {want}", timeout))
    except AssertionError:
        raise AssertionError(f"GET {url} did not answer {want} (last: {last!r})") from None


def test_the_app_logs_into_every_member_with_its_deploy_time_account(site: Site) -> None:
    version = int(site.app_image.rsplit(":", 1)[1])
    release.promote(site.config, "app", ENV, version=version)
    body = get_pools(site, 200)
    members = body["pools"]["db"]["members"]
    domain = site.config.workbench.domain
    assert [(m["name"], m["address"], m["ok"]) for m in members] == [
        ("db1", f"db1.{ENV}.{domain}:3306", True), ("db2", f"db2.{ENV}.{domain}:3306", True)]
    assert all(m["detail"].startswith("logged in as app to MariaDB ") and m["detail"].endswith("(database shop)")
               for m in members), members
    # The password reaches the app at deploy time only, readable by root (and, in the app, by webapps).
    rendered = pools.rendered_dir(site.config, "app", ENV)
    assert site.password("db-app") not in (rendered / pools.FILE).read_text()
    assert stat.S_IMODE((rendered / pools.SECRETS_FILE).stat().st_mode) == 0o600
    [app] = docker.DockerTarget(site.config).instances(site.config.environment(ENV), "app")
    container = engine.client().containers.get(app.name)
    code, out = container.exec_run(["stat", "-c", "%U %a", "/run/workbench/app/pool-secrets.json"])
    assert out.decode().strip() == "webapps 600"
    assert not [v for v in container.attrs["Config"]["Env"] if site.password("db-app") in v]

    # A wrong password is seen as one: the check really logs in.
    dbs.sql(site.members()["db1"], "ALTER USER 'app'@'%' IDENTIFIED BY 'not-the-deployed-one'")
    refused = get_pools(site, 503)["pools"]["db"]["members"]
    assert all("refused app: Access denied" in m["detail"] for m in refused), refused
    # The next deploy of the pool makes the account as the secrets say again.
    release.promote(site.config, "db", ENV, version=site.db_version)
    assert get_pools(site, 200)["status"] == "ok"


def test_a_second_promote_keeps_the_replica_following_on_its_data(site: Site) -> None:
    members = site.members()
    assert dbs.sql(members["db2"], "SELECT item FROM shop.orders WHERE id = 1") == "written on db1"
    dbs.sql(members["db1"], "INSERT INTO shop.orders VALUES (2, 'after the promotes')")
    wait_for(lambda: dbs.sql(members["db2"], "SELECT COUNT(*) FROM shop.orders") == "2", "row 2 reaches db2")
    for member, container in members.items():
        log = dbs.error_log(container)
        assert dbs.CRASH_RECOVERY not in log, member
        assert log.count(dbs.CLEAN_SHUTDOWN) == 1, member  # the first release, stopped for the second
