"""Benchmark of releases: how fast a rollback serves the old release, and what a promote costs.

    .venv/bin/python bench/bench_release.py [--config workbench.toml] [--env staging] [--no-rebake]

Measures, on the configuration's engine, registry and frontend:
  - promote: wall time of `fab release.promote`, and failed requests under steady load;
  - rollback: time from starting `fab release.rollback <tag>` until the frontend answers from
    the old image, and failed requests under steady load;
  - redeploy from scratch: re-bake the role (`bake_role(force=True)`) and promote it, for comparison.
It needs a verified frontend image and two verified app images; it bakes what is missing.
Figures go to stdout and to <state_dir>/bench/release.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workbench.build import bake, images  # noqa: E402
from workbench.core import config as wb_config  # noqa: E402
from workbench.release import loadgen  # noqa: E402
from workbench.release import releases as release  # noqa: E402

FAB = str(REPO / ".venv/bin/fab")


def fab(config: wb_config.Config, *args: str) -> tuple[float, str]:
    start = time.monotonic()
    env = {**os.environ, wb_config.ENV_CONFIG: str(config.path)}
    proc = subprocess.run([FAB, *args], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"fab {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.monotonic() - start, proc.stdout.strip().splitlines()[-1]


def answering_version(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(json.loads(response.read()).get("version"))
    except Exception:  # noqa: BLE001 - anything but an answer means "not yet"
        return ""


def time_until_version(url: str, version: str, started: threading.Event, out: dict[str, float]) -> None:
    started.wait()
    start = time.monotonic()
    while time.monotonic() - start < 120:
        if answering_version(url) == version:
            out["seconds"] = time.monotonic() - start
            return
        time.sleep(0.01)


def ensure_images(config: wb_config.Config, role: str) -> list[int]:
    if images.latest(config, "frontend") is None:
        bake.bake_role(config, "frontend")
    versions = sorted(images.version_of(i) for i in images.accepted(config, role))
    while len(versions) < 2:
        bake.bake_role(config, role, force=True)
        versions = sorted(images.version_of(i) for i in images.accepted(config, role))
    return versions[-2:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.environ.get(wb_config.ENV_CONFIG, str(REPO / "workbench.toml")))
    parser.add_argument("--env", default="staging")
    parser.add_argument("--role", default="app")
    parser.add_argument("--no-rebake", action="store_true", help="skip the redeploy-from-scratch comparison")
    args = parser.parse_args()
    config = wb_config.load(Path(args.config))
    environment = config.environment(args.env)
    if not environment.frontend_port:
        raise SystemExit(f"[environments.{args.env}] has no frontend_port: nothing to measure through")
    url = f"http://127.0.0.1:{environment.frontend_port}{config.role(args.role).health or '/'}"
    old, new = ensure_images(config, args.role)
    figures: dict[str, object] = {"environment": args.env, "role": args.role, "versions": [old, new]}

    seconds, _ = fab(config, "release.promote", args.role, "--env", args.env, "--version", str(old), "--message",
                     "bench: old")
    first = release.history(config, args.env, args.role)[-1].tag
    figures["first_promote_seconds"] = round(seconds, 2)

    with loadgen.Load(url, max_seconds=300) as load:
        time.sleep(0.5)
        seconds, _ = fab(config, "release.promote", args.role, "--env", args.env, "--version", str(new),
                         "--message", "bench: new")
        time.sleep(0.5)
    figures["promote"] = {"seconds": round(seconds, 2), "requests": load.result.total, "failed": load.result.failed,
                          "errors": load.result.errors}

    started, timing = threading.Event(), {}
    watcher = threading.Thread(target=time_until_version, args=(url, str(old), started, timing))
    watcher.start()
    with loadgen.Load(url, max_seconds=300) as load:
        time.sleep(0.5)
        started.set()
        seconds, _ = fab(config, "release.rollback", first, "--message", "bench: rollback")
        time.sleep(0.5)
    watcher.join()
    figures["rollback"] = {
        "to": first,
        "seconds_until_old_release_answers": round(timing.get("seconds", float("nan")), 2),
        "command_seconds": round(seconds, 2),
        "requests": load.result.total,
        "failed": load.result.failed,
        "errors": load.result.errors,
    }

    if not args.no_rebake:
        start = time.monotonic()
        result = bake.bake_role(config, args.role, force=True)
        bake_seconds = time.monotonic() - start
        seconds, _ = fab(config, "release.promote", args.role, "--env", args.env, "--version", str(result.version),
                         "--message", "bench: redeploy from scratch")
        total = bake_seconds + seconds
        figures["redeploy_from_scratch"] = {"bake_seconds": round(bake_seconds, 2),
                                            "promote_seconds": round(seconds, 2), "seconds": round(total, 2)}
        rollback_seconds = figures["rollback"]["seconds_until_old_release_answers"]  # type: ignore[index]
        figures["redeploy_over_rollback"] = round(total / rollback_seconds, 1)

    out = config.state_dir / "bench" / "release.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
