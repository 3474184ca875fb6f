"""What changed between two releases: Debian packages in their images, and their Salt state trees.

Packages come from each image's `/var/lib/dpkg/status`, read through a
container that is created but never started. The state tree is compared
between the git commits the bakes recorded (`workbench.git.commit`), limited
to salt/ — the images' inputs hashes say *whether* it changed, git says *what*.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import asdict, dataclass, field
from typing import Any

import docker.errors

from workbench.core import engine, run
from workbench.core.config import Config
from workbench.core.errors import CommandFailed, ReleaseError
from workbench.release import ledger

DPKG_STATUS = "/var/lib/dpkg/status"


@dataclass(frozen=True)
class ReleaseDiff:
    a: str
    b: str
    added: dict[str, str] = field(default_factory=dict)  # name -> version in b
    removed: dict[str, str] = field(default_factory=dict)  # name -> version in a
    upgraded: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (a, b)
    downgraded: dict[str, tuple[str, str]] = field(default_factory=dict)
    inputs_changed: bool = False
    commits: tuple[str, str] = ("", "")
    states: list[tuple[str, str]] = field(default_factory=list)  # (git status letter, path)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_dpkg_status(text: str) -> dict[str, str]:
    """Installed packages in a dpkg status file: {name: version}.

    A stanza looks like:

        Package: nginx
        Status: install ok installed
        Version: 1.22.1-9
    """
    packages: dict[str, str] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        if "Package" in fields and fields.get("Status", "").endswith(" installed"):
            name = fields["Package"]
            arch = fields.get("Architecture", "")
            # Multi-arch same packages may appear once per architecture.
            key = name if name not in packages or arch in ("", "all", "amd64") else f"{name}:{arch}"
            packages[key] = fields.get("Version", "")
    return packages


def image_packages(image_id: str) -> dict[str, str]:
    """The installed packages of an image, read without running it."""
    client = engine.client()
    container = client.containers.create(image_id, command=["/bin/true"], entrypoint=[])
    try:
        stream, _ = container.get_archive(DPKG_STATUS)
        raw = io.BytesIO(b"".join(stream))
    except docker.errors.NotFound:
        return {}
    finally:
        engine.remove_container(container)
    with tarfile.open(fileobj=raw) as tar:
        member = tar.extractfile(tar.getmembers()[0])
        return parse_dpkg_status(member.read().decode(errors="replace")) if member else {}


def compare_packages(a: dict[str, str], b: dict[str, str], newer: Any = None) -> dict[str, Any]:
    """added / removed / upgraded / downgraded between two package sets."""
    newer = newer or version_newer
    out: dict[str, Any] = {"added": {}, "removed": {}, "upgraded": {}, "downgraded": {}}
    for name in sorted(set(a) | set(b)):
        if name not in a:
            out["added"][name] = b[name]
        elif name not in b:
            out["removed"][name] = a[name]
        elif a[name] != b[name]:
            kind = "upgraded" if newer(b[name], a[name]) else "downgraded"
            out[kind][name] = (a[name], b[name])
    return out


def version_newer(x: str, y: str) -> bool:
    """Debian's ordering of versions, by dpkg itself."""
    return run.capture(["dpkg", "--compare-versions", x, "gt", y], check=False).returncode == 0


def state_changes(config: Config, commit_a: str, commit_b: str) -> tuple[list[tuple[str, str]], str]:
    """`git diff --name-status` of salt/ between two commits, and a note if it cannot be told."""
    if not commit_a or not commit_b or "unknown" in (commit_a, commit_b):
        return [], "a bake did not record its git commit: state-tree changes unknown"
    try:
        out = run.capture(["git", "-C", str(config.root), "diff", "--name-status", commit_a, commit_b, "--", "salt/"])
    except CommandFailed:
        return [], f"commits {commit_a[:10]} or {commit_b[:10]} are not in {config.root}: state-tree changes unknown"
    changes = []
    for line in out.stdout.splitlines():
        status, _, path = line.partition("\t")
        changes.append((status[:1], path.replace("\t", " -> ")))
    return changes, ""


def diff(config: Config, tag_a: str, tag_b: str) -> ReleaseDiff:
    for tag in (tag_a, tag_b):
        ledger.parse_tag(tag)
    with ledger.opened(config) as led:
        records = [led.get(tag_a), led.get(tag_b)]
    for tag, record in zip((tag_a, tag_b), records, strict=True):
        if record is None:
            raise ReleaseError(f"no release {tag!r} in the ledger: `fab release.history` lists them")
    a, b = records
    assert a is not None and b is not None
    images = [engine.get_image(r.image_id) for r in (a, b)]
    for record, image in zip((a, b), images, strict=True):
        if image is None:
            raise ReleaseError(f"the image of {record.tag} ({record.image_id[:19]}) is not in the local engine: "
                               f"`fab release.rollback` fetches it from the registry, or pull {record.reference}")
    packages = compare_packages(image_packages(a.image_id), image_packages(b.image_id))
    commits = tuple((i.labels or {}).get("workbench.git.commit", "") for i in images if i is not None)
    states, note = state_changes(config, commits[0], commits[1]) if a.inputs != b.inputs else ([], "")
    if states == [] and not note and a.inputs != b.inputs and commits[0] == commits[1]:
        note = "same commit, different inputs: the tree was dirty at a bake (workbench.git.dirty)"
    return ReleaseDiff(
        a=tag_a, b=tag_b, **packages, inputs_changed=a.inputs != b.inputs,
        commits=(commits[0], commits[1]), states=states, note=note,
    )


def render(d: ReleaseDiff) -> str:
    lines = [f"{d.a} -> {d.b}"]
    lines.append(f"packages: {len(d.added)} added, {len(d.removed)} removed, {len(d.upgraded)} upgraded, "
                 f"{len(d.downgraded)} downgraded")
    lines += [f"  + {n} {v}" for n, v in d.added.items()]
    lines += [f"  - {n} {v}" for n, v in d.removed.items()]
    lines += [f"  ^ {n} {x} -> {y}" for n, (x, y) in d.upgraded.items()]
    lines += [f"  v {n} {x} -> {y}" for n, (x, y) in d.downgraded.items()]
    if not d.inputs_changed:
        lines.append("state tree: unchanged (same inputs)")
    else:
        lines.append(f"state tree: changed ({d.commits[0][:10]} -> {d.commits[1][:10]})")
        lines += [f"  {status} {path}" for status, path in d.states]
    if d.note:
        lines.append(f"note: {d.note}")
    return "\n".join(lines)
