"""Benchmark the homelab cloud: from nothing to a server answering, by phase, cold and warm.

    .venv/bin/python bench/bench_cloud.py [--config workbench.toml] [--vms 1] [--skip-cold]

Cold: a new prefix and state directory (nothing baked, no live image, no
databases; the package cache stays warm, as on a user's machine after the
first day), `cloud.up --vms N` then `cloud.test`. Warm: `cloud.down` (data
kept) and the same again: images cached, databases there. Phases: live image,
node, controller image (bake and verify), controller ready (databases,
syncs, APIs answering), defaults, hypervisors (power-on to registered in
nova), then the test server (upload, ACTIVE, console marker, answer). Also
the controller's memory at rest (`docker stats`). What users would otherwise
run cannot run here (no internet, 2 cores); their published figures are
printed beside ours. Needs root; everything it makes is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.cloud import cloud, controller  # noqa: E402
from workbench.core import config as wb_config  # noqa: E402
from workbench.core import engine  # noqa: E402

# What a user of the usual tools reports (their documentation; they do not run here).
ANCHORS = (
    ("DevStack (all-in-one, good connection)", "15-30 min"),
    ("OpenStack-Ansible all-in-one", "about 55 min"),
    ("Canonical Sunbeam", "needs 4 cores and 16 GiB"),
)


def bench_config(source: Path, prefix: str, state: Path) -> Path:
    """The checkout's configuration under `prefix`, in `state`."""
    from tests.support.config import write_config  # the tests' TOML writer: the same subset

    data = tomllib.loads(source.read_text())
    data["workbench"] = {**data.get("workbench", {}), "prefix": prefix, "state_dir": str(state),
                         "checkout": str(source.parent)}
    return write_config(state / "workbench.toml", data)


def one_run(cfg: wb_config.Config, vms: int, label: str, rows: list[tuple[str, str]]) -> None:
    start = time.monotonic()
    up = cloud.up(cfg, vms=vms)
    rows.append((f"{label}: cloud.up --vms {vms}", f"{up.seconds:.0f}s"))
    for phase, seconds in up.phases.items():
        rows.append((f"  {phase}", f"{seconds:.0f}s"))
    for api, seconds in up.readiness.items():
        rows.append((f"    {api} answered after", f"{seconds:.0f}s"))
    test = cloud.smoke_test(cfg)
    rows.append((f"{label}: cloud.test", f"{test.seconds:.0f}s"))
    for phase, seconds in test.phases.items():
        rows.append((f"  {phase}", f"{seconds:.0f}s"))
    rows.append((f"{label}: nothing to first server answering", f"{time.monotonic() - start:.0f}s"))


def memory(cfg: wb_config.Config) -> str:
    found = controller.find(cfg)
    if found is None:
        return "no controller"
    stats = found.stats(stream=False)
    used = stats["memory_stats"].get("usage", 0) - stats["memory_stats"].get("stats", {}).get("cache", 0)
    return f"{used / 2**30:.2f} GiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("workbench.toml"), help="the checkout's workbench.toml")
    parser.add_argument("--vms", type=int, default=1, help="hypervisor VMs to boot")
    parser.add_argument("--skip-cold", action="store_true", help="reuse --keep's state instead of starting cold")
    parser.add_argument("--keep", type=Path, default=None, help="a state directory to use and keep")
    args = parser.parse_args()
    kept = args.keep / "workbench.toml" if args.keep else None
    # A kept state keeps its prefix too: its images are what makes the next run warm.
    if kept is not None and kept.is_file():
        prefix = tomllib.loads(kept.read_text())["workbench"]["prefix"]
    else:
        prefix = f"wbbench-{secrets.token_hex(3)}"
    state = args.keep or Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    state.mkdir(parents=True, exist_ok=True)
    cfg = wb_config.load(bench_config(args.config.resolve(), prefix, state))
    rows: list[tuple[str, str]] = []
    try:
        if not args.skip_cold:
            one_run(cfg, args.vms, "cold", rows)
            time.sleep(60)  # at rest: the first minute after start-up is still busy
            rows.append(("controller memory at rest", memory(cfg)))
            cloud.down(cfg)
        one_run(cfg, args.vms, "warm", rows)
    finally:
        cloud.down(cfg, purge=args.keep is None)
        if args.keep is None:
            engine.remove_prefix(prefix)
            shutil.rmtree(state, ignore_errors=True)
    rows += [(f"anchor: {what}", figure) for what, figure in ANCHORS]
    rows.append(("load average at the end", " ".join(f"{v:.2f}" for v in os.getloadavg())))
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
