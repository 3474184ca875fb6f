"""qcow2 role images (the qemu builder's): files and their records, versions, listing.

An accepted disk is `<state>/images/qcow2/<role>/<N>.qcow2` with `<N>.json`
beside it, N counting up per role and never reused, as for container images.
The record (written last, by rename) is what makes a disk accepted: a qcow2
without one is the leftover of an interrupted accept and is never listed or
reused. The record carries the same labels as a container image's, and the
file's sha256 as its id.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from workbench.build import images
from workbench.core import engine
from workbench.core.config import Config
from workbench.core.files import sha256_of

SUFFIX = ".qcow2"


def store(config: Config, role: str) -> Path:
    return config.state_dir / "images" / "qcow2" / role


def disk_path(config: Config, role: str, version: int) -> Path:
    return store(config, role) / f"{version}{SUFFIX}"


def tag(config: Config, role: str, version: int) -> str:
    return f"{images.repository(config, role)}:{version}{SUFFIX}"


def records(config: Config, role: str | None = None) -> list[dict[str, Any]]:
    """Accepted disks' records, newest version first (only those whose disk is there)."""
    roles = [role] if role else sorted(p.name for p in (config.state_dir / "images" / "qcow2").glob("*") if p.is_dir())
    found: list[dict[str, Any]] = []
    for name in roles:
        for path in store(config, name).glob("*.json"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if path.with_suffix(SUFFIX).is_file():
                found.append(record)
    return sorted(found, key=lambda r: (r["role"], -int(r["version"])))


def find(config: Config, role: str, inputs: str) -> dict[str, Any] | None:
    return newest_labelled(config, role, engine.INPUTS_LABEL, inputs)


def newest_labelled(config: Config, role: str, label: str, value: str) -> dict[str, Any] | None:
    """The newest accepted disk of `role` whose `label` is `value`."""
    return next((r for r in records(config, role) if r["labels"].get(label) == value), None)


def versions(config: Config, role: str) -> list[int]:
    """Every version a file of this role's store names (accepted or interrupted): none is reused."""
    return [int(p.stem) for p in store(config, role).glob(f"*{SUFFIX}") if p.stem.isdigit()]


def file_id(path: Path) -> str:
    return f"sha256:{sha256_of(path)}"


def accept(config: Config, role: str, candidate: Path, version: int, labels: dict[str, str]) -> dict[str, Any]:
    """Move the verified `candidate` to its version's place and write its record (last)."""
    target = disk_path(config, role, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "role": role,
        "version": version,
        "tag": tag(config, role, version),
        "path": str(target),
        "id": file_id(candidate),
        "size": candidate.stat().st_size,
        "labels": labels,
    }
    partial = target.with_suffix(".json.partial")
    partial.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(candidate, target)
    # Read-only: a release of a disk is immutable, as an image is.
    target.chmod(0o444)
    partial.replace(target.with_suffix(".json"))
    return record


def info(record: dict[str, Any], now: datetime | None = None) -> images.ImageInfo:
    labels = record["labels"]
    built = labels.get("workbench.built", "")
    now = now or datetime.now(UTC)
    try:
        age = int((now - datetime.fromisoformat(built)).total_seconds())
    except ValueError:
        age = -1
    return images.ImageInfo(
        role=record["role"],
        version=int(record["version"]),
        tag=record["tag"],
        id=record["id"],
        inputs=labels.get(engine.INPUTS_LABEL, ""),
        created=built,
        age_seconds=age,
        size=int(record["size"]),
        verify=labels.get(images.VERIFY_LABEL, ""),
        tests=labels.get("workbench.tests", ""),
        git_commit=labels.get("workbench.git.commit", ""),
        git_dirty=labels.get("workbench.git.dirty", "") == "true",
        path=record["path"],
    )


def list_disks(config: Config, role: str | None = None) -> list[images.ImageInfo]:
    if role:
        role = config.role(role).name
    return [info(r) for r in records(config, role)]


def prune(config: Config, keep: int, role: str | None = None) -> list[str]:
    """Remove all but the newest `keep` disks per role; the removed tags.

    The record goes first, so an interrupted prune leaves an unlisted file,
    never a listed disk without its file. (Releases are of container images:
    no release record points at a disk.)
    """
    if role:
        role = config.role(role).name
    removed: list[str] = []
    kept: dict[str, int] = {}
    for record in records(config, role):
        kept[record["role"]] = kept.get(record["role"], 0) + 1
        if kept[record["role"]] <= keep:
            continue
        path = Path(record["path"])
        path.with_suffix(".json").unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        removed.append(record["tag"])
    return removed
