"""Builders: what differs between baking a container image and a VM disk.

images/role.json holds one builder block per kind and the provisioners they
share. A Builder names its block (`packer build -only=<name>`), fills in what a
JSON template cannot express, says what the bake starts from and how the build
machine reaches the package cache, and carries a candidate through
verification to the accepted, versioned image, or away.

- docker: a container from the base image, committed as `<prefix>/<role>:<N>`;
  tested in a fresh container.
- qemu: the vanilla VM disk (workbench.vmdisk) booted under qemu, provisioned
  over SSH, saved as `<state>/images/qcow2/<role>/<N>.qcow2`; tested over SSH
  in a fresh boot of that file (workbench.vm).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors

from workbench.build import disks, images, verify, vmdisk
from workbench.build.aptcache import PackageCache
from workbench.build.base import BaseImage
from workbench.build.images import BAKE_LABEL, BAKE_PID_LABEL, CANDIDATE_LABEL, label_changes
from workbench.build.packer import BuildLog
from workbench.core import engine, progress
from workbench.core.config import Config, Role
from workbench.core.errors import BakeFailed, ConfigError


@dataclass(frozen=True)
class BuildRequest:
    """One bake as the builder sees it."""

    config: Config
    role: Role
    bake_id: str
    base_ref: str
    labels: Mapping[str, str]
    container_name: str
    work: Path


@dataclass(frozen=True)
class Accepted:
    """A verified role image under its version: `workbench/app:7` or `workbench/base:3.qcow2`."""

    tag: str
    id: str
    version: int
    size: int
    tests: str


class Builder:
    """The seam: one subclass per Packer builder kind."""

    name = ""

    def base_ref(self, config: Config, base_image_id: str) -> str | None:
        """What the bake starts from, for the inputs hash; None while it is not built."""
        raise NotImplementedError

    def prepare(self, config: Config, base_image: BaseImage, mirror_via: str | None) -> str:
        """Make what the bake starts from (if needed); its `base_ref`."""
        raise NotImplementedError

    def configure(self, template: dict[str, Any], request: BuildRequest) -> dict[str, Any]:
        """The template with this builder's block completed and the others removed."""
        raise NotImplementedError

    def variables(self, config: Config, request: BuildRequest) -> dict[str, str]:
        """Packer variables of this builder's block."""
        return {}

    def apt_proxy(self, cache: PackageCache | None) -> str:
        raise NotImplementedError

    def on_error(self, keep_failed: bool) -> str:
        """Packer's -on-error: what is left of a failed provisioning."""
        return "abort" if keep_failed else "cleanup"

    def keep_build(self, request: BuildRequest) -> None:
        """After a failed provisioning with --keep-failed: keep what can be looked into."""

    def candidate(self, log: BuildLog, request: BuildRequest) -> str:
        """A reference to what Packer made (an image id, a disk path), held until accepted or discarded."""
        raise NotImplementedError

    def describe(self, candidate: str) -> str:
        return candidate

    def verify(self, candidate: str, request: BuildRequest, on_line: Callable[[str], None]) -> verify.VerifyResult:
        raise NotImplementedError

    def accept(self, candidate: str, request: BuildRequest, verdict: Mapping[str, str]) -> Accepted:
        """Make the verified candidate the role's next version, its labels updated by `verdict`."""
        raise NotImplementedError

    def discard(self, candidate: str, request: BuildRequest, keep: bool) -> None:
        """The candidate goes (or, with `keep`, is kept apart for a look)."""
        raise NotImplementedError

    def cached(self, config: Config, role: Role, inputs: str) -> Accepted | None:
        """The accepted image made from exactly these inputs, if any."""
        raise NotImplementedError


class DockerBuilder(Builder):
    """Packer's docker builder: a container from the base, committed as an image."""

    name = "docker"

    def base_ref(self, config: Config, base_image_id: str) -> str | None:
        return base_image_id

    def prepare(self, config: Config, base_image: BaseImage, mirror_via: str | None) -> str:
        return base_image.id

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

    def variables(self, config: Config, request: BuildRequest) -> dict[str, str]:
        return {"base_image": request.base_ref}

    def apt_proxy(self, cache: PackageCache | None) -> str:
        return cache.container_proxy if cache else ""

    def keep_build(self, request: BuildRequest) -> None:
        kept = request.container_name.replace("-build-", "-failed-", 1)
        try:
            engine.client().containers.get(request.container_name).rename(kept)
            progress.detail(f"kept the build container as {kept} (--keep-failed): docker exec -it {kept} bash")
        except Exception as exc:  # noqa: BLE001 - keeping is best effort; the failure is what matters
            progress.detail(f"could not keep the build container {request.container_name}: {exc}")

    def candidate(self, log: BuildLog, request: BuildRequest) -> str:
        image_id = log.artifact_id(self.name)
        if not image_id:
            raise BakeFailed(f"{request.role.name}: packer reported success but no image artifact")
        # Tagged while it waits for its verdict, so that `docker images` tells what it is.
        engine.client().images.get(image_id).tag(self._candidate_tag(request))
        return image_id

    def _candidate_tag(self, request: BuildRequest) -> str:
        return f"{images.candidate_repository(request.config, request.role.name)}:{request.bake_id}"

    def describe(self, candidate: str) -> str:
        return f"a fresh container of {candidate[7:19]}"

    def verify(self, candidate: str, request: BuildRequest, on_line: Callable[[str], None]) -> verify.VerifyResult:
        role = request.role
        return verify.verify(request.config, role, candidate, scope=f"bake {role.name}", on_line=on_line)

    def accept(self, candidate: str, request: BuildRequest, verdict: Mapping[str, str]) -> Accepted:
        config, role = request.config, request.role
        with images.VersionCounter(config, role.name) as counter:
            version = counter.next()
            tag = f"{images.repository(config, role.name)}:{version}"
            progress.step(f"bake {role.name}", f"tag: {tag}")
            # A LABEL-only build adds no layer: the accepted image has exactly the
            # candidate's file system, with the verdict in its labels.
            labels = {**verdict, images.VERSION_LABEL: str(version)}
            dockerfile = "\n".join([f"FROM {candidate}", *label_changes(labels), ""])
            try:
                image, _ = engine.client().images.build(
                    fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, pull=False, forcerm=True
                )
            except (docker.errors.BuildError, docker.errors.APIError) as exc:
                raise BakeFailed(f"cannot tag the verified candidate {candidate[:19]} as {tag}: {exc}") from None
            counter.commit(version)
        engine.remove_image(self._candidate_tag(request))
        size = int(image.attrs.get("Size", 0))
        return Accepted(tag, str(image.id), version, size, verdict.get("workbench.tests", ""))

    def discard(self, candidate: str, request: BuildRequest, keep: bool) -> None:
        candidate_tag = self._candidate_tag(request)
        if keep:
            kept = f"{images.failed_repository(request.config, request.role.name)}:{request.bake_id}"
            engine.client().images.get(candidate).tag(kept)
            engine.remove_image(candidate_tag)
            progress.detail(f"kept the failed candidate as {kept} (--keep-failed; `fab image.prune` removes it)")
            return
        engine.remove_image(candidate_tag)
        engine.remove_image(candidate)

    def cached(self, config: Config, role: Role, inputs: str) -> Accepted | None:
        found = images.accepted(config, role.name, inputs=inputs)
        if not found:
            return None
        image = found[0]
        return Accepted(
            images.tag_of(config, image),
            image.id,
            images.version_of(image),
            int(image.attrs.get("Size", 0)),
            image.labels.get("workbench.tests", ""),
        )


class QemuBuilder(Builder):
    """Packer's qemu builder: the vanilla VM disk booted, provisioned over SSH, saved as a qcow2."""

    name = "qemu"
    VM_NAME = "role.qcow2"

    def base_ref(self, config: Config, base_image_id: str) -> str | None:
        found = vmdisk.find_disk(config)
        return found.digest if found else None

    def prepare(self, config: Config, base_image: BaseImage, mirror_via: str | None) -> str:
        return vmdisk.build_disk(config, mirror_via=mirror_via).digest

    def configure(self, template: dict[str, Any], request: BuildRequest) -> dict[str, Any]:
        block = _builder_block(template, self.name)
        config = request.config
        b = config.builder
        block.update(
            accelerator=b.accelerator,
            disk_size=f"{b.disk_size}M",
            # -m/-smp in qemuargs replace Packer's defaults; the serial console goes to the bake's log.
            qemuargs=[
                ["-m", f"{b.memory}M"],
                ["-smp", str(b.cpus)],
                ["-serial", f"file:{request.work / 'console.log'}"],
            ],
        )
        return {**template, "builders": [block]}

    def variables(self, config: Config, request: BuildRequest) -> dict[str, str]:
        disk = vmdisk.find_disk(config)
        if disk is None:
            raise BakeFailed("the vanilla VM disk disappeared while baking: run the bake again")
        return {
            "vm_disk": str(disk.path),
            "ssh_key": str(vmdisk.ssh_key(config)),
            "output_dir": str(request.work / "out"),
            "vm_name": self.VM_NAME,
        }

    def apt_proxy(self, cache: PackageCache | None) -> str:
        # User-mode networking: the guest reaches the host's loopback at 10.0.2.2.
        return f"http://10.0.2.2:{cache.port}" if cache else ""

    def on_error(self, keep_failed: bool) -> str:
        # Packer's VM cannot outlive Packer: a failed provisioning is always cleaned up.
        return "cleanup"

    def keep_build(self, request: BuildRequest) -> None:
        progress.detail("--keep-failed keeps nothing of a failed qemu provisioning: its console is in the log above")

    def candidate(self, log: BuildLog, request: BuildRequest) -> str:
        path = request.work / "out" / self.VM_NAME
        if not path.is_file():
            raise BakeFailed(f"{request.role.name}: packer reported success but made no disk ({path})")
        return str(path)

    def describe(self, candidate: str) -> str:
        return f"a fresh boot of {Path(candidate).name} over SSH"

    def verify(self, candidate: str, request: BuildRequest, on_line: Callable[[str], None]) -> verify.VerifyResult:
        config, role = request.config, request.role
        key, work = vmdisk.ssh_key(config), request.work / "verify"
        return verify.verify_vm(config, role, Path(candidate), key, work, scope=f"bake {role.name}", on_line=on_line)

    def accept(self, candidate: str, request: BuildRequest, verdict: Mapping[str, str]) -> Accepted:
        config, role = request.config, request.role
        labels = {**request.labels, **verdict}
        counter = images.VersionCounter(config, f"{role.name}{disks.SUFFIX}", lambda: disks.versions(config, role.name))
        with counter as c:
            version = c.next()
            tag = disks.tag(config, role.name, version)
            labels[images.VERSION_LABEL] = str(version)
            progress.step(f"bake {role.name}", f"tag: {tag} ({disks.disk_path(config, role.name, version)})")
            record = disks.accept(config, role.name, Path(candidate), version, labels)
            c.commit(version)
        return Accepted(tag, record["id"], version, record["size"], labels.get("workbench.tests", ""))

    def discard(self, candidate: str, request: BuildRequest, keep: bool) -> None:
        path = Path(candidate)
        if keep:
            kept = disks.store(request.config, request.role.name) / "failed" / f"{request.bake_id}{disks.SUFFIX}"
            kept.parent.mkdir(parents=True, exist_ok=True)
            path.replace(kept)
            progress.detail(f"kept the failed candidate as {kept} (--keep-failed)")
            return
        path.unlink(missing_ok=True)

    def cached(self, config: Config, role: Role, inputs: str) -> Accepted | None:
        record = disks.find(config, role.name, inputs)
        if record is None:
            return None
        tests = record["labels"].get("workbench.tests", "")
        return Accepted(record["tag"], record["id"], int(record["version"]), int(record["size"]), tests)


def _builder_block(template: Mapping[str, Any], name: str) -> dict[str, Any]:
    for block in template.get("builders", []):
        if block.get("name", block.get("type")) == name:
            return dict(block)
    raise ConfigError(f"images/role.json has no builder named {name!r} (builders: {_names(template)})")


def _names(template: Mapping[str, Any]) -> str:
    names: Sequence[str] = [b.get("name", b.get("type", "?")) for b in template.get("builders", [])]
    return ", ".join(names) or "none"


_BUILDERS: dict[str, type[Builder]] = {"docker": DockerBuilder, "qemu": QemuBuilder}


def builder_for(config: Config) -> Builder:
    kind = config.builder.type
    if kind not in _BUILDERS:
        raise ConfigError(f"{config.path}: [builder] type = {kind!r}: must be one of {', '.join(_BUILDERS)}")
    return _BUILDERS[kind]()
