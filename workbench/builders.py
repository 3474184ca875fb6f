"""Builders: what differs between baking a container image and a VM disk.

images/role.json holds one builder block per kind and the provisioners they
share. A Builder names its block (`packer build -only=<name>`), fills in what a
JSON template cannot express, says how the build machine reaches the package
cache, and turns Packer's artifact into a candidate, then into the accepted
image. The docker builder is the default; the qemu builder (a qcow2 for VMs
and the homelab) arrives with the netboot issue as another subclass.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import docker.errors

from . import engine
from .aptcache import PackageCache
from .config import Config, Role
from .errors import BakeFailed, ConfigError
from .images import BAKE_LABEL, BAKE_PID_LABEL, CANDIDATE_LABEL, label_changes
from .packer import BuildLog


@dataclass(frozen=True)
class BuildRequest:
    """One bake as the builder sees it."""

    role: Role
    bake_id: str
    base_ref: str
    labels: Mapping[str, str]
    container_name: str


class Builder:
    """The seam: one subclass per Packer builder kind."""

    name = ""

    def configure(self, template: dict[str, Any], request: BuildRequest) -> dict[str, Any]:
        """The template with this builder's block completed and the others removed."""
        raise NotImplementedError

    def apt_proxy(self, cache: PackageCache | None) -> str:
        raise NotImplementedError

    def candidate(self, log: BuildLog, request: BuildRequest) -> str:
        """A reference to what Packer made (an image id, a disk path)."""
        raise NotImplementedError

    def accept(self, candidate: str, labels: Mapping[str, str], tag: str) -> str:
        """Make the verified candidate the role's version `tag`; its id."""
        raise NotImplementedError

    def discard(self, candidate: str) -> None:
        raise NotImplementedError


class DockerBuilder(Builder):
    """Packer's docker builder: a container from the base, committed as an image."""

    name = "docker"

    def configure(self, template: dict[str, Any], request: BuildRequest) -> dict[str, Any]:
        block = _builder_block(template, self.name)
        block["changes"] = self.changes(request.role, request.labels)
        # The build container is named and labelled so that a bake killed outright
        # is cleaned up by the next one (workbench.images.remove_stale).
        block["run_command"] = [
            "-d", "-i", "-t", "--entrypoint=/bin/sh",
            "--name", request.container_name,
            "--label", f"{engine.PREFIX_LABEL}={request.labels[engine.PREFIX_LABEL]}",
            "--label", f"{CANDIDATE_LABEL}=building",
            "--label", f"{BAKE_LABEL}={request.bake_id}",
            "--label", f"{BAKE_PID_LABEL}={request.labels[BAKE_PID_LABEL]}",
            "--", "{{.Image}}",
        ]  # fmt: skip
        return {**template, "builders": [block]}

    @staticmethod
    def changes(role: Role, labels: Mapping[str, str]) -> list[str]:
        """The committed image's configuration: the role's command, not the builder's shell."""
        changes = [
            # `[""]` clears the builder's `--entrypoint=/bin/sh` (`[]` would keep it).
            'ENTRYPOINT [""]',
            f"CMD {json.dumps(list(role.command))}",
        ]
        changes += [f"EXPOSE {port}" for port in role.ports]
        return changes + label_changes(labels)

    def apt_proxy(self, cache: PackageCache | None) -> str:
        return cache.container_proxy if cache else ""

    def candidate(self, log: BuildLog, request: BuildRequest) -> str:
        image_id = log.artifact_id(self.name)
        if not image_id:
            raise BakeFailed(f"{request.role.name}: packer reported success but no image artifact")
        return image_id

    def accept(self, candidate: str, labels: Mapping[str, str], tag: str) -> str:
        # A LABEL-only build adds no layer: the accepted image has exactly the
        # candidate's file system, with the verdict in its labels.
        dockerfile = "\n".join([f"FROM {candidate}", *label_changes(labels), ""])
        repo, _, version = tag.rpartition(":")
        try:
            image, _ = engine.client().images.build(
                fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, pull=False, forcerm=True
            )
        except (docker.errors.BuildError, docker.errors.APIError) as exc:
            raise BakeFailed(f"cannot tag the verified candidate {candidate[:19]} as {repo}:{version}: {exc}") from None
        return str(image.id)

    def discard(self, candidate: str) -> None:
        engine.remove_image(candidate)


def _builder_block(template: Mapping[str, Any], name: str) -> dict[str, Any]:
    for block in template.get("builders", []):
        if block.get("name", block.get("type")) == name:
            return dict(block)
    raise ConfigError(f"images/role.json has no builder named {name!r} (builders: {_names(template)})")


def _names(template: Mapping[str, Any]) -> str:
    names: Sequence[str] = [b.get("name", b.get("type", "?")) for b in template.get("builders", [])]
    return ", ".join(names) or "none"


_BUILDERS: dict[str, type[Builder]] = {"docker": DockerBuilder}


def builder_for(config: Config) -> Builder:
    kind = config.builder.type
    if kind not in _BUILDERS:
        raise ConfigError(
            f"{config.path}: [builder] type = {kind!r}: this checkout bakes only with "
            f"{', '.join(_BUILDERS)} (the qemu builder comes with the netboot work); set type = \"docker\""
        )
    return _BUILDERS[kind]()
