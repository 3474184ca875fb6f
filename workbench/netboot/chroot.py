"""Working inside an unpacked root filesystem: mounts, commands, masterless Salt."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from .. import base, progress, run
from ..config import Config
from ..errors import BuildFailed, CommandFailed

# /etc/resolv.conf is borrowed from the host for apt, and removed again.
_BORROWED = ("etc/resolv.conf", "usr/sbin/policy-rc.d")


@contextmanager
def mounted(root: Path) -> Iterator[Path]:
    """proc, sys and dev inside `root`, the host's resolver, no service starts; all undone after."""
    mounts: list[Path] = []
    try:
        for source, target, argv in (
            ("proc", "proc", ["-t", "proc"]),
            ("sysfs", "sys", ["-t", "sysfs"]),
            ("/dev", "dev", ["--bind"]),
            ("devpts", "dev/pts", ["-t", "devpts"]),
        ):
            point = root / target
            point.mkdir(parents=True, exist_ok=True)
            run.capture(["mount", *argv, source, str(point)])
            mounts.append(point)
        resolv = root / "etc/resolv.conf"
        if resolv.is_symlink() or resolv.exists():
            resolv.unlink()
        shutil.copyfile("/etc/resolv.conf", resolv)
        # Installing packages must not start their services in the chroot.
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        yield root
    finally:
        for rel in _BORROWED:
            (root / rel).unlink(missing_ok=True)
        for point in reversed(mounts):
            run.capture(["umount", "-l", str(point)], check=False)


def run_in(root: Path, argv: Sequence[str], *, env: Mapping[str, str] | None = None, stream: bool = False) -> str:
    """Run `argv` chrooted into `root`; its output, or streamed one line per line."""
    full = ["chroot", str(root), *argv]
    chroot_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", **(env or {})}
    if stream:
        return run.stream(full, env=chroot_env).stdout
    return run.capture(full, env=chroot_env).stdout


def thin_bundle(config: Config) -> Path:
    """Salt's thin bundle (salt-call with its Python dependencies), made once per state dir."""
    cache = config.state_dir / "salt-thin"
    existing = sorted(cache.rglob("thin.tgz"))
    if existing:
        return existing[0]
    import salt.utils.thin  # heavy import, only when a bundle is made

    cache.mkdir(parents=True, exist_ok=True)
    return Path(salt.utils.thin.gen_thin(str(cache)))


def apply_states(config: Config, root: Path, role: str, states: list[str], scope: str) -> None:
    """Apply `states` with masterless Salt inside the chroot (`--retcode-passthrough`).

    The `workbench_role` grain is set as a bake sets it, so the common states see the role.
    """
    progress.step(scope, f"applying Salt states {', '.join(states)} in the chroot")
    work = root / "tmp/workbench-salt"
    (work / "thin").mkdir(parents=True)
    try:
        run.capture(["tar", "-xzf", str(thin_bundle(config)), "-C", str(work / "thin")])
        shutil.copytree(config.root / "salt", work / "states", ignore=shutil.ignore_patterns("pillar"))
        pillar = config.root / "salt" / "pillar"
        argv = [
            "python3",
            "/tmp/workbench-salt/thin/salt-call",
            "--local",
            "--retcode-passthrough",
            "--state-output=terse",
            "--log-level=warning",
            "--file-root=/tmp/workbench-salt/states",
            "--config-dir=/tmp/workbench-salt/conf",
        ]
        (work / "conf").mkdir()
        (work / "conf/minion").write_text(
            f"file_client: local\ncachedir: /tmp/workbench-salt/cache\ngrains:\n  workbench_role: {role}\n"
        )
        if pillar.is_dir():
            shutil.copytree(pillar, work / "pillar")
            argv.append("--pillar-root=/tmp/workbench-salt/pillar")
        try:
            run_in(root, [*argv, "state.apply", ",".join(states)], stream=True)
        except CommandFailed as exc:
            raise BuildFailed(f"Salt states {', '.join(states)} failed in the live image's chroot: {exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def remove_tree(path: Path) -> None:
    # The base builder's removal unmounts anything left mounted under `path` first.
    base._remove_tree(path)
