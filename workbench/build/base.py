"""The vanilla base image: debootstrap from the configured mirror, imported into Docker.

The base is content-addressed: its tag is a hash of everything that decides
what is in it (distribution, suite, mirrors, packages, this recipe's version),
so the same inputs find the same image instead of building it again. The root
filesystem tarball is kept beside it for the builders that need a disk, not a
container (qemu, netboot).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from workbench.core import engine, files, progress, run
from workbench.core.config import Config
from workbench.core.errors import BuildFailed, CommandFailed
from workbench.core.inputs import hash_inputs

# Bump when the way the base is made changes, so old bases are not reused.
RECIPE_VERSION = 1
# Always in the base: masterless Salt runs on python3.
REQUIRED_PACKAGES = ("python3",)


@dataclass(frozen=True)
class BaseImage:
    tag: str
    id: str
    inputs: str
    size: int
    rootfs: Path
    cached: bool
    seconds: float


def base_inputs(config: Config) -> dict[str, object]:
    base = config.base
    return {
        "distribution": base.distribution,
        "suite": base.suite,
        "mirror": base.mirror,
        "security_mirror": base.security_mirror,
        "variant": base.variant,
        "packages": sorted({*REQUIRED_PACKAGES, *base.packages}),
        "recipe": RECIPE_VERSION,
    }


def base_tag(config: Config) -> str:
    return f"{config.prefix}/base:{hash_inputs(base_inputs(config))[:12]}"


def rootfs_path(config: Config) -> Path:
    """Where the base's root filesystem tarball is kept."""
    return config.state_dir / "base" / hash_inputs(base_inputs(config))[:12] / "rootfs.tar"


def find_base(config: Config) -> BaseImage | None:
    """The base for the current inputs, if it was built (a cheap look-up)."""
    tag = base_tag(config)
    image = engine.get_image(tag)
    if image is None:
        return None
    return BaseImage(
        tag=tag,
        id=image.id,
        inputs=image.labels.get(engine.INPUTS_LABEL, ""),
        size=int(image.attrs.get("Size", 0)),
        rootfs=rootfs_path(config),
        cached=True,
        seconds=0.0,
    )


def build_base(config: Config, *, force: bool = False, mirror_via: str | None = None) -> BaseImage:
    """Build the base image unless one with the same inputs exists.

    `mirror_via` is a URL to fetch packages through instead of the mirror (the
    local package cache); it does not change what is built, so not the hash.
    One build per inputs at a time: `cloud.up` bakes the controller beside the
    live image and parallel bakes start together, all needing the same base;
    the first builds it, the others wait for it and find it built.
    """
    start = time.monotonic()
    digest = hash_inputs(base_inputs(config))
    tag = base_tag(config)
    existing = _built(config)
    if existing is None or force:
        with files.locked(config.state_dir / "locks" / f"base-{digest[:12]}.lock"):
            existing = None if force else _built(config)
            if existing is None:
                return _build(config, mirror_via, start)
    progress.step("base", f"{tag} is up to date (inputs {digest[:12]}): nothing to build")
    return BaseImage(**{**existing.__dict__, "seconds": time.monotonic() - start})


def _built(config: Config) -> BaseImage | None:
    """The base, only if both its image and its root filesystem tarball are there."""
    existing = find_base(config)
    return existing if existing is not None and rootfs_path(config).is_file() else None


def _build(config: Config, mirror_via: str | None, start: float) -> BaseImage:
    scope = "base"
    inputs = base_inputs(config)
    digest = hash_inputs(inputs)
    tag = base_tag(config)
    rootfs = rootfs_path(config)
    if os.geteuid() != 0:
        raise BuildFailed("building the base runs debootstrap, which needs root: run as root or with sudo")
    progress.step(scope, f"building {tag} from {config.base.distribution} {config.base.suite} ({config.base.mirror})")
    work = config.state_dir / "tmp" / f"base-{digest[:12]}-{os.getpid()}"
    _remove_stale_work(config.state_dir / "tmp")
    try:
        root = work / "root"
        _debootstrap(config, root, mirror_via or config.base.mirror)
        _finish_rootfs(config, root)
        progress.step(scope, "packing the root filesystem")
        rootfs.parent.mkdir(parents=True, exist_ok=True)
        partial = rootfs.with_suffix(".tar.partial")
        run.capture(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial), "."])
        partial.replace(rootfs)
        progress.step(scope, f"importing into the Docker engine as {tag}")
        labels = {
            engine.PREFIX_LABEL: config.prefix,
            engine.ROLE_LABEL: "base",
            engine.INPUTS_LABEL: digest,
            "workbench.base.inputs": json.dumps(inputs, sort_keys=True),
            "workbench.built": datetime.now(UTC).isoformat(timespec="seconds"),
            "workbench.tool-version": _tool_version(),
        }
        changes = [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in labels.items()]
        changes.append('CMD ["/bin/bash"]')
        argv = ["docker", "import"]
        for change in changes:
            argv += ["--change", change]
        run.capture([*argv, str(rootfs), tag])
    except CommandFailed as exc:
        raise BuildFailed(f"building the base image failed: {exc}") from None
    finally:
        _remove_tree(work)
    image = find_base(config)
    if image is None:
        raise BuildFailed(f"docker import reported success but {tag} is not in the engine")
    return BaseImage(**{**image.__dict__, "cached": False, "seconds": time.monotonic() - start})


def _tool_version() -> str:
    from workbench import __version__

    return __version__


def _debootstrap(config: Config, root: Path, mirror: str) -> None:
    packages = sorted({*REQUIRED_PACKAGES, *config.base.packages})
    argv = [
        "debootstrap",
        f"--variant={config.base.variant}",
        f"--include={','.join(packages)}",
        config.base.suite,
        str(root),
        mirror,
    ]
    meter = DebootstrapProgress()
    try:
        run.stream(argv, on_line=meter.feed)
    except CommandFailed as exc:
        raise BuildFailed(f"debootstrap of {config.base.suite} from {mirror} failed: {exc}") from None
    progress.detail(meter.summary())


class DebootstrapProgress:
    """Turns debootstrap's line per package into the live line and a count per stage.

    debootstrap prints e.g. `I: Retrieving libc6 2.36-9+deb12u4`: the live line
    shows it with the count so far, the log keeps every line, and warnings are
    passed through.
    """

    def __init__(self) -> None:
        self.stage: str | None = None
        self.counts: dict[str, int] = {}

    def feed(self, line: str) -> None:
        progress.output(line)
        if line.startswith(("W: ", "E: ")):
            progress.detail(line)
            return
        if not line.startswith("I: "):
            return
        words = line[3:].split()
        if not words:
            return
        stage = words[0].lower()
        self.counts[stage] = self.counts.get(stage, 0) + 1
        progress.activity(f"debootstrap: {line[3:]} ({self.counts[stage]})")
        if stage != self.stage:
            self.stage = stage

    def summary(self) -> str:
        stages = ("retrieving", "extracting", "unpacking", "configuring")
        parts = [f"{self.counts[k]} {k}" for k in stages if k in self.counts]
        return "debootstrap done: " + (", ".join(parts) if parts else "no packages reported")


def _finish_rootfs(config: Config, root: Path) -> None:
    """Leave nothing of the build host or of debootstrap in the image."""
    base = config.base
    (root / "etc/apt/sources.list").write_text(
        f"deb {base.mirror} {base.suite} main\n"
        f"deb {base.mirror} {base.suite}-updates main\n"
        f"deb {base.security_mirror} {base.suite}-security main\n"
    )
    for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*", "var/cache/apt/*.bin"):
        for path in root.glob(pattern):
            if path.is_file():
                path.unlink()
    # The host's resolver and name would leak into every container otherwise;
    # the engine provides both at run time.
    for name in ("etc/resolv.conf", "etc/hostname"):
        path = root / name
        if path.exists() or path.is_symlink():
            path.unlink()
    machine_id = root / "etc/machine-id"
    if machine_id.exists():
        machine_id.write_text("")


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            mount_point = line.split()[4].replace("\\040", " ")
            if mount_point == prefix or mount_point.startswith(prefix + "/"):
                found.append(mount_point)
    return sorted(found, key=len, reverse=True)


def _remove_tree(path: Path) -> None:
    """rm -rf for a chroot: unmount what debootstrap mounted inside first.

    Deleting through a live bind mount of /dev or /proc would delete the host's.
    """
    if not path.exists():
        return
    for mount_point in _mounts_under(path):
        run.capture(["umount", "-l", mount_point], check=False)
    if _mounts_under(path):
        raise BuildFailed(f"cannot unmount everything under {path}; remove it by hand after `umount -R`")
    shutil.rmtree(path, ignore_errors=True)


def _remove_stale_work(tmp: Path) -> None:
    """Work directories of builds that were killed outright (their pid is gone)."""
    if not tmp.is_dir():
        return
    for work in tmp.glob("base-*-*"):
        pid = work.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _remove_tree(work)
