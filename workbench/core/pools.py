"""Pools: the hosts of one role (db, cache, redis…) that other roles are configured to use.

A pool is declared in workbench.toml:

    [pools.db]
    role = "db"
    used_by = ["app"]
    members = [{ name = "db1", private = "10.0.0.5", public = "203.0.113.5" }]
    variables = { database = "app" }

Nothing of it is baked into an image. At deploy time `container_options`
renders, for the role being deployed, the pools it uses into a directory
mounted read-only at /run/workbench/pools (pools.json and pools.env) and into
environment variables, so adding a member and deploying again updates every
application that uses the pool.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.core import files, secrets
from workbench.core.config import Config, Pool
from workbench.core.errors import ConfigError

SCHEMA = 1
MOUNT = "/run/workbench/pools"
FILE = "pools.json"
ENV_FILE = "pools.env"
SECRETS_FILE = "secrets.json"


@dataclass(frozen=True)
class Member:
    name: str
    private: str
    public: str = ""
    ssh_port: int = 22

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "private": self.private, "public": self.public}


def members(pool: Pool) -> list[Member]:
    """The pool's members as declared (a deployed pool's have no `private`: see member_host)."""
    return [
        Member(m["name"], m.get("private", ""), m.get("public", ""), int(m.get("ssh_port") or 22)) for m in pool.members
    ]


def port(config: Config, pool: Pool) -> int:
    """The pool's port, else its role's first port; 0 when neither says."""
    if pool.port:
        return pool.port
    role = config.roles.get(pool.role)
    return role.ports[0] if role and role.ports else 0


def in_environment(pool: Pool, environment: str) -> bool:
    return not pool.environments or environment in pool.environments


def used_by(config: Config, role: str, environment: str) -> list[Pool]:
    """The pools `role` uses in `environment`, by name."""
    config.role(role)
    config.environment(environment)
    return [
        p for name, p in sorted(config.pools.items()) if role in p.used_by and in_environment(p, environment)
    ]


def render(config: Config, role: str, environment: str) -> dict[str, Any]:
    """What `role` is told about its pools in `environment` (the content of pools.json).

    A deployed pool's members are reached by name on the environment's network
    (`db1.staging.wpdn`); a database pool also names the account the deploy
    makes for `role` (`user`, `database`), whose password goes to secrets.json.
    """
    out: dict[str, Any] = {"schema": SCHEMA, "role": role, "environment": environment, "pools": {}}
    for pool in used_by(config, role, environment):
        p = port(config, pool)
        rendered = []
        for m in members(pool):
            host = m.private or member_host(config, m.name, environment)
            rendered.append({**m.to_dict(), "private": host, "address": f"{host}:{p}" if p else host})
        variables = dict(pool.variables)
        if account(config, pool, role):
            variables.update({"user": role, "database": pool.variables.get("database", role)})
        out["pools"][pool.name] = {"role": pool.role, "port": p, "members": rendered, "variables": variables}
    return out


def member_host(config: Config, member: str, environment: str) -> str:
    """Where a deployed pool's member answers in an environment: `db2.staging.wpdn`."""
    return f"{member}.{environment}.{config.workbench.domain}"


def account(config: Config, pool: Pool, role: str) -> str:
    """The name of the password the deploy makes for `role`'s account in a deployed database pool ("" if none)."""
    pool_role = config.roles.get(pool.role)
    if not (pool.deployed and pool_role is not None and pool_role.dbms and role in pool.used_by):
        return ""
    return f"{pool.name}-{role}"


def secrets_document(config: Config, role: str, environment: str) -> dict[str, Any]:
    """secrets.json: the passwords of `role`'s accounts in its pools (mode 0600, root only, in the container)."""
    out: dict[str, Any] = {"schema": SCHEMA, "pools": {}}
    for pool in used_by(config, role, environment):
        name = account(config, pool, role)
        if name:
            out["pools"][pool.name] = {"user": role, "password": secrets.password(config, environment, name)}
    return out


def _env_name(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9]", "_", p).upper() for p in parts)


def environment_variables(document: dict[str, Any]) -> dict[str, str]:
    """pools.json as variables: WORKBENCH_POOL_DB=10.0.0.5:3306,10.0.0.6:3306, WORKBENCH_POOL_DB_ROLE=db…"""
    env = {"WORKBENCH_POOLS": f"{MOUNT}/{FILE}"}
    for name, pool in document["pools"].items():
        env[_env_name("WORKBENCH_POOL", name)] = ",".join(m["address"] for m in pool["members"])
        env[_env_name("WORKBENCH_POOL", name, "ROLE")] = pool["role"]
        for key, value in pool["variables"].items():
            env[_env_name("WORKBENCH_POOL", name, key)] = value
    return env


def rendered_dir(config: Config, role: str, environment: str) -> Path:
    return config.state_dir / "pools" / environment / role


def write(config: Config, role: str, environment: str) -> Path:
    """Render `role`'s pools for `environment` into its directory; the directory."""
    document = render(config, role, environment)
    directory = rendered_dir(config, role, environment)
    directory.mkdir(parents=True, exist_ok=True)
    env_lines = "".join(f"{k}={_quote(v)}\n" for k, v in sorted(environment_variables(document).items()))
    for name, text in ((FILE, json.dumps(document, indent=2, sort_keys=True) + "\n"), (ENV_FILE, env_lines)):
        # Replaced, never rewritten in place: a running container reads it (0644: as its service's user).
        files.write_whole(directory / name, text, 0o644)
    passwords = secrets_document(config, role, environment)
    if passwords["pools"]:
        # Root only, on the host and in the container: the role's start hook hands it to its service's user.
        text = json.dumps(passwords, indent=2, sort_keys=True) + "\n"
        secrets.write_private(directory / SECRETS_FILE, text.encode())
    else:
        (directory / SECRETS_FILE).unlink(missing_ok=True)
    return directory


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def container_options(config: Config, role: str, environment: str) -> dict[str, Any]:
    """What deploy adds to `containers.run(...)` for `role` in `environment`.

    `{"environment": {...}, "volumes": {host_dir: {"bind": MOUNT, "mode": "ro"}}}`;
    empty when the role uses no pool, so nothing changes for it.
    """
    document = render(config, role, environment)
    if not document["pools"]:
        return {}
    directory = write(config, role, environment)
    return {
        "environment": environment_variables(document),
        "volumes": {str(directory): {"bind": MOUNT, "mode": "ro"}},
    }


# --- showing -------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolView:
    name: str
    role: str
    port: int
    environments: tuple[str, ...]
    used_by: tuple[str, ...]
    members: tuple[Member, ...]


def show(config: Config, name: str = "") -> list[PoolView]:
    """Every pool (or the one called `name`): its role, port, members and users."""
    if name and name not in config.pools:
        known = ", ".join(sorted(config.pools)) or "none"
        raise ConfigError(f"no pool {name!r} in {config.path} (pools: {known}; add a [pools.{name}] table)")
    chosen = [config.pools[name]] if name else [config.pools[n] for n in sorted(config.pools)]
    return [
        PoolView(
            p.name,
            p.role,
            port(config, p),
            p.environments or tuple(config.environments),
            tuple(p.used_by),
            tuple(members(p)),
        )
        for p in chosen
    ]


def users(config: Config) -> dict[str, list[str]]:
    """Role -> the pools it uses (in any environment)."""
    out: dict[str, list[str]] = {}
    for name in sorted(config.pools):
        for role in config.pools[name].used_by:
            out.setdefault(role, []).append(name)
    return out
