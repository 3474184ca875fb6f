"""`fab watch`: every new commit on the watched branch is an event that bakes what it changed.

An event exports the commit, reads that commit's own workbench.toml, works out
for each watched role a digest of the files that define it in the commit's tree
(the same files the bake hashes, `workbench.build.rolefiles`) and of its
settings, and bakes — with its tests — each role whose digest differs from the
last one baked successfully. A role that fails stays "changed" and is tried
again on the next commit. Freshly baked roles can be promoted to one environment.

What was processed survives restarts (`state.json`, written after each event),
every event is a JSON line in `events.jsonl`, and a loopback HTTP hook lets any
program fire an event at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from workbench.build import rolefiles
from workbench.core import config as config_mod
from workbench.core import progress
from workbench.core.config import Config
from workbench.core.errors import ConfigError, WorkbenchError
from workbench.core.files import appended_lines, write_whole
from workbench.core.inputs import hash_inputs
from workbench.ops.gitmirror import Commit, Mirror, resolve_source
from workbench.release import backup
from workbench.release.backup import Scheduled

SCHEMA = 1
SCOPE = "watch"

# (config of the commit's checkout, role) -> image reference. Raises WorkbenchError on failure.
BakeFn = Callable[[Config, str], str]
# (config, role, image, environment) -> what was released, in a few words.
PromoteFn = Callable[[Config, str, str, str], str]


@dataclass(frozen=True)
class Target:
    """What one watcher watches, resolved from [watch] and the command line."""

    source: str
    branch: str
    roles: tuple[str, ...]
    promote: str
    interval: int
    hook_port: int

    @property
    def key(self) -> str:
        return hash_inputs({"source": self.source, "branch": self.branch})[:12]


def target(config: Config, **overrides: Any) -> Target:
    """[watch] with the command line's non-empty overrides on top."""
    w = config.watch
    values: dict[str, Any] = {
        "repository": w.repository,
        "branch": w.branch,
        "promote": w.promote,
        "interval": w.interval,
        "hook_port": w.hook_port,
    }
    values.update({k: v for k, v in overrides.items() if v not in (None, "")})
    if values["promote"] and values["promote"] not in config.environments:
        raise ConfigError(
            f"watch: cannot promote to {values['promote']!r}: no such environment "
            f"({', '.join(config.environments)})"
        )
    return Target(
        source=resolve_source(str(values["repository"]), config.root),
        branch=str(values["branch"]),
        roles=tuple(w.roles),
        promote=str(values["promote"]),
        interval=int(values["interval"]),
        hook_port=int(values["hook_port"]),
    )


# --- records -------------------------------------------------------------------


@dataclass(frozen=True)
class RoleOutcome:
    role: str
    status: str  # baked | failed | promoted | promote-failed
    image: str = ""
    detail: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class Event:
    """One commit processed: what changed, what was baked, how it went."""

    commit: str
    subject: str
    trigger: str
    repository: str
    branch: str
    time: str
    status: str  # ok | failed | unchanged
    changed: tuple[str, ...] = ()
    outcomes: tuple[RoleOutcome, ...] = ()
    error: str = ""
    seconds: float = 0.0
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        body = {k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(cls)}}
        body["changed"] = tuple(body.get("changed", ()))
        body["outcomes"] = tuple(RoleOutcome(**o) for o in body.get("outcomes", ()))
        return cls(**body)


@dataclass
class State:
    """What survives a restart: the last commit processed and each role's last baked inputs."""

    source: str
    branch: str
    last_commit: str | None = None
    baked: dict[str, str] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, source: str, branch: str) -> State:
        if not path.is_file():
            return cls(source, branch)
        try:
            data = json.loads(path.read_text())
            return cls(source, branch, data.get("last_commit"), dict(data["baked"]), dict(data.get("images", {})))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise WorkbenchError(
                f"watch: cannot read {path} ({exc}); remove it to start over (every watched role is baked again)"
            ) from None

    def save(self, path: Path) -> None:
        write_whole(path, json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n")


def watch_dir(config: Config) -> Path:
    return config.state_dir / "watch"


def log_path(config: Config) -> Path:
    return watch_dir(config) / "events.jsonl"


def read_log(config: Config, limit: int = 0) -> list[Event]:
    """The recorded events, oldest first (the last `limit` of them if given)."""
    path = log_path(config)
    events = []
    for number, line in appended_lines(path):
        try:
            events.append(Event.from_dict(json.loads(line)))
        except (ValueError, TypeError) as exc:
            raise WorkbenchError(f"watch: {path} line {number} is not an event ({exc})") from None
    return events[-limit:] if limit else events


def _append_log(config: Config, event: Event) -> None:
    path = log_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(json.dumps(event.to_dict(), sort_keys=True) + "\n")


# --- role inputs -------------------------------------------------------------------


def role_digest(config: Config, role: str) -> str:
    """A digest of what decides the role's image in `config`'s tree: its files and its settings.

    The files are the bake's (`rolefiles.role_files`), read from the commit's
    checkout, so a commit to a state the role includes, or to a module its
    tests import, changes the digest as it changes the bake's inputs hash.
    """
    spec = config.roles[role]
    return hash_inputs(
        {
            "files": rolefiles.files_digest(config, spec),
            "role": dataclasses.asdict(spec),
            "common_states": list(config.workbench.common_states),
            "base": dataclasses.asdict(config.base),
            "builder": config.builder.type,
        }
    )


def commit_config(config: Config, checkout: Path) -> Config:
    """The commit's own workbench.toml, building into this watcher's prefix and state.

    The commit decides what is built (roles, base, builder); this machine
    decides where its services are (the package cache, the registry).
    """
    path = checkout / config_mod.CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"the commit has no {config_mod.CONFIG_FILE} at the top of its tree: nothing to bake")
    loaded = config_mod.load(path)
    settings = dataclasses.replace(
        loaded.workbench, prefix=config.prefix, state_dir=str(config.state_dir), checkout=str(checkout)
    )
    return dataclasses.replace(loaded, workbench=settings, cache=config.cache, registry=config.registry)


# --- the watcher -------------------------------------------------------------------


class Watcher:
    """Processes new commits of one branch; `poll` is one look, `serve` looks forever."""

    def __init__(self, config: Config, tgt: Target, bake: BakeFn, promote: PromoteFn | None = None) -> None:
        self.config = config
        self.target = tgt
        self.bake = bake
        self.promote = promote
        self.dir = watch_dir(config) / tgt.key
        self.mirror = Mirror(tgt.source, tgt.branch, self.dir / "repo.git")
        self.state_path = self.dir / "state.json"
        self.wake = threading.Event()
        self.stop = threading.Event()

    def poll(self, trigger: str = "poll") -> list[Event]:
        """Fetch the branch and process every commit not processed yet, oldest first."""
        self.mirror.check_source()
        head = self.mirror.fetch()
        state = State.load(self.state_path, self.target.source, self.target.branch)
        commits = self.mirror.new_commits(state.last_commit, head)
        if not commits:
            progress.detail(f"{self.target.branch} is at {head[:10]}: nothing new")
        events = []
        for commit in commits:
            event = self.process(commit, state, trigger)
            state.last_commit = commit.sha
            state.save(self.state_path)
            _append_log(self.config, event)
            events.append(event)
        return events

    def process(self, commit: Commit, state: State, trigger: str) -> Event:
        start = time.monotonic()
        progress.step(SCOPE, f"{commit.short} {commit.subject} ({trigger})")
        base = Event(
            commit=commit.sha,
            subject=commit.subject,
            trigger=trigger,
            repository=self.target.source,
            branch=self.target.branch,
            time=datetime.now(UTC).isoformat(timespec="seconds"),
            status="started",
        )
        checkout = self.dir / "checkout"
        try:
            cfg = commit_config(self.config, self.mirror.export(commit.sha, checkout))
            changed = self._changed_roles(cfg, state)
            progress.detail(f"changed roles: {', '.join(changed) if changed else 'none'}")
            outcomes = [o for role in changed for o in self._bake_one(cfg, role, commit.sha, state)]
        except WorkbenchError as exc:
            progress.detail(f"event failed: {exc}")
            seconds = round(time.monotonic() - start, 2)
            return dataclasses.replace(base, status="failed", error=str(exc), seconds=seconds)
        finally:
            self.mirror.remove_export(checkout)
        failed = any(o.status.endswith("failed") for o in outcomes)
        status = "failed" if failed else ("ok" if changed else "unchanged")
        progress.detail(f"event {status} in {time.monotonic() - start:.1f}s")
        return dataclasses.replace(
            base,
            status=status,
            changed=tuple(changed),
            outcomes=tuple(outcomes),
            seconds=round(time.monotonic() - start, 2),
        )

    def _changed_roles(self, cfg: Config, state: State) -> list[str]:
        watched = self.target.roles or tuple(cfg.roles)
        missing = [r for r in watched if r not in cfg.roles]
        if missing:
            raise ConfigError(
                f"[watch] roles names {', '.join(missing)}, which the commit's workbench.toml does not define"
            )
        digests = {role: role_digest(cfg, role) for role in watched}
        self._pending = digests
        return [role for role in watched if state.baked.get(role) != digests[role]]

    def _bake_one(self, cfg: Config, role: str, sha: str, state: State) -> list[RoleOutcome]:
        start = time.monotonic()
        try:
            image = self.bake(cfg, role)
        except Exception as exc:  # noqa: BLE001 - one broken bake, whatever broke, must not end the service
            detail = str(exc) if isinstance(exc, WorkbenchError) else f"{type(exc).__name__}: {exc}"
            progress.detail(f"{role}: bake failed: {detail}")
            return [RoleOutcome(role, "failed", detail=detail, seconds=round(time.monotonic() - start, 2))]
        state.baked[role] = self._pending[role]
        state.images[role] = image
        outcomes = [RoleOutcome(role, "baked", image=image, seconds=round(time.monotonic() - start, 2))]
        if self.target.promote and self.promote is not None:
            outcomes.append(self._promote_one(cfg, role, image))
        return outcomes

    def _promote_one(self, cfg: Config, role: str, image: str) -> RoleOutcome:
        assert self.promote is not None
        start = time.monotonic()
        env = self.target.promote
        try:
            detail = self.promote(cfg, role, image, env)
        except Exception as exc:  # noqa: BLE001 - as for bakes: record it, keep watching
            why = str(exc) if isinstance(exc, WorkbenchError) else f"{type(exc).__name__}: {exc}"
            progress.detail(f"{role}: promotion to {env} failed: {why}")
            return RoleOutcome(role, "promote-failed", image, f"{env}: {why}", round(time.monotonic() - start, 2))
        return RoleOutcome(role, "promoted", image, f"{env}: {detail}", round(time.monotonic() - start, 2))

    def serve(self, on_events: Callable[[list[Event]], None] | None = None) -> int:
        """Look at the branch every interval (or when woken by the hook) until stopped; events seen."""
        seen = 0
        trigger = "start"
        while not self.stop.is_set():
            try:
                events = self.poll(trigger)
            except WorkbenchError as exc:
                # The source was fine at start: a later failure (network, a removed
                # branch) is reported and retried, it does not end the service.
                progress.detail(f"look at {self.target.branch} failed: {exc}")
                events = []
            scheduled_backups(self.config)
            seen += len(events)
            if on_events and events:
                on_events(events)
            woken = self.wake.wait(self.target.interval)
            self.wake.clear()
            trigger = "hook" if woken else "poll"
        return seen


@contextlib.contextmanager
def lock(watcher: Watcher) -> Iterator[None]:
    """One watcher per repository and branch: a second one would bake everything twice."""
    watcher.dir.mkdir(parents=True, exist_ok=True)
    path = watcher.dir / "lock"
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "?"
            raise WorkbenchError(
                f"watch: another watcher (pid {pid}) already watches {watcher.target.branch} of "
                f"{watcher.target.source}; stop it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _stop_on_sigterm(watcher: Watcher) -> Iterator[None]:
    """systemd stops the service with SIGTERM: finish the current event, then leave."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        watcher.stop.set()
        watcher.wake.set()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True)
class Summary:
    source: str
    branch: str
    events: int
    failed: int
    hook: str
    backups: tuple[Scheduled, ...] = ()


def watch(
    config: Config,
    tgt: Target,
    *,
    once: bool = False,
    bake: BakeFn | None = None,
    promote: PromoteFn | None = None,
) -> Summary:
    """Run the watcher: one look with `once`, else until Ctrl-C or SIGTERM."""
    from workbench.ops import hook

    watcher = Watcher(config, tgt, bake or default_bake, promote or default_promote)
    with lock(watcher):
        head = watcher.mirror.check_source()
        progress.step(SCOPE, f"watching {tgt.branch} of {tgt.source} (head {head[:10]})")
        if once:
            events = watcher.poll("once")
            backups = scheduled_backups(config)
            return Summary(tgt.source, tgt.branch, len(events), _failures(events), "", backups)
        seen: list[Event] = []
        with contextlib.ExitStack() as stack:
            address = ""
            if tgt.hook_port:
                address = stack.enter_context(hook.serving(tgt.hook_port, watcher.wake, watcher.state_path))
                progress.step(SCOPE, f"hook listening: curl -X POST http://{address}/hook")
            stack.enter_context(_stop_on_sigterm(watcher))
            try:
                watcher.serve(seen.extend)
            except KeyboardInterrupt:
                # Ctrl-C in the foreground: the event under way was not recorded,
                # so the next start processes its commit again.
                progress.detail("interrupted")
            return Summary(tgt.source, tgt.branch, len(seen), _failures(seen), address)


def _failures(events: list[Event]) -> int:
    return sum(1 for e in events if e.status == "failed")


# --- scheduled backups ------------------------------------------------------------------


def scheduled_backups(config: Config) -> tuple[Scheduled, ...]:
    """The database backups `[environments.<env>] backup_every` says are due, made at each look.

    The watcher's own configuration decides (not the commit's): where its
    databases run and how often they are backed up is this machine's business.
    """
    done = tuple(backup.scheduled(config))
    for item in done:
        if item.backup is not None:
            progress.step(SCOPE, f"backup of {item.role} in {item.environment}: {item.backup.name}")
    return done


# --- the real bake and promotion -------------------------------------------------------


def default_bake(config: Config, role: str) -> str:
    """Bake `role` with its tests through the bake pipeline."""
    from workbench.build import bake

    return bake.bake_role(config, role).tag


def default_promote(config: Config, role: str, image: str, environment: str) -> str:
    """Promote the freshly baked `role` to `environment`."""
    from workbench.release import releases as release

    # Exactly the image the event baked (`workbench/app:7`), not whatever is newest by then.
    number = image.rsplit(":", 1)[-1]
    record = release.promote(config, role, environment, version=int(number) if number.isdigit() else None)
    return record.tag


# --- the systemd unit -------------------------------------------------------------------


def systemd_unit(config: Config, fab: Path) -> str:
    """A unit running `fab watch` in the foreground, restarted if it dies."""
    return (
        "[Unit]\n"
        f"Description=workbench watcher ({config.prefix}): bake on new commits of {config.watch.branch}\n"
        "After=network-online.target docker.service\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"WorkingDirectory={config.root}\n"
        f"Environment={config_mod.ENV_CONFIG}={config.path}\n"
        "Environment=PYTHONUNBUFFERED=1\n"
        f"ExecStart={fab} watch\n"
        "Restart=on-failure\n"
        "RestartSec=10\n"
        # SIGTERM lets the current event finish; a bake can take minutes.
        "KillSignal=SIGTERM\n"
        "TimeoutStopSec=900\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )
