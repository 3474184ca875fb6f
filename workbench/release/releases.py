"""Releases: promote a verified image into an environment, roll back by tag, read the ledger.

A promote or rollback is one sequence, each step recorded in the ledger's intent
before the next begins:

    allocated  tag taken (app-12), nothing changed yet
    pushed     image in the registry as <repo>:app-12, referred to by digest
    started    the new instances running beside the old ones
    switched   the frontend sends requests to the new instances

then the old instances stop and the final record replaces the intent in one
transaction. A stateful role (`[roles.<r>] data`) never runs two instances on
its data: it pauses the old release cleanly first (step `paused`), and a new
release that does not become healthy is removed and the old one resumed on the
same data. A command that finds an intent left by a killed process (its lock
is free) recovers it before doing anything else: up to `started` it undoes the
promote (new instances removed, frontend pointed back at the release the ledger
names, record `aborted`); after `switched` it finishes it (old instances
stopped, record `released`). Either way the environment serves what the ledger
says it serves. Where the instances run is the environment's deploy `Target`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from workbench.build import images
from workbench.core import engine, progress
from workbench.core.config import Config, Environment, Role
from workbench.core.errors import ConfigError, DeployFailed, ReleaseError
from workbench.release import dbpool, ledger, registry
from workbench.release.docker import DockerTarget
from workbench.release.ledger import ABORTED, FAILED, PROMOTE, RELEASED, ROLLBACK, Intent, Ledger, Release
from workbench.release.target import BootImage, DataVolume, Instance, Plan, Target, serves_frontend

# Test hook: stop for a while after a step, so a test can kill -9 us there.
PAUSE_ENV = "WORKBENCH_PAUSE_AT"
PAUSE_SECONDS_ENV = "WORKBENCH_PAUSE_SECONDS"


def _pause(step: str) -> None:
    if os.environ.get(PAUSE_ENV) == step:
        progress.detail(f"paused after {step} ({PAUSE_ENV})")
        time.sleep(float(os.environ.get(PAUSE_SECONDS_ENV, "300")))


def target_for(config: Config, environment: Environment) -> Target:
    """The deploy target an environment names (`[environments.<env>] target`)."""
    if environment.target == "docker":
        return DockerTarget(config)
    if environment.target == "openstack":
        # Imported when asked for: openstacksdk takes longer to import than a warm rollback takes.
        from workbench.release.openstack import OpenStackTarget

        return OpenStackTarget(config)
    raise ConfigError(f"[environments.{environment.name}] target = {environment.target!r}: no such deploy target")


# --- promote and rollback ----------------------------------------------------


def promote(
    config: Config,
    role: str,
    env: str,
    version: int | None = None,
    message: str = "",
    target: Target | None = None,
) -> Release:
    """Put the role's newest verified image (or `version`) into environment `env`; the new record.

    `promote(config, "app", "staging", message="new login page").tag == "app-12"`
    """
    role_cfg = config.role(role)
    environment = config.environment(env)
    image_id = images.newest_verified(config, role_cfg.name, version)
    labels = _labels(image_id)
    target = target or target_for(config, environment)
    with ledger.opened(config) as led, _exclusive(config, led, target, environment, role_cfg) as current:
        draft = _draft(config, role_cfg, environment, PROMOTE, image_id, labels, current, message)
        return _carry_out(config, led, target, draft)


def rollback(
    config: Config,
    tag: str | None = None,
    env: str | None = None,
    role: str | None = None,
    message: str = "",
    target: Target | None = None,
) -> Release:
    """Put release `tag`'s digest back (or, with `env` and `role`, the promote before the current one).

    `rollback(config, "app-11")` or `rollback(config, env="staging", role="app")`
    """
    environment = env
    if tag:
        ledger.parse_tag(tag)
    elif not (environment and role):
        raise ConfigError("rollback needs a release tag (app-12), or --env and --role to go back one release")
    with ledger.opened(config) as led:
        wanted = _rollback_target(led, tag, environment, role) if tag else None
        where = config.environment(wanted.environment if wanted else environment or "")
        role_cfg = config.role(wanted.role if wanted else role or "")
        target = target or target_for(config, where)
        with _exclusive(config, led, target, where, role_cfg) as current:
            if wanted is None:
                wanted = _previous(led, where.name, role_cfg.name, current)
            if current is not None and current.image_id == wanted.image_id:
                raise ReleaseError(f"{wanted.tag}'s image already serves {role_cfg.name} in {where.name} "
                                   f"(as {current.tag}): nothing to roll back")
            standby = _warm_standby(led, target, where, role_cfg, wanted)
            image_id = wanted.image_id if standby else _image_of(config, wanted)
            draft = _draft(config, role_cfg, where, ROLLBACK, image_id, _labels(image_id), current,
                           message or f"rollback to {wanted.tag}")
            # On a cloud, the very image the release booted (by id and checksum), not whatever has its name now.
            draft = dataclasses.replace(draft, rollback_of=wanted.tag, version=wanted.version, image=wanted.image,
                                        boot_image=wanted.boot_image, boot_checksum=wanted.boot_checksum)
            if standby:
                draft = dataclasses.replace(draft, runs=standby, path="warm", digest=wanted.digest)
                return _switch_back(config, led, target, draft)
            return _carry_out(config, led, target, dataclasses.replace(draft, path="cold"))


def _warm_standby(led: Ledger, target: Target, env: Environment, role: Role, wanted: Release) -> str | None:
    """The standby's tag when `wanted` still runs as the role's unexpired warm standby."""
    recorded = led.standbys().get((env.name, role.name))
    if role.data or recorded is None:
        return None
    tag, until = recorded
    if tag != wanted.instances_tag or until <= time.time():
        return None
    return tag if target.instances(env, tag=tag) else None


def _switch_back(config: Config, led: Ledger, target: Target, draft: Release) -> Release:
    """A rollback to the warm standby: the frontend switches back to its running instances."""
    env = config.environment(draft.environment)
    role = config.role(draft.role)
    intent = led.begin(draft)
    release = intent.release
    scope = f"{release.action} {release.tag}"
    try:
        standby = target.instances(env, tag=release.runs)
        progress.step(scope, f"switching {env.name} back to the warm standby {', '.join(i.name for i in standby)}")
        target.switch(env, role, standby)
    except DeployFailed as exc:
        _undo_or_explain(config, led, target, intent, FAILED, exc, True)
        raise DeployFailed(f"{release.tag} was not switched to ({release.replaces} keeps serving; recorded as "
                           f"failed): {exc}") from None
    except BaseException as exc:
        _undo_or_explain(config, led, target, intent, ABORTED, exc, True)
        raise
    intent = led.advance(intent, "switched")
    _pause("switched")
    return _complete(config, led, target, intent, release)


@contextmanager
def _exclusive(
    config: Config, led: Ledger, target: Target, env: Environment, role: Role
) -> Iterator[Release | None]:
    """Hold the environment+role lock, recover what a killed command left, yield the current release."""
    with ledger.locked(config, env.name, role.name):
        for intent in led.intents(env.name, role.name):
            _recover(config, led, target, intent)
        _expire_standby(config, led, target, env.name, role.name)
        yield led.current(env.name, role.name)


def _expire_standby(config: Config, led: Ledger, target: Target, env: str, role: str) -> None:
    """Stop the role's standby once its time is up (under the environment+role lock)."""
    recorded = led.standbys().get((env, role))
    if recorded is None or recorded[1] > time.time():
        return
    progress.step(f"standby {recorded[0]}", f"its {config.environment(env).standby}s are up: stopping it")
    target.stop(config.environment(env), recorded[0])
    led.clear_standby(env, role)


def _labels(image_id: str) -> dict[str, str]:
    image = engine.get_image(image_id)
    if image is None:
        raise ReleaseError(f"image {image_id[:19]} vanished from the local engine")
    return dict(image.labels or {})


def _draft(
    config: Config,
    role: Role,
    env: Environment,
    action: str,
    image_id: str,
    labels: dict[str, str],
    current: Release | None,
    message: str,
) -> Release:
    version = int(labels.get("workbench.version", "0") or 0)
    return Release(
        tag="",
        role=role.name,
        environment=env.name,
        action=action,
        status=RELEASED,
        version=version,
        image=f"{config.prefix}/{role.name}:{version}",
        image_id=image_id,
        digest="",
        repository=f"{config.registry.host}:{config.registry.port}/{config.prefix}/{role.name}",
        inputs=labels.get(engine.INPUTS_LABEL, ""),
        verify=labels.get("workbench.verify", ""),
        replaces=current.tag if current else None,
        rollback_of=None,
        who=ledger.who(),
        at=ledger.now(),
        message=message,
        target=env.target,
    )


def _carry_out(config: Config, led: Ledger, target: Target, draft: Release) -> Release:
    """Push, (pause the old,) start, check, switch, stop the old: each step recorded before the next."""
    env = config.environment(draft.environment)
    role = config.role(draft.role)
    if role.data and env.replicas > 1:
        raise ConfigError(
            f"role {role.name} keeps data ([roles.{role.name}] data) and runs one instance per environment, but "
            f"[environments.{env.name}] replicas = {env.replicas}: set replicas = 1 there"
        )
    if role.data and env.target != "docker":
        raise ConfigError(
            f"role {role.name} keeps data ([roles.{role.name}] data) and [environments.{env.name}] target = "
            f"{env.target!r}: only the Docker target keeps a role's data across releases; promote it into an "
            "environment with target = \"docker\""
        )
    intent = led.begin(draft)
    release = intent.release
    scope = f"{draft.action} {release.tag}"
    progress.step(scope, f"{release.image} ({release.image_id[7:19]}) into {env.name}"
                  + (f", replacing {release.replaces}" if release.replaces else ""))
    switching = False
    try:
        reg = registry.ensure(config)
        progress.step(scope, f"pushing {release.repository}:{release.tag}")
        digest = registry.push(reg, release.image_id, release.repository, release.tag)
        release = dataclasses.replace(release, digest=digest)
        # A deployed pool's members (db1, db2) are the release's instances.
        plan = Plan(role, env, release.tag, release.version, release.image_id, digest,
                    dbpool.members(config, role, env))
        recorded = BootImage(release.boot_image, release.boot_checksum) if release.boot_image else None
        boot = target.stage(plan, recorded)
        if boot is not None:
            plan = dataclasses.replace(plan, boot=boot)
            release = dataclasses.replace(release, boot_image=boot.id, boot_checksum=boot.checksum)
        intent = led.advance(intent, "pushed", release)
        _pause("pushed")
        if role.data and release.replaces:
            # One writer on the data at a time: the old release stops before the new one starts.
            progress.step(scope, f"stopping {release.replaces} cleanly (its data stays for {release.tag})")
            switching = True
            target.pause(env, release.replaces)
            intent = led.advance(intent, "paused")
            _pause("paused")
        progress.step(scope, f"starting {', '.join(target.names(plan))} ({digest[:19]})")
        started = target.start(plan)
        intent = led.advance(intent, "started", instances=[i.name for i in started])
        _pause("started")
        where = ", ".join(i.address or i.name for i in started)
        progress.step(scope, f"waiting for {role.health or 'its command to run'} on {where}")
        target.wait_healthy(plan, started)
        dbpool.after_healthy(config, target, plan, started)  # accounts, replicas following the primary
        progress.step(scope, f"switching the {env.name} frontend to {where}" if serves_frontend(env, role)
                      else "healthy")
        switching = True
        target.switch(env, role, started)
    except DeployFailed as exc:
        _undo_or_explain(config, led, target, intent, FAILED, exc, switching)
        kept = f"{release.replaces} keeps serving" if release.replaces else "nothing was serving before"
        raise DeployFailed(f"{release.tag} was not switched to ({kept}; recorded as failed): {exc}") from None
    except BaseException as exc:
        _undo_or_explain(config, led, target, intent, ABORTED, exc, switching)
        raise
    intent = led.advance(intent, "switched")
    _pause("switched")
    return _complete(config, led, target, intent, release)


def _complete(config: Config, led: Ledger, target: Target, intent: Intent, release: Release) -> Release:
    """The new release serves: the one it replaced becomes the warm standby, anything older stops."""
    env = config.environment(release.environment)
    role = config.role(release.role)
    scope = f"{release.action} {release.tag}"
    keep = release.instances_tag
    previous = led.get(release.replaces) if release.replaces else None
    standby = previous.instances_tag if previous and env.standby and not role.data else None
    replaced: dict[str, list[str]] = {}
    if previous is not None:
        # Paused, for a stateful role: not among the running instances.
        replaced[previous.instances_tag] = []
    for instance in target.instances(env, release.role):
        if instance.tag != keep:
            replaced.setdefault(instance.tag, []).append(instance.name)
    replaced.pop(keep, None)
    for old, names in replaced.items():
        if old == standby and names:
            progress.step(scope, f"keeping {', '.join(names)} as a warm standby for {env.standby}s")
            target.hold(env, old, standby=True)
            continue
        progress.step(scope, f"stopping {', '.join(names) or old}")
        target.stop(env, old)
    # A warm rollback's instances were the standby until now.
    target.hold(env, keep, standby=False)
    done = led.finish(intent, release)
    if standby and replaced.get(standby):
        led.set_standby(env.name, role.name, standby, time.time() + env.standby)
    else:
        led.clear_standby(env.name, role.name)
    progress.step(scope, f"{release.tag} serves {release.role} in {env.name}")
    return done


def _undo_or_explain(
    config: Config, led: Ledger, target: Target, intent: Intent, status: str, exc: BaseException, repoint: bool
) -> None:
    why = str(exc) if isinstance(exc, DeployFailed) else f"{type(exc).__name__}: {exc}"
    try:
        _undo(config, led, target, intent, status, why, repoint)
    except Exception as undo_exc:
        # The intent stays in the ledger: the next release command retries the undo.
        raise DeployFailed(
            f"{intent.tag} failed ({why}) and undoing it failed too ({undo_exc}); "
            "the next release command retries the undo (`fab release.list`)"
        ) from None


def _undo(
    config: Config, led: Ledger, target: Target, intent: Intent, status: str, why: str, repoint: bool
) -> None:
    """Back to what the ledger says serves: new instances gone, frontend on the current release.

    `repoint` when the frontend may already point at the new container (the
    switch was under way).
    """
    release = intent.release
    env = config.environment(release.environment)
    role = config.role(release.role)
    # The new instances go first: a stateful role's old release resumes on the same data.
    target.stop(env, release.tag)
    current = led.current(env.name, role.name)
    serving: tuple[Instance, ...] = ()
    if current is not None:
        # A stateful role's current release may be paused (or half-paused by a killed command).
        serving = _resume(config, target, current) if role.data else target.instances(env, tag=current.instances_tag)
    if repoint and serves_frontend(env, role) and (serving or current is None):
        target.switch(env, role, serving)
    led.finish(intent, dataclasses.replace(release, status=status, detail=why))


def _recover(config: Config, led: Ledger, target: Target, intent: Intent) -> None:
    release = intent.release
    scope = f"recover {release.tag}"
    when = f"interrupted after '{intent.step}' (pid {intent.pid}, {intent.started})"
    if intent.step == "switched":
        progress.step(scope, f"{when}: the frontend already serves it, finishing the {release.action}")
        _complete(config, led, target, intent, dataclasses.replace(release, detail=f"{when}; completed by recovery"))
        return
    progress.step(scope, f"{when}: undoing it")
    _undo(config, led, target, intent, ABORTED, f"{when}; undone by recovery", intent.step in ("paused", "started"))


def _resume(config: Config, target: Target, release: Release) -> tuple[Instance, ...]:
    """Run `release`'s paused instances (and their stopped services) again; healthy when it returns."""
    env = config.environment(release.environment)
    role = config.role(release.role)
    resumed = target.resume(env, release.instances_tag)
    if resumed:
        progress.step(f"resume {release.tag}", f"{release.tag} serves again on its data")
        plan = Plan(role, env, release.tag, release.version, release.image_id, release.digest)
        target.wait_healthy(plan, resumed)
    return resumed


def recover_all(config: Config, target: Target | None = None) -> list[str]:
    """Recover every intent whose command is gone (its lock is free); the tags recovered."""
    path = ledger.ledger_path(config)
    if not path.exists():
        return []
    done = []
    with ledger.opened(config) as led:
        for intent in led.intents():
            release = intent.release
            with ledger.locked(config, release.environment, release.role, wait=False) as free:
                # Re-read under the lock: the holder may have finished meanwhile.
                if free and any(i.tag == intent.tag for i in led.intents()):
                    env = config.environment(release.environment)
                    _recover(config, led, target or target_for(config, env), intent)
                    done.append(release.tag)
        for (env_name, role), (_, until) in led.standbys().items():
            if until <= time.time() and env_name in config.environments:
                with ledger.locked(config, env_name, role, wait=False) as free:
                    if free:
                        env = config.environment(env_name)
                        _expire_standby(config, led, target or target_for(config, env), env_name, role)
    return done


def standbys(config: Config) -> dict[tuple[str, str], tuple[str, float]]:
    """{(environment, role): (tag, until)}: the warm standbys running now."""
    if not ledger.ledger_path(config).exists():
        return {}
    with ledger.opened(config) as led:
        return led.standbys()


def _rollback_target(led: Ledger, tag: str, environment: str | None, role: str | None) -> Release:
    wanted = led.get(tag)
    if wanted is None:
        raise ReleaseError(f"no release {tag!r} in the ledger ({led.path}): `fab release.history` lists them")
    if environment and wanted.environment != environment:
        raise ReleaseError(f"{tag} was never released in {environment} (it is a release of {wanted.environment}); "
                           f"promote its image there with `fab release.promote {wanted.role} --env {environment} "
                           f"--version {wanted.version}`")
    if role and wanted.role != role:
        raise ReleaseError(f"{tag} is a release of role {wanted.role}, not {role}")
    if wanted.status != RELEASED:
        why = wanted.detail.splitlines()[0] if wanted.detail else "no detail"
        raise ReleaseError(f"{tag} never served ({wanted.status}: {why}): only released tags can be rolled back to")
    return wanted


def _origin(led: Ledger, release: Release) -> Release:
    """The promote a rollback (of a rollback...) put back."""
    seen = set()
    while release.action == ROLLBACK and release.rollback_of and release.tag not in seen:
        seen.add(release.tag)
        release = led.get(release.rollback_of) or release
    return release


def _previous(led: Ledger, environment: str, role: str, current: Release | None) -> Release:
    """The promote before the one now serving: `git reset --hard HEAD~1` for a role."""
    if current is None:
        raise ReleaseError(f"nothing of role {role} was ever released in {environment}: nothing to roll back")
    origin = _origin(led, current)
    promotes = [r for r in led.history(environment, role) if r.status == RELEASED and r.action == PROMOTE]
    tags = [r.tag for r in promotes]
    earlier = promotes[: tags.index(origin.tag)] if origin.tag in tags else []
    earlier = [r for r in earlier if r.image_id != current.image_id]
    if not earlier:
        raise ReleaseError(f"no release of {role} in {environment} before {origin.tag}: nothing to go back to")
    return earlier[-1]


def _image_of(config: Config, release: Release) -> str:
    """The release's image in the local engine, fetched from the registry by digest if need be."""
    if engine.get_image(release.image_id) is not None:
        return release.image_id
    if release.digest:
        reg = registry.ensure(config)
        try:
            progress.step("rollback", f"fetching {release.repository}@{release.digest[:19]} from the registry")
            return registry.pull(reg, release.repository, release.digest)
        except ReleaseError:
            pass
    raise ReleaseError(
        f"the image of {release.tag} ({release.image_id[:19]}, {release.digest or 'never pushed'}) is gone: "
        "neither the local engine nor the registry holds it, so it cannot be rolled back to"
    )


# --- taking an environment down ------------------------------------------------------


@dataclass(frozen=True)
class Down:
    """What `release.down` stopped, and the data it kept or deleted."""

    environment: str
    roles: tuple[str, ...]  # roles whose release no longer serves (the ledger marks them down)
    stopped: tuple[str, ...]  # instances (and the frontend) stopped and removed
    kept: tuple[DataVolume, ...]
    purged: tuple[DataVolume, ...]


def down(config: Config, env: str, role: str | None = None, purge_data: bool = False) -> Down:
    """Stop what `env` runs (or one role of it); its data stays unless `purge_data`.

    No record is removed: the ledger marks each role down, recovery never brings
    it back, and the next promote or rollback does.
    """
    environment = config.environment(env)
    roles = [config.role(role).name] if role else sorted(config.roles)
    target = target_for(config, environment)
    with ledger.opened(config) as led, contextlib.ExitStack() as locks:
        for name in roles:
            locks.enter_context(ledger.locked(config, environment.name, name))
        for intent in led.intents(environment.name):
            if intent.release.role in roles:
                _recover(config, led, target, intent)
        serving = {r.role: r for r in led.serving() if r.environment == environment.name and r.role in roles}
        stopped = target.down(environment, role)
        for name, release in sorted(serving.items()):
            led.mark_down(environment.name, name, release.tag)
        for name in roles:
            led.clear_standby(environment.name, name)
        volumes = tuple(v for name in roles for v in target.data_volumes(environment, config.role(name)))
        purged: tuple[DataVolume, ...] = ()
        if purge_data:
            for volume in volumes:
                progress.step(f"down {environment.name}", f"deleting {volume.name}: the {volume.path} of "
                              f"{volume.role} in {environment.name}, for good")
                target.remove_data(volume)
            purged, volumes = volumes, ()
    return Down(environment.name, tuple(sorted(serving)), stopped, volumes, purged)


# --- reading -----------------------------------------------------------------


def current(config: Config) -> list[Release]:
    """What serves each role in each environment."""
    recover_all(config)
    with ledger.opened(config) as led:
        return led.serving()


def history(config: Config, env: str | None = None, role: str | None = None) -> list[Release]:
    """Every record (oldest first), optionally of one environment and role."""
    environment = env
    if environment:
        config.environment(environment)
    if role:
        role = config.role(role).name
    recover_all(config)
    with ledger.opened(config) as led:
        return led.history(environment, role)


def show(config: Config, tag: str) -> tuple[Release, bool]:
    """A release record, and whether it is pinned."""
    ledger.parse_tag(tag)
    recover_all(config)
    with ledger.opened(config) as led:
        found = led.get(tag)
        if found is None:
            raise ReleaseError(f"no release {tag!r} in the ledger ({led.path}): `fab release.history` lists them")
        return found, tag in led.pins()


def pin(config: Config, tag: str) -> bool:
    """Keep `tag` rollback-able forever; False if it already was pinned."""
    ledger.parse_tag(tag)
    with ledger.opened(config) as led:
        return led.pin(tag)


# --- retention -----------------------------------------------------------------


def prune(config: Config, dry_run: bool = False) -> list[str]:
    """Remove images of releases outside every retention window; what was (or would be) removed.

    Kept: the last `retention` released records of each environment and role,
    pinned releases, anything in progress (ledger.needed), and images a
    container still uses. The registry keeps every released tag. On the cloud,
    a release's glance image goes by the same rule (`boot_image`).
    """
    if not ledger.ledger_path(config).exists():
        return []
    needed = ledger.needed(config)
    keep = {r.image_id for r in needed}
    in_use = {c.attrs.get("Image") for c in engine.containers({engine.PREFIX_LABEL: config.prefix})}
    with ledger.opened(config) as led:
        records = led.history()
    removed: list[str] = []
    for image_id in dict.fromkeys(r.image_id for r in records):
        if image_id in keep or image_id in in_use or engine.get_image(image_id) is None:
            continue
        tags = ", ".join(r.tag for r in records if r.image_id == image_id)
        removed.append(f"{image_id[7:19]} (releases {tags})")
        if not dry_run:
            engine.remove_image(image_id)
    removed += _prune_boot_images(config, records, {r.boot_image for r in needed}, dry_run)
    return removed


def _prune_boot_images(config: Config, records: list[Release], keep: set[str], dry_run: bool) -> list[str]:
    """The cloud's images of releases outside every window (an image two releases share stays while either
    is kept); the cloud is asked only when there is one to remove."""
    stale: dict[str, list[Release]] = {}
    for record in records:
        if record.boot_image and record.boot_image not in keep and record.environment in config.environments:
            stale.setdefault(record.boot_image, []).append(record)
    removed = []
    for boot_image, users in stale.items():
        target = target_for(config, config.environment(users[0].environment))
        if not target.has_boot_image(boot_image):
            continue
        removed.append(f"glance image {boot_image} (releases {', '.join(r.tag for r in users)})")
        if not dry_run:
            target.remove_boot_image(boot_image)
    return removed
