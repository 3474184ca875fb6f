"""Benchmark the netboot: live image build (cold, cached) and power-on to report-back.

    .venv/bin/python bench/bench_netboot.py [--config workbench.toml] [--boots 2] [--skip-cold]

The cold build uses `force` (the base stays cached: it is the base builder's
figure, not this one's). Each boot is a full `netboot.test`: a qemu TCG VM
PXE-boots the live hypervisor system in the lab namespace. Phases come from
the node's timeline: DHCP+iPXE (power-on to the iPXE script), kernel+initrd
(their download), kernel boot (to live-boot's request for the root image),
root image (its download), userspace (to the report). Needs root.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.core import config as wb_config  # noqa: E402
from workbench.netboot import artifacts, inventory, labtest  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, help="workbench.toml (default: $WORKBENCH_CONFIG or ./)")
    parser.add_argument("--boots", type=int, default=2, help="VM boots to time")
    parser.add_argument("--skip-cold", action="store_true", help="do not force a cold build of the live image")
    args = parser.parse_args()
    cfg = wb_config.load(args.config)
    inv = inventory.load(cfg)
    rows: list[tuple[str, str]] = []
    if not args.skip_cold:
        live = artifacts.build_live(cfg, force=True)
        rows.append(("live image build, cold", f"{live.seconds:.1f}s"))
        rows.append(("  squashfs / initrd / kernel", _sizes(live.sizes)))
    start = time.monotonic()
    artifacts.build_live(cfg)
    rows.append(("live image build, cached", f"{time.monotonic() - start:.2f}s"))
    results = []
    for _ in range(args.boots):
        results.append(labtest.run_test(cfg, inv))
    totals = [r.boot_seconds for r in results]
    rows.append((f"power-on to report-back (median of {len(totals)})", f"{statistics.median(totals):.1f}s"))
    for phase in results[0].phases:
        values = [r.phases[phase] for r in results if phase in r.phases]
        runs = ", ".join(f"{v:.1f}" for v in values)
        rows.append((f"  {phase}", f"{statistics.median(values):.1f}s  (runs: {runs})"))
    rows.append(("load average at the end", " ".join(f"{v:.2f}" for v in os.getloadavg())))
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    return 0


def _sizes(sizes: dict[str, int]) -> str:
    order = ("filesystem.squashfs", "initrd.img", "vmlinuz")
    return " / ".join(f"{sizes[k] / 1e6:.1f} MB" for k in order if k in sizes)


if __name__ == "__main__":
    sys.exit(main())
