"""Backups of a database role (`[roles.<r>] dbms`) that restore: made live, checksummed, put back through a switch.

A backup is a consistent logical dump taken inside the container serving the
role, while it serves: `mariadb-dump --single-transaction --all-databases
--routines --events` (one transaction: InnoDB tables as of one instant, no lock
held; the `mysql` system tables, which are Aria, are dumped as they are). It is
gzip-compressed on its way out and written, mode 0600, to

    <state_dir>/backups/<env>/<role>/<role>-<env>-<UTC time>.sql.gz
    <state_dir>/backups/<env>/<role>/<role>-<env>-<UTC time>.json   (the manifest)

the manifest holding its sha256, size and the release it was taken from. After
each backup only the newest `[environments.<env>] backup_keep` are kept.

A restore never touches the running database before the restored data is
ready: the file's sha256 must match its manifest, then the dump is loaded into a
scratch volume by a loader container of the serving release's image (no
network) while the database keeps serving. Only then the switch: the serving
release is paused (MariaDB shut down cleanly), its data copied aside into
`<volume>-before-restore`, replaced by the restored data, and the same release
resumed and health-checked. A failure at any point of the switch puts the
copied-aside data back and resumes the release on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import docker.errors

from workbench.core import config as config_mod
from workbench.core import engine, progress
from workbench.core.config import Config, Environment, Role
from workbench.core.errors import BackupError, ConfigError, DeployFailed
from workbench.core.files import sha256_of, write_whole
from workbench.release import docker as docker_target
from workbench.release import ledger, releases
from workbench.release.ledger import Release
from workbench.release.target import ENV_LABEL, Instance

SCHEMA = 1
SUFFIX = ".sql.gz"
DUMP = ("mariadb-dump", "--single-transaction", "--all-databases", "--routines", "--events", "--flush-privileges")
METHOD = " ".join(DUMP) + " | gzip"
# Where the loader container finds the backups directory.
LOAD_DIR = "/run/workbench/backups"
RESTORE_LABEL = "workbench.restore"
READY_TIMEOUT = 120.0


@dataclass(frozen=True)
class Backup:
    """One backup file and its manifest: what it holds and how to check it."""

    name: str  # the file's name, `db-staging-20261130T074512Z.sql.gz`
    environment: str
    role: str
    release: str  # the release it was taken from (`db-7`)
    created: str  # ISO 8601, UTC
    size: int  # bytes of the compressed file
    sha256: str  # of the compressed file, as `sha256sum` prints it
    seconds: float
    method: str = METHOD
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Backup:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Restored:
    """What `db.restore` did."""

    backup: str
    environment: str
    role: str
    release: str  # the release that serves the restored data
    before: str  # the volume holding the data as it was just before
    seconds: float  # in all, loading included
    downtime: float  # from the pause to the release answering again on the restored data


@dataclass(frozen=True)
class Scheduled:
    """One backup `fab watch` found due: made, or why not."""

    environment: str
    role: str
    backup: Backup | None
    error: str = ""


# --- where -----------------------------------------------------------------------------


def database_role(config: Config, role: str | None = None) -> Role:
    """The role to back up: `role`, or the configuration's one database role (`dbms`)."""
    if role:
        found = config.role(role)
        if not found.dbms:
            raise ConfigError(f"role {found.name} runs no database ([roles.{found.name}] dbms is not set): "
                              "nothing to back up or restore")
        return found
    databases = sorted(r.name for r in config.roles.values() if r.dbms)
    if len(databases) != 1:
        raise ConfigError(f"say which database role (--role): {', '.join(databases)}" if databases else
                          f"no role of {config.path} runs a database (set [roles.<r>] dbms = \"mariadb\")")
    return config.roles[databases[0]]


def directory(config: Config, env: str, role: str) -> Path:
    return config.state_dir / "backups" / env / role


def _manifest_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(SUFFIX) + ".json")


# --- making one ----------------------------------------------------------------------------


class _Hashing:
    """A write-only file that passes bytes on and keeps their sha256 and count."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def backup(config: Config, env: str, role: str | None = None) -> Backup:
    """Dump the database serving `role` in `env` into a new backup; prune beyond `backup_keep`."""
    database = database_role(config, role)
    environment = config.environment(env)
    releases.recover_all(config)
    with ledger.opened(config) as led, ledger.locked(config, environment.name, database.name):
        current = _serving(led, environment, database)
        primary = _instances(config, environment, current)[0]
        folder = directory(config, environment.name, database.name)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in folder.glob(".*.partial"):
            stale.unlink()  # left by a backup that was killed
        created = datetime.now(UTC)
        path = _free_name(folder, f"{database.name}-{environment.name}-{created.strftime('%Y%m%dT%H%M%SZ')}")
        scope = f"backup {database.name}"
        progress.step(scope, f"dumping {current.tag} ({primary.name}) into {path}")
        start = time.monotonic()
        partial = folder / f".{path.name}.partial"
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as raw:
                hashing = _Hashing(raw)
                with gzip.GzipFile(fileobj=hashing, mode="wb", compresslevel=6, mtime=0, filename="") as packed:
                    releases.target_for(config, environment).run(primary, DUMP, sink=packed)  # type: ignore[arg-type]
            partial.replace(path)
        except DeployFailed as exc:
            partial.unlink(missing_ok=True)
            raise BackupError(f"the backup of {database.name} in {environment.name} failed, nothing was kept: {exc}")\
                from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        made = Backup(path.name, environment.name, database.name, current.tag, created.isoformat(timespec="seconds"),
                      hashing.size, hashing.digest.hexdigest(), round(time.monotonic() - start, 2))
        _write_manifest(path, made)
        progress.step(scope, f"{path.name}: {progress.human_size(made.size)}, sha256 {made.sha256[:12]}, "
                             f"{made.seconds:.1f}s")
        for gone in prune(config, environment.name, database.name):
            progress.detail(f"removed {gone} (keeping the newest {environment.backup_keep})")
    return made


def _free_name(folder: Path, stem: str) -> Path:
    path = folder / f"{stem}{SUFFIX}"
    number = 2
    while path.exists():
        path = folder / f"{stem}-{number}{SUFFIX}"
        number += 1
    return path


def _write_manifest(path: Path, made: Backup) -> None:
    manifest = _manifest_path(path)
    write_whole(manifest, json.dumps(made.to_dict(), indent=2, sort_keys=True) + "\n", 0o600)


def _serving(led: ledger.Ledger, environment: Environment, role: Role) -> Release:
    current = led.current(environment.name, role.name)
    if current is None:
        raise BackupError(f"nothing of {role.name} serves in {environment.name}: promote it first "
                          f"(fab release.promote {role.name} --env {environment.name})")
    return current


def _instances(config: Config, environment: Environment, current: Release) -> tuple[Instance, ...]:
    found = releases.target_for(config, environment).instances(environment, tag=current.tag)
    if not found:
        raise BackupError(f"{current.tag} should serve {current.role} in {environment.name} but none of its "
                          "instances runs (`fab release.list` recovers, or promote it again)")
    return found


# --- listing and retention ---------------------------------------------------------------


def backups(config: Config, env: str | None = None, role: str | None = None) -> list[Backup]:
    """Every backup with a manifest, oldest first (of one environment, one role)."""
    root = config.state_dir / "backups"
    if env:
        config.environment(env)
    found = []
    for manifest in sorted(root.glob(f"{env or '*'}/{role or '*'}/*.json")):
        try:
            found.append(Backup.from_dict(json.loads(manifest.read_text())))
        except (OSError, ValueError, TypeError) as exc:
            raise BackupError(f"cannot read the backup manifest {manifest} ({exc}): move it away, "
                              "its backup is then no longer listed") from None
    return sorted(found, key=lambda b: (b.created, b.name))


def prune(config: Config, env: str, role: str) -> list[str]:
    """Remove the oldest backups beyond `backup_keep`; their names."""
    keep = config.environment(env).backup_keep
    folder = directory(config, env, role)
    old = backups(config, env, role)[:-keep]
    for gone in old:
        (folder / gone.name).unlink(missing_ok=True)
        _manifest_path(folder / gone.name).unlink(missing_ok=True)
    return [b.name for b in old]


def find(config: Config, env: str, role: str, name: str) -> tuple[Path, Backup]:
    """The backup called `name` (as listed), or at path `name`, with its manifest."""
    given = Path(name)
    path = given if given.is_file() else directory(config, env, role) / given.name
    manifest = _manifest_path(path)
    if not path.is_file() or not manifest.is_file():
        listed = ", ".join(b.name for b in backups(config, env, role)[-5:]) or "none"
        missing = path if not path.is_file() else manifest
        raise BackupError(f"no backup {name!r} of {role} in {env}: {missing} does not exist "
                          f"(newest: {listed}; `fab db.backups --env {env}` lists them)")
    try:
        return path, Backup.from_dict(json.loads(manifest.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise BackupError(f"cannot read the manifest {manifest} of {path.name} ({exc})") from None


def check(path: Path, made: Backup) -> None:
    """The file is the one the manifest describes (size and sha256), or BackupError saying what to do."""
    found, size = sha256_of(path), path.stat().st_size
    if found != made.sha256 or size != made.size:
        raise BackupError(
            f"backup {path} is damaged: its sha256 is {found} ({size} bytes), but its manifest "
            f"{_manifest_path(path).name} says {made.sha256} ({made.size} bytes). It was not restored and the "
            f"database in {made.environment} was not touched. Restore another backup (`fab db.backups --env "
            f"{made.environment}`), or put back an intact copy of this file (`sha256sum {path.name}` must print "
            f"{made.sha256})."
        )


# --- restoring --------------------------------------------------------------------------


def restore(config: Config, env: str, name: str, role: str | None = None) -> Restored:
    """Put backup `name` back into the database serving in `env`, through a pause of its release."""
    database = database_role(config, role)
    environment = config.environment(env)
    path, made = find(config, environment.name, database.name, name)
    progress.step(f"restore {database.name}", f"checking {path.name} against its manifest (sha256)")
    check(path, made)
    target = releases.target_for(config, environment)
    if not isinstance(target, docker_target.DockerTarget):
        raise ConfigError(f"restores run on the docker target only, not {environment.target}")
    releases.recover_all(config)
    start = time.monotonic()
    with ledger.opened(config) as led, ledger.locked(config, environment.name, database.name):
        current = _serving(led, environment, database)
        if len(_instances(config, environment, current)) > 1:
            raise BackupError(f"{current.tag} runs a replicated pool: restoring its primary would leave the "
                              "replicas behind; not supported yet (take the pool down, purge its data, promote, "
                              "then restore)")
        [path_in] = database.data or ("",)
        live = target.data_volume_name(environment, database.name, path_in)
        scratch = _load(config, environment, database, current, path, live)
        try:
            downtime, before = _switch(config, target, environment, database, current, live, scratch)
        finally:
            _remove_volume(scratch)
    done = Restored(made.name, environment.name, database.name, current.tag, before,
                    round(time.monotonic() - start, 2), round(downtime, 2))
    progress.step(f"restore {database.name}", f"{current.tag} serves {made.name} in {environment.name} "
                  f"(unavailable {done.downtime:.1f}s); the data before is kept in {before}")
    return done


def _labels(config: Config, environment: Environment, role: Role, **extra: str) -> dict[str, str]:
    return {engine.PREFIX_LABEL: config.prefix, ENV_LABEL: environment.name, engine.ROLE_LABEL: role.name, **extra}


def _load(config: Config, environment: Environment, role: Role, current: Release, path: Path, live: str) -> str:
    """Load the dump into a scratch volume with a loader container; the scratch volume's name."""
    scope = f"restore {role.name}"
    client = engine.client()
    scratch = f"{live}-restoring"
    _remove_volume(scratch)  # left by a restore that was killed
    client.volumes.create(scratch, labels=_labels(config, environment, role, **{RESTORE_LABEL: path.name}))
    progress.step(scope, f"loading {path.name} into {scratch} with {current.image} (the database keeps serving)")
    loader = client.containers.run(
        current.image_id, detach=True, name=f"{config.prefix}-{environment.name}-{role.name}-restore",
        network_mode="none",
        volumes={scratch: {"bind": role.data[0], "mode": "rw"}, str(path.parent): {"bind": LOAD_DIR, "mode": "ro"}},
        environment={"WORKBENCH_ROLE": role.name, "WORKBENCH_ENVIRONMENT": environment.name,
                     "WORKBENCH_RELEASE": f"restore-of-{current.tag}"},
        labels=_labels(config, environment, role, **{RESTORE_LABEL: path.name}),
    )
    try:
        _wait_ready(loader)
        dump = f"{LOAD_DIR}/{path.name}"
        # Loaded without a binary log of its own: the restored data is the dump's, not a history of loading it.
        load = f'gunzip -t "{dump}" && (echo "SET SESSION sql_log_bin = 0;"; gunzip -c "{dump}") | mariadb'
        _run(loader, ["sh", "-c", load], "loading the dump")
        _run(loader, ["mariadb", "-e", "SELECT COUNT(*) FROM information_schema.schemata"], "checking the result")
        docker_target._stop_services(loader)
    except BaseException:
        engine.remove_container(loader)
        _remove_volume(scratch)
        raise
    engine.remove_container(loader)
    return scratch


def _wait_ready(container: Any) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        code, _ = container.exec_run(["mariadb", "-e", "SELECT 1"])
        if code == 0:
            return
        container.reload()
        if container.status != "running":
            break
        time.sleep(0.3)
    tail = container.logs(tail=15).decode(errors="replace")
    raise BackupError(f"the loader {container.name} never answered (the database in its environment is untouched): "
                      f"{tail}")


def _run(container: Any, argv: list[str], what: str) -> None:
    code, output = container.exec_run(argv)
    if code != 0:
        text = output.decode(errors="replace").strip()[-2000:]
        raise BackupError(f"{what} in {container.name} failed (exit {code}); the database in its environment is "
                          f"untouched:\n{text}")


def _switch(
    config: Config, target: docker_target.DockerTarget, environment: Environment, role: Role, current: Release,
    live: str, scratch: str,
) -> tuple[float, str]:
    """Pause, copy the live data aside, put the restored data in, resume; (downtime, the volume aside)."""
    scope = f"restore {role.name}"
    before = f"{live}-before-restore"
    _remove_volume(before)
    engine.client().volumes.create(
        before, labels=_labels(config, environment, role, **{docker_target.DATA_LABEL: role.data[0],
                                                            RESTORE_LABEL: "before"}))
    progress.step(scope, f"stopping {current.tag} cleanly")
    paused = time.monotonic()
    target.pause(environment, current.tag)
    mounts = {live: "/data", before: "/before", scratch: "/restored"}
    try:
        _copy(config, current, mounts, "cp -a /data/. /before/ && find /data -mindepth 1 -delete && "
                                       "cp -a /restored/. /data/", "putting the restored data in place")
        progress.step(scope, f"starting {current.tag} again on the restored data")
        releases._resume(config, target, current)
    except (BackupError, DeployFailed) as exc:
        progress.step(scope, f"failed ({exc}): putting the data of before back")
        target.pause(environment, current.tag)
        _copy(config, current, mounts, "find /data -mindepth 1 -delete && cp -a /before/. /data/",
              "putting the data of before back")
        releases._resume(config, target, current)
        raise BackupError(f"restoring into {environment.name} failed and the data of before is back in place, "
                          f"served by {current.tag}: {exc}") from None
    return time.monotonic() - paused, before


def _copy(config: Config, current: Release, mounts: dict[str, str], script: str, what: str) -> None:
    """Run `script` in a helper container of the release's image with the volumes mounted (no other user)."""
    for volume in mounts:
        users = [c.name for c in engine.containers_using(volume)]
        if users:
            raise BackupError(f"{', '.join(users)} still has {volume} mounted: {what} is refused")
    helper = engine.client().containers.run(
        current.image_id, ["sh", "-c", f"set -e; {script}"], detach=True, network_mode="none",
        volumes={name: {"bind": where, "mode": "rw"} for name, where in mounts.items()},
        labels={engine.PREFIX_LABEL: config.prefix, ENV_LABEL: current.environment},
    )
    try:
        code = helper.wait(timeout=3600).get("StatusCode")
        if code != 0:
            raise BackupError(f"{what} failed (exit {code}): {helper.logs(tail=10).decode(errors='replace')}")
    finally:
        engine.remove_container(helper)


def _remove_volume(name: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        engine.client().volumes.get(name).remove(force=True)


# --- the schedule ----------------------------------------------------------------------------


def due(config: Config, now: float | None = None) -> list[tuple[str, str]]:
    """(environment, role) of every database whose `backup_every` has passed since its newest backup."""
    now = time.time() if now is None else now
    wanted = []
    for environment in config.environments.values():
        every = config_mod.parse_duration(environment.backup_every) if environment.backup_every else None
        if every is None:
            continue
        for role in sorted(r.name for r in config.roles.values() if r.dbms):
            made = backups(config, environment.name, role)
            newest = datetime.fromisoformat(made[-1].created).timestamp() if made else 0.0
            if now - newest >= every:
                wanted.append((environment.name, role))
    return wanted


def scheduled(config: Config) -> list[Scheduled]:
    """Make the backups that are due (`fab watch` calls this at each look); one failure does not stop the rest."""
    if not ledger.ledger_path(config).exists():
        return []
    with ledger.opened(config) as led:
        serving = {(r.environment, r.role) for r in led.serving()}
    done = []
    for env, role in due(config):
        if (env, role) not in serving:
            continue
        try:
            done.append(Scheduled(env, role, backup(config, env, role)))
        except BackupError as exc:
            progress.detail(f"scheduled backup of {role} in {env} failed: {exc}")
            done.append(Scheduled(env, role, None, str(exc)))
    return done
