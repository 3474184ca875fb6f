"""Working inside an unpacked root filesystem: mounts, commands, masterless Salt."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workbench.build import base, salt
from workbench.core import progress, run
from workbench.core.config import Config, Role
from workbench.core.errors import BuildFailed

_CHROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
# Where Salt's bundle, states and configuration sit inside the chroot while it runs.
_SALT_DIR = "/tmp/workbench-salt"
# /etc/resolv.conf is borrowed from the host for apt, and removed again.
_BORROWED = ("etc/resolv.conf", "usr/sbin/policy-rc.d")
# Driver trees a server (netbooted or virtual) never needs: most of the module weight, none of the use.
PRUNED_MODULES = (
    "kernel/drivers/gpu",
    "kernel/drivers/media",
    "kernel/drivers/net/wireless",
    "kernel/drivers/infiniband",
    "kernel/drivers/staging",
    "kernel/drivers/bluetooth",
    "kernel/drivers/isdn",
    "kernel/drivers/iio",
    "kernel/sound",
    "kernel/net/bluetooth",
    "kernel/net/wireless",
    "kernel/net/mac80211",
)
PRUNED_PATHS = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "var/cache/apt",
    "var/lib/apt/lists",
)


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


def run_in(root: Path, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> str:
    """Run `argv` chrooted into `root`; its output (a failure shows its tail)."""
    return run.capture(["chroot", str(root), *argv], env={**_CHROOT_ENV, **(env or {})}).stdout


def apply_states(config: Config, root: Path, role: Role, scope: str) -> list[str]:
    """Apply the role's states (common ones first) with masterless Salt inside the chroot.

    The same thin bundle, minion configuration, salt-call arguments and result
    parser as a bake (workbench.salt), so a state behaves here as it does there.
    """
    states = salt.state_list(config, role)
    progress.step(scope, f"applying Salt states {', '.join(states)} in the chroot")
    work = root / _SALT_DIR.lstrip("/")
    (work / "thin").mkdir(parents=True)
    try:
        run.capture(["tar", "-xzf", str(salt.thin_bundle(config)), "-C", str(work / "thin")])
        shutil.copytree(config.root / "salt", work / "states", ignore=shutil.ignore_patterns("pillar"))
        pillar = config.root / "salt" / "pillar"
        if pillar.is_dir():
            shutil.copytree(pillar, work / "pillar")
        for formula in role.formulas:
            shutil.copytree(config.root / formula, work / formula)
        (work / "conf").mkdir()
        minion = salt.minion_config(_SALT_DIR, role, role.formulas)
        (work / "conf" / "minion").write_text(json.dumps(minion, indent=2))
        argv = [
            "python3",
            f"{_SALT_DIR}/thin/salt-call",
            "--log-level=warning",
            *salt.salt_call_args(_SALT_DIR, states),
        ]
        result = run.capture(["chroot", str(root), *argv], env=_CHROOT_ENV, check=False)
        outcome = salt.parse_state_run(_last_json(result.stdout))
        if not outcome.ok:
            raise BuildFailed(
                f"Salt states {', '.join(states)} failed in the chroot {root}:\n{salt.describe_failure(outcome)}"
            )
        progress.detail(f"{len(outcome.states)} states ok, {len(outcome.changed())} changed")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return states


def _last_json(stdout: str) -> Any:
    # `--out=json --out-indent=-1` prints the result as one line; warnings may come before it.
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def remove_tree(path: Path) -> None:
    # The base builder's removal unmounts anything left mounted under `path` first.
    base._remove_tree(path)


def prune(root: Path) -> None:
    """Remove PRUNED_MODULES (then depmod) and empty PRUNED_PATHS: smaller images, faster boots."""
    removed = 0
    for modules in (root / "lib/modules").glob("*"):
        for rel in PRUNED_MODULES:
            path = modules / rel
            if path.is_dir():
                removed += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
                shutil.rmtree(path)
        run_in(root, ["depmod", modules.name])
    for rel in PRUNED_PATHS:
        path = root / rel
        if path.is_dir():
            shutil.rmtree(path)
            path.mkdir()
    progress.detail(f"pruned {progress.human_size(removed)} of kernel modules no server needs")
