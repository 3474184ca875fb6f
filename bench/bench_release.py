"""Benchmark of releases: how fast a rollback serves the old release, and what a promote costs.

    .venv/bin/python bench/bench_release.py [--config workbench.toml] [--env staging] [--no-rebake]

Measures, on the configuration's engine, registry and frontend:
  - promote: wall time of `fab release.promote`, and failed requests under steady load;
  - rollback, both paths: time from starting the rollback until the frontend answers from
    the old image, and failed requests under steady load. Warm: `fab release.rollback <tag>`
    right after a promote, while the replaced release runs as the warm standby (a frontend
    switch). Cold: the same rollback with the standby off (`standby = 0`), which starts the
    old image again; run in-process, so the warm one is also timed in-process for a fair ratio;
  - redeploy from scratch: re-bake the role (`bake_role(force=True)`) and promote it, for comparison.
It needs a verified frontend image and two verified app images; it bakes what is missing.
Figures go to stdout and to <state_dir>/bench/release.json. The releases it made are taken down at
the end, unless the environment served the role before it started.
"""

from __future__ import annotations

import argparse
import dataclasses
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


def _seconds(action: object) -> float:
    start = time.monotonic()
    action()  # type: ignore[operator]
    return time.monotonic() - start


def _tag_of(config: wb_config.Config, args: argparse.Namespace, version: int) -> str:
    """The newest released tag of `version` in the environment (the one a rollback goes back to)."""
    found = [r for r in release.history(config, args.env, args.role) if r.version == version and r.status == "released"]
    return found[-1].tag


def rollback_timed(url: str, version: int, action: object) -> dict[str, object]:
    """Run `action` (a rollback, returning its own seconds) under load; time until `version` answers."""
    started, timing = threading.Event(), {}
    watcher = threading.Thread(target=time_until_version, args=(url, str(version), started, timing))
    watcher.start()
    with loadgen.Load(url, max_seconds=300) as load:
        time.sleep(0.5)
        started.set()
        seconds = action()  # type: ignore[operator]
        time.sleep(0.5)
    watcher.join()
    return {
        "seconds_until_old_release_answers": round(timing.get("seconds", float("nan")), 3),
        "command_seconds": round(float(seconds), 3),  # type: ignore[arg-type]
        "requests": load.result.total,
        "failed": load.result.failed,
        "ok": load.result.ok,
        "errors": load.result.errors,
    }


def ensure_images(config: wb_config.Config, role: str) -> list[int]:
    if images.latest(config, "frontend") is None:
        bake.bake_role(config, "frontend")
    versions = sorted(images.version_of(i) for i in images.accepted(config, role))
    while len(versions) < 2:
        bake.bake_role(config, role, force=True)
        versions = sorted(images.version_of(i) for i in images.accepted(config, role))
    return versions[-2:]


def _measure(config: wb_config.Config, args: argparse.Namespace, environment: wb_config.Environment, url: str,
             old: int, new: int, figures: dict[str, object]) -> None:
    """Promote, promote under load, the rollbacks and the redeploy, into `figures`."""
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

    warm = rollback_timed(url, old, lambda: fab(config, "release.rollback", first, "--message", "bench: warm")[0])
    path = release.history(config, args.env, args.role)[-1].path
    figures["rollback_warm"] = {"to": first, "path": path, **warm}
    warm_in_process = rollback_timed(
        url, new, lambda: _seconds(lambda: release.rollback(config, _tag_of(config, args, new), message="bench")))
    figures["rollback_warm_in_process"] = {
        "path": release.history(config, args.env, args.role)[-1].path, **warm_in_process}

    # The cold path: the same configuration with the standby off.
    cold_env = dataclasses.replace(environment, standby=0)
    cold = dataclasses.replace(config, environments={**config.environments, args.env: cold_env})
    release.promote(cold, args.role, args.env, version=new, message="bench: new, no standby")
    cold_rollback = rollback_timed(
        url, old, lambda: _seconds(lambda: release.rollback(cold, first, message="bench: cold")))
    figures["rollback_cold_in_process"] = {"to": first, "path": release.history(config, args.env, args.role)[-1].path,
                                           **cold_rollback}
    warm_seconds = warm_in_process["seconds_until_old_release_answers"]
    if warm_seconds:
        figures["cold_over_warm"] = round(cold_rollback["seconds_until_old_release_answers"] / warm_seconds, 1)
    figures["rollback"] = figures["rollback_warm"]

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

    # The bench's releases go at the end, unless the environment served the role before it started.
    served_before = {r.role for r in release.current(config) if r.environment == args.env}
    try:
        _measure(config, args, environment, url, old, new, figures)
    finally:
        if args.role not in served_before:
            release.down(config, args.env, args.role if served_before else None)

    out = config.state_dir / "bench" / "release.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
