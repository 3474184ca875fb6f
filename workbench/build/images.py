"""Role images in the engine: names, versions, labels, listing, pruning, stale clean-up.

An accepted image is `<prefix>/<role>:<N>`, N counting up per role and never
reused. A bake first commits a candidate, `<prefix>/<role>-candidate:<bake id>`
(label `workbench.candidate=true`); only a verified candidate gets the role
tag, on a copy whose labels say so (`workbench.verify=passed`).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from docker.models.images import Image

from workbench.core import engine
from workbench.core.config import Config
from workbench.core.errors import ReleaseError

CANDIDATE_LABEL = "workbench.candidate"
VERSION_LABEL = "workbench.version"
VERIFY_LABEL = "workbench.verify"
# The role's definition whatever the builder (bake.definition): links a container image to its qcow2.
DEFINITION_LABEL = "workbench.definition"
# Build containers and candidates carry the id and process of the bake that made them.
BAKE_LABEL = "workbench.bake"
BAKE_PID_LABEL = "workbench.bake.pid"

# The labels every accepted image carries (engineer C's releases read them).
ACCEPTED_LABELS = (
    engine.PREFIX_LABEL,
    engine.ROLE_LABEL,
    VERSION_LABEL,
    engine.INPUTS_LABEL,
    "workbench.base",
    "workbench.git.commit",
    "workbench.git.dirty",
    "workbench.built",
    "workbench.salt",
    VERIFY_LABEL,
    "workbench.tests",
)


def repository(config: Config, role: str) -> str:
    return f"{config.prefix}/{role}"


def candidate_repository(config: Config, role: str) -> str:
    return f"{config.prefix}/{role}-candidate"


def failed_repository(config: Config, role: str) -> str:
    return f"{config.prefix}/{role}-failed"


def accepted(config: Config, role: str | None = None, inputs: str | None = None) -> list[Image]:
    """Verified role images, newest version first (a label look-up: fast)."""
    labels = {engine.PREFIX_LABEL: config.prefix, VERIFY_LABEL: "passed", CANDIDATE_LABEL: "false"}
    if role:
        labels[engine.ROLE_LABEL] = role
    if inputs:
        labels[engine.INPUTS_LABEL] = inputs
    found = engine.images(labels)
    return sorted(found, key=lambda i: (i.labels.get(engine.ROLE_LABEL, ""), -version_of(i)))


def version_of(image: Image) -> int:
    value = image.labels.get(VERSION_LABEL, "0")
    return int(value) if value.isdigit() else 0


def tag_of(config: Config, image: Image) -> str:
    """The image's `<prefix>/<role>:<N>` tag (or its id if it lost it)."""
    wanted = f"{repository(config, image.labels.get(engine.ROLE_LABEL, ''))}:{version_of(image)}"
    return wanted if wanted in image.tags else (image.tags[0] if image.tags else image.short_id)


def latest(config: Config, role: str) -> Image | None:
    """The newest accepted image of a role."""
    found = accepted(config, role)
    return found[0] if found else None


class VersionCounter:
    """Per-role version numbers: max(file, labels) + 1, under a lock, never reused.

    The file keeps the count when old images are pruned; the labels keep it
    when the state directory is new. Hold the lock from `next()` to the tag.
    """

    def __init__(self, config: Config, role: str, existing: Callable[[], Iterable[int]] | None = None) -> None:
        """`existing`: the versions already taken (default: the accepted images' labels)."""
        self.config = config
        self.role = role
        self._existing = existing
        self.path = config.state_dir / "versions" / role
        self._lock: int | None = None

    def __enter__(self) -> VersionCounter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(str(self.path) + ".lock", os.O_CREAT | os.O_RDWR)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def next(self) -> int:
        stored = int(self.path.read_text().strip() or 0) if self.path.is_file() else 0
        taken = self._existing() if self._existing else self._labelled()
        return max(stored, max(taken, default=0)) + 1

    def _labelled(self) -> list[int]:
        wanted = {engine.PREFIX_LABEL: self.config.prefix, engine.ROLE_LABEL: self.role, CANDIDATE_LABEL: "false"}
        return [version_of(i) for i in engine.images(wanted)]

    def commit(self, version: int) -> None:
        self.path.write_text(f"{version}\n")



def newest_verified(config: Config, role: str, version: int | None = None) -> str:
    """Id of the role's newest image that passed verification (or of `version`, which must have)."""
    if version is None:
        newest = latest(config, role)
        if newest is None:
            raise ReleaseError(
                f"no verified image of role {role} under prefix {config.prefix}: bake one with `fab image.bake {role}`"
            )
        return str(newest.id)
    tag = f"{repository(config, role)}:{version}"
    image = engine.get_image(tag)
    if image is None:
        known = ", ".join(str(version_of(i)) for i in reversed(accepted(config, role))) or "none"
        raise ReleaseError(f"no image {tag} (verified versions of {role}: {known}); `fab image.list` shows them")
    verify = (image.labels or {}).get(VERIFY_LABEL, "")
    if verify != "passed":
        raise ReleaseError(
            f"{tag} did not pass verification (workbench.verify={verify or 'unset'}): only verified images "
            f"are promoted; bake it again with `fab image.bake {role}`"
        )
    return str(image.id)


def label_changes(labels: Mapping[str, str]) -> list[str]:
    """Dockerfile `LABEL` lines (one per label, values JSON-quoted)."""
    return [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in sorted(labels.items())]


# --- listing ---------------------------------------------------------------------


@dataclass(frozen=True)
class ImageInfo:
    role: str
    version: int
    tag: str
    id: str
    inputs: str
    created: str
    age_seconds: int
    size: int
    verify: str
    tests: str
    git_commit: str
    git_dirty: bool
    # Where a qcow2 image's file is (the qemu builder's); empty for a container image.
    path: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def info(config: Config, image: Image, now: datetime | None = None) -> ImageInfo:
    labels = image.labels
    built = labels.get("workbench.built", "")
    now = now or datetime.now(UTC)
    try:
        age = int((now - datetime.fromisoformat(built)).total_seconds())
    except ValueError:
        age = -1
    return ImageInfo(
        role=labels.get(engine.ROLE_LABEL, ""),
        version=version_of(image),
        tag=tag_of(config, image),
        id=image.id,
        inputs=labels.get(engine.INPUTS_LABEL, ""),
        created=built,
        age_seconds=age,
        size=int(image.attrs.get("Size", 0)),
        verify=labels.get(VERIFY_LABEL, ""),
        tests=labels.get("workbench.tests", ""),
        git_commit=labels.get("workbench.git.commit", ""),
        git_dirty=labels.get("workbench.git.dirty", "") == "true",
    )


def list_images(config: Config, role: str | None = None) -> list[ImageInfo]:
    if role:
        role = config.role(role).name
    return [info(config, i) for i in accepted(config, role)]


def human_age(seconds: int) -> str:
    if seconds < 0:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# --- pruning ---------------------------------------------------------------------


@dataclass(frozen=True)
class PruneResult:
    removed: list[str]
    kept_released: list[str]


def prune(config: Config, keep: int, released: set[str], role: str | None = None) -> PruneResult:
    """Remove all but the newest `keep` versions of each role, except the image ids in `released`.

    The caller says which images releases need (the release ledger lives a layer above).
    """
    from workbench.core.errors import ConfigError

    if keep < 1:
        raise ConfigError(f"--keep {keep}: keep at least 1 version of each role")
    removed: list[str] = []
    kept_released: list[str] = []
    everything = {i.labels.get(engine.ROLE_LABEL, "") for i in accepted(config)}
    roles = [config.role(role).name] if role else sorted(everything)
    for name in roles:
        for image in accepted(config, name)[keep:]:
            tag = tag_of(config, image)
            if image.id in released:
                kept_released.append(tag)
                continue
            engine.remove_image(tag)
            # Other tags of the same image (none by design) keep it alive; say what went.
            removed.append(tag)
    # What `--keep-failed` kept for debugging goes too.
    for image in engine.images({engine.PREFIX_LABEL: config.prefix, CANDIDATE_LABEL: "true"}):
        for tag in image.tags:
            if _is_kept(tag):
                engine.remove_image(tag)
                removed.append(tag)
    for container in engine.containers({engine.PREFIX_LABEL: config.prefix, CANDIDATE_LABEL: "building"}):
        if container.name.startswith(f"{config.prefix}-failed-"):
            engine.remove_container(container)
            removed.append(f"container {container.name}")
    return PruneResult(removed, kept_released)


# --- stale builds -----------------------------------------------------------------


def _pid_alive(pid: str) -> bool:
    return pid.isdigit() and Path(f"/proc/{pid}").exists()


def _is_kept(tag: str) -> bool:
    return tag.split(":", 1)[0].endswith("-failed")


def remove_stale(config: Config) -> list[str]:
    """Build containers and candidates of bakes that died (killed outright); what went.

    A live bake (its process still runs, e.g. a parallel one) is left alone, and
    so is what `--keep-failed` kept on purpose.
    """
    removed = []
    labels = {engine.PREFIX_LABEL: config.prefix}
    for container in engine.containers({**labels, CANDIDATE_LABEL: "building"}):
        if container.name.startswith(f"{config.prefix}-failed-"):
            continue
        if not _pid_alive(container.labels.get(BAKE_PID_LABEL, "")):
            engine.remove_container(container)
            removed.append(f"container {container.name}")
    for image in engine.images({**labels, CANDIDATE_LABEL: "true"}):
        if any(_is_kept(t) for t in image.tags) or _pid_alive(image.labels.get(BAKE_PID_LABEL, "")):
            continue
        for tag in image.tags or [image.id]:
            engine.remove_image(tag)
            removed.append(f"image {tag}")
    return removed
