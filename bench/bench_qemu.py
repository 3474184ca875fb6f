"""qemu builder benchmark: vanilla disk cold and cached, a qcow2 bake by phase, against the container bake.

    .venv/bin/python bench/bench_qemu.py [--role base] [--prefix NAME]

Under its own prefix and state directory, removed at the end (unless --prefix
is given, which keeps and reuses them). Measured in this one run, the package
cache warmed first by the container bake so that neither pays for downloads:

1. the container bake of the role (docker builder), --force: the figure a user
   of container images already has, and the yardstick below,
2. the vanilla VM disk, built cold, then found (cached),
3. the qcow2 bake of the same role, --force, split into provision (Packer:
   boot, Salt twice, clean-up, shutdown, compression) and verify (a fresh boot
   and the role's tests over SSH),
4. the same qcow2 bake again with nothing changed (reused).
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.config import config_data, write_config  # noqa: E402
from workbench.build import bake, base, vmdisk  # noqa: E402
from workbench.core import config, engine  # noqa: E402


def timed(cfg: config.Config, role: str, force: bool) -> tuple[float, bake.BakeResult]:
    start = time.monotonic()
    result = bake.bake_role(cfg, role, force=force)
    return time.monotonic() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", default="base")
    parser.add_argument("--prefix", default="", help="reuse (and keep) this prefix")
    args = parser.parse_args()
    prefix = args.prefix or f"wbbench-{secrets.token_hex(3)}"
    state = Path(f"/var/tmp/{prefix}-state")
    state.mkdir(exist_ok=True)
    docker_cfg = config.load(write_config(state / "docker.toml", config_data(prefix, state)))
    qemu_cfg = config.load(write_config(state / "qemu.toml", config_data(prefix, state, builder={"type": "qemu"})))
    try:
        base.build_base(docker_cfg)
        container_s, container = timed(docker_cfg, args.role, force=True)
        start = time.monotonic()
        vmdisk.build_disk(qemu_cfg, force=True)
        disk_cold = time.monotonic() - start
        start = time.monotonic()
        disk = vmdisk.build_disk(qemu_cfg)
        disk_cached = time.monotonic() - start
        assert disk.cached
        qcow2_s, qcow2 = timed(qemu_cfg, args.role, force=True)
        noop_s, noop = timed(qemu_cfg, args.role, force=False)
        assert noop.cached
    finally:
        if not args.prefix:
            engine.remove_prefix(prefix)
            shutil.rmtree(state, ignore_errors=True)
    c_phases, q_phases = dict(container.phases), dict(qcow2.phases)
    print()
    print(f"{'role ' + args.role:<24} {'container (docker)':>20} {'qcow2 (qemu, tcg)':>20} {'qcow2 / container':>18}")
    for name, c_s, q_s in (
        ("cold bake", container_s, qcow2_s),
        ("  provision", c_phases["provision"], q_phases["provision"]),
        ("  verify", c_phases["verify"], q_phases["verify"]),
    ):
        print(f"{name:<24} {c_s:>19.1f}s {q_s:>19.1f}s {q_s / c_s:>17.1f}x")
    print(f"{'size':<24} {container.size / 1e6:>18.0f}MB {qcow2.size / 1e6:>18.0f}MB")
    print(f"vanilla VM disk: cold {disk_cold:.1f}s ({disk.size / 1e6:.0f} MB), cached {disk_cached:.3f}s")
    print(f"qcow2 bake with nothing changed: {noop_s:.2f}s (reused {noop.tag})")


if __name__ == "__main__":
    main()
