"""The cloud's passwords: made at the first `cloud.up`, kept 0600 under the state dir, never in an image."""

from __future__ import annotations

import json
import os
import secrets as random
from dataclasses import dataclass
from pathlib import Path

from workbench.core.config import Config
from workbench.core.errors import CloudError
from workbench.core.secrets import write_private

# Every password the controller's settings carry (the controller role's start hook reads them).
NAMES = (
    "admin", "rabbitmq", "keystone_db", "glance_db", "glance", "placement_db", "placement",
    "nova_db", "nova", "neutron_db", "neutron", "metadata_secret", "member",
)


@dataclass(frozen=True)
class CloudSecrets:
    passwords: dict[str, str]
    path: Path

    def __getitem__(self, name: str) -> str:
        return self.passwords[name]


def cloud_dir(config: Config) -> Path:
    return config.state_dir / "cloud"


def secrets_path(config: Config) -> Path:
    return cloud_dir(config) / "secrets.json"


def load(config: Config) -> CloudSecrets | None:
    """The cloud's passwords, or None before the first `cloud.up`."""
    path = secrets_path(config)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CloudError(f"cannot read the cloud's passwords {path}: {exc}; restore it from a backup, or "
                         "`fab cloud.down --purge` to start a new cloud") from None
    missing = [n for n in NAMES if n not in data.get("passwords", {})]
    if missing:
        raise CloudError(f"{path}: no password for {', '.join(missing)}; `fab cloud.down --purge` starts a new cloud")
    return CloudSecrets(dict(data["passwords"]), path)


def ensure(config: Config) -> CloudSecrets:
    """The cloud's passwords, made now if this is its first start."""
    found = load(config)
    if found is not None:
        return found
    path = secrets_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    passwords = {name: random.token_urlsafe(24) for name in NAMES}
    write_private(path, json.dumps({"passwords": passwords}, indent=2, sort_keys=True).encode())
    return CloudSecrets(passwords, path)


def remove(config: Config) -> bool:
    path = secrets_path(config)
    if path.is_file():
        path.unlink()
        return True
    return False
