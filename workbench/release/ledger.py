"""The release ledger: every promotion and rollback, as immutable records in SQLite.

The ledger lives in `<state_dir>/ledger.sqlite` (WAL mode, so readers never wait
for a writer). Records are append-only: triggers refuse any UPDATE or DELETE of
a release. A promote in progress is an *intent* row, written in the same
transaction that allocates its tag; the intent names how far the promote got
(`allocated`, `pushed`, `started`, `switched`) so that the next command can
finish or undo a promote that was killed (see release.recover).

Tags are `<role>-<N>`, N global per role and never reused: the counter moves in
the transaction that creates the intent, so a failed or aborted promote still
consumes its number.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from workbench.core import files
from workbench.core.config import Config
from workbench.core.errors import LedgerError, ReleaseError

# 2: records say which instances serve them (`runs`) and how a rollback went
# (`path`); the standbys and downs tables. 3: where a release ran (`target`) and,
# on a cloud, the image it booted (`boot_image`, `boot_checksum`). Older records
# read with the defaults: they ran on the Docker engine.
SCHEMA = 3
LEDGER_FILE = "ledger.sqlite"
TAG_RE = re.compile(r"^(?P<role>[a-z][a-z0-9]*)-(?P<number>[1-9][0-9]*)$")

# How a record ended: it served (released), its health check failed (failed),
# or it was interrupted and undone by a later command (aborted).
RELEASED, FAILED, ABORTED = "released", "failed", "aborted"
STATUSES = (RELEASED, FAILED, ABORTED)
PROMOTE, ROLLBACK = "promote", "rollback"
# Steps of a promote, in order; an intent records the last one completed. A
# stateful role pauses the release it replaces before starting the new one.
STEPS = ("allocated", "pushed", "paused", "started", "switched")

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (role TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS releases (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tag TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    environment TEXT NOT NULL,
    status TEXT NOT NULL,
    image_id TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS releases_env_role ON releases (environment, role, seq);
CREATE TRIGGER IF NOT EXISTS releases_no_update BEFORE UPDATE ON releases
    BEGIN SELECT RAISE(ABORT, 'release records are immutable'); END;
CREATE TRIGGER IF NOT EXISTS releases_no_delete BEFORE DELETE ON releases
    BEGIN SELECT RAISE(ABORT, 'release records are never deleted'); END;
CREATE TABLE IF NOT EXISTS intents (
    tag TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    environment TEXT NOT NULL,
    step TEXT NOT NULL,
    data TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started TEXT NOT NULL,
    UNIQUE (environment, role)
);
CREATE TABLE IF NOT EXISTS pins (tag TEXT PRIMARY KEY, who TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS standbys (
    environment TEXT NOT NULL,
    role TEXT NOT NULL,
    tag TEXT NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (environment, role)
);
CREATE TABLE IF NOT EXISTS downs (
    environment TEXT NOT NULL,
    role TEXT NOT NULL,
    tag TEXT NOT NULL,
    who TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (environment, role)
);
"""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def who() -> str:
    """The person behind the command (through sudo, the one who ran sudo)."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


def parse_tag(tag: str) -> tuple[str, int]:
    """`app-12` -> ("app", 12), or a ReleaseError on anything else."""
    match = TAG_RE.match(tag)
    if not match:
        raise ReleaseError(f"{tag!r} is not a release tag: tags look like <role>-<number>, e.g. app-12")
    return match["role"], int(match["number"])


@dataclass(frozen=True)
class Release:
    """One record of the ledger: a promotion or a rollback into one environment."""

    tag: str
    role: str
    environment: str
    action: str  # promote | rollback
    status: str  # released | failed | aborted
    version: int  # the baked image's version (`app:7`)
    image: str  # the local name it was promoted from (`workbench/app:7`)
    image_id: str  # the engine's image id (sha256:...)
    digest: str  # the registry manifest digest (sha256:...), "" if never pushed
    repository: str  # registry repository (`127.0.0.1:5000/workbench/app`)
    inputs: str  # the image's inputs hash (workbench.inputs)
    verify: str  # the image's verification result (workbench.verify)
    replaces: str | None  # the tag serving before this one, if any
    rollback_of: str | None  # for a rollback: the release whose image is put back
    who: str
    at: str
    message: str = ""
    detail: str = ""  # why a promote failed or was aborted
    runs: str = ""  # the release whose instances serve this one ("" for its own; a warm rollback reuses a standby's)
    path: str = ""  # how a rollback went: "warm" (a standby switched back in) or "cold" (instances started)
    target: str = "docker"  # the environment's deploy target when it was released
    boot_image: str = ""  # on a cloud: the image service's id of what its servers booted
    boot_checksum: str = ""  # ...and the checksum the image service computed of it
    schema: int = SCHEMA

    @property
    def instances_tag(self) -> str:
        """The tag the deploy target knows this release's instances by."""
        return self.runs or self.tag

    @property
    def reference(self) -> str:
        """The image by digest in the registry (`127.0.0.1:5000/workbench/app@sha256:...`)."""
        return f"{self.repository}@{self.digest}" if self.digest else self.image_id

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Release:
        schema = data.get("schema", 0)
        if not isinstance(schema, int) or schema > SCHEMA or schema < 1:
            raise LedgerError(
                f"release record {data.get('tag')!r} has schema {schema!r}; this workbench reads schema {SCHEMA} "
                "(update the workbench, or the ledger was written by something else)"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        missing = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING} - set(data)
        if missing:
            raise LedgerError(f"release record {data.get('tag')!r} lacks {', '.join(sorted(missing))}")
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Intent:
    """A promote or rollback in progress: its draft record and how far it got."""

    release: Release
    step: str
    pid: int
    started: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return self.release.tag


class Ledger:
    """The open ledger. Writes are short BEGIN IMMEDIATE transactions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA busy_timeout=60000")
            # executescript commits as it goes; every statement is idempotent.
            self.db.executescript(_DDL)
            with self.transaction():
                self._check_schema()
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"the ledger {path} is unreadable: {exc} (move it aside to start a new one)") from None

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _check_schema(self) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA),))
        elif int(row[0]) > SCHEMA:
            raise LedgerError(f"the ledger {self.path} has schema {row[0]}, newer than this workbench's {SCHEMA}")
        elif int(row[0]) < SCHEMA:
            # Every change so far only added tables (made above) and fields with defaults.
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA),))

    # --- intents -----------------------------------------------------------

    def begin(self, draft: Release, data: dict[str, Any] | None = None) -> Intent:
        """Allocate the draft's tag and record the intent, in one transaction."""
        with self.transaction() as db:
            busy = db.execute(
                "SELECT tag FROM intents WHERE environment = ? AND role = ?", (draft.environment, draft.role)
            ).fetchone()
            if busy:
                raise LedgerError(
                    f"{busy[0]} is still in progress in {draft.environment} (or was interrupted and not yet recovered)"
                )
            db.execute("INSERT OR IGNORE INTO counters (role, last) VALUES (?, 0)", (draft.role,))
            db.execute("UPDATE counters SET last = last + 1 WHERE role = ?", (draft.role,))
            (number,) = db.execute("SELECT last FROM counters WHERE role = ?", (draft.role,)).fetchone()
            release = dataclasses.replace(draft, tag=f"{draft.role}-{number}")
            intent = Intent(release, STEPS[0], os.getpid(), now(), dict(data or {}))
            db.execute(
                "INSERT INTO intents (tag, role, environment, step, data, pid, started) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (release.tag, release.role, release.environment, intent.step, self._intent_json(intent),
                 intent.pid, intent.started),
            )
        return intent

    def advance(self, intent: Intent, step: str, release: Release | None = None, **data: Any) -> Intent:
        """Record that `intent` completed `step` (and what the next command needs to know)."""
        if step not in STEPS:
            raise ValueError(step)
        updated = Intent(release or intent.release, step, intent.pid, intent.started, {**intent.data, **data})
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE intents SET step = ?, data = ? WHERE tag = ?", (step, self._intent_json(updated), intent.tag)
            )
            if cursor.rowcount != 1:
                raise LedgerError(f"the intent of {intent.tag} vanished from {self.path}")
        return updated

    def finish(self, intent: Intent, release: Release) -> Release:
        """Write the final record and drop the intent, atomically."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO releases (tag, role, environment, status, image_id, record) VALUES (?, ?, ?, ?, ?, ?)",
                (release.tag, release.role, release.environment, release.status, release.image_id,
                 json.dumps(release.to_dict(), sort_keys=True)),
            )
            db.execute("DELETE FROM intents WHERE tag = ?", (intent.tag,))
            if release.status == RELEASED:
                # A release that serves brings its environment back up.
                db.execute("DELETE FROM downs WHERE environment = ? AND role = ?", (release.environment, release.role))
        return release

    def intents(self, environment: str | None = None, role: str | None = None) -> list[Intent]:
        rows = self.db.execute("SELECT step, data, pid, started FROM intents ORDER BY started").fetchall()
        found = []
        for step, data, pid, started in rows:
            body = json.loads(data)
            intent = Intent(Release.from_dict(body["release"]), step, pid, started, body["data"])
            if environment in (None, intent.release.environment) and role in (None, intent.release.role):
                found.append(intent)
        return found

    @staticmethod
    def _intent_json(intent: Intent) -> str:
        return json.dumps({"release": intent.release.to_dict(), "data": intent.data}, sort_keys=True)

    # --- reading -----------------------------------------------------------

    def _select(self, where: str = "", args: tuple[Any, ...] = ()) -> list[Release]:
        rows = self.db.execute(f"SELECT record FROM releases r {where} ORDER BY seq", args).fetchall()
        return [Release.from_dict(json.loads(r[0])) for r in rows]

    def get(self, tag: str) -> Release | None:
        found = self._select("WHERE tag = ?", (tag,))
        return found[0] if found else None

    def history(self, environment: str | None = None, role: str | None = None) -> list[Release]:
        """Every record, oldest first, optionally of one environment and role."""
        clauses, args = [], []
        if environment:
            clauses.append("environment = ?")
            args.append(environment)
        if role:
            clauses.append("role = ?")
            args.append(role)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return self._select(where, tuple(args))

    def current(self, environment: str, role: str) -> Release | None:
        """The release serving `role` in `environment`: its last successful record (None once taken down)."""
        if self.is_down(environment, role):
            return None
        found = self._select(
            "WHERE seq = (SELECT MAX(seq) FROM releases WHERE environment = ? AND role = ? AND status = ?)",
            (environment, role, RELEASED),
        )
        return found[0] if found else None

    def serving(self) -> list[Release]:
        """The current release of every role in every environment that is not down."""
        return self._select(
            "WHERE seq IN (SELECT MAX(seq) FROM releases WHERE status = ? GROUP BY environment, role) "
            "AND NOT EXISTS (SELECT 1 FROM downs d WHERE d.environment = r.environment AND d.role = r.role)",
            (RELEASED,),
        )

    # --- warm standbys ----------------------------------------------------------------

    def set_standby(self, environment: str, role: str, tag: str, until: float) -> None:
        """`tag`'s instances keep running, taking no traffic, until `until` (epoch seconds)."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO standbys (environment, role, tag, until) VALUES (?, ?, ?, ?)",
                       (environment, role, tag, until))

    def clear_standby(self, environment: str, role: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM standbys WHERE environment = ? AND role = ?", (environment, role))

    def standbys(self) -> dict[tuple[str, str], tuple[str, float]]:
        """{(environment, role): (tag, until)} of every standby recorded."""
        rows = self.db.execute("SELECT environment, role, tag, until FROM standbys").fetchall()
        return {(env, role): (tag, until) for env, role, tag, until in rows}

    # --- environments taken down -------------------------------------------------

    def mark_down(self, environment: str, role: str, tag: str) -> None:
        """Record that `tag` no longer serves `role` in `environment` (`release.down`); no record changes."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO downs (environment, role, tag, who, at) VALUES (?, ?, ?, ?, ?)",
                       (environment, role, tag, who(), now()))

    def downs(self) -> dict[tuple[str, str], str]:
        """{(environment, role): the tag that served until it was taken down}."""
        rows = self.db.execute("SELECT environment, role, tag FROM downs").fetchall()
        return {(env, role): tag for env, role, tag in rows}

    def is_down(self, environment: str, role: str) -> bool:
        return (environment, role) in self.downs()

    # --- pins --------------------------------------------------------------

    def pin(self, tag: str) -> bool:
        """Keep `tag` forever; False if it already was pinned."""
        if self.get(tag) is None:
            raise ReleaseError(f"no release {tag!r} in the ledger ({self.path}); `fab release.history` lists them")
        with self.transaction() as db:
            cursor = db.execute("INSERT OR IGNORE INTO pins (tag, who, at) VALUES (?, ?, ?)", (tag, who(), now()))
        return cursor.rowcount == 1

    def pins(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT tag FROM pins")}


def ledger_path(config: Config) -> Path:
    return config.state_dir / LEDGER_FILE


@contextmanager
def opened(config: Config) -> Iterator[Ledger]:
    ledger = Ledger(ledger_path(config))
    try:
        yield ledger
    finally:
        ledger.close()


@contextmanager
def locked(config: Config, environment: str, role: str, *, wait: bool = True) -> Iterator[bool]:
    """Serialise promotes of one role in one environment across processes.

    The lock dies with its holder, even by kill -9, so a lock is never stale — an
    intent left behind is. Yields False (without waiting) when `wait` is off and
    someone else holds it.
    """
    with files.locked(config.state_dir / "locks" / f"{environment}-{role}.lock", wait=wait) as held:
        yield held


def retained(history: list[Release], retention: int, pins: set[str]) -> list[Release]:
    """Releases of one environment and role that must stay rollback-able.

    The last `retention` released records (the current one among them), every
    pinned one, and what a rollback in the window points at.
    """
    released = [r for r in history if r.status == RELEASED]
    keep = {r.tag: r for r in released[-retention:]}
    keep.update({r.tag: r for r in history if r.tag in pins})
    return list(keep.values())


def referenced_images(config: Config) -> set[str]:
    """Image ids the ledger needs kept: retained, pinned and in-progress releases.

    For `image.prune`: an image in this set must not be removed.
    """
    return {r.image_id for r in needed(config) if r.image_id}


def needed(config: Config) -> list[Release]:
    """The records whose images must stay: retained and pinned releases, and those in progress."""
    if not ledger_path(config).exists():
        return []
    found: list[Release] = []
    with opened(config) as ledger:
        pins = ledger.pins()
        groups: dict[tuple[str, str], list[Release]] = {}
        for release in ledger.history():
            groups.setdefault((release.environment, release.role), []).append(release)
        for (environment, _role), records in groups.items():
            window = config.environments[environment].retention if environment in config.environments else 10
            found.extend(retained(records, window, pins))
        found.extend(i.release for i in ledger.intents())
    return found
