"""Secrets made at deploy time (database passwords, TLS keys), kept per environment under the state directory.

    <state_dir>/secrets/<env>/            mode 0700
    <state_dir>/secrets/<env>/passwords.json   mode 0600: {"db-app": "...", "db-replication": "..."}

Nothing here is ever baked into an image: a deploy hands each container what it
needs (pool rendering, a read-only mount), and the same password is found again
by every later deploy of the environment.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from workbench.core import files
from workbench.core.config import Config
from workbench.core.errors import ConfigError

PASSWORDS = "passwords.json"


def directory(config: Config, env: str) -> Path:
    """The environment's secrets directory, made mode 0700 (and kept so)."""
    path = config.state_dir / "secrets" / env
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read, replacing it whole."""
    files.write_whole(path, data, 0o600)


def password(config: Config, env: str, name: str) -> str:
    """The password called `name` in `env`, made (random, 32 characters) the first time it is asked for."""
    folder = directory(config, env)
    path = folder / PASSWORDS
    with files.locked(folder / ".lock"):
        try:
            known = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path} ({exc}): restore it from a copy; removing it makes new "
                              "passwords, which the databases of the environment do not know") from None
        if name not in known:
            known[name] = secrets.token_urlsafe(24)
            write_private(path, (json.dumps(known, indent=2, sort_keys=True) + "\n").encode())
        return str(known[name])
