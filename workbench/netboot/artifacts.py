"""The live hypervisor system: kernel, initrd and a zstd squashfs, built from the base.

The same vanilla base as every bake (its rootfs tarball), the role's Salt states
applied in a chroot, plus a kernel, live-boot and systemd, and a unit that reports
back to the networking node. Content-addressed: the inputs hash names the
directory, and a directory with a manifest is reused as it is.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from workbench.build import base, chroot, salt
from workbench.core import progress, run
from workbench.core.config import Config
from workbench.core.errors import BuildFailed, CommandFailed, NetbootError
from workbench.core.inputs import hash_inputs, hash_tree
from workbench.netboot import image_files

# Bump when the recipe below changes, so old artifacts are not reused.
RECIPE_VERSION = 1
LIVE_ROLE = "hypervisor"
PACKAGES = ("linux-image-amd64", "live-boot", "systemd-sysv", "zstd", "busybox")
FILES = ("vmlinuz", "initrd.img", "filesystem.squashfs")


@dataclass(frozen=True)
class LiveImage:
    digest: str
    directory: Path
    role: str
    sizes: dict[str, int]
    cached: bool
    seconds: float

    def path(self, name: str) -> Path:
        return self.directory / name


def live_dir(config: Config) -> Path:
    return config.state_dir / "netboot" / "live"


def live_inputs(config: Config) -> dict[str, object]:
    role = config.role(LIVE_ROLE)
    states = salt.state_list(config, role)
    salt_root = config.root / "salt"
    return {
        "salt_version": salt.version(),
        "formulas": {f: hash_tree(config.root / f) for f in role.formulas},
        "base": hash_inputs(base.base_inputs(config)),
        "packages": list(PACKAGES),
        "pruned": [*chroot.PRUNED_MODULES, *chroot.PRUNED_PATHS],
        "states": states,
        "salt": {s: hash_tree(salt_root / s) for s in states},
        "files": image_files.digest(),
        "recipe": RECIPE_VERSION,
    }


def find_live(config: Config) -> LiveImage | None:
    digest = hash_inputs(live_inputs(config))[:12]
    directory = live_dir(config) / digest
    manifest = directory / "manifest.json"
    if not manifest.is_file() or not all((directory / f).is_file() for f in FILES):
        return None
    data = json.loads(manifest.read_text())
    return LiveImage(digest, directory, data["role"], data["sizes"], True, 0.0)


def require_live(config: Config) -> LiveImage:
    """The built live image, or a NetbootError saying how to build it."""
    image = find_live(config)
    if image is None:
        raise NetbootError(
            f"the live {LIVE_ROLE} image for the current inputs is not built "
            f"(nothing complete under {live_dir(config)}): run `fab netboot.build` first"
        )
    return image


def build_live(config: Config, force: bool = False) -> LiveImage:
    """Build the live image unless one with the same inputs exists."""
    start = time.monotonic()
    scope = f"netboot build {LIVE_ROLE}"
    if not force:
        found = find_live(config)
        if found is not None:
            progress.step(scope, f"live image {found.digest} is up to date")
            return found
    if os.geteuid() != 0:
        raise BuildFailed("building the live image runs a chroot, which needs root: run as root or with sudo")
    _check_states(config)
    base_image = base.build_base(config)
    digest = hash_inputs(live_inputs(config))[:12]
    directory = live_dir(config) / digest
    work = config.state_dir / "tmp" / f"live-{digest}-{os.getpid()}"
    progress.step(scope, f"building live image {digest} from {base_image.tag}")
    try:
        root = work / "root"
        root.mkdir(parents=True)
        run.capture(["tar", "--numeric-owner", "-xf", str(base_image.rootfs), "-C", str(root)])
        with chroot.mounted(root):
            _install(config, root, scope)
            chroot.apply_states(config, root, config.role(LIVE_ROLE), scope)
            image_files.install(root, LIVE_ROLE)
            chroot.prune(root)
        sizes = _pack(root, work / "out", scope)
        _publish(work / "out", directory, sizes)
    except CommandFailed as exc:
        raise BuildFailed(f"building the live image failed: {exc}") from None
    finally:
        chroot.remove_tree(work)
    seconds = time.monotonic() - start
    squash = progress.human_size(sizes["filesystem.squashfs"])
    progress.step(scope, f"live image {digest}: squashfs {squash} in {seconds:.0f}s")
    return LiveImage(digest, directory, LIVE_ROLE, sizes, False, seconds)


def _check_states(config: Config) -> list[str]:
    states = salt.state_list(config, config.role(LIVE_ROLE))
    missing = [s for s in states if not (config.root / "salt" / s).is_dir()]
    if missing:
        raise BuildFailed(
            f"the {LIVE_ROLE} image needs the Salt states {', '.join(missing)}: no such directory under salt/"
        )
    return states


def _install(config: Config, root: Path, scope: str) -> None:
    # A lean initrd: network drivers and what live-boot adds, not every module.
    conf = root / "etc/initramfs-tools/conf.d/workbench"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("MODULES=netboot\nCOMPRESS=zstd\n")
    progress.step(scope, f"installing {', '.join(PACKAGES)}")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    chroot.run_in(root, ["apt-get", "update", "-qq"], env=env)
    # Captured, not streamed: dpkg's line per file would drown the progress; a failure shows its tail.
    chroot.run_in(root, ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], env=env)


def _pack(root: Path, out: Path, scope: str) -> dict[str, int]:
    out.mkdir(parents=True)
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise BuildFailed(f"no kernel or initrd under {root / 'boot'} after installing linux-image-amd64")
    shutil.copyfile(kernels[-1], out / "vmlinuz")
    shutil.copyfile(initrds[-1], out / "initrd.img")
    progress.step(scope, "squashing the root filesystem (zstd)")
    squash = out / "filesystem.squashfs"
    run.capture(["mksquashfs", str(root), str(squash), "-comp", "zstd", "-e", "boot", "-noappend", "-no-progress"])
    return {name: (out / name).stat().st_size for name in FILES}


def _publish(out: Path, directory: Path, sizes: dict[str, int]) -> None:
    manifest = {"role": LIVE_ROLE, "sizes": sizes, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    directory.parent.mkdir(parents=True, exist_ok=True)
    if directory.exists():
        shutil.rmtree(directory)
    # A rename: a reader sees the whole directory or none of it.
    out.rename(directory)
