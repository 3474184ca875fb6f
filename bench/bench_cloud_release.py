"""Benchmark releases on the homelab cloud beside the same releases on the local Docker engine.

    .venv/bin/python bench/bench_cloud_release.py [--config workbench.toml] [--env lab] [--docker-env staging]

Needs a running cloud (`fab cloud.up --vms N`) and two verified app images (the
newest two versions) and a frontend image. For each target it runs, as a user
would, `fab release.promote app --version <older>`, `fab release.promote app
--version <newer>`, then `fab release.rollback <the first tag>`, each under a
steady client loop against the environment's frontend, and prints the wall time,
the failed requests (goal: 0), and where the time went, read from each
command's run log: publish (`image.publish` when glance lacks the image), boot
to ACTIVE, healthy, switch, old instances removed. The Docker environment runs
with its usual warm standby, so its rollback is a frontend switch; the cloud's
environment deletes a replaced server at once (`standby = 0`), so its rollback
boots the first release's glance image again. Both environments are taken down
at the end (`release.down`); the ledger keeps the records.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workbench.build import images  # noqa: E402
from workbench.core import config as wb_config  # noqa: E402
from workbench.release import loadgen  # noqa: E402

FAB = str(REPO / ".venv/bin/fab")
# A finished step in a run log: "    81.1 [promote app-7] <== waiting for /health on ... (took 79.8s)".
STEP_RE = re.compile(r"^\s*[\d.]+ \[(?P<scope>[^\]]+)\] <== (?P<message>.*) \(took (?P<seconds>[\d.]+)s\)$")
PHASES = (
    ("publish", ("[publish]",)),
    ("push", ("pushing",)),
    ("boot to ACTIVE", ("starting",)),
    ("healthy", ("waiting for",)),
    ("switch", ("switching",)),
    ("old removed", ("stopping", "keeping")),
)


def fab(config: Path, *args: str) -> tuple[float, str]:
    """Wall time of one `fab` command and the run log it names."""
    start = time.monotonic()
    env = {**os.environ, wb_config.ENV_CONFIG: str(config), "WORKBENCH_PROGRESS": "plain"}
    proc = subprocess.run([FAB, *args], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"fab {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    log = next((line.split()[1] for line in proc.stderr.splitlines() if line.startswith("log: ")), "")
    return time.monotonic() - start, str(REPO / log) if log and not log.startswith("/") else log


def phases(log: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in Path(log).read_text().splitlines():
        match = STEP_RE.match(line)
        if not match:
            continue
        text = f"[{match['scope']}] {match['message']}" if match["scope"] == "publish" else match["message"]
        for name, starts in PHASES:
            if any(text.startswith(s) for s in starts):
                found[name] = found.get(name, 0.0) + float(match["seconds"])
    return found


def measured(config: Path, url: str, label: str, rows: list[tuple[str, str]], *args: str) -> str:
    with loadgen.Load(url) as load:
        seconds, log = fab(config, *args)
    result = load.result
    split = ", ".join(f"{name} {value:.1f}s" for name, value in phases(log).items())
    rows.append((label, f"{seconds:.1f}s; failed {result.failed} of {result.total} requests; {split}"))
    return log


def run(config_path: Path, env: str, rows: list[tuple[str, str]]) -> None:
    config = wb_config.load(config_path)
    environment = config.environment(env)
    versions = sorted(images.version_of(i) for i in images.accepted(config, "app"))
    if len(versions) < 2:
        raise SystemExit("two verified app images are needed: `fab image.bake --role app --force` once more")
    older, newer = versions[-2], versions[-1]
    url = f"http://127.0.0.1:{environment.frontend_port}/health"
    kind = environment.target
    measured(config_path, url, f"{kind}: promote app:{older}", rows, "release.promote", "app", "--env", env,
             "--version", str(older))
    first = _serving_tag(config_path, env)
    measured(config_path, url, f"{kind}: promote app:{newer}", rows, "release.promote", "app", "--env", env,
             "--version", str(newer))
    measured(config_path, url, f"{kind}: rollback {first}", rows, "release.rollback", first)
    fab(config_path, "release.down", "--env", env)


def _serving_tag(config: Path, env: str) -> str:
    import json

    proc = subprocess.run([FAB, "release.list", "--json"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, wb_config.ENV_CONFIG: str(config)}, check=True)
    return next(r["tag"] for r in json.loads(proc.stdout) if r["environment"] == env and r["role"] == "app")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "workbench.toml")
    parser.add_argument("--env", default="lab", help="an environment with target = \"openstack\"")
    parser.add_argument("--docker-env", default="staging", help="an environment on the Docker engine")
    args = parser.parse_args()
    config = wb_config.load(args.config)
    if config.environment(args.env).target != "openstack":
        raise SystemExit(f"[environments.{args.env}] target is not \"openstack\"")
    rows: list[tuple[str, str]] = []
    run(args.config, args.docker_env, rows)
    run(args.config, args.env, rows)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    main()
