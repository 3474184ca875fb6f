"""Database pools the workbench deploys (`[pools.<p>] deployed = true`): members, accounts, replication over TLS.

    [pools.db]
    role = "db"
    deployed = true
    environments = ["staging"]
    used_by = ["app"]
    members = [{ name = "db1" }, { name = "db2" }]
    variables = { database = "app" }

A promote of `db` into staging then runs one instance per member, each on its
own data volume and reached by its name (`db1`, `db1.staging.wpdn`). Once they
are healthy, before the release counts as switched:
  - on the primary (the first member) the accounts are made: one per role in
    `used_by` (user `app`, ALL on its database, password from the environment's
    secrets, which the pool rendering hands to the app), and `replication`,
    REQUIRE SSL;
  - each other member that does not replicate yet is seeded from the primary (a
    dump over TLS by a temporary account, loaded without writing its own binary
    log) and follows it by GTID over TLS, verifying the primary's certificate
    (workbench/release/tls.py); one that already replicates (its data came from
    the previous release) just goes on.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from workbench.core import pools, secrets
from workbench.core.config import Config, Environment, Pool, Role
from workbench.core.errors import ConfigError, DeployFailed
from workbench.release import tls
from workbench.release.target import Instance, Member, Plan, Target

REPLICATION_USER = "replication"
SEED_USER = "workbench_seed"
# Inside a db container: where the start hook installs the deploy's TLS files.
CA_FILE = "/etc/mysql/tls/ca.crt"
SEED_FILE = "/var/tmp/workbench-seed.sql"
REPLICA_TIMEOUT = 90.0
_SQL_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def deployed_pool(config: Config, role: Role, environment: Environment) -> Pool | None:
    """The pool that deploys `role` in `environment`, if any."""
    for pool in config.pools.values():
        if pool.deployed and pool.role == role.name and pools.in_environment(pool, environment.name):
            return pool
    return None


def members(config: Config, role: Role, environment: Environment) -> tuple[Member, ...]:
    """The instances a promote of `role` runs in `environment`: () unless a deployed pool says."""
    pool = deployed_pool(config, role, environment)
    if pool is None:
        return ()
    declared = pools.members(pool)
    out = []
    for index, member in enumerate(declared, start=1):
        host = pools.member_host(config, member.name, environment.name)
        settings = {"WORKBENCH_DB_SERVER_ID": str(index), "WORKBENCH_MEMBER": member.name}
        if index > 1:
            settings["WORKBENCH_DB_PRIMARY"] = declared[0].name
        files = tls.member_files(config, environment.name, member.name, (member.name, host))
        out.append(Member(member.name, (member.name, host), settings, str(files)))
    return tuple(out)


def after_healthy(config: Config, target: Target, plan: Plan, instances: Sequence[Instance]) -> None:
    """Accounts on the primary, replicas following it: before the release counts as switched."""
    pool = deployed_pool(config, plan.role, plan.environment)
    if pool is None or not plan.role.dbms or not instances:
        return
    env = plan.environment.name
    primary = instances[0]
    _sql(target, primary, accounts_sql(config, pool, env))
    for member, replica in zip(plan.members[1:], instances[1:], strict=True):
        follow(config, target, pool, plan.members[0], member, primary, replica)


def _quote(name: str, what: str) -> str:
    if not _SQL_NAME.match(name):
        raise ConfigError(f"{what} {name!r}: use letters, digits and '_' only")
    return name


def accounts_sql(config: Config, pool: Pool, env: str) -> str:
    """Idempotent SQL making the users' accounts and the replication account, passwords from the secrets."""
    statements = []
    for user in pool.used_by:
        name = pools.account(config, pool, user)
        password = secrets.password(config, env, name)
        database = _quote(pool.variables.get("database", user), f"[pools.{pool.name}] variables.database")
        statements += [
            f"CREATE DATABASE IF NOT EXISTS `{database}`",
            f"CREATE USER IF NOT EXISTS '{_quote(user, 'role')}'@'%' IDENTIFIED BY '{password}'",
            f"ALTER USER '{user}'@'%' IDENTIFIED BY '{password}'",
            f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{user}'@'%'",
        ]
    if len(pool.members) > 1:
        password = secrets.password(config, env, f"{pool.name}-{REPLICATION_USER}")
        statements += [
            f"CREATE USER IF NOT EXISTS '{REPLICATION_USER}'@'%' IDENTIFIED BY '{password}' REQUIRE SSL",
            f"ALTER USER '{REPLICATION_USER}'@'%' IDENTIFIED BY '{password}' REQUIRE SSL",
            f"GRANT REPLICATION SLAVE ON *.* TO '{REPLICATION_USER}'@'%'",
        ]
    return "; ".join(statements)


def _sql(target: Target, instance: Instance, statement: str) -> str:
    """Run SQL as root through the instance's socket (the database has just passed its health check)."""
    return target.run(instance, ["mariadb", "--batch", "--skip-column-names", "-e", statement])


def replica_status(target: Target, instance: Instance) -> dict[str, str]:
    """`SHOW SLAVE STATUS` as a dict ({} when the server replicates from nothing). Its lines look like:

              Slave_IO_Running: Yes
            Master_SSL_Allowed: Yes
    """
    text = target.run(instance, ["mariadb", "-e", "SHOW SLAVE STATUS\\G"])
    status = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(": ")
        if sep:
            status[key] = value
    return status


def follow(config: Config, target: Target, pool: Pool, primary_member: Member, member: Member, primary: Instance,
           replica: Instance) -> None:
    """Make `replica` replicate from `primary` over TLS (seeding it first when it never did)."""
    env = primary.environment
    primary_host = primary_member.aliases[-1]
    if replica_status(target, replica):
        _sql(target, replica, "START SLAVE")
    else:
        position = _seed(config, target, env, primary, replica, primary_host)
        password = secrets.password(config, env, f"{pool.name}-{REPLICATION_USER}")
        _sql(target, replica, f"STOP SLAVE; RESET SLAVE ALL; SET GLOBAL gtid_slave_pos = '{position}'; "
             f"CHANGE MASTER TO MASTER_HOST = '{primary_host}', MASTER_PORT = 3306, "
             f"MASTER_USER = '{REPLICATION_USER}', MASTER_PASSWORD = '{password}', MASTER_SSL = 1, "
             f"MASTER_SSL_CA = '{CA_FILE}', MASTER_SSL_VERIFY_SERVER_CERT = 1, MASTER_USE_GTID = slave_pos; "
             "START SLAVE")
    _wait_replicating(target, member, replica)


def _seed(config: Config, target: Target, env: str, primary: Instance, replica: Instance, primary_host: str) -> str:
    """Copy the primary's databases into the replica (over TLS); the GTID position the copy is at."""
    password = secrets.password(config, env, SEED_USER)
    _sql(target, primary, f"CREATE USER IF NOT EXISTS '{SEED_USER}'@'%' IDENTIFIED BY '{password}' REQUIRE SSL; "
         f"ALTER USER '{SEED_USER}'@'%' IDENTIFIED BY '{password}' REQUIRE SSL; "
         f"GRANT ALL PRIVILEGES ON *.* TO '{SEED_USER}'@'%'")
    try:
        dump = (f"mariadb-dump -h {primary_host} -u {SEED_USER} -p'{password}' --ssl --ssl-ca={CA_FILE} "
                "--ssl-verify-server-cert --all-databases --single-transaction --gtid --master-data=2 --routines "
                f"--events --flush-privileges > {SEED_FILE}")
        # The copy is not the replica's own work: it goes into its data, not its binary log.
        load = f'(echo "SET SESSION sql_log_bin = 0;"; cat {SEED_FILE}) | mariadb'
        target.run(replica, ["sh", "-c", f"set -e; umask 077; {dump}; {load}"])
        found = target.run(replica, ["sh", "-c", f"grep -o -m 1 \"gtid_slave_pos='[^']*'\" {SEED_FILE}; "
                                                 f"rm -f {SEED_FILE}"])
    finally:
        _sql(target, primary, f"DROP USER IF EXISTS '{SEED_USER}'@'%'")
    match = re.search(r"gtid_slave_pos='([^']*)'", found)
    if match is None:
        raise DeployFailed(f"the copy of {primary.name} for {replica.name} names no GTID position")
    return match[1]


def _wait_replicating(target: Target, member: Member, replica: Instance) -> None:
    deadline = time.monotonic() + REPLICA_TIMEOUT
    status: dict[str, str] = {}
    while time.monotonic() < deadline:
        status = replica_status(target, replica)
        if status.get("Slave_IO_Running") == "Yes" and status.get("Slave_SQL_Running") == "Yes":
            return
        time.sleep(0.5)
    error = status.get("Last_IO_Error") or status.get("Last_SQL_Error") or "no error reported"
    raise DeployFailed(f"{member.name} ({replica.name}) does not replicate from its primary within "
                       f"{REPLICA_TIMEOUT:.0f}s: IO {status.get('Slave_IO_Running')}, SQL "
                       f"{status.get('Slave_SQL_Running')}: {error}")
